"""Sweeps on a remote host, over its ssh connection, with nothing installed there.

One command per sweep, run by the host's ``sh``: poke every address (an empty UDP datagram
through bash's ``/dev/udp``; else from ``python3``; else ``ping``), wait, print the
neighbour table (``ip -j neigh``; else ``ip neigh``; else ``/proc/net/arp``). No raw
sockets, so no root is needed on the host. The script is a constant; the only data on the
command line are addresses we produced ourselves from subnets validated with
``ipaddress``, passed as positional arguments and quoted with ``shlex.join``: nothing from
the config or the network is ever spliced into shell code.
"""

from __future__ import annotations

import math
import shlex
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from catkeeper.backend.ipscan.neigh import (
    NeighEntry,
    parse_ip_json,
    parse_ip_text,
    parse_proc_arp,
    to_sightings,
)
from catkeeper.backend.ipscan.netinfo import MAX_ADDRESSES, SubnetError, check_subnet
from catkeeper.backend.ipscan.results import NEIGH, SourceResult

if TYPE_CHECKING:
    import asyncssh

# $1: seconds to wait after the poke; the rest: IPv4 addresses to poke (maybe none).
# Poke methods, cheapest first: bash's /dev/udp (one process, no fork per address; some
# builds lack it, then no send succeeds and the next method is tried), python3, then ping
# fanned out (a process per address). Markers on their own lines separate the parts; a
# later table marker means the earlier way failed, so the parser takes the last one.
SCRIPT = r"""
delay=$1; shift
method=none
if [ $# -gt 0 ]; then
  if command -v bash >/dev/null 2>&1 && bash -c '
ok=1
for a in "$@"; do echo >"/dev/udp/$a/9" && ok=0; done 2>/dev/null
exit $ok' poke "$@"; then
    method=udp-bash
  elif command -v python3 >/dev/null 2>&1 && python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
for a in sys.argv[1:]:
    try:
        s.sendto(b"", (a, 9))
    except OSError:
        pass
' "$@"; then
    method=udp-python3
  elif command -v ping >/dev/null 2>&1; then
    for a in "$@"; do ping -c 1 -W "$delay" -q "$a" >/dev/null 2>&1 & done
    method=ping
  fi
  sleep "$delay"
  if [ "$method" = ping ]; then wait; fi
fi
echo "@@method $method"
echo "@@ip-json"
ip -j neigh show 2>/dev/null && exit 0
echo "@@ip-text"
ip neigh show 2>/dev/null && exit 0
echo "@@proc-arp"
cat /proc/net/arp
"""


def sweep_command(addresses: Sequence[str], wait: float = 1.0) -> str:
    """The one shell command line for a remote sweep (addresses must be validated IPs)."""
    # Whole seconds: POSIX sleep takes no fractions (GNU and busybox do, others may not).
    delay = str(max(1, math.ceil(wait)))
    return shlex.join(["sh", "-c", SCRIPT, "catkeeper-sweep", delay, *addresses])


def parse_output(text: str) -> tuple[str, list[NeighEntry], str]:
    """(poke method, entries, table format) from the script's output."""
    method = "none"
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("@@method "):
            method = line.split(None, 1)[1].strip()
            current = None
        elif line in ("@@ip-json", "@@ip-text", "@@proc-arp"):
            current = sections.setdefault(line[2:], [])
        elif current is not None:
            current.append(line)
    for kind, parse in (
        ("proc-arp", parse_proc_arp),
        ("ip-text", parse_ip_text),
        ("ip-json", parse_ip_json),
    ):
        if kind in sections:
            return method, parse("\n".join(sections[kind])), kind
    raise ValueError("no neighbour table in the output")


async def remote_sweep(
    conn: asyncssh.SSHClientConnection,
    host: str,
    subnets: Sequence[str],
    *,
    wait: float = 1.0,
    timeout: float = 20.0,
    max_addresses: int = MAX_ADDRESSES,
    clock: Callable[[], float] = time.time,
) -> list[SourceResult]:
    """Poke ``subnets`` on ``host`` and read its neighbour table: one result per subnet.

    No subnets: the table is only read (passive), in one result with scope ``*``.
    """
    import asyncssh

    started, t0 = clock(), time.perf_counter()
    good: list[str] = []
    addresses: list[str] = []
    results: list[SourceResult] = []
    for text in subnets:
        try:
            net = check_subnet(text, max_addresses)
        except SubnetError as exc:
            results.append(SourceResult(host, NEIGH, text, error=str(exc), started_at=started))
            continue
        good.append(str(net))
        addresses += [str(a) for a in net.hosts()]
    if subnets and not good:
        return results
    scopes = good or ["*"]

    def failed(error: str) -> list[SourceResult]:
        elapsed = round(time.perf_counter() - t0, 3)
        return results + [
            SourceResult(
                host, NEIGH, s, error=error, started_at=started, elapsed_s=elapsed, privileged=False
            )
            for s in scopes
        ]

    try:
        done = await conn.run(sweep_command(addresses, wait), check=False, timeout=timeout)
    except asyncssh.TimeoutError:
        return failed(f"remote sweep timed out after {timeout:g} s")
    except (OSError, asyncssh.Error) as exc:
        return failed(f"remote sweep failed: {exc}")
    seen_at = clock()
    out = done.stdout if isinstance(done.stdout, str) else (done.stdout or b"").decode()
    try:
        method, entries, table = parse_output(out)
    except ValueError as exc:
        err = done.stderr if isinstance(done.stderr, str) else (done.stderr or b"").decode()
        detail = " ".join(err.split())[-300:]
        return failed(f"{exc} (exit {done.exit_status}: {detail})")
    elapsed = round(time.perf_counter() - t0, 3)
    if not good:
        note = f"passive: {table} (no subnets configured to poke)"
    elif method == "none":
        note = f"nothing to poke with (no bash /dev/udp, python3 or ping); passive {table}"
    else:
        note = f"unprivileged: poked with {method}, then {table}"
    for scope in scopes:
        found = to_sightings(entries, [scope] if good else [], seen_at=seen_at)
        results.append(
            SourceResult(
                host=host,
                source=NEIGH,
                scope=scope,
                sightings=tuple(found),
                started_at=started,
                elapsed_s=elapsed,
                privileged=False,
                note=note,
            )
        )
    return results
