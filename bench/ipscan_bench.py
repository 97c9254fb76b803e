"""Guest-IP sweeps: how long a /24 takes, and how a 20-host fleet overlaps. Not a test.

Everything runs in network namespaces this script builds (tests/netns.py) and removes on
exit: a "host" namespace with a bridge and a few guests, sweeps run inside it with ``ip netns
exec``; remote hosts are more such namespaces with an sshd each, reached over a veth uplink.
No packet leaves them. Needs root, iproute2, iputils-ping, capsh, openssh-server.

    python bench/ipscan_bench.py             # 3 rounds, 20 remote hosts
    python bench/ipscan_bench.py --hosts 5 --repeat 1

Figures (median of the rounds):

* catkeeper's sweeps of a /24 (ARP, ICMP, both side by side, the unprivileged neighbour-table
  fallback, and the remote sweep over ssh); the child process's wall time includes the
  interpreter and scapy's import (printed apart);
* peers measured in the same run: the shell idioms people use (``ping`` one address after
  another, timed on a sample and extrapolated; ``ping`` fanned out in parallel) and scapy's
  layer-3 ``sr()``, which resolves MACs one at a time (sampled, extrapolated);
* a fleet of N remote hosts swept at once, against the same hosts one after another.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.netns

import asyncssh

from catkeeper.backend.fleet import Fleet
from catkeeper.backend.host import HostSession
from catkeeper.backend.ipscan.local_sweep import (
    SweepOptions,
    run_sweep_argv,
    sweep_argv,
)
from catkeeper.backend.ipscan.remote import remote_sweep
from catkeeper.backend.ipscan.scheduler import IpScanner
from catkeeper.config import Config, HostConfig, Timing
from tests.netns import ANSWERS, NO_ICMP, SILENT, NetnsSshd, Topology, node_xml


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def row(label: str, seconds: float, note: str = "") -> None:
    print(f"  {label:<46} {seconds:7.2f} s  {note}")


def local_sweeps(topo: Topology, repeat: int) -> dict[str, float]:
    figures: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        figures.setdefault(key, []).append(value)

    for _ in range(repeat):
        for label, options in (
            ("arp", SweepOptions(icmp=False)),
            ("icmp", SweepOptions(arp=False)),
            ("both", SweepOptions()),
        ):
            child = asyncio.run(
                run_sweep_argv(topo.in_host(*sweep_argv("h", [topo.subnet], options)))
            )
            for r in child.results:
                assert r.ok, r.error
                add(f"{label}:{r.source}", r.elapsed_s)
            add(f"{label}:wall", child.wall_s)
            if child.scapy_import_s is not None:
                add("scapy-import", child.scapy_import_s)
        topo.flush_neighbours()
        argv = sweep_argv("h", [topo.subnet], SweepOptions(privileged=False))
        child = asyncio.run(run_sweep_argv(topo.in_host(*argv)))
        add("neigh", child.results[0].elapsed_s)
        add("neigh:wall", child.wall_s)
    return {k: median(v) for k, v in figures.items()}


def peers(topo: Topology, sample: int = 8) -> dict[str, float]:
    net = ipaddress.ip_network(topo.subnet)
    addresses = [str(a) for a in net.hosts()][1:]  # not the bridge itself
    # The sample mixes live guests and empty addresses as the /24 does (3 of 253 live).
    live = [g.ip for g in topo.guests[:2]]
    dead = [a for a in addresses if a not in {g.ip for g in topo.guests}][: sample - len(live)]
    probe = live + dead
    out: dict[str, float] = {}

    t0 = time.perf_counter()
    for a in probe:
        subprocess.run(topo.in_host("ping", "-c", "1", "-W", "1", "-q", a), capture_output=True)
    per = (time.perf_counter() - t0) / len(probe)
    live_share = len(topo.guests) / len(addresses)
    # Extrapolate with the /24's own mix: dead addresses cost the full 1 s timeout.
    t_live = 0.01
    t_dead = (per * len(probe) - t_live * len(live)) / max(1, len(dead))
    out["ping-serial"] = len(addresses) * (live_share * t_live + (1 - live_share) * t_dead)

    script = 'for a in "$@"; do ping -c 1 -W 1 -q "$a" >/dev/null 2>&1 & done; wait'
    t0 = time.perf_counter()
    subprocess.run(topo.in_host("sh", "-c", script, "fanout", *addresses), capture_output=True)
    out["ping-parallel"] = time.perf_counter() - t0

    code = (
        "import sys, time, logging\n"
        "logging.getLogger('scapy').setLevel(logging.ERROR)\n"
        "from scapy.all import sr, IP, ICMP, conf\n"
        "conf.verb = 0\n"
        "t = time.perf_counter()\n"
        "sr(IP(dst=sys.argv[1:]) / ICMP(), timeout=1, verbose=0)\n"
        "print(time.perf_counter() - t)\n"
    )
    done = subprocess.run(
        topo.in_host(sys.executable, "-c", code, *probe), capture_output=True, text=True
    )
    sampled = float(done.stdout.strip() or "nan")
    out["scapy-sr-l3"] = sampled / len(probe) * len(addresses)
    return out


async def remote_figures(topos: list[Topology], sshds: list[NetnsSshd], repeat: int) -> None:
    t0 = time.perf_counter()
    conns = await asyncio.gather(
        *(
            asyncssh.connect(
                s.listen,
                username="root",
                client_keys=[str(s.client_key)],
                known_hosts=str(s.known_hosts),
            )
            for s in sshds
        )
    )
    connect_s = time.perf_counter() - t0
    directory = Path(tempfile.mkdtemp(prefix="ckip-bench-"))
    try:
        one = [
            (await remote_sweep(conns[0], "r0", [topos[0].subnet]))[0].elapsed_s
            for _ in range(repeat)
        ]
        hosts = []
        for i, topo in enumerate(topos):
            node = directory / f"r{i:02d}.xml"
            node.write_text(node_xml(topo.guests))
            hosts.append(HostConfig(name=f"r{i:02d}", uri=f"test://{node}", subnets=(topo.subnet,)))
        config = Config(hosts=tuple(hosts), source="<bench>", timing=Timing(refresh_interval=0))
        by_name = {h.name: c for h, c in zip(hosts, conns, strict=True)}

        async def ssh_for(session: HostSession) -> asyncssh.SSHClientConnection:
            return by_name[session.name]

        fleet = Fleet(config)
        scanner = IpScanner(fleet, ssh_for=ssh_for, libvirt_interval=0)
        scanner.attach()
        await fleet.start()
        await fleet.wait_settled(30)
        together, slowest, serial = [], [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            scans = await scanner.scan(libvirt=False)
            together.append(time.perf_counter() - t0)
            assert all(s.error is None for s in scans), [s.error for s in scans]
            slowest.append(max(s.elapsed_s for s in scans))
            t0 = time.perf_counter()
            for h in hosts:
                await scanner.scan_host(h.name, libvirt=False)
            serial.append(time.perf_counter() - t0)
        found = sum(1 for vm in fleet.vms() if vm.ips)
        await fleet.aclose()
        # What any remote command costs here, sweep or not: the floor under the figures.
        t0 = time.perf_counter()
        await conns[0].run("true")
        exec_one = time.perf_counter() - t0
        t0 = time.perf_counter()
        await asyncio.gather(*(c.run("true") for c in conns))
        exec_all = time.perf_counter() - t0
    finally:
        for c in conns:
            c.close()
        shutil.rmtree(directory, ignore_errors=True)
    n = len(topos)
    print(f"\nremote hosts over ssh ({n} host namespaces, sshd each; {found} VMs got an IP)")
    row("ssh connections opened (all at once)", connect_s)
    row("remote sweep of a /24 (one host)", median(one), "poke + 1 s wait + ip -j neigh")
    row(f"{n} hosts swept at once", median(together))
    row("  slowest single host in that run", median(slowest))
    row(f"{n} hosts one after another (peer)", median(serial))
    print(f"  concurrent vs serial: {median(serial) / median(together):.1f}x faster")
    row("an empty ssh command (`true`), one host", exec_one)
    row(f"an empty ssh command on all {n} hosts at once", exec_all)
    print(
        f"  All {n} 'hosts' share this machine's {os.cpu_count()} CPUs; every ssh command costs "
        "sshd and the login shell's rc files CPU time there, so at once they queue for CPU, "
        "which real hosts, each with its own, would not."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--hosts", type=int, default=20, help="remote hosts for the fleet figure")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("ipscan_bench: needs root (network namespaces)", file=sys.stderr)
        return 2
    cleanups: list[Callable[[], None]] = []
    try:
        topo = Topology(behaviours=(ANSWERS, ANSWERS, NO_ICMP, SILENT))
        cleanups.append(topo.destroy)
        topo.build()
        print(
            f"topology: {topo.subnet} with {len(topo.guests)} guests, built in {topo.build_s:.2f} s"
        )
        f = local_sweeps(topo, args.repeat)
        print(f"\nlocal sweeps of a /24 inside the host namespace (median of {args.repeat})")
        row("ARP who-has (scapy srp)", f["arp:sweep-arp"], "target < 3 s")
        row("ICMP echo at layer 2 (scapy srp)", f["icmp:sweep-icmp"], "target < 3 s")
        row(
            "ARP + ICMP side by side (slower of the two)",
            max(f["both:sweep-arp"], f["both:sweep-icmp"]),
        )
        row("unprivileged: UDP poke + neighbour table", f["neigh"])
        row("child process, ARP only, wall", f["arp:wall"], "interpreter + scapy import + sweep")
        row("  of which scapy import", f["scapy-import"])
        row("child process, unprivileged, wall", f["neigh:wall"], "no scapy import")
        p = peers(topo)
        print("\npeers, same /24, same run")
        row("ping one address after another (extrapolated)", p["ping-serial"])
        row("ping fanned out in parallel (253 processes)", p["ping-parallel"])
        row("scapy layer-3 sr() (sampled, extrapolated)", p["scapy-sr-l3"])
        print(
            f"  catkeeper ARP vs serial ping: {p['ping-serial'] / f['arp:sweep-arp']:.0f}x; "
            f"vs scapy sr(): {p['scapy-sr-l3'] / f['icmp:sweep-icmp']:.0f}x"
        )

        topos, sshds = [], []
        tmp = Path(tempfile.mkdtemp(prefix="ckip-bench-sshd-"))
        cleanups.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
        for i in range(args.hosts):
            t = Topology(behaviours=(ANSWERS, ANSWERS, NO_ICMP))
            cleanups.append(t.destroy)
            t.build()
            d = tmp / f"h{i}"
            d.mkdir()
            sshds.append(t.start_sshd(d))
            topos.append(t)
        asyncio.run(remote_figures(topos, sshds, args.repeat))
    finally:
        for fn in reversed(cleanups):
            fn()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
