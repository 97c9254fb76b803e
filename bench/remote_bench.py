"""``catkeeper --json`` over ssh with real latency, against scripted virsh over the same links.

On the test driver (json_bench.py) the cost is CPU; over a real network every per-VM call
costs a round trip. Here a real libvirtd (the system one) holds N defined (shut off) ``ckt-``
domains; one private sshd on 127.0.0.1 fronts it, and M latency relays (tests/daemons.py
``DelayRelay``, each chunk held ``--delay`` ms in each direction) in front of that sshd make M
"hosts": M independent ssh connections with real round trips. They all list the same
libvirtd, so every host shows the same N domains. Traffic stays on loopback. The domains are
undefined at the end, also on Ctrl-C. Not a test: nothing here passes or fails.

Figures (best of ``--repeat``):

* ``catkeeper --json`` as a subprocess (interpreter start included), for all M hosts and for
  one host; "hosts in parallel" = M x 1-host time / fleet time (M when the fleet costs what
  its slowest host costs, 1 when hosts add up); one host again with 4x ``workers_per_host``,
  since the per-domain ``XMLDesc`` round trips are what latency multiplies;
* the scripted virsh loop people write (``virsh list --all --name``, then one ``virsh
  domiflist`` and one ``virsh dominfo`` process per VM, each a new ssh connection), timed
  through one relay on ``--sample`` VMs and extrapolated to N (``--full``: every VM), then
  x M for the fleet, since such a script visits hosts one after another (virsh runs with
  ``-k 0``: see ``Virsh``);
* one virsh process running every command as a ';'-separated batch over one connection:
  what connection reuse alone buys, without parallel calls.

    python bench/remote_bench.py                      # 8 hosts x 200 VMs, 10 ms each way
    python bench/remote_bench.py --hosts 20 --delay 25 --full
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TypeVar
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.daemons

from catkeeper.config import Timing
from tests.daemons import (
    DelayRelay,
    DomainFactory,
    LibvirtDaemon,
    SshServer,
    ensure_libvirtd,
    unique_domain_name,
)


@dataclass(frozen=True)
class Relay:
    """One "host": a relay port in front of the shared sshd."""

    name: str
    port: int


def write_known_hosts(path: Path, sshd: SshServer, relays: list[Relay]) -> None:
    """Host key lines for ``[127.0.0.1]:PORT`` of every relay: what clients connect to."""
    path.write_text("".join(f"[127.0.0.1]:{r.port} {sshd.host_key_line}\n" for r in relays))


def write_config(
    path: Path, relays: list[Relay], key: Path, known_hosts: Path, workers: int | None
) -> Path:
    lines = ["hosts:"]
    for r in relays:
        lines += [
            f"  - name: {r.name}",
            "    uri: qemu:///system",
            "    ssh:",
            "      host: 127.0.0.1",
            f"      port: {r.port}",
            "      user: root",
            f"      key: {key}",
            f"      known_hosts: {known_hosts}",
        ]
    if workers is not None:
        lines += ["timing:", f"  workers_per_host: {workers}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def time_catkeeper(cfg: Path, repeat: int) -> tuple[float, dict[str, int], list[str]]:
    """Best seconds, VMs per host, and hosts that were not up (should be none)."""
    best = float("inf")
    per_host: dict[str, int] = {}
    trouble: list[str] = []
    argv = [sys.executable, "-m", "catkeeper", "--config", str(cfg), "--json"]
    for _ in range(repeat):
        started = time.perf_counter()
        out = subprocess.run(
            [*argv, "--log", os.devnull], capture_output=True, text=True, check=False
        )
        elapsed = time.perf_counter() - started
        if out.returncode != 0 and not out.stdout:
            raise RuntimeError(f"catkeeper --json exited {out.returncode}: {out.stderr[-2000:]}")
        best = min(best, elapsed)
        doc = json.loads(out.stdout)
        per_host = {}
        for vm in doc["vms"]:
            per_host[vm["host"]] = per_host.get(vm["host"], 0) + 1
        trouble = [
            f"{h['name']}: {h['state']} {h.get('error') or ''}".strip()
            for h in doc["hosts"]
            if h["state"] != "up"
        ]
    return best, per_host, trouble


def time_imports(repeat: int) -> float:
    """What every ``catkeeper --json`` run pays before its first packet."""
    code = "import catkeeper.cli, catkeeper.headless, catkeeper.backend.fleet, asyncssh, libvirt"
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        best = min(best, time.perf_counter() - started)
    return best


def libssh_uri(relay: Relay, key: Path, known_hosts: Path) -> str:
    """virsh's own ssh client (libssh), told which known_hosts and key to use.

    Not ``qemu+ssh://…?no_verify=1``: that still writes ``~/.ssh/known_hosts``.
    """
    query = "&".join(
        (
            f"known_hosts={quote(str(known_hosts))}",
            "known_hosts_verify=normal",
            "sshauth=privkey",
            f"keyfile={quote(str(key))}",
        )
    )
    return f"qemu+libssh://root@127.0.0.1:{relay.port}/system?{query}"


class Virsh:
    """virsh against one URI; each call timed on its own.

    ``-k 0`` (no client keepalive): libvirt 9.0's virsh over libssh here dies of SIGSEGV
    (in g_main_loop_quit, from the client's I/O loop) about every other time a call is in
    flight when the 5-second keepalive timer fires; without keepalive it ran clean. A
    one-shot script loses nothing by it: keepalive only sends pings. Should virsh still die
    of a signal, the call is run again and counted; only the attempt that answered is timed.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.crashes = 0

    def __call__(self, *args: str) -> tuple[str, float]:
        for _attempt in range(3):
            started = time.perf_counter()
            out = subprocess.run(
                ["virsh", "-q", "-k", "0", "-c", self.uri, *args], capture_output=True, text=True
            )
            elapsed = time.perf_counter() - started
            if out.returncode >= 0:
                break
            self.crashes += 1
        if out.returncode != 0:
            raise RuntimeError(f"virsh {args[0]} exited {out.returncode}: {out.stderr.strip()}")
        return out.stdout, elapsed


def time_virsh_loop(virsh: Virsh, names: list[str], sample: int | None) -> tuple[float, int, float]:
    """Seconds for one host's loop (extrapolated when sampled), VMs visited, and the list's
    share of it."""
    text, list_time = virsh("list", "--all", "--name")
    listed = [n for n in text.splitlines() if n]
    chosen = names[:sample] if sample else names
    spent = 0.0
    for name in chosen:
        spent += virsh("domiflist", name)[1]
        spent += virsh("dominfo", name)[1]
    per_vm = spent / max(1, len(chosen))
    return list_time + per_vm * len(listed), len(chosen), list_time


def time_virsh_batch(virsh: Virsh, names: list[str], sample: int | None) -> tuple[float, int]:
    """Seconds for one virsh process doing the whole loop as a ';'-separated batch."""
    chosen = names[:sample] if sample else names
    text, base = virsh("list", "--all", "--name")  # connect + list: what the batch pays once
    listed = [n for n in text.splitlines() if n]
    batch = "list --all --name; " + "; ".join(f"domiflist {n}; dominfo {n}" for n in chosen)
    elapsed = virsh(batch)[1]
    per_vm = max(0.0, elapsed - base) / max(1, len(chosen))
    return base + per_vm * len(listed), len(chosen)


T = TypeVar("T", bound=tuple[float, ...])


def best_of(repeat: int, fn: Callable[[], T]) -> T:
    """The result with the fewest seconds (its first item) of ``repeat`` runs."""
    return min((fn() for _ in range(repeat)), key=lambda result: result[0])


@contextlib.contextmanager
def interrupts_as_exceptions() -> Iterator[None]:
    """SIGTERM ends the run like Ctrl-C does, so the clean-up below always runs."""

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def uninterruptible() -> Iterator[None]:
    """A second Ctrl-C must not cut the clean-up short (that would leak domains)."""
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def run(args: argparse.Namespace, tmp: Path) -> None:
    daemon: LibvirtDaemon | None = None
    factory: DomainFactory | None = None
    sshd: SshServer | None = None
    relays: list[DelayRelay] = []
    try:
        started = time.perf_counter()
        daemon = ensure_libvirtd()
        factory = DomainFactory(daemon)
        names = []
        for _ in range(args.vms):
            dom = factory(name=unique_domain_name())
            names.append(dom.name())
        setup = time.perf_counter() - started
        (tmp / "sshd").mkdir()
        sshd = SshServer(tmp / "sshd").start()
        for _ in range(args.hosts):
            relays.append(DelayRelay(sshd.port, delay=args.delay / 1000).start())
        hosts = [Relay(f"relay{i + 1}", r.port) for i, r in enumerate(relays)]
        known_hosts = tmp / "known_hosts"
        write_known_hosts(known_hosts, sshd, hosts)
        key = sshd.client_key
        workers = args.workers if args.workers is not None else Timing().workers_per_host
        fleet_cfg = write_config(tmp / "fleet.yaml", hosts, key, known_hosts, args.workers)
        one_cfg = write_config(tmp / "one.yaml", hosts[:1], key, known_hosts, args.workers)
        sample = None if args.full else args.sample

        before = sshd.connections()
        fleet_s, per_host, trouble = time_catkeeper(fleet_cfg, args.repeat)
        ssh_per_run = (sshd.connections() - before) / args.repeat
        one_s, one_per_host, one_trouble = time_catkeeper(one_cfg, args.repeat)
        more = 4 * workers
        more_cfg = write_config(tmp / "more.yaml", hosts[:1], key, known_hosts, more)
        more_s, _, more_trouble = time_catkeeper(more_cfg, args.repeat)
        imports_s = time_imports(args.repeat)
        virsh = Virsh(libssh_uri(hosts[0], key, known_hosts))
        loop_host, loop_seen, list_s = best_of(
            args.repeat, lambda: time_virsh_loop(virsh, names, sample)
        )
        batch_host, batch_seen = best_of(
            args.repeat, lambda: time_virsh_batch(virsh, names, sample)
        )

        listed = one_per_host.get(hosts[0].name, 0)
        m = args.hosts
        rtt = 2 * args.delay
        floor = listed / workers * rtt / 1000

        def how(seen: int) -> str:
            return "every VM" if sample is None else f"{seen} VMs timed, rest extrapolated"

        def row(label: str, value: float, unit: str, note: str) -> None:
            print(f"  {label:<36}{value:8.2f} {unit}   {note}".rstrip())

        print(
            f"{m} hosts x {listed} VMs over ssh, {args.delay:g} ms each way "
            f"(a round trip >= {rtt:g} ms); best of {args.repeat}"
        )
        print(
            f"  (every host is its own relay and ssh connection in front of the same sshd and "
            f"libvirtd,\n   so all list the same domains; {args.vms} defined for this run, "
            f"set-up {setup:.1f} s; {os.cpu_count()} cores)"
        )
        row(
            f"catkeeper --json, {m} hosts",
            fleet_s,
            "s",
            f"({sum(per_host.values())} VMs; {ssh_per_run:g} ssh connections a run)",
        )
        row("catkeeper --json, 1 host", one_s, "s", f"(workers_per_host {workers})")
        row("  of which interpreter + imports", imports_s, "s", "")
        row(
            "  per-domain XMLDesc at best",
            floor,
            "s",
            f"({listed} VMs / {workers} workers x {rtt:g} ms)",
        )
        row(
            f"catkeeper --json, 1 host, {more} workers",
            more_s,
            "s",
            f"(workers_per_host {more}: per-domain round trips overlap more)",
        )
        row(
            "hosts in parallel",
            m * one_s / fleet_s,
            "x",
            f"({m} x 1-host time / fleet time; {m}: the fleet costs what its slowest host costs)",
        )
        row(
            "virsh loop, 1 host",
            loop_host,
            "s",
            f"(a virsh process, so an ssh connection, per call; {how(loop_seen)})",
        )
        row("  of which virsh list --all --name", list_s, "s", "(one process)")
        row(f"virsh loop, {m} hosts one by one", m * loop_host, "s", f"(1-host x {m})")
        row(
            "virsh batch, 1 host",
            batch_host,
            "s",
            f"(one virsh process, one connection; {how(batch_seen)})",
        )
        row(f"virsh batch, {m} hosts one by one", m * batch_host, "s", f"(1-host x {m})")
        row(
            "ratio virsh loop / catkeeper",
            m * loop_host / fleet_s,
            "x",
            f"({m} hosts; 1 host: {loop_host / one_s:.1f} x)",
        )
        row(
            "ratio virsh batch / catkeeper",
            m * batch_host / fleet_s,
            "x",
            f"({m} hosts; 1 host: {batch_host / one_s:.1f} x)",
        )
        if virsh.crashes:
            print(f"  NOTE virsh died of a signal {virsh.crashes} time(s); those calls were rerun")
        for line in trouble + one_trouble + more_trouble:
            print(f"  NOTE host not up: {line}")
    finally:
        with uninterruptible():
            # sshd first: its end closes the relayed connections from the far side, so the
            # relays stop with nothing in flight.
            if sshd is not None:
                sshd.stop()
            time.sleep(2 * args.delay / 1000)
            for relay in relays:
                with contextlib.suppress(Exception):
                    relay.stop()
            if factory is not None:
                factory.close()  # undefines every domain defined above
            # Leave the daemon alone unless this run started it: stop() of a reused one may
            # end a libvirtd another session started (the last user out ends it).
            if daemon is not None and daemon.started:
                daemon.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=200, help="domains to define (default 200)")
    parser.add_argument("--hosts", type=int, default=8, help="relays = hosts (default 8)")
    parser.add_argument(
        "--delay", type=float, default=10.0, help="ms each relay holds a chunk, each way"
    )
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--sample", type=int, default=20, help="VMs the virsh peers visit")
    parser.add_argument("--full", action="store_true", help="virsh peers visit every VM")
    parser.add_argument(
        "--workers", type=int, default=None, help="catkeeper's workers_per_host (default: its own)"
    )
    args = parser.parse_args()
    for tool in ("virsh", "libvirtd", "/usr/sbin/sshd"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing: scripts/bootstrap test", file=sys.stderr)
            return 1
    with (
        interrupts_as_exceptions(),
        tempfile.TemporaryDirectory(prefix="ck-remote-bench-") as tmp,
    ):
        try:
            run(args, Path(tmp))
        except KeyboardInterrupt:
            print("interrupted; the domains defined here are undefined again", file=sys.stderr)
            return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
