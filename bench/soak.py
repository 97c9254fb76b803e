"""Soak: the real TUI left open on a big fleet with faults, churn and IP scans, sampled each second.

What runs (all on this machine; traffic only to loopback and to a network namespace made here):

* a real ``libvirtd`` (reused if one answers, else started; ``tests/daemons.py``) serves
  ``--hosts`` test-driver node files of ``--vms`` VMs each (``catkeeper.demo.fleetgen``), opened
  as ``test+unix:///abs/node.xml?socket=…`` (the driver's memory is in libvirtd, not in
  catkeeper) or over ssh as ``test+ssh://root@127.0.0.1:PORT/abs/node.xml`` through a private
  sshd; every host but the "healthy" ones is behind a relay (a unix-socket relay in front of
  libvirtd's socket, ``soak_relay.py``, or ``DelayRelay`` in front of sshd) that adds 5 ms
  each way and the host's fault;
* one fault kind per host (``--faults``, cycled over the hosts): ``blackhole`` (accepts, never
  answers), ``refused``, ``slow`` (2 s round trip), ``flap`` (refused 30 s, fine 30 s, over and
  over), ``ssh-reset`` (every ssh connection aborted), ``ssh`` and ``healthy`` (no fault);
  each faulted host gets fault windows of ``--fault-seconds`` through the busy phase, staggered;
  plus one ``libvirtd`` restart mid-run, only if this run started libvirtd (never one it did
  not start; only one libvirtd can run here);
* churn from a second client (plain libvirt-python) on one more host, ``churn``, served as
  ``test+unix:///default`` (a file-backed test host is private to each connection, so another
  client's changes can only be seen on the shared ``/default`` instance): lifecycle changes
  and reservation writes (raw ``setMetadata`` in catkeeper's namespace) at ``--churn-rate``,
  and every 5 s a define or undefine whose appearance in the status line's VM count is timed
  (a change by another client → on screen);
* background IP queries as a user has them (``ipscan:`` libvirt queries every 60 s, sweeps
  every ``--sweep-interval`` s); every host's subnet is a /24 on a veth pair whose far end is
  in a network namespace made here, with one macvlan "guest" per host answering ARP with a
  real guest MAC of that host, so sweeps send nothing anywhere else (``--no-sweep``: off);
* the real ``catkeeper`` binary in tmux (own ``-L`` socket, one control-mode client), with
  ``CATKEEPER_LOOPLAG`` set (``catkeeper/looplag.py`` logs a 50 ms timer's lateness).

Every second: the loop lag (max and p99 of that second's ticks), one keystroke in the ``/``
bar → the screen showing it (send-keys, then capture-pane until the bar's text is in the
status line, from a process of its own; keys only in the busy and tail phases), threads /
fds / sockets / RSS / CPU of the catkeeper process from /proc, and the host strip's states.
Phases: ``load`` (launch → every row on screen), ``busy`` (faults, churn, keys), ``tail``
(faults healed, churn and keys go on: recovery), ``idle`` (nothing changes, no keys: idle
CPU). Writes ``soak.csv``, ``soak.png``, ``events.csv``, ``summary.txt`` (and the config,
catkeeper's log and the lag log) into ``--out`` and prints the summary against the goals of
issue 11. Not a test: nothing here passes or fails the build. Cleans up what it started
(tmux server, sshd, relays, namespace, churn domains, libvirtd only if it started it), also
on Ctrl-C.

    bench/run soak                                     # 3 min, 6 hosts x 300 VMs
    bench/run soak --minutes 30 --hosts 20 --vms 500   # the real figure
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import csv
import dataclasses
import ipaddress
import json
import math
import os
import random
import re
import select
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.daemons
sys.path.insert(0, str(Path(__file__).resolve().parent))  # for soak_relay, soak_judge

import libvirt  # noqa: E402
from soak_judge import FaultEvent, Recovery, recoveries  # noqa: E402
from soak_relay import RelayLoop, UnixRelay  # noqa: E402

from catkeeper.backend.reservations.metadata import NAMESPACE, PREFIX, Record, record_to_string  # noqa: E402
from catkeeper.config import IpScan, Timing  # noqa: E402
from catkeeper.demo.fleetgen import write_fleet  # noqa: E402
from catkeeper.model import Reservation  # noqa: E402
from tests.daemons import (  # noqa: E402
    LIBVIRT_SOCKET,
    DaemonError,
    DelayRelay,
    LibvirtDaemon,
    SshServer,
    ensure_libvirtd,
)

KINDS = ("healthy", "blackhole", "ssh-reset", "refused", "slow", "flap", "ssh")
RELAY_DELAY = 0.005  # seconds each way on every relayed host outside its fault
SLOW_DELAY = 1.0  # each way: a 2 s round trip
FLAP_SECONDS = 30.0
CHURN_POOL = 12  # domains the churn client starts, stops, pauses and reserves
PROBE_EVERY = 5  # seconds between define/undefine visibility probes
KEY_TIMEOUT = 5.0  # a keystroke not on screen by then counts as this long (and a miss)
WORDS = ("ubuntu", "k8s", "debian", "runner", "rocky", "test")
DEFAULT_URI = f"test+unix:///default?socket={LIBVIRT_SOCKET}"
GOALS = {
    "lag_p99_ms": 50.0,
    "lag_max_ms": 250.0,
    "key_p95_ms": 50.0,
    "rss_mb": 150.0,
    "idle_cpu_pct": 3.0,
    "visible_s": 1.0,
}
STATE_GLYPHS = {"●": "up", "◌": "connecting", "▲": "degraded", "✖": "unreachable"}
_CHIP = re.compile(r"([●◌▲✖]) (\S+) ")
_COUNT = re.compile(r"(\d+)/(\d+) VMs")

libvirt.registerErrorHandler(lambda *_a: None, None)


def mono() -> float:
    return time.monotonic()


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# --------------------------------------------------------------------------- tmux


def end_child(proc: subprocess.Popen[Any]) -> None:
    """End a child that reads commands on stdin: close it, then kill it if it lingers."""
    with contextlib.suppress(OSError):
        assert proc.stdin is not None
        proc.stdin.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    if proc.poll() is None:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)  # a teardown step that raised here left later steps undone


class Tmux:
    """A private tmux server (``-L``) with one session and one control-mode client.

    Commands go through the control client (a capture costs ~0.05 ms instead of a 2 ms
    fork/exec), so polling the screen does not itself load the machine.
    """

    def __init__(self, name: str, width: int, height: int) -> None:
        self.name = name
        self.base = ["tmux", "-L", name, "-f", "/dev/null"]
        self.width, self.height = width, height
        self.ctl: subprocess.Popen[bytes] | None = None
        self.server_pid: int | None = None  # known once started (not for a probe's attach)
        self._buf = b""
        self._serial = 0

    def start(self, command: str) -> None:
        subprocess.run(
            [*self.base, "new-session", "-d", "-s", "soak", "-x", str(self.width),
             "-y", str(self.height), command],
            check=True, timeout=10,
        )  # fmt: skip
        subprocess.run([*self.base, "set", "-g", "remain-on-exit", "on"], check=True, timeout=10)
        self.attach()
        self.server_pid = self._number("server-pid", "#{pid}")

    def attach(self) -> None:
        """A control-mode client of this server's session (several may be attached)."""
        self.ctl = subprocess.Popen(
            [*self.base, "-C", "attach", "-t", "soak"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
        )
        # Attaching answers with a block of its own: send a token and read up to its answer,
        # from then on every command's answer is the next block.
        self.sync()
        self._write("refresh-client -f no-output")  # no %output stream: we only capture
        # tmux 3.3 sometimes answers around the attach with one more empty block: sync again,
        # or every later answer would be the one before it.
        self.sync()

    def sync(self) -> None:
        """Read answers up to the one for a fresh token: the next command's answer is its own."""
        self._serial += 1
        token = f"sync-{os.getpid()}-{self._serial}"
        self._write(f"display -p {token}")
        while token not in "".join(self._block()):
            pass

    def _write(self, line: str) -> None:
        assert self.ctl is not None and self.ctl.stdin is not None
        self.ctl.stdin.write(line.encode() + b"\n")

    def _block(self, timeout: float = 5.0) -> list[str]:
        """The next %begin … %end block's lines (notifications in between are skipped)."""
        assert self.ctl is not None and self.ctl.stdout is not None
        deadline = mono() + timeout
        out: list[str] = []
        inside = False
        fd = self.ctl.stdout.fileno()
        while True:
            while b"\n" not in self._buf:
                left = deadline - mono()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    raise TimeoutError("tmux did not answer")
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise EOFError("tmux control client ended")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\n", 1)
            text = raw.decode("utf-8", "replace")
            if text.startswith("%begin"):
                inside, out = True, []
            elif inside and (text.startswith("%end") or text.startswith("%error")):
                return out
            elif inside:
                out.append(text)

    def cmd(self, line: str, timeout: float = 5.0) -> list[str]:
        """One tmux command through the control client; its output lines."""
        self._write(line)
        return self._block(timeout)

    def capture(self) -> list[str]:
        return self.cmd("capture-pane -p -t soak")

    def send(self, key: str, literal: bool = False) -> None:
        self.cmd(f"send-keys -t soak {'-l ' if literal else ''}{shlex.quote(key)}")

    def pane_pid(self) -> int:
        return self._number("pane-pid", "#{pane_pid}")

    def _number(self, tag: str, fmt: str) -> int:
        """A number tmux formats, read past any stray empty block (see ``attach``)."""
        self._write(f"display -p -t soak '{tag}={fmt}'")
        while True:
            for text in self._block():
                if text.startswith(f"{tag}="):
                    return int(text.removeprefix(f"{tag}="))

    def kill(self) -> None:
        if self.ctl is not None:
            end_child(self.ctl)
            self.ctl = None
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=10)
        # Twice a server outlived kill-server, waiting for a control client that outlived
        # the soak: the server is ours, so it ends by its PID if it is still there.
        if self.server_pid is not None:
            deadline = mono() + 5
            while mono() < deadline and proc_sample(self.server_pid) is not None:
                time.sleep(0.1)
            if proc_sample(self.server_pid) is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.server_pid, signal.SIGKILL)
        # tmux leaves its socket file behind: /tmp/tmux-UID/NAME (or $TMUX_TMPDIR).
        tmpdir = os.environ.get("TMUX_TMPDIR", "/tmp")
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(tmpdir, f"tmux-{os.getuid()}", self.name))


