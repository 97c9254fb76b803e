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

With ``--ips`` it compares guest-IP costs instead (issue 12), all in the same run, over the
same relays, with ``--running`` of the domains started (tiny diskless TCG guests):

* ``catkeeper --json`` and ``catkeeper --json --ips``, for all M hosts and for one;
* a plain per-VM parallel client: one libvirt connection per host (what ``qemu+ssh://``
  does: OpenSSH and ``virt-ssh-helper``, through the same relays), ``listAllDomains(ACTIVE)``,
  then ``interfaceAddresses(ARP)`` for every running domain from 8 threads per host;
* "addresses on screen" the way the TUI gets them: a fleet with the background IP loop (the
  app's ``IpScanner.start()``), seconds until every host's inventory is in and until every
  host's first IP pass is done;
* the calls per source of one ``catkeeper scan --no-sweep --json`` over the fleet.

``--src DIR`` (repeatable) runs catkeeper from another checkout (``git archive COMMIT | tar
-x -C DIR``), for before/after figures on one set-up.

    python bench/remote_bench.py                      # 8 hosts x 200 VMs, 10 ms each way
    python bench/remote_bench.py --hosts 20 --delay 25 --full
    python bench/remote_bench.py --ips --vms 250 --delay 20   # 8 x 250, half running, 40 ms RTT
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
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


def catkeeper_env(src: Path | None) -> dict[str, str] | None:
    """The environment that makes ``python -m catkeeper`` import ``src``'s catkeeper (run it
    with ``cwd=src`` too: ``-m`` and ``-c`` put the working directory first on the path)."""
    if src is None:
        return None
    return dict(os.environ, PYTHONPATH=str(src.resolve()))


def time_catkeeper(
    cfg: Path, repeat: int, extra: Sequence[str] = (), src: Path | None = None
) -> tuple[float, dict[str, int], list[str]]:
    """Best seconds, VMs per host, and hosts that were not up (should be none)."""
    best = float("inf")
    per_host: dict[str, int] = {}
    trouble: list[str] = []
    argv = [sys.executable, "-m", "catkeeper", "--config", str(cfg), "--json", *extra]
    for _ in range(repeat):
        started = time.perf_counter()
        out = subprocess.run(
            [*argv, "--log", os.devnull],
            capture_output=True,
            text=True,
            check=False,
            env=catkeeper_env(src),
            cwd=src,
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
    code = (
        "import catkeeper.cli, catkeeper.cli.headless, catkeeper.backend.fleet, asyncssh, libvirt"
    )
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


# ---------------------------------------------------------------------------------- --ips


def ssh_ext_uri(relay: Relay, key: Path, known_hosts: Path, tmp: Path) -> str:
    """What ``qemu+ssh://`` does (OpenSSH, then ``virt-ssh-helper`` on the host), with our
    key and known_hosts: a ``qemu+ext`` URI whose command is a small wrapper script.

    Not ``qemu+libssh://`` as for virsh above: eight libssh connections opened from one
    process (threads) hung here in poll(), with nothing on the wire, at 250 VMs.
    """
    script = tmp / f"ssh-{relay.name}"
    ssh = [
        "ssh", "-q", "-T", "-e", "none", "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null", "-i", str(key), "-p", str(relay.port),
        "-l", "root", "127.0.0.1", "virt-ssh-helper", "qemu:///system",
    ]  # fmt: skip
    script.write_text("#!/bin/sh\nexec " + shlex.join(ssh) + "\n")
    script.chmod(0o755)
    return f"qemu+ext:///system?command={quote(str(script))}"


def peer_client(uris: Sequence[str], threads: int) -> dict[str, object]:
    """The plain per-VM client: per host one connection, ``listAllDomains(ACTIVE)``, then
    ``interfaceAddresses(ARP)`` per running domain from ``threads`` threads; hosts side by
    side. Errors are counted, not fatal: SRC_ARP fails on this kernel ("wrong nlmsg len"),
    which still costs the round trip."""
    import libvirt

    libvirt.registerErrorHandler(lambda *_: None, None)
    calls = 0
    errors = 0
    vms = 0
    lock = threading.Lock()

    def host(uri: str) -> None:
        nonlocal calls, errors, vms
        conn = libvirt.open(uri)
        try:
            doms = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)

            def one(dom: libvirt.virDomain) -> bool:
                try:
                    dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP, 0)
                    return True
                except libvirt.libvirtError:
                    return False

            with ThreadPoolExecutor(threads) as pool:
                answers = list(pool.map(one, doms))
            with lock:
                vms += len(doms)
                calls += 1 + len(answers)
                errors += answers.count(False)
        finally:
            conn.close()

    with ThreadPoolExecutor(len(uris)) as pool:
        for job in [pool.submit(host, uri) for uri in uris]:
            job.result()
    return {"hosts": len(uris), "running_vms": vms, "calls": calls, "arp_errors": errors}


