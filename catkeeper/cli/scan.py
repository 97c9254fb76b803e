"""``catkeeper scan``: look for guest IPs now, print what was found, with source and age.

``add_arguments(parser, command)`` adds the verb's options; ``run(args, config)`` runs it and
returns the exit code. ``HOST…`` limits it to those hosts. Options use ``scan_*`` dests so they
never clobber the main parser's own ``--host``/``--json`` (argparse lets a sub-parser's
defaults overwrite its parent's values); the main parser's ``--host`` and ``--json``
are honoured too.

Imports neither textual nor rich, and scapy only if a local sweep runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from catkeeper.cli.common import Exit, running
from catkeeper.config import Config

if TYPE_CHECKING:
    from catkeeper.commands import Command


def add_arguments(p: argparse.ArgumentParser, _command: Command) -> None:
    """The options of ``scan``."""
    p.description = f"{p.description} " + (
        "Find every running guest's addresses: DHCP leases once per libvirt network, the "
        "host's neighbour table in one command, the guest agent where its channel is "
        "connected, per-VM libvirt calls only for what is left; then sweep each host's "
        "subnets (ARP/ICMP with raw sockets here, else the neighbour table; on ssh "
        "hosts, their neighbour table after a UDP poke). Prints every address with its "
        "source and age, and per source how many calls were made and how long they took."
    )
    p.add_argument(
        "scan_only",
        nargs="*",
        metavar="HOST",
        help="only these hosts (same as --host)",
    )
    p.add_argument(
        "--host",
        dest="scan_hosts",
        action="append",
        metavar="NAME",
        help="only this host (repeatable)",
    )
    p.add_argument("--json", dest="scan_json", action="store_true", help="print JSON")
    p.add_argument(
        "--subnet",
        dest="scan_subnets",
        action="append",
        metavar="CIDR",
        help="sweep this subnet instead of the hosts' configured ones (repeatable)",
    )
    p.add_argument(
        "--no-libvirt",
        dest="scan_no_libvirt",
        action="store_true",
        help="skip the passive sources (libvirt's, and the hosts' neighbour tables)",
    )
    p.add_argument("--no-sweep", dest="scan_no_sweep", action="store_true", help="skip sweeps")
    p.add_argument(
        "--unprivileged",
        dest="scan_unprivileged",
        action="store_true",
        help="never use raw sockets; use the neighbour table",
    )
    p.add_argument(
        "--timeout",
        dest="scan_timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="bound each host's scan (default 30)",
    )


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


async def scan(
    config: Config,
    *,
    hosts: Sequence[str] | None = None,
    subnets: Sequence[str] | None = None,
    libvirt: bool = True,
    sweep: bool = True,
    unprivileged: bool = False,
    timeout: float = 30.0,
    readonly: bool = False,
    progress_to: TextIO | None = None,
    clock: Callable[[], float] = time.time,
) -> tuple[dict[str, Any], int]:
    """Connect, scan every chosen host at once, return (JSON document, exit code).

    ``clock`` is the fleet's "now": sightings are stamped with it and ages measured by it.
    """
    from catkeeper.backend.fleet import Fleet
    from catkeeper.backend.ipscan.book import best_ip
    from catkeeper.backend.ipscan.bulk import summarize_calls
    from catkeeper.backend.ipscan.local_sweep import SweepOptions
    from catkeeper.backend.ipscan.scheduler import IpScanner, ScanProgress
    from catkeeper.model import HostState, to_jsonable

    fleet = Fleet(config, readonly=readonly, only=hosts, clock=clock)

    def show(p: ScanProgress) -> None:
        if progress_to is not None:
            what = f" {p.message}" if p.message else ""
            print(f"{p.host}: {p.stage} {p.done}/{p.total}{what}", file=progress_to, flush=True)

    scanner = IpScanner(
        fleet,
        libvirt_interval=0,
        sweep_interval=0,
        sweep_options=SweepOptions(privileged=False if unprivileged else None),
        host_timeout=timeout,
        subnets=subnets,
        progress=show,
    )
    wait = config.timing.connect_timeout + config.timing.call_timeout
    async with running(fleet, wait=wait, prepare=lambda _f: scanner.attach()):
        try:
            scans = await scanner.scan(libvirt=libvirt, sweep=sweep)
            now = fleet.clock()
            vms = sorted(fleet.vms(), key=lambda v: (v.host, v.name))
            doc: dict[str, Any] = {
                "generated_at": now,
                "config": config.source,
                "hosts": [
                    {
                        **s.to_json(),
                        "state": fleet.session(s.host).host.state.value,
                        "calls_by_source": summarize_calls(s.calls),
                    }
                    for s in scans
                ],
                "vms": [
                    {
                        "ref": vm.ref,
                        "uuid": vm.uuid,
                        "state": vm.state.value,
                        "macs": [n.mac for n in vm.nics],
                        "best_ip": best_ip(vm),
                        "ips": to_jsonable(vm.ips),
                    }
                    for vm in vms
                ],
                "unmatched": to_jsonable(scanner.book.unmatched(vms)),
                "conflicts": to_jsonable(scanner.conflicts()),
            }
            down = any(
                fleet.session(s.host).host.state is not HostState.UP
                and fleet.session(s.host).host.state is not HostState.DEGRADED
                for s in scans
            )
        finally:
            await scanner.aclose()
    return doc, Exit.UNREACHABLE if down else Exit.OK


def _call_lines(by_source: dict[str, Any]) -> list[str]:
    """``  lease    3 calls  0.12s in all, slowest 0.05s`` per source, in a fixed order."""
    order = ["lease", "neigh", "agent", "domains", "arp"]
    lines = []
    for source in sorted(by_source, key=lambda s: (order.index(s) if s in order else 9, s)):
        c = by_source[source]
        n = c["calls"]
        failed = f", {c['failed']} failed" if c["failed"] else ""
        per_vm = c.get("per_vm", 0)
        failed += (f", {per_vm} of them per VM" if per_vm < n else ", all per VM") if per_vm else ""
        timing = (
            f"{c['total_s']:.3f}s"
            if n == 1
            else f"{c['total_s']:.3f}s in all, slowest {c['max_s']:.3f}s"
        )
        lines.append(f"  {source:<10} {n:>4} call{'s' if n != 1 else ' '}  {timing}{failed}")
    return lines


def render_text(doc: dict[str, Any]) -> str:
    """The document for a person: addresses per VM, then what failed, then conflicts."""
    now = doc["generated_at"]
    lines = []
    width = max((len(v["ref"]) for v in doc["vms"] if v["ips"]), default=10)
    for vm in doc["vms"]:
        for i, s in enumerate(vm["ips"]):
            ref = vm["ref"] if i == 0 else ""
            prefix = f"/{s['prefix']}" if s["prefix"] is not None else ""
            lines.append(
                f"{ref:<{width}}  {s['ip'] + prefix:<20} {s['mac']}  "
                f"{s['source']:<10} {_age(now - s['seen_at'])} ago"
            )
    with_ip = sum(1 for v in doc["vms"] if v["ips"])
    active = sum(1 for v in doc["vms"] if v["state"] in ("running", "paused", "blocked"))
    lines.append(f"{with_ip} VMs with addresses ({active} active, {len(doc['vms'])} in all)")
    for host in doc["hosts"]:
        failed: dict[str, list[str]] = {}
        for r in host["results"]:
            if r["error"]:
                failed.setdefault(f"{r['source']}: {r['error']}", []).append(r["scope"])
        notes = sorted(
            {
                r["note"]
                for r in host["results"]
                if r["note"]
                and (r["privileged"] is False or r["scope"] == "*" or r["source"] == "lease")
            }
        )
        summary = f"{host['host']}: {len(host['results'])} source results in {host['elapsed_s']}s"
        lines.append(summary + (f" ({host['error']})" if host["error"] else ""))
        lines += _call_lines(host.get("calls_by_source") or {})
        lines += [f"  {n}" for n in notes]
        for what, scopes in sorted(failed.items()):
            lines.append(f"  failed x{len(scopes)}: {what}")
        for r in host["results"]:
            if r["alive"]:  # routed: the replies carried the router's MAC, not the guest's
                alive = ", ".join(r["alive"])
                lines.append(f"  {r['scope']} answering behind a router (MAC unknown): {alive}")
    if doc["unmatched"]:
        lines.append(f"{len(doc['unmatched'])} addresses whose MAC is no VM's:")
        lines += [f"  {s['ip']:<20} {s['mac']}  {s['source']}" for s in doc["unmatched"]]
    for c in doc["conflicts"]:
        seen_from = f" (seen from {c['host']})" if c.get("host") else ""
        lines.append(f"conflict {c['kind']}: {c['key']}{seen_from}: {', '.join(c['claims'])}")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace, config: Config, *, clock: Callable[[], float] = time.time) -> int:
    """Run ``catkeeper scan`` with parsed ``args``; returns the exit code. ``clock``: "now"."""
    from catkeeper.backend.fleet import UnknownHost
    from catkeeper.backend.ipscan.netinfo import SubnetError, check_subnet

    hosts = (args.scan_only + (args.scan_hosts or [])) or getattr(args, "host", None)
    subnets = args.scan_subnets
    for s in subnets or ():
        try:
            check_subnet(s)
        except SubnetError as exc:
            print(f"catkeeper scan: --subnet: {exc}", file=sys.stderr)
            return Exit.USAGE
    if args.scan_timeout <= 0:
        print("catkeeper scan: --timeout must be positive", file=sys.stderr)
        return Exit.USAGE
    try:
        doc, code = asyncio.run(
            scan(
                config,
                hosts=hosts,
                subnets=subnets,
                libvirt=not args.scan_no_libvirt,
                sweep=not args.scan_no_sweep,
                unprivileged=args.scan_unprivileged,
                timeout=args.scan_timeout,
                readonly=bool(getattr(args, "readonly", False)),
                progress_to=sys.stderr if sys.stderr.isatty() else None,
                clock=clock,
            )
        )
    except UnknownHost as exc:
        print(f"catkeeper: {exc}", file=sys.stderr)
        return Exit.USAGE
    if args.scan_json or getattr(args, "json", False):  # ``catkeeper --json scan`` too
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write(render_text(doc))
    sys.stdout.flush()
    return code