PEER_APP = """\
# The keystroke probe's peer: a bare Textual app with an Input and a status line like
# catkeeper's, so the same probe measures what Textual + tmux + the harness cost alone.
from textual.app import App
from textual.widgets import Input, Static


class Peer(App[None]):
    def compose(self):
        yield Static("", id="pad")
        yield Input(id="entry")
        yield Static("0/0 VMs", id="status")

    def on_input_changed(self, event):
        extra = f" · /{event.value}" if event.value else ""
        self.query_one("#status", Static).update(f"0/0 VMs{extra}")


Peer().run()
"""


def key_script() -> Iterator[tuple[str, str]]:
    """(key, filter text after it): type a word letter by letter, then erase it."""
    while True:
        for word in WORDS:
            for i in range(1, len(word) + 1):
                yield word[i - 1], word[:i]
            for i in range(len(word) - 1, -1, -1):
                yield "BSpace", word[:i]


class KeyProbe:
    """The keystroke probe in a process of its own (``soak.py --key-probe TMUX W H``), with
    its own control client of the same tmux session.

    In the soak's own process the probe shared the GIL with the relays' event loop, the
    churn thread and the sampler, which could notice a key on screen late: keys of
    60-120 ms came in seconds when catkeeper's loop was idle (likely that, not proven)."""

    def __init__(self, tmux: Tmux) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--key-probe", tmux.name, str(tmux.width),
             str(tmux.height)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )  # fmt: skip

    def keystroke(self, key: str, text: str) -> float | None:
        """``time_key`` in the probe's process."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{key}\t{text}\n")
        answer = self.proc.stdout.readline().strip()
        return float(answer) if answer not in ("", "miss") else None

    def close(self) -> None:
        end_child(self.proc)


def serve_key_probe(name: str, width: int, height: int) -> int:
    """The probe process: one ``KEY\\tTEXT`` a line in, milliseconds (or ``miss``) out."""
    tmux = Tmux(name, width, height)
    tmux.attach()
    try:
        for line in sys.stdin:
            key, _, text = line.rstrip("\n").partition("\t")
            ms = time_key(tmux, key, text)
            print("miss" if ms is None else f"{ms:.3f}", flush=True)
    finally:
        # Its own client only: the soak ends the server. A client left attached can keep a
        # killed server waiting for it (seen once: both outlived the soak).
        if tmux.ctl is not None:
            end_child(tmux.ctl)
    return 0


def time_key(tmux: Tmux, key: str, text: str) -> float | None:
    """Milliseconds from sending ``key`` to ``text`` showing as the filter; None: not within
    KEY_TIMEOUT."""
    t0 = mono()
    tmux.send(key, literal=key != "BSpace")
    while mono() - t0 < KEY_TIMEOUT:
        if Screen(tmux.capture()).shows_filter(text):
            return (mono() - t0) * 1000
        time.sleep(0.001)
    return None


def peer_keystrokes(name: str, command: str, size: tuple[int, int], keys: int) -> list[float]:
    """Milliseconds per keystroke → screen for a peer in a tmux of its own (same probe)."""
    tmux = Tmux(name, *size)
    times: list[float] = []
    try:
        tmux.start(command)
        deadline = mono() + 20
        while mono() < deadline and not Screen(tmux.capture()).shows_filter(""):
            time.sleep(0.05)
        script = key_script()
        for _ in range(keys):
            ms = time_key(tmux, *next(script))
            if ms is not None:
                times.append(ms)
            time.sleep(0.2)
    finally:
        tmux.kill()
    return times


# --------------------------------------------------------------------------- /proc


@dataclass
class ProcSample:
    threads: int
    fds: int
    sockets: int
    rss_mb: float
    cpu_ticks: int
    children: int
    children_rss_mb: float = 0.0


def proc_sample(pid: int) -> ProcSample | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if "VmRSS" not in fields:  # a zombie: it has exited
        return None
    sockets = 0
    for fd in fds:
        with contextlib.suppress(OSError):
            sockets += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    rest = stat[stat.rindex(")") + 2 :].split()
    kids: list[str] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            kids += Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
    # Its children's work is catkeeper's too (the sweep process, libvirt's ssh): CPU of the
    # live ones plus what reaped ones used (cutime + cstime), and their memory apart.
    kid_ticks, kid_kb = 0, 0
    for kid in kids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            kstat = Path(f"/proc/{kid}/stat").read_text()
            krest = kstat[kstat.rindex(")") + 2 :].split()
            kid_ticks += int(krest[11]) + int(krest[12])
            for line in Path(f"/proc/{kid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    kid_kb += int(line.split()[1])
    return ProcSample(
        threads=int(fields["Threads"]),
        fds=len(fds),
        sockets=sockets,
        rss_mb=int(fields["VmRSS"].split()[0]) / 1024,
        # utime + stime, + cutime + cstime, + the live children's
        cpu_ticks=sum(int(rest[i]) for i in (11, 12, 13, 14)) + kid_ticks,
        children=len(kids),
        children_rss_mb=kid_kb / 1024,
    )


class LagReader:
    """Reads the new lines of catkeeper's loop-lag log (``MONOTONIC LAG_MS``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def read(self) -> list[tuple[float, float]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return []
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        out = []
        for line in lines:
            parts = line.split()
            if len(parts) == 2:
                out.append((float(parts[0]), float(parts[1])))
        return out


# --------------------------------------------------------------------------- screen


@dataclass
class Screen:
    lines: list[str]

    def counts(self) -> tuple[int, int] | None:
        for line in reversed(self.lines):
            m = _COUNT.search(line)
            if m:
                return int(m.group(1)), int(m.group(2))
        return None

    def status_line(self) -> str:
        for line in reversed(self.lines):
            if _COUNT.search(line):
                return line
        return ""

    def host_states(self) -> dict[str, str]:
        states: dict[str, str] = {}
        for line in self.lines[:6]:  # the strip is at the top, at most 5 lines
            for glyph, name in _CHIP.findall(line + " "):
                states[name] = STATE_GLYPHS[glyph]
        return states

    def shows_filter(self, text: str) -> bool:
        status = self.status_line()
        if not text:
            return bool(status) and " · /" not in status
        return re.search(rf" · /{re.escape(text)}(?: · |\s*$)", status) is not None


# --------------------------------------------------------------------------- hosts


@dataclass
class HostSpec:
    name: str
    kind: str
    node: Path
    uri: str = ""
    unix_relay: UnixRelay | None = None
    tcp_relay: DelayRelay | None = None
    windows: list[tuple[float, float]] = field(default_factory=list)  # busy-relative seconds
    mac: str | None = None

    @property
    def relayed(self) -> bool:
        return self.unix_relay is not None or self.tcp_relay is not None


def first_mac(node: Path) -> str | None:
    m = re.search(r"<mac address=['\"]([0-9a-f:]{17})['\"]", node.read_text())
    return m.group(1) if m else None


def checkpoint(minutes: float) -> tuple[float, float]:
    """Busy-relative seconds with no fault anywhere, ending just after the reference sample
    (minute 5 of 30): resources there and at the end are compared like for like, every host
    up. Long enough before it for the slowest backoff (64 s) to reconnect."""
    ref = minutes * 60 / 6
    return (ref - 75.0, ref + 10.0)