def time_peer(uris: Sequence[str], threads: int, repeat: int) -> tuple[float, dict[str, object]]:
    """Best seconds of the peer client as its own process (interpreter start included, as
    for catkeeper), and what it did."""
    argv = [sys.executable, __file__, "--peer-threads", str(threads), "--peer", *uris]
    best, info = float("inf"), {}
    for _ in range(repeat):
        started = time.perf_counter()
        out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
        elapsed = time.perf_counter() - started
        if out.returncode != 0:
            raise RuntimeError(f"peer client exited {out.returncode}: {out.stderr[-2000:]}")
        best, info = min(best, elapsed), json.loads(out.stdout)
    return best, info


TUI_PROBE = """
import asyncio, json, sys, time
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.ipscan.scheduler import IpScanner
from catkeeper.config import load_config

async def main():
    config = load_config(sys.argv[1])
    t0 = time.perf_counter()
    fleet = Fleet(config)
    scanner = IpScanner(fleet, libvirt_interval=3600)
    scanner.start()  # as the app does, before the fleet starts
    await fleet.start()
    await fleet.wait_settled(120)
    table = time.perf_counter() - t0
    names = set(fleet.sessions)
    while set(scanner.last) != names and time.perf_counter() - t0 < 300:
        await asyncio.sleep(0.01)
    ips = time.perf_counter() - t0
    found = sum(1 for vm in fleet.vms() if vm.ips)
    await scanner.aclose()
    await fleet.aclose()
    print(json.dumps({"table_s": table, "ips_s": ips, "vms_with_ips": found}))

asyncio.run(main())
"""


def time_tui_probe(cfg: Path, repeat: int, src: Path | None) -> tuple[float, float]:
    """(seconds until every host's rows are in, until every host's first IP pass is done):
    the backend half of what the TUI shows, with the app's background IP loop."""
    best: tuple[float, float] = (float("inf"), float("inf"))
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", TUI_PROBE, str(cfg)],
            capture_output=True,
            text=True,
            check=False,
            env=catkeeper_env(src),
            cwd=src,
        )
        if out.returncode != 0:
            raise RuntimeError(f"TUI probe exited {out.returncode}: {out.stderr[-2000:]}")
        got = json.loads(out.stdout.strip().splitlines()[-1])
        best = min(best, (got["table_s"], got["ips_s"]), key=lambda t: t[1])
    return best


def scan_calls(cfg: Path, src: Path | None) -> dict[str, dict[str, object]] | None:
    """Calls per source (summed over hosts) of one ``catkeeper scan --no-sweep --json``;
    None when that catkeeper does not report them (before issue 12)."""
    main_options = ["--config", str(cfg), "--log", os.devnull]
    out = subprocess.run(
        [sys.executable, "-m", "catkeeper", *main_options, "scan", "--no-sweep", "--json"],
        capture_output=True,
        text=True,
        check=False,
        env=catkeeper_env(src),
        cwd=src,
    )
    if not out.stdout:
        raise RuntimeError(f"catkeeper scan exited {out.returncode}: {out.stderr[-2000:]}")
    doc = json.loads(out.stdout)
    total: dict[str, dict[str, object]] = {}
    for host in doc["hosts"]:
        if "calls_by_source" not in host:
            return None
        for source, c in host["calls_by_source"].items():
            t = total.setdefault(source, {"calls": 0, "per_vm": 0, "failed": 0, "max_s": 0.0})
            for key in ("calls", "per_vm", "failed"):
                t[key] = int(str(t[key])) + int(c.get(key, 0))
            t["max_s"] = max(float(str(t["max_s"])), float(c["max_s"]))
    return total


def start_some(factory: DomainFactory, names: list[str], running: int) -> float:
    """Start the first ``running`` domains, a few at a time; returns the seconds it took."""
    conn = factory.conn
    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: conn.lookupByName(n).create(), names[:running]))
    return time.perf_counter() - t0


