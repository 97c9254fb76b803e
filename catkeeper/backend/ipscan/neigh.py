"""Kernel neighbour tables: parsing them, and the unprivileged sweep that fills them.

Without CAP_NET_RAW we cannot send ARP ourselves, but the kernel can: a UDP datagram to an
on-link address makes it resolve that address, and a second later the neighbour table holds
the MAC of every host that answered (``/proc/net/arp`` or ``ip -j neigh``). The same trick
works on a remote host over ssh (see ``remote.py``), which is why the parsers accept the
three formats an arbitrary host may give us.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from catkeeper.backend.ipscan.netinfo import SweepTarget
from catkeeper.backend.ipscan.results import NEIGH, SourceResult, normalize_mac, usable_address
from catkeeper.backend.timeouts import within
from catkeeper.model import IpSighting

# States that carry no MAC (or a MAC that no longer answered).
_DEAD_STATES = frozenset({"INCOMPLETE", "FAILED", "NONE", "NOARP"})
_ATF_COM = 0x2  # /proc/net/arp flag: entry complete
POKE_PORT = 9  # discard: nobody should mind an empty datagram there


@dataclass(frozen=True)
class NeighEntry:
    ip: str
    mac: str | None  # normalised; None when the entry has none (incomplete, failed)
    dev: str | None
    state: str  # REACHABLE, STALE, ... ("COMPLETE"/"INCOMPLETE" from /proc/net/arp)

    @property
    def usable(self) -> bool:
        return self.mac is not None and self.state not in _DEAD_STATES and usable_address(self.ip)


def parse_ip_json(text: str) -> list[NeighEntry]:
    """``ip -j neigh show`` output."""
    data = json.loads(text or "[]")
    out = []
    for item in data if isinstance(data, list) else ():
        if not isinstance(item, dict) or "dst" not in item:
            continue
        state = item.get("state") or ["NONE"]
        lladdr = item.get("lladdr")
        out.append(
            NeighEntry(
                ip=str(item["dst"]),
                mac=normalize_mac(lladdr) if isinstance(lladdr, str) else None,
                dev=item.get("dev"),
                state=str(state[0] if isinstance(state, list) else state).upper(),
            )
        )
    return out


def parse_ip_text(text: str) -> list[NeighEntry]:
    """``ip neigh show`` output: ``10.0.0.5 dev br0 lladdr 52:54:00:… REACHABLE``."""
    out = []
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        fields = dict(zip(words[1::2], words[2::2], strict=False))
        # The state is the last word, unless the line ends in flags like "router".
        state = next((w for w in reversed(words) if w.isupper()), "NONE")
        lladdr = fields.get("lladdr")
        out.append(
            NeighEntry(
                ip=words[0],
                mac=normalize_mac(lladdr) if lladdr else None,
                dev=fields.get("dev"),
                state=state,
            )
        )
    return out


def parse_proc_arp(text: str) -> list[NeighEntry]:
    """``/proc/net/arp``: IPv4 only, flag 0x2 means complete."""
    out = []
    for line in text.splitlines()[1:]:
        words = line.split()
        if len(words) < 6:
            continue
        try:
            complete = int(words[2], 16) & _ATF_COM
        except ValueError:
            continue
        out.append(
            NeighEntry(
                ip=words[0],
                mac=normalize_mac(words[3]),
                dev=words[5],
                state="COMPLETE" if complete else "INCOMPLETE",
            )
        )
    return out


def to_sightings(
    entries: Iterable[NeighEntry],
    subnets: Sequence[str],
    *,
    seen_at: float,
    source: str = NEIGH,
) -> list[IpSighting]:
    """Usable entries inside ``subnets`` (every usable entry when no subnets are given)."""
    nets = [ipaddress.ip_network(s, strict=False) for s in subnets]
    out: list[IpSighting] = []
    for e in entries:
        if not e.usable or e.mac is None:
            continue
        addr = ipaddress.ip_address(e.ip)
        net = next((n for n in nets if addr.version == n.version and addr in n), None)
        if nets and net is None:
            continue
        out.append(
            IpSighting(
                mac=e.mac,
                ip=str(addr),
                prefix=net.prefixlen if net is not None else None,
                source=source,
                seen_at=seen_at,
            )
        )
    return out


def read_local_table(timeout: float = 5.0) -> tuple[list[NeighEntry], str]:
    """This machine's neighbour table and where it came from (``ip -j``, else /proc)."""
    try:
        done = subprocess.run(
            ["ip", "-j", "neigh", "show"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode == 0:
            return parse_ip_json(done.stdout), "ip -j neigh"
    except (OSError, subprocess.TimeoutExpired, ValueError):
        pass  # no iproute2, or one too old for -j: the kernel's own file still works
    with open("/proc/net/arp", encoding="ascii", errors="replace") as f:
        return parse_proc_arp(f.read()), "/proc/net/arp"


async def read_local_table_async(timeout: float = 5.0) -> tuple[list[NeighEntry], str]:
    """``read_local_table`` without a thread: ``ip`` runs as an asyncio subprocess (the
    event loop is never blocked and no executor is borrowed)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "ip",
            "-j",
            "neigh",
            "show",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        proc = None
    if proc is not None:
        try:
            out, _ = await within(proc.communicate(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        else:
            if proc.returncode == 0:
                with contextlib.suppress(ValueError):
                    return parse_ip_json(out.decode(errors="replace")), "ip -j neigh"
    with open("/proc/net/arp", encoding="ascii", errors="replace") as f:
        return parse_proc_arp(f.read()), "/proc/net/arp"


def poke(addresses: Iterable[str]) -> int:
    """Send one empty UDP datagram to each address (IPv4); returns how many went out.

    The datagram itself is irrelevant: what matters is that the kernel must resolve each
    on-link address first, so the neighbour table learns every host that answers ARP.
    """
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        for a in addresses:
            try:
                s.sendto(b"", (a, POKE_PORT))
                sent += 1
            except OSError:
                # EAGAIN when the neighbour queue is full, EHOSTUNREACH for a recent
                # failure: that address simply is not learnt this time.
                continue
    return sent


def neigh_sweep(
    host: str,
    targets: Sequence[SweepTarget],
    *,
    wait: float = 1.0,
    clock: Callable[[], float] = time.time,
) -> list[SourceResult]:
    """The unprivileged sweep: poke every address of each on-link subnet, wait, read the table.

    One poke and one wait for all subnets together, then one result per subnet. A routed
    subnet cannot be swept this way (its hosts' MACs never reach our table: only the
    router's does), which its result says.
    """
    started = clock()
    t0 = time.perf_counter()
    onlink = [t for t in targets if t.onlink]
    if onlink:
        poke(a for t in onlink for a in t.addresses())
        time.sleep(wait)
    entries: list[NeighEntry] = []
    origin = ""
    error = None
    try:
        entries, origin = read_local_table()
    except OSError as exc:
        error = f"cannot read the neighbour table: {exc}"
    seen_at = clock()
    elapsed = round(time.perf_counter() - t0, 3)
    results = []
    for t in targets:
        sightings = to_sightings(entries, [t.subnet], seen_at=seen_at) if t.onlink else []
        results.append(
            SourceResult(
                host=host,
                source=NEIGH,
                scope=t.subnet,
                sightings=tuple(sightings),
                error=error
                if t.onlink
                else f"{t.subnet} is routed (via {t.gateway}): sweeping it needs raw sockets",
                started_at=started,
                elapsed_s=elapsed,
                privileged=False,
                note=f"unprivileged (no CAP_NET_RAW): UDP poke, then {origin}"
                if origin
                else "unprivileged (no CAP_NET_RAW)",
            )
        )
    return results