def fault_windows(
    kind: str,
    index: int,
    n_faulted: int,
    busy: float,
    length: float,
    quiet: tuple[float, float] | None = None,
) -> list[tuple[float, float]]:
    """Busy-relative (start, end) windows: staggered over hosts, repeating every period,
    cut short (or left out) where they would reach into the ``quiet`` checkpoint."""
    windows = _fault_windows(kind, index, n_faulted, busy, length)
    if quiet is None:
        return windows
    out = []
    for start, end in windows:
        if end < quiet[0] or start > quiet[1]:
            out.append((start, end))
        elif start < quiet[0] - 10 and kind not in ("flap", "ssh-reset"):
            out.append((start, quiet[0]))
    return out


def _fault_windows(
    kind: str, index: int, n_faulted: int, busy: float, length: float
) -> list[tuple[float, float]]:
    if kind in ("healthy", "ssh"):
        return []
    if kind == "flap":
        out, t = [], 5.0 + (index % 2) * FLAP_SECONDS / 2
        while t + FLAP_SECONDS <= busy:
            out.append((t, t + FLAP_SECONDS))
            t += 2 * FLAP_SECONDS
        return out
    period = max(2 * length, 60.0)
    # Staggered so that every host's first window fits even in a short run.
    span = max(0.0, min(period, busy - length - 5.0))
    start = 5.0 + span * index / max(1, n_faulted)
    out = []
    while True:
        end = start if kind == "ssh-reset" else start + length
        if end > busy:
            return out
        out.append((start, end))
        start += period


# --------------------------------------------------------------------------- guest network