def run_ips(
    args: argparse.Namespace,
    src: Path | None,
    hosts: list[Relay],
    key: Path,
    known_hosts: Path,
    tmp: Path,
    listed_vms: int,
    running: int,
    setup: float,
) -> None:
    fleet_cfg = write_config(tmp / "fleet.yaml", hosts, key, known_hosts, args.workers)
    one_cfg = write_config(tmp / "one.yaml", hosts[:1], key, known_hosts, args.workers)
    m = args.hosts
    rtt = 2 * args.delay
    who = f"catkeeper from {src}" if src else "catkeeper from this checkout"
    print(
        f"guest IPs: {m} hosts x {listed_vms} VMs ({running} running) over ssh, "
        f"{args.delay:g} ms each way (a round trip >= {rtt:g} ms); best of {args.repeat}; {who}"
    )
    print(
        f"  (every host is its own relay and ssh connection in front of the same sshd and "
        f"libvirtd;\n   set-up {setup:.1f} s; {os.cpu_count()} cores)",
        flush=True,
    )

    def row(label: str, value: float, unit: str, note: str = "") -> None:
        print(f"  {label:<44}{value:8.2f} {unit}   {note}".rstrip(), flush=True)

    # Interleaved rounds, best of each: load drifts (other sessions on this machine) hit
    # every figure alike instead of one of them.
    plain = [float("inf")] * 2
    ips = [float("inf")] * 2
    trouble: list[str] = []
    for _ in range(args.repeat):
        for i, cfg in enumerate((fleet_cfg, one_cfg)):
            t, _, bad = time_catkeeper(cfg, 1, src=src)
            plain[i], trouble = min(plain[i], t), trouble + bad
            t, _, bad = time_catkeeper(cfg, 1, ("--ips",), src=src)
            ips[i], trouble = min(ips[i], t), trouble + bad
    row(f"catkeeper --json, {m} hosts", plain[0], "s")
    row(f"catkeeper --json --ips, {m} hosts", ips[0], "s")
    row("catkeeper --json, 1 host", plain[1], "s")
    row("catkeeper --json --ips, 1 host", ips[1], "s")
    row(
        "ratio --ips / no-ips",
        ips[0] / plain[0],
        "x",
        f"({m} hosts; 1 host: {ips[1] / plain[1]:.2f} x; goal <= 1.2)",
    )
    uris = [ssh_ext_uri(h, key, known_hosts, tmp) for h in hosts]
    try:
        peer_s, peer = time_peer(uris, 8, args.repeat)
        peer_one_s, _ = time_peer(uris[:1], 8, args.repeat)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"  per-VM client failed: {exc}", flush=True)
    else:
        row(
            f"per-VM client, {m} hosts",
            peer_s,
            "s",
            f"(8 threads a host, ARP per running VM: {peer['calls']} calls, "
            f"{peer['arp_errors']} failed)",
        )
        row("per-VM client, 1 host", peer_one_s, "s")
        row(
            "ratio --ips / per-VM client",
            ips[0] / peer_s,
            "x",
            f"({m} hosts; 1 host: {ips[1] / peer_one_s:.2f} x)",
        )
    table_s, shown_s = time_tui_probe(fleet_cfg, args.repeat, src)
    row(f"TUI backend: rows of {m} hosts in", table_s, "s")
    row(
        f"TUI backend: first IP pass of {m} hosts done",
        shown_s,
        "s",
        f"({shown_s / table_s:.2f} x the table time; goal <= 1.5)",
    )
    calls = scan_calls(fleet_cfg, src)
    if calls is None:
        print("  calls per source: not reported by this catkeeper (before issue 12)")
    else:
        print(f"  calls per source, one `catkeeper scan --no-sweep` over {m} hosts:")
        for source, c in sorted(calls.items()):
            print(
                f"    {source:<8}{c['calls']:>6} calls ({c['per_vm']} per VM, {c['failed']} "
                f"failed), slowest {float(str(c['max_s'])):.3f} s"
            )
    for line in trouble:
        print(f"  NOTE host not up: {line}")
    print(flush=True)


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
        running = round(args.vms * args.running) if args.ips else 0
        if running:
            start_some(factory, names, running)
        setup = time.perf_counter() - started
        (tmp / "sshd").mkdir()
        sshd = SshServer(tmp / "sshd").start()
        for _ in range(args.hosts):
            relays.append(DelayRelay(sshd.port, delay=args.delay / 1000).start())
        hosts = [Relay(f"relay{i + 1}", r.port) for i, r in enumerate(relays)]
        known_hosts = tmp / "known_hosts"
        write_known_hosts(known_hosts, sshd, hosts)
        key = sshd.client_key
        if args.ips:
            for src in args.src or [None]:
                run_ips(args, src, hosts, key, known_hosts, tmp, len(names), running, setup)
            return
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
    parser.add_argument("--ips", action="store_true", help="compare guest-IP costs (issue 12)")
    parser.add_argument(
        "--running", type=float, default=0.5, help="--ips: share of the domains to start"
    )
    parser.add_argument(
        "--src",
        type=Path,
        action="append",
        help="--ips: run catkeeper from this checkout; repeatable (before/after, one set-up)",
    )
    parser.add_argument("--peer", nargs="+", metavar="URI", help=argparse.SUPPRESS)
    parser.add_argument("--peer-threads", type=int, default=8, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:  # the per-VM client's own process (see time_peer)
        print(json.dumps(peer_client(args.peer, args.peer_threads)))
        return 0
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