class GuestNet:
    """A veth pair: this end (in the root namespace) holds .1 of a free /24, the other end is
    in a namespace of ours with one macvlan per "guest" (a real guest MAC from the fleet),
    so catkeeper's sweeps of that /24 reach only our namespace."""

    def __init__(self, tag: str) -> None:
        self.ns = f"cksoak{tag}"
        self.here = f"cks{tag}a"[:15]
        self.there = f"cks{tag}b"[:15]
        self.subnet = ""
        self.made: list[str] = []

    @staticmethod
    def _ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)

    def _free_subnet(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        text = subprocess.run(
            ["ip", "-4", "route", "show", "table", "all"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout + subprocess.run(
            ["ip", "-4", "-o", "addr"], capture_output=True, text=True, timeout=10, check=True
        ).stdout  # fmt: skip
        used = [
            ipaddress.ip_network(m, strict=False)
            for m in re.findall(r"\b(\d+\.\d+\.\d+\.\d+/\d+)", text)
        ]
        for third in range(213, 250):
            net = ipaddress.ip_network(f"10.{third}.0.0/24")
            if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
                return net
        raise DaemonError("no free 10.x.0.0/24 for the guest network")

    def create(self, macs: Sequence[str]) -> str:
        net = self._free_subnet()
        hosts = list(net.hosts())
        self._ip("netns", "add", self.ns)
        self.made.append("ns")
        self._ip("link", "add", self.here, "type", "veth", "peer", "name", self.there)
        self.made.append("veth")
        self._ip("link", "set", self.there, "netns", self.ns)
        self._ip("addr", "add", f"{hosts[0]}/{net.prefixlen}", "dev", self.here)
        self._ip("link", "set", self.here, "up")
        self._ip("-n", self.ns, "link", "set", "lo", "up")
        self._ip("-n", self.ns, "link", "set", self.there, "up")
        for i, mac in enumerate(macs[:200]):
            g = f"g{i}"
            self._ip("-n", self.ns, "link", "add", "link", self.there, "name", g, "type",
                     "macvlan", "mode", "bridge")  # fmt: skip
            self._ip("-n", self.ns, "link", "set", g, "address", mac)
            self._ip("-n", self.ns, "addr", "add", f"{hosts[10 + i]}/{net.prefixlen}", "dev", g)
            self._ip("-n", self.ns, "link", "set", g, "up")
        self.subnet = str(net)
        return self.subnet

    def destroy(self) -> None:
        if "veth" in self.made:
            subprocess.run(["ip", "link", "del", self.here], capture_output=True, timeout=10)
        if "ns" in self.made:
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=10)
        self.made.clear()


# --------------------------------------------------------------------------- churn


def churn_domain_xml(name: str, mac: str) -> str:
    return (
        f"<domain type='test'><name>{name}</name><memory unit='MiB'>256</memory>"
        "<vcpu>1</vcpu><os><type>hvm</type></os><devices>"
        f"<interface type='network'><source network='default'/><mac address='{mac}'/>"
        "</interface></devices></domain>"
    )


def churn_mac(pool: str, i: int) -> str:
    return f"52:54:00:5a:{0xC0 if pool == 'c' else 0xD0:02x}:{i % 256:02x}"


def open_default() -> libvirt.virConnect:
    return libvirt.open(DEFAULT_URI)


class Churn(threading.Thread):
    """Lifecycle changes and reservation writes from a second client, at ``rate`` per second.

    Bounded: stops at ``stop`` or after ``max_ops``. Reconnects after libvirtd restarts
    (the ``/default`` instance then starts afresh, so the pool is defined again).
    """

    def __init__(self, rate: float, max_ops: int, seed: int) -> None:
        super().__init__(name="soak-churn", daemon=True)
        self.rate = rate
        self.max_ops = max_ops
        self.rng = random.Random(seed)
        self.stop_event = threading.Event()
        self.active = threading.Event()
        self.ops: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.revision = 0

    @staticmethod
    def pool(conn: libvirt.virConnect) -> list[libvirt.virDomain]:
        """The churn domains, defined where missing (a restarted libvirtd forgot them)."""
        doms = []
        for i in range(CHURN_POOL):
            name = f"cksoak-c-{i:02d}"
            try:
                doms.append(conn.lookupByName(name))
            except libvirt.libvirtError:
                doms.append(conn.defineXML(churn_domain_xml(name, churn_mac("c", i))))
        return doms

    def _reserve(self, dom: libvirt.virDomain) -> None:
        now = time.time()
        self.revision += 1
        release = self.rng.random() < 0.3
        res = None if release else Reservation("churn", f"soak write {self.revision}", now,
                                               now + 3600, revision=self.revision)  # fmt: skip
        record = Record(self.revision, res, "churn", now, "released" if release else "reserved")
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
        if dom.isActive():
            flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
        dom.setMetadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT, record_to_string(record), PREFIX, NAMESPACE, flags
        )

    def run(self) -> None:
        conn: libvirt.virConnect | None = None
        doms: list[libvirt.virDomain] = []
        done = 0
        while not self.stop_event.is_set() and done < self.max_ops:
            if not self.active.wait(0.5):
                continue
            try:
                if conn is None:
                    conn = open_default()
                    doms = self.pool(conn)
                dom = self.rng.choice(doms)
                state = dom.state()[0]
                if self.rng.random() < 0.4:
                    op = "reservation"
                    self._reserve(dom)
                elif state == libvirt.VIR_DOMAIN_RUNNING:
                    op = self.rng.choice(("destroy", "suspend"))
                    (dom.destroy if op == "destroy" else dom.suspend)()
                elif state == libvirt.VIR_DOMAIN_PAUSED:
                    op = "resume"
                    dom.resume()
                else:
                    op = "start"
                    dom.create()
                self.ops[op] = self.ops.get(op, 0) + 1
                done += 1
            except libvirt.libvirtError as exc:
                key = (exc.get_error_message() or "error")[:60]
                self.errors[key] = self.errors.get(key, 0) + 1
                with contextlib.suppress(libvirt.libvirtError):
                    if conn is not None and not conn.isAlive():
                        conn = None
                if conn is None:
                    self.stop_event.wait(1.0)
            self.stop_event.wait(1.0 / self.rate)
        if conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()


def remove_soak_domains(conn: libvirt.virConnect) -> int:
    """Undefine every ``cksoak-`` domain on the shared /default test instance."""
    removed = 0
    with contextlib.suppress(libvirt.libvirtError):
        for dom in conn.listAllDomains():
            if dom.name().startswith("cksoak-"):
                with contextlib.suppress(libvirt.libvirtError):
                    if dom.isActive():
                        dom.destroy()
                with contextlib.suppress(libvirt.libvirtError):
                    dom.undefine()
                    removed += 1
    return removed


# --------------------------------------------------------------------------- the run


@dataclass
class Options:
    hosts: int
    vms: int
    minutes: float
    idle_s: float
    tail_s: float
    fault_s: float
    faults: tuple[str, ...]
    churn_rate: float
    sweep_interval: float
    libvirt_interval: float
    no_sweep: bool
    backoff_max: float | None
    width: int
    height: int
    out: Path
    restart_libvirtd: bool
    seed: int
    src: Path | None
    slow_ms: float | None = None


@dataclass
class Event:
    t: float  # seconds since launch
    host: str
    what: str
    detail: str = ""


@dataclass
class Row:
    t: float
    phase: str
    threads: int | None = None
    fds: int | None = None
    sockets: int | None = None
    rss_mb: float | None = None
    cpu_pct: float | None = None
    children: int | None = None
    children_rss_mb: float | None = None
    lag_n: int = 0
    lag_max_ms: float | None = None
    lag_mean_ms: float | None = None
    key_ms: float | None = None
    visible_ms: float | None = None
    vms_total: int | None = None
    hosts_up: int | None = None
    hosts_down: int | None = None
    faults: str = ""


class Soak:
    def __init__(self, opts: Options) -> None:
        self.o = opts
        self.tag = str(os.getpid())
        self.out = opts.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.timing = Timing()
        if opts.backoff_max is not None:
            self.timing = dataclasses.replace(self.timing, backoff_max=opts.backoff_max)
        self.ipscan = IpScan(
            libvirt_interval=opts.libvirt_interval,
            sweep_interval=0.0 if opts.no_sweep else opts.sweep_interval,
        )
        self.stack = contextlib.ExitStack()
        self.daemon: LibvirtDaemon | None = None
        self.sshd: SshServer | None = None
        self.relays: RelayLoop | None = None
        self.net: GuestNet | None = None
        self.tmux: Tmux | None = None
        self.pid: int | None = None
        self.key_probe: KeyProbe | None = None
        self.specs: list[HostSpec] = []
        self.events: list[Event] = []
        self.rows: list[Row] = []
        self.lags: list[tuple[float, float, str]] = []  # (t, lag ms, phase)
        self.keys: list[tuple[float, float, str]] = []  # (t, ms, phase)
        self.key_misses = 0
        self.visible: list[tuple[float, float]] = []  # (t, seconds)
        self.visible_misses = 0
        self.states: dict[str, list[tuple[float, str]]] = {}
        self.t0 = 0.0
        self.load_s: float | None = None
        self.expected_total = 0
        self.notes: list[str] = []
        self.churn: Churn | None = None
        self.restart_thread: threading.Thread | None = None
        self.restart_window: tuple[float, float | None] | None = None
        self.probe_conn: libvirt.virConnect | None = None
        self.holder: libvirt.virConnect | None = None
        self.probe_names: list[str] = []
        self.key_text = ""
        self.key_script = key_script()
        self.peers: dict[str, list[float]] = {}
        self.reopen_s: float | None = None  # measure_reopen()
        self.phase = "load"

    # ---- set-up ---------------------------------------------------------------------------

    def now(self) -> float:
        return mono() - self.t0

    def event(self, host: str, what: str, detail: str = "") -> None:
        self.events.append(Event(round(self.now(), 2), host, what, detail))

    def setup(self) -> None:
        o = self.o
        self.daemon = ensure_libvirtd()
        who = "started by this run" if self.daemon.started else "already running (reused)"
        log(f"libvirtd {who}")
        nodes = write_fleet(self.out / "fleet", o.hosts, o.vms, seed=o.seed)
        self.expected_total = o.hosts * o.vms
        kinds = [o.faults[i % len(o.faults)] for i in range(o.hosts)]
        self.relays = RelayLoop()
        if any(k.startswith("ssh") for k in kinds):
            (self.out / "sshd").mkdir(exist_ok=True)
            self.sshd = SshServer(self.out / "sshd").start()
        known_hosts = self.out / "known_hosts"
        kh_lines = []
        wrapper = self.out / "ssh-wrap"
        if self.sshd is not None:
            wrapper.write_text(
                "#!/bin/sh\n# libvirt's ssh transport, told which known_hosts to trust\n"
                f"exec ssh -F none -o UserKnownHostsFile={known_hosts} "
                "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes "
                '-o ServerAliveInterval=0 "$@"\n'
            )
            wrapper.chmod(0o755)
        faulted = [i for i, k in enumerate(kinds) if k not in ("healthy", "ssh")]
        busy = self.busy_seconds()
        for i, (node, kind) in enumerate(zip(nodes, kinds, strict=True)):
            spec = HostSpec(f"h{i + 1:02d}-{kind}", kind, node, mac=first_mac(node))
            if kind.startswith("ssh"):
                assert self.sshd is not None
                spec.tcp_relay = DelayRelay(self.sshd.port, delay=RELAY_DELAY).start()
                port = spec.tcp_relay.port
                kh_lines.append(f"[127.0.0.1]:{port} {self.sshd.host_key_line}\n")
                spec.uri = (
                    f"test+ssh://root@127.0.0.1:{port}{node}?keyfile={self.sshd.client_key}"
                    f"&known_hosts={known_hosts}&command={wrapper}"
                )
            elif kind == "healthy":
                spec.uri = f"test+unix://{node}?socket={LIBVIRT_SOCKET}"
            else:
                path = str(self.out / f"relay-{i + 1:02d}.sock")
                spec.unix_relay = UnixRelay(self.relays, path, str(LIBVIRT_SOCKET), RELAY_DELAY)
                spec.unix_relay.start()
                spec.uri = f"test+unix://{node}?socket={path}"
            n = faulted.index(i) if i in faulted else 0
            quiet = checkpoint(o.minutes)
            spec.windows = fault_windows(
                kind, n, len(faulted), busy, o.fault_s, quiet if quiet[0] > 0 else None
            )
            self.specs.append(spec)
        known_hosts.write_text("".join(kh_lines))
        # The churn host: the shared /default test instance (see the module docstring).
        # libvirtd frees /default when its last connection closes: hold one for the whole run.
        self.holder = open_default()
        remove_soak_domains(self.holder)
        Churn.pool(self.holder)  # defined before the launch: part of the table to load
        self.expected_total += len(self.holder.listAllDomains())
        subnet = None
        if not o.no_sweep or o.libvirt_interval:
            self.net = GuestNet(self.tag)
            try:
                macs = [s.mac for s in self.specs if s.mac]
                subnet = self.net.create(macs)
                log(f"guest network {subnet} on {self.net.here} → netns {self.net.ns}")
            except (subprocess.CalledProcessError, DaemonError) as exc:
                err = getattr(exc, "stderr", "") or exc
                self.notes.append(f"no guest network ({err}): sweeps off")
                self.net.destroy()
                self.net = None
                self.ipscan = dataclasses.replace(self.ipscan, sweep_interval=0.0)
        self.write_config(subnet)

    def busy_seconds(self) -> float:
        return max(30.0, self.o.minutes * 60 - self.o.idle_s - self.o.tail_s)

    def write_config(self, subnet: str | None) -> None:
        lines = ["# written by bench/soak.py", "owner: soak", "hosts:"]
        for spec in self.specs:
            lines += [f"  - name: {spec.name}", f"    uri: {json.dumps(spec.uri)}"]
            if subnet:
                lines.append(f"    subnets: [{subnet}]")
        lines += ["  - name: churn", f"    uri: {json.dumps(DEFAULT_URI)}"]
        if subnet:
            lines.append(f"    subnets: [{subnet}]")
        lines.append("timing:")
        lines += [f"  {f.name}: {getattr(self.timing, f.name)}" for f in dataclasses.fields(Timing)]
        lines.append("ipscan:")
        lines += [f"  {f.name}: {getattr(self.ipscan, f.name)}" for f in dataclasses.fields(IpScan)]
        (self.out / "config.yaml").write_text("\n".join(lines) + "\n")

    def measure_peers(self) -> None:
        """The same keystroke probe on a bare Textual Input, in its own tmux, before launch."""
        peer = self.out / "peer_app.py"
        peer.write_text(PEER_APP)
        command = shlex.join(["exec", "env", "TERM=xterm-256color", sys.executable, str(peer)])
        size = (self.o.width, self.o.height)
        self.peers["bare Textual Input"] = peer_keystrokes(
            f"cksoak-{self.tag}-peer", command, size, 40
        )

    def measure_reopen(self, rounds: int = 3) -> None:
        """How long libvirtd takes to open every host's node file at once (the median of
        ``rounds``), before launch: what a restart costs any client before a retry schedule
        matters (soak_judge.recoveries' ``reopen_s``)."""
        uris = [f"test+unix://{s.node}?socket={LIBVIRT_SOCKET}" for s in self.specs]
        if not uris:
            return
        times = []
        with concurrent.futures.ThreadPoolExecutor(len(uris)) as pool:
            for _ in range(rounds):
                started = mono()
                conns = list(pool.map(libvirt.openReadOnly, uris))
                times.append(mono() - started)
                for conn in conns:
                    conn.close()
                del conns
        self.reopen_s = statistics.median(times)
        log(f"libvirtd opens the {len(uris)} node files at once in {self.reopen_s:.2f} s "
            f"(median of {rounds}: {', '.join(f'{t:.2f}' for t in times)})")  # fmt: skip

    def launch(self) -> None:
        o = self.o
        # The installed script, or `python -m catkeeper` from another source tree (a clean
        # worktree of main, say, while the working tree holds changes in progress).
        # What the installed script does (catkeeper.cli.main), plus faulthandler into a file:
        # Textual draws on stderr, so a crash's tracebacks could not go there.
        launcher = self.out / "launch_catkeeper.py"
        launcher.write_text(
            "import faulthandler, sys\n"
            f"faulthandler.enable(open({str(self.out / 'faulthandler.log')!r}, 'a'), "
            "all_threads=True)\n"
            "from catkeeper.cli import main\n"
            "sys.exit(main())\n"
        )
        exe = [sys.executable, str(launcher)]
        src = [f"PYTHONPATH={o.src}"] if o.src is not None else []
        slow = [f"CATKEEPER_LOOPLAG_SLOW={o.slow_ms:g}"] if o.slow_ms is not None else []
        lag = self.out / "looplag.log"
        lag.unlink(missing_ok=True)
        (self.out / "catkeeper.log").unlink(missing_ok=True)
        command = " ".join(
            shlex.quote(a)
            for a in [
                "exec", "env", f"CATKEEPER_LOOPLAG={lag}", "TERM=xterm-256color", *src, *slow,
                *exe, "--config", str(self.out / "config.yaml"),
                "--log", str(self.out / "catkeeper.log"),
            ]
        )  # fmt: skip
        self.tmux = Tmux(f"cksoak-{self.tag}", o.width, o.height)
        self.t0 = mono()
        self.tmux.start(command)
        self.key_probe = KeyProbe(self.tmux)
        self.pid = self.tmux.pane_pid()
        self.lag_reader = LagReader(lag)
        self.event("-", "launch", f"catkeeper pid {self.pid}")
        log(f"catkeeper pid {self.pid} in tmux -L cksoak-{self.tag} (attach to watch)")

    # ---- faults ---------------------------------------------------------------------------

    def schedule(self, busy_start: float) -> list[tuple[float, HostSpec, bool]]:
        out = []
        for spec in self.specs:
            for start, end in spec.windows:
                out.append((busy_start + start, spec, True))
                if spec.kind != "ssh-reset":
                    out.append((busy_start + end, spec, False))
        return sorted(out, key=lambda e: e[0])

    def apply(self, spec: HostSpec, on: bool) -> None:
        relay = spec.unix_relay
        if spec.kind == "ssh-reset":
            assert spec.tcp_relay is not None
            spec.tcp_relay.close_connections()
            self.event(spec.name, "fault-start", "ssh connections aborted")
            self.event(spec.name, "fault-end", "ssh-reset (instant)")
            return
        assert relay is not None
        if spec.kind == "blackhole":
            relay.blackhole = on
        elif spec.kind in ("refused", "flap"):
            relay.refuse() if on else relay.accept()
        elif spec.kind == "slow":
            relay.delay = SLOW_DELAY if on else RELAY_DELAY
        self.event(spec.name, "fault-start" if on else "fault-end", spec.kind)

    def heal_all(self) -> None:
        for spec in self.specs:
            if spec.unix_relay is not None:
                spec.unix_relay.blackhole = False
                spec.unix_relay.accept()
                spec.unix_relay.delay = RELAY_DELAY

    def restart_libvirtd(self) -> None:
        assert self.daemon is not None
        # owned: this run or another soak/test session started it (restart() waits until
        # this run is its only user); a daemon started by anyone else is never restarted.
        if not (self.o.restart_libvirtd and self.daemon.owned):
            why = (
                "--no-restart" if not self.o.restart_libvirtd
                else "libvirtd was not started by a soak or the tests (never restart it)"
            )  # fmt: skip
            self.notes.append(f"libvirtd restart skipped: {why}")
            return

        def run() -> None:
            assert self.daemon is not None
            start = self.now()
            self.restart_window = (start, None)
            self.event("*", "fault-start", "libvirtd restart")
            try:
                took = self.daemon.restart(timeout=60, busy_timeout=10)
                self.event("*", "fault-end", f"libvirtd answered after {took:.1f} s")
            except DaemonError as exc:
                self.event("*", "fault-end", f"libvirtd restart skipped: {exc}")
                self.notes.append(f"libvirtd restart skipped: {exc}")
            self.restart_window = (start, self.now())
            self.probe_conn = None
            with contextlib.suppress(libvirt.libvirtError):
                old, self.holder = self.holder, open_default()  # /default starts afresh
                if old is not None:
                    with contextlib.suppress(libvirt.libvirtError):
                        old.close()

        self.restart_thread = threading.Thread(target=run, name="soak-restart", daemon=True)
        self.restart_thread.start()

    # ---- probes ---------------------------------------------------------------------------

    def keystroke(self) -> float | None:
        assert self.tmux is not None and self.key_probe is not None
        key, text = next(self.key_script)
        ms = self.key_probe.keystroke(key, text)
        if ms is not None:
            self.key_text = text
            return ms
        self.key_misses += 1
        self.event("-", "key-miss", f"{key!r} → {text!r} not on screen in {KEY_TIMEOUT:g} s")
        if self.key_misses <= 3:  # what was on screen instead, to tell why
            shot = self.out / f"key-miss-{self.key_misses}.txt"
            shot.write_text("\n".join(self.tmux.capture()) + "\n")
        if self.key_misses % 3 == 0:  # something took the focus: reopen the bar, start over
            self.tmux.send("Escape")
            time.sleep(0.2)
            self.tmux.send("/", literal=True)
            time.sleep(0.5)
            self.key_script = key_script()
        return None

    def visibility(self, total_before: int | None) -> float | None:
        """Define or undefine a domain on /default; seconds until the VM count changes."""
        assert self.tmux is not None
        if total_before is None:
            return None
        try:
            if self.probe_conn is None:
                self.probe_conn = open_default()
            t0 = mono()
            if len(self.probe_names) < 3 or (len(self.probe_names) < 8 and random.random() < 0.5):
                name = f"cksoak-p-{len(self.probe_names):02d}-{int(self.now())}"
                mac = churn_mac("p", len(self.probe_names) + int(self.now()))
                self.probe_conn.defineXML(churn_domain_xml(name, mac))
                self.probe_names.append(name)
            else:
                name = self.probe_names.pop(0)
                self.probe_conn.lookupByName(name).undefine()
        except libvirt.libvirtError as exc:
            self.probe_conn = None
            self.event("churn", "probe-error", str(exc)[:100])
            return None
        while mono() - t0 < 5.0:
            counts = Screen(self.tmux.capture()).counts()
            if counts is not None and counts[1] != total_before:
                return mono() - t0
            time.sleep(0.002)
        self.visible_misses += 1
        self.event("churn", "visible-miss", f"{name} not counted on screen within 5 s")
        return None

    # ---- the loop -------------------------------------------------------------------------

    def note_states(self, screen: Screen) -> dict[str, str]:
        states = screen.host_states()
        t = self.now()
        for name, state in states.items():
            hist = self.states.setdefault(name, [])
            if not hist or hist[-1][1] != state:
                hist.append((round(t, 2), state))
        return states

    def watch_strip(self, until: float) -> None:
        """Until ``until``: read the host strip every 0.1 s (recovery times to 0.1 s).

        A capture is tmux's work, not catkeeper's: it does not load the process measured.
        """
        assert self.tmux is not None
        while (left := until - mono()) > 0:
            time.sleep(min(0.1, left))
            if self.phase != "load":
                self.note_states(Screen(self.tmux.capture()))

    def run(self) -> None:
        o = self.o
        assert self.tmux is not None and self.pid is not None
        ticks = os.sysconf("SC_CLK_TCK")
        last = proc_sample(self.pid)
        last_t = mono()
        load_deadline = 120 + self.expected_total / 50  # bounded even if the table never fills
        busy_start = tail_start = idle_start = end = math.inf
        plan: list[tuple[float, HostSpec, bool]] = []
        restart_at = math.inf
        tick = 0
        next_tick = mono() + 1.0
        while True:
            self.watch_strip(next_tick)
            next_tick += 1.0
            tick += 1
            t = self.now()
            # ---- phases
            if self.phase == "load" and (t > load_deadline or self.load_s is not None):
                if self.load_s is None:
                    self.notes.append(f"table not complete after {load_deadline:.0f} s")
                self.phase = "busy"
                busy_start = t
                tail_start = busy_start + self.busy_seconds()
                idle_start = tail_start + o.tail_s
                end = idle_start + o.idle_s
                plan = self.schedule(busy_start)
                restart_at = busy_start + self.busy_seconds() / 2
                self.event("-", "phase", "busy: faults, churn, keys")
                log(f"busy for {self.busy_seconds():.0f} s, tail {o.tail_s:.0f} s, "
                    f"idle {o.idle_s:.0f} s")  # fmt: skip
                self.tmux.send("/", literal=True)
                time.sleep(0.5)  # a key typed within ms of "/" reaches the table, not the bar
                self.churn = Churn(
                    o.churn_rate, int(o.churn_rate * o.minutes * 60 * 1.2) + 10, o.seed
                )
                self.churn.active.set()
                self.churn.start()
            elif self.phase == "busy" and t >= tail_start:
                self.phase = "tail"
                self.heal_all()
                self.event("-", "phase", "tail: faults healed, churn and keys go on")
                log("tail: every fault healed")
            elif self.phase == "tail" and t >= idle_start:
                self.phase = "idle"
                assert self.churn is not None
                self.churn.active.clear()
                self.event("-", "phase", "idle: no churn, no faults, no keys")
                log("idle")
            elif self.phase == "idle" and t >= end:
                break
            while plan and plan[0][0] <= t and self.phase == "busy":
                _, spec, on = plan.pop(0)
                self.apply(spec, on)
            if t >= restart_at:
                restart_at = math.inf
                self.restart_libvirtd()
            # ---- samples
            row = Row(t=round(t, 2), phase=self.phase)
            sample = proc_sample(self.pid)
            now = mono()
            if sample is None:
                how = ""
                with contextlib.suppress(Exception):
                    how = " ".join(self.tmux.cmd(
                        "display -p -t soak 'status #{pane_dead_status} signal #{pane_dead_signal}'"
                    ))  # fmt: skip
                self.notes.append(
                    f"catkeeper (pid {self.pid}) EXITED at {t:.0f} s ({how}); "
                    f"tracebacks, if any: {self.out / 'faulthandler.log'}"
                )
                self.event("-", "exit", "catkeeper exited")
                break
            row.threads, row.fds, row.sockets = sample.threads, sample.fds, sample.sockets
            row.rss_mb, row.children = round(sample.rss_mb, 1), sample.children
            row.children_rss_mb = round(sample.children_rss_mb, 1)
            if last is not None:
                # A child that ended unreaped takes its ticks along for a moment: never < 0.
                used = max(0, sample.cpu_ticks - last.cpu_ticks) / ticks
                row.cpu_pct = round(100 * used / max(1e-3, now - last_t), 1)
            last, last_t = sample, now
            lags = [ms for _m, ms in self.lag_reader.read()]
            if lags:
                row.lag_n, row.lag_max_ms = len(lags), round(max(lags), 1)
                row.lag_mean_ms = round(statistics.fmean(lags), 2)
                self.lags += [(t, ms, self.phase) for ms in lags]
            screen = Screen(self.tmux.capture())
            counts = screen.counts()
            states = self.note_states(screen)
            if counts is not None:
                row.vms_total = counts[1]
                if self.load_s is None and counts[1] >= self.expected_total:
                    self.load_s = t
                    self.event("-", "loaded", f"{counts[1]} VMs on screen")
                    log(f"table complete: {counts[1]} VMs after {t:.1f} s")
            row.hosts_up = sum(s == "up" for s in states.values())
            row.hosts_down = sum(s == "unreachable" for s in states.values())
            row.faults = " ".join(
                s.name.split("-", 1)[0] for s in self.specs
                if any(busy_start + a <= t < busy_start + b for a, b in s.windows)
            )  # fmt: skip
            if self.phase in ("busy", "tail"):
                ms = self.keystroke()
                row.key_ms = round(ms, 1) if ms is not None else None
                if ms is not None:
                    self.keys.append((t, ms, self.phase))
                restarting = self.restart_window is not None and (
                    self.restart_window[1] is None or t - self.restart_window[1] < 20
                )
                if tick % PROBE_EVERY == 0 and not restarting:
                    seen = self.visibility(counts[1] if counts else None)
                    if seen is not None:
                        row.visible_ms = round(seen * 1000, 1)
                        self.visible.append((t, seen))
            self.rows.append(row)
            if tick % 30 == 0:
                log(
                    f"t={t:5.0f}s {self.phase:5} threads {row.threads} fds {row.fds} "
                    f"rss {row.rss_mb:.0f} MB cpu {row.cpu_pct}% lag max {row.lag_max_ms} ms "
                    f"key {row.key_ms} ms up {row.hosts_up}/{len(states)}"
                )

    # ---- teardown -------------------------------------------------------------------------

    def teardown(self) -> None:
        steps: list[tuple[str, Any]] = []
        churn, restart = self.churn, self.restart_thread
        if churn is not None:
            churn.stop_event.set()
            steps.append(("churn", lambda: churn.join(10)))
        if restart is not None:
            steps.append(("restart", lambda: restart.join(90)))
        if self.tmux is not None:
            steps.append(("tmux", self._end_tmux))
        for spec in self.specs:
            if spec.unix_relay is not None:
                steps.append((f"relay {spec.name}", spec.unix_relay.stop))
            if spec.tcp_relay is not None:
                steps.append((f"relay {spec.name}", spec.tcp_relay.stop))
        if self.relays is not None:
            steps.append(("relay loop", self.relays.stop))
        if self.sshd is not None:
            steps.append(("sshd", self.sshd.stop))
        if self.net is not None:
            steps.append(("guest network", self.net.destroy))
        if self.probe_conn is not None:
            steps.append(("probe conn", self.probe_conn.close))
        if self.holder is not None:
            holder = self.holder
            steps.append(("soak domains", lambda: remove_soak_domains(holder)))
            steps.append(("holder conn", holder.close))
        if self.daemon is not None:
            steps.append(("libvirtd", self._leave_libvirtd))
        for what, fn in steps:
            try:
                fn()
            except Exception as exc:
                log(f"cleanup {what}: {type(exc).__name__}: {exc}")

    def _end_tmux(self) -> None:
        assert self.tmux is not None
        with contextlib.suppress(Exception):
            Path(self.out / "last-screen.txt").write_text("\n".join(self.tmux.capture()) + "\n")
        if self.key_probe is not None:
            self.key_probe.close()
        self.tmux.kill()  # the pane's catkeeper gets SIGHUP
        if self.pid is not None:
            deadline = mono() + 10
            while mono() < deadline and proc_sample(self.pid) is not None:
                time.sleep(0.1)
            if proc_sample(self.pid) is not None:  # ours: we started it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)

    def _leave_libvirtd(self) -> None:
        # The last user out ends it if a soak or the tests started it (reused from an earlier
        # soak that left first included: it used to stay behind); anyone else's is left alone.
        assert self.daemon is not None
        self.daemon.stop()

    # ---- results --------------------------------------------------------------------------

    def write_csv(self) -> Path:
        path = self.out / "soak.csv"
        names = [f.name for f in dataclasses.fields(Row)]
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(names)
            for row in self.rows:
                w.writerow(["" if (v := getattr(row, n)) is None else v for n in names])
        with open(self.out / "events.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t", "host", "what", "detail"])
            for e in self.events:
                w.writerow([e.t, e.host, e.what, e.detail])
        return path

    def recoveries(self, reopen: bool = True) -> list[Recovery]:
        """Each fault end's verdict (soak_judge.py); ``reopen``: a restart's bound includes
        the daemon's own reopen time (``measure_reopen``)."""
        events = [FaultEvent(e.t, e.host, e.what, e.detail) for e in self.events]
        kinds = {s.name: s.kind for s in self.specs}
        if self.churn is not None:
            kinds["churn"] = "churn"
        last_t = self.rows[-1].t if self.rows else 0.0
        reopen_s = (self.reopen_s or 0.0) if reopen else 0.0
        return recoveries(events, self.states, kinds, self.timing, last_t, reopen_s)

    def at(self, t: float, attr: str, window: float = 5.0) -> float | None:
        vals = [
            float(v) for r in self.rows
            if abs(r.t - t) <= window and (v := getattr(r, attr)) is not None
        ]  # fmt: skip
        return statistics.median(vals) if vals else None

    def summary(self) -> str:
        o = self.o
        rows = self.rows
        lines: list[str] = []
        add = lines.append
        total = self.expected_total
        add(f"catkeeper soak — {time.strftime('%Y-%m-%d %H:%M')} — catkeeper {git_rev(o.src)}")
        add(
            f"{o.hosts} hosts x {o.vms} VMs + churn host = {total} VMs; {o.minutes:g} min after "
            f"load (busy {self.busy_seconds():.0f} s, tail {o.tail_s:.0f} s, idle {o.idle_s:.0f}"
            f" s); faults: {', '.join(sorted({s.kind for s in self.specs}))}; churn "
            f"{o.churn_rate:g}/s; ipscan libvirt every {self.ipscan.libvirt_interval:g} s, sweep "
            f"every {self.ipscan.sweep_interval:g} s; terminal {o.width}x{o.height}"
        )
        done = f"table complete after {self.load_s:.1f} s" if self.load_s else "INCOMPLETE"
        add(f"load: {done}")
        after = [ms for t, ms, ph in self.lags if ph != "load"]
        add("")
        add(f"{'goal':44} {'measured':>30}  verdict")

        def line(goal: str, measured: str, ok: bool | None) -> None:
            add(f"{goal:44} {measured:>30}  {'n/a' if ok is None else 'ok' if ok else 'MISS'}")

        p99, mx = pct(after, 0.99), max(after, default=math.nan)
        line("loop lag p99 < 50 ms (after load)", f"{p99:.1f} ms (n={len(after)})",
             p99 < GOALS["lag_p99_ms"] if after else None)  # fmt: skip
        line("loop lag max < 250 ms", f"{mx:.0f} ms", mx < GOALS["lag_max_ms"] if after else None)
        for ph in ("busy", "tail", "idle"):
            v = [ms for _t, ms, p in self.lags if p == ph]
            if v:
                add(f"  {ph:6} lag p50 {pct(v, .5):6.1f}  p99 {pct(v, .99):6.1f}  "
                    f"max {max(v):6.0f} ms")  # fmt: skip
        load_lag = [ms for _t, ms, p in self.lags if p == "load"]
        if load_lag:
            add(f"  (load   lag p99 {pct(load_lag, .99):6.1f}  max {max(load_lag):6.0f} ms, "
                "not counted)")  # fmt: skip
        k = [ms for _t, ms, _p in self.keys]
        kp95 = pct(k + [KEY_TIMEOUT * 1000] * self.key_misses, 0.95)
        line("keystroke → / bar on screen p95 < 50 ms",
             f"p50 {pct(k, .5):.0f} p95 {kp95:.0f} max {max(k, default=math.nan):.0f} ms",
             kp95 < GOALS["key_p95_ms"] if k else None)  # fmt: skip
        add(f"  ({len(k)} keys, {self.key_misses} not on screen within {KEY_TIMEOUT:g} s, "
            "counted as that long)")  # fmt: skip
        for peer, times in self.peers.items():
            add(f"  peer, same probe: {peer}: p50 {pct(times, .5):.0f} p95 {pct(times, .95):.0f} "
                f"max {max(times, default=math.nan):.0f} ms (n={len(times)})")  # fmt: skip
        ref_t = (self.load_s or 0) + o.minutes * 60 * 5 / 30
        end_t = rows[-1].t if rows else 0
        for attr, label, slack in (
            ("threads", "threads", 2),
            ("fds", "open fds", 2),
            ("sockets", "sockets", 2),
        ):
            a, b = self.at(ref_t, attr), self.at(end_t - 5, attr)
            if a is None or b is None:
                line(f"{label} flat (end <= ref + {slack})", "no samples", None)
                continue
            peak = max((getattr(r, attr) or 0) for r in rows)
            line(f"{label} at {ref_t / 60:.1f} min → end: within +{slack}",
                 f"{a:.0f} → {b:.0f} (peak {peak})", b <= a + slack)  # fmt: skip
        up_ref, up_end = self.at(ref_t, "hosts_up", window=1.0), self.at(end_t - 5, "hosts_up")
        add(f"  hosts up at {ref_t / 60:.1f} min: {up_ref}; at the end: {up_end} "
            "(no fault in the minute before the reference sample: like for like)")  # fmt: skip
        if self.load_s is not None:
            kinds = ("threads", "fds", "sockets")
            base = {a: self.at(self.load_s + 2, a, window=1.5) for a in kinds}
            end = {a: self.at(end_t - 5, a) for a in base}
            add("  like for like (every host up, no fault): right after load → end: "
                + ", ".join(f"{a} {base[a]:.0f} → {end[a]:.0f}" for a in base
                            if base[a] is not None and end[a] is not None))  # fmt: skip
        a, b = self.at(ref_t, "rss_mb"), self.at(end_t - 5, "rss_mb")
        if a is not None and b is not None:
            line(f"RSS at {ref_t / 60:.1f} min → end: within 5 %",
                 f"{a:.0f} → {b:.0f} MB ({100 * (b - a) / a:+.1f} %)", b <= a * 1.05)  # fmt: skip
        peak_rss = max((r.rss_mb or 0) for r in rows) if rows else math.nan
        line("RSS < 150 MB (peak)", f"{peak_rss:.0f} MB", peak_rss < GOALS["rss_mb"])
        kids_rss = max((r.children_rss_mb or 0) for r in rows) if rows else math.nan
        add(f"  (its child processes — the sweep process, libvirt's ssh — peak {kids_rss:.0f} MB "
            "RSS together; their CPU is in the CPU figures)")  # fmt: skip
        idle = [r.cpu_pct for r in rows if r.phase == "idle" and r.cpu_pct is not None]
        idle = idle[10:] if len(idle) > 20 else idle  # the first seconds still settle
        idle_cpu = statistics.mean(idle) if idle else math.nan
        line("idle CPU < 3 % of a core (mean)", f"{idle_cpu:.1f} % (n={len(idle)} s)",
             idle_cpu < GOALS["idle_cpu_pct"] if idle else None)  # fmt: skip
        busy_cpu = [r.cpu_pct for r in rows if r.phase == "busy" and r.cpu_pct is not None]
        if busy_cpu:
            add(f"  (busy CPU mean {statistics.mean(busy_cpu):.1f} %, max {max(busy_cpu):.0f} %)")
        rec = self.recoveries()
        judged = [r for r in rec if r.after is not None]
        late = [r for r in judged if r.late]
        worst = max(judged, key=lambda r: (r.after or 0) / r.bound, default=None)
        wtext = (
            f"worst {worst.host} {worst.after:.1f}s / {worst.bound:.0f}s"
            if worst is not None and worst.after is not None
            else "no fault ended"
        )
        line("recovery within 2x backoff after a fault", f"{len(late)}/{len(judged)} late; {wtext}",
             not late if judged else None)  # fmt: skip
        if self.reopen_s is not None and any(r.kind == "libvirtd-restart" for r in rec):
            bare = [r for r in self.recoveries(reopen=False) if r.after is not None]
            add(f"  (a libvirtd restart's bound adds the daemon's own time to open all "
                f"{len(self.specs)} node files at once, measured before launch: "
                f"{self.reopen_s:.2f} s; by 2 x backoff alone: "
                f"{sum(r.late for r in bare)}/{len(bare)} "
                "late)")  # fmt: skip
        if len(judged) < len(rec):
            add(f"  ({len(rec) - len(judged)} not judged: another fault came before it was due "
                "back, or it was not up when a restart began; listed below)")  # fmt: skip
        vis = [s for _t, s in self.visible]
        vmax = max(vis, default=math.nan)
        line("other client's change on screen < 1 s",
             f"p50 {pct(vis, .5) * 1000:.0f} max {vmax * 1000:.0f} ms (n={len(vis)})",
             (vmax < GOALS["visible_s"] and not self.visible_misses) if vis else None)  # fmt: skip
        if self.visible_misses:
            add(f"  ({self.visible_misses} changes not on screen within 5 s)")
        add("")
        add("recoveries (host, kind, fault end at, bound = 2 x backoff (+ reopen), recovered "
            "after):")  # fmt: skip
        for r in rec:
            got = "-" if r.after is None else "never" if math.isinf(r.after) else f"{r.after:.1f} s"
            add(f"  {r.host:18} {r.kind:17} t={r.ended_at:6.0f}s  bound {r.bound:5.0f} s  "
                f"{got:>6}  {r.note}")  # fmt: skip
        if self.churn is not None:
            add(f"churn ops: {dict(sorted(self.churn.ops.items()))}")
            if self.churn.errors:
                add(f"churn errors: {dict(sorted(self.churn.errors.items()))}")
        if rows:
            add(
                f"peaks: threads {max(r.threads or 0 for r in rows)}, fds "
                f"{max(r.fds or 0 for r in rows)}, sockets {max(r.sockets or 0 for r in rows)}, "
                f"child processes {max(r.children or 0 for r in rows)}"
            )
        lines.extend(self.slow_callbacks())
        for note in self.notes:
            add(f"note: {note}")
        return "\n".join(lines)

    def slow_callbacks(self, most: int = 12) -> list[str]:
        """The slowest loop callbacks catkeeper logged (``--slow-callbacks``), with when."""
        try:
            text = (self.out / "looplag.log").read_text(errors="replace")
        except OSError:
            return []
        slow = []
        for line in text.splitlines():
            parts = line.split(maxsplit=3)
            if len(parts) == 4 and parts[1] == "slow":
                slow.append((float(parts[2]), float(parts[0]) - self.t0, parts[3]))
        if not slow:
            return []
        out = [f"slow callbacks: {len(slow)} (slowest first, t = seconds since launch):"]
        for took, t, what in sorted(slow, reverse=True)[:most]:
            out.append(f"  {took:7.1f} ms  t={t:7.1f}s  {what}")
        return out

    def plot(self) -> Path | None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            self.notes.append("no matplotlib: no PNG (pip install -e '.[bench]')")
            return None
        rows = self.rows
        t = [r.t / 60 for r in rows]
        faulted = [sp for sp in self.specs if sp.windows] + (
            [HostSpec("churn", "churn", Path())] if self.restart_window else []
        )
        fig, axes = plt.subplots(
            5, 1, figsize=(12, 13), sharex=True,
            gridspec_kw={"height_ratios": [3, 2, 2, 2, max(1.0, 0.25 * len(faulted))]},
        )  # fmt: skip
        ax = axes[0]
        ax.plot(t, [r.lag_max_ms if r.lag_max_ms is not None else math.nan for r in rows],
                lw=0.8, label="loop lag, worst tick of the second")  # fmt: skip
        kt = [x / 60 for x, _ms, _p in self.keys]
        ax.scatter(kt, [ms for _x, ms, _p in self.keys], s=4, c="k", label="keystroke → screen")
        ax.axhline(GOALS["lag_p99_ms"], color="g", ls="--", lw=0.8, label="50 ms")
        ax.axhline(GOALS["lag_max_ms"], color="r", ls="--", lw=0.8, label="250 ms")
        ax.set_yscale("symlog", linthresh=10)
        ax.set_ylim(bottom=0)
        ax.set_ylabel("ms")
        ax.legend(loc="upper right", fontsize=7, ncol=4)
        ax = axes[1]
        ax.plot(t, [r.cpu_pct if r.cpu_pct is not None else math.nan for r in rows], lw=0.8)
        ax.axhline(GOALS["idle_cpu_pct"], color="g", ls="--", lw=0.8, label="3 %")
        ax.set_ylabel("CPU % of a core")
        ax.legend(loc="upper right", fontsize=7)
        ax = axes[2]
        ax.plot(t, [r.rss_mb for r in rows], lw=1.0, color="tab:purple")
        ax.axhline(GOALS["rss_mb"], color="r", ls="--", lw=0.8, label="150 MB")
        ax.set_ylabel("RSS MB")
        ax.legend(loc="lower right", fontsize=7)
        ax = axes[3]
        ax.plot(t, [r.threads for r in rows], lw=1.0, label="threads")
        ax.plot(t, [r.fds for r in rows], lw=1.0, label="open fds")
        ax.plot(t, [r.sockets for r in rows], lw=1.0, label="sockets")
        ax.plot(t, [r.hosts_down for r in rows], lw=0.8, label="hosts unreachable on screen")
        ax.set_ylabel("count")
        ax.legend(loc="upper left", fontsize=7, ncol=4)
        # One row per faulted host: its fault windows (red) and when the strip showed it
        # anything but up (grey), so recoveries can be read off the picture.
        ax = axes[4]
        busy0 = next((r.t for r in rows if r.phase == "busy"), 0.0)
        end_t = rows[-1].t if rows else 0.0
        for y, sp in enumerate(faulted):
            wins = [
                (busy0 + a, max(min(b, end_t - busy0) - a, 0.5))
                for a, b in sp.windows
                if busy0 + a < end_t  # the run may have ended early
            ]
            if sp.name == "churn" and self.restart_window:
                a, b = self.restart_window
                wins = [(a, max((b or end_t) - a, 0.5))]
            ax.broken_barh([(a / 60, w / 60) for a, w in wins], (y + 0.05, 0.4), color="tab:red")
            hist = self.states.get(sp.name, [])
            down = []
            for i, (ts, st) in enumerate(hist):
                if st != "up":
                    nxt = hist[i + 1][0] if i + 1 < len(hist) else end_t
                    down.append((ts / 60, (nxt - ts) / 60))
            ax.broken_barh(down, (y + 0.5, 0.4), color="0.5")
        ax.set_yticks([y + 0.5 for y in range(len(faulted))])
        ax.set_yticklabels([sp.name for sp in faulted], fontsize=7)
        ax.set_ylim(0, max(1, len(faulted)))
        ax.set_title("fault windows (red) and not-up on screen (grey)", fontsize=8, loc="left")
        ax.set_xlabel("minutes since launch")
        colours = {"load": "#dddddd", "busy": "#ffe8cc", "tail": "#e0f0ff", "idle": "#e6ffe6"}
        spans: list[tuple[str, float, float]] = []
        for r in rows:
            if spans and spans[-1][0] == r.phase:
                spans[-1] = (r.phase, spans[-1][1], r.t / 60)
            else:
                spans.append((r.phase, r.t / 60, r.t / 60))
        for a in axes:
            for ph, x0, x1 in spans:
                a.axvspan(x0, x1, color=colours.get(ph, "white"), zorder=0, lw=0)
            a.grid(alpha=0.3)
        for ph, x0, x1 in spans:
            axes[0].text((x0 + x1) / 2, 1.02, ph, transform=axes[0].get_xaxis_transform(),
                         ha="center", fontsize=8)  # fmt: skip
        o = self.o
        fig.suptitle(
            f"catkeeper soak: {o.hosts} hosts x {o.vms} VMs, {o.minutes:g} min, faults + churn "
            f"({time.strftime('%Y-%m-%d')}, {git_rev(o.src)})",
            fontsize=11,
        )
        fig.tight_layout()
        path = self.out / "soak.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return path


def git_rev(src: Path | None = None) -> str:
    """HEAD of the tree catkeeper ran from, and whether its catkeeper/ had changes."""
    tree = src or ROOT
    r = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    rev = r.stdout.strip()
    if not rev:
        stamp = tree / "SOURCE"  # an exported tree (git archive) may say where it came from
        return stamp.read_text().strip() if stamp.exists() else str(tree)
    dirty = subprocess.run(
        ["git", "-C", str(tree), "status", "--porcelain", "--", "catkeeper"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    return f"{rev}{' + uncommitted changes' if dirty else ''}"


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--hosts", type=int, default=6, help="test-driver hosts (default 6)")
    p.add_argument("--vms", type=int, default=300, help="VMs per host (default 300)")
    p.add_argument("--minutes", type=float, default=3.0, help="after the load (default 3)")
    p.add_argument("--idle", type=float, help="idle phase, seconds (default: 20 %%, 30-300)")
    p.add_argument("--tail", type=float, help="recovery tail, seconds (default: 15 %%, 30-180)")
    p.add_argument("--fault-seconds", type=float, help="one fault window (default: 30-120)")
    p.add_argument(
        "--faults",
        default=",".join(KINDS),
        help=f"fault kinds cycled over the hosts (default {','.join(KINDS)})",
    )
    p.add_argument("--churn-rate", type=float, default=2.0, help="churn ops per second")
    p.add_argument("--sweep-interval", type=float, default=120.0, help="background sweeps, s")
    p.add_argument("--libvirt-interval", type=float, default=IpScan.libvirt_interval)
    p.add_argument("--no-sweep", action="store_true", help="no active sweeps (no namespace)")
    p.add_argument("--backoff-max", type=float, help="timing.backoff_max (default catkeeper's)")
    p.add_argument("--no-restart", action="store_true", help="never restart libvirtd")
    p.add_argument(
        "--slow-callbacks",
        type=float,
        metavar="MS",
        help="catkeeper names its loop callbacks that take MS or more (a diagnosis: it times "
        "every callback); the summary lists the slowest",
    )
    p.add_argument("--size", default="200x60", help="terminal WIDTHxHEIGHT")
    p.add_argument("--out", type=Path, help="output directory (default bench/out/soak-DATE)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--catkeeper-src",
        type=Path,
        help="run catkeeper from this source tree (python -m catkeeper with PYTHONPATH=DIR)",
    )
    a = p.parse_args(argv)
    total = a.minutes * 60
    faults = tuple(k.strip() for k in a.faults.split(",") if k.strip())
    unknown = set(faults) - set(KINDS)
    if unknown or not faults:
        p.error(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    if not 1 <= a.hosts <= 255 or a.vms < 1 or total < 60:
        p.error("need 1-255 hosts, >= 1 VM per host and --minutes >= 1")
    idle = a.idle if a.idle is not None else min(300.0, max(30.0, 0.2 * total))
    tail = a.tail if a.tail is not None else min(180.0, max(30.0, 0.15 * total))
    busy = max(30.0, total - idle - tail)
    fault_s = a.fault_seconds if a.fault_seconds is not None else min(120.0, max(30.0, busy / 4))
    width, height = (int(n) for n in a.size.split("x"))
    out = a.out or ROOT / "bench" / "out" / time.strftime("soak-%Y%m%d-%H%M%S")
    return Options(
        hosts=a.hosts, vms=a.vms, minutes=a.minutes, idle_s=idle, tail_s=tail, fault_s=fault_s,
        faults=faults, churn_rate=max(0.1, a.churn_rate), sweep_interval=a.sweep_interval,
        libvirt_interval=a.libvirt_interval, no_sweep=a.no_sweep, backoff_max=a.backoff_max,
        width=width, height=height, out=out.resolve(), restart_libvirtd=not a.no_restart,
        seed=a.seed, src=a.catkeeper_src.resolve() if a.catkeeper_src else None,
        slow_ms=a.slow_callbacks,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--key-probe"]:  # the probe's own process (KeyProbe)
        return serve_key_probe(args[1], int(args[2]), int(args[3]))
    opts = parse_args(argv)
    if os.geteuid() != 0:
        print("soak: needs root (libvirtd, sshd, network namespace)", file=sys.stderr)
        return 2

    def interrupted(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    soak = Soak(opts)
    log(f"output in {opts.out}")
    try:
        soak.setup()
        soak.measure_peers()
        soak.measure_reopen()
        soak.launch()
        soak.run()
    except KeyboardInterrupt:
        soak.notes.append("interrupted: the figures cover only part of the run")
        log("interrupted; cleaning up")
    finally:
        soak.teardown()
    if not soak.rows:
        log("no samples")
        return 1
    csv_path = soak.write_csv()
    png = soak.plot()
    text = soak.summary()
    (opts.out / "summary.txt").write_text(text + "\n")
    print()
    print(text)
    print()
    print(f"CSV: {csv_path}\nevents: {opts.out / 'events.csv'}\nPNG: {png or '(none)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
