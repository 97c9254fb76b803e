"""Active sweeps from this machine: scapy ARP and ICMP with raw sockets, else the neighbour table.

Facts that shaped this (measured, see docs/design.md):

* ARP who-has for a whole CIDR in one ``srp`` takes ~1.2 s for a /24.
* ICMP goes out at layer 2 as well (see ``scapy_sweep``, which sends both kinds).
* scapy rejects ranges like ``1-254``: targets are CIDRs or explicit lists.
* Importing scapy costs ~1.5 s: it is imported lazily (``scapy_sweep.load``), on the sweep's
  own thread (or in the subprocess), never on anyone's start-up path.
* Without CAP_NET_RAW (no raw sockets) the sweep degrades to the unprivileged neighbour-table
  sweep of ``neigh.py`` and says so (``privileged=False``, source ``neigh``).

Blocking functions here run on a sweep thread (``sweep_local``) or in a child process
(``python -m catkeeper.backend.ipscan.local_sweep``, which tests run inside network
namespaces with ``ip netns exec``), never on the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import functools
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from catkeeper.backend.ipscan import scapy_sweep
from catkeeper.backend.ipscan.neigh import neigh_sweep
from catkeeper.backend.ipscan.netinfo import MAX_ADDRESSES, local_subnets, plan
from catkeeper.backend.ipscan.results import NEIGH, SWEEP_ARP, SourceResult
from catkeeper.backend.timeouts import within

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepOptions:
    arp: bool = True  # ARP who-has on on-link subnets (raw sockets)
    icmp: bool = True  # ICMP echo, on-link and routed (raw sockets)
    timeout: float = 1.0  # seconds scapy waits for answers after the last packet
    wait: float = 1.0  # unprivileged: seconds between the poke and reading the table
    privileged: bool | None = None  # None: use raw sockets when we may
    max_addresses: int = MAX_ADDRESSES
    # "now" for the sightings' times (the fleet's clock), so their ages agree with the book's.
    clock: Callable[[], float] = field(default=time.time, compare=False, repr=False)


def has_raw_sockets() -> bool:
    """True when this process may open a packet socket (CAP_NET_RAW in its namespace).

    Trying is the only honest test: capabilities, user namespaces and seccomp all have a say.
    """
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except OSError:
        return False
    sock.close()
    return True


def sweep(
    host: str,
    subnets: Sequence[str] | None = None,
    options: SweepOptions = SweepOptions(),
    progress: Callable[[SourceResult], None] | None = None,
) -> list[SourceResult]:
    """Sweep ``subnets`` (default: those of this machine's interfaces); blocking.

    With raw sockets, every on-link subnet gets an ARP and an ICMP sweep, routed ones ICMP
    only, all at once on a few threads (each ``srp`` waits ~1 s for stragglers; waiting
    side by side costs that second once). Without, one neighbour-table sweep covers all.
    """
    started = options.clock()
    results: list[SourceResult] = []
    notes: list[str] = []
    if not subnets:
        try:
            derived, notes = local_subnets(options.max_addresses)
        except Exception as exc:
            derived, notes = [], [f"cannot list local interfaces: {exc}"]
        subnets = derived
        if not subnets:
            note = "; ".join(notes) or "no local IPv4 subnet to sweep"
            return [SourceResult(host, NEIGH, "*", error=note, started_at=started)]
    targets, errors = plan(subnets, options.max_addresses)
    raw = has_raw_sockets() if options.privileged is None else options.privileged
    for subnet, reason in errors.items():
        results.append(
            SourceResult(
                host,
                SWEEP_ARP if raw else NEIGH,
                subnet,
                error=reason,
                started_at=started,
                privileged=raw,
            )
        )
    if not raw:
        found = neigh_sweep(host, targets, wait=options.wait, clock=options.clock)
        for r in found:
            if progress is not None:
                progress(r)
        return results + found

    jobs: list[Callable[[], SourceResult]] = []
    for t in targets:
        if options.arp and t.onlink:
            jobs.append(
                functools.partial(scapy_sweep.arp_sweep, host, t, options.timeout, options.clock)
            )
        if options.icmp:
            jobs.append(
                functools.partial(scapy_sweep.icmp_sweep, host, t, options.timeout, options.clock)
            )
    if jobs:
        try:
            scapy_sweep.load()  # once, before the threads race for it
        except Exception as exc:  # scapy missing or broken: say so per subnet
            why = f"scapy unavailable: {type(exc).__name__}: {exc}"
            return results + [
                SourceResult(host, SWEEP_ARP, t.subnet, error=why, started_at=started)
                for t in targets
            ]
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=min(8, len(jobs)), thread_name_prefix="ipsweep-srp"
        ) as pool:
            for future in concurrent.futures.as_completed([pool.submit(j) for j in jobs]):
                r = future.result()
                if progress is not None:
                    progress(r)
                results.append(r)
    order = {s: i for i, s in enumerate(subnets)}
    results.sort(key=lambda r: (order.get(r.scope, len(order)), r.source))
    return results


# ---- running it without blocking anyone ---------------------------------------------------

_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _sweep_executor() -> concurrent.futures.ThreadPoolExecutor:
    # Our own threads, not the loop's default executor, which Textual and others share.
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=4, thread_name_prefix="ipsweep"
            )
        return _executor


def _timed_out(host: str, subnets: Sequence[str] | None, seconds: float) -> list[SourceResult]:
    return [
        SourceResult(host, SWEEP_ARP, s, error=f"sweep timed out after {seconds:g} s")
        for s in (subnets or ["*"])
    ]


async def sweep_local(
    host: str,
    subnets: Sequence[str] | None = None,
    options: SweepOptions = SweepOptions(),
    *,
    timeout: float = 30.0,
    progress: Callable[[SourceResult], None] | None = None,
) -> list[SourceResult]:
    """``sweep`` on a sweep thread, bounded by ``timeout``; progress is called on the loop."""
    loop = asyncio.get_running_loop()

    def report(r: SourceResult) -> None:
        if progress is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed under us
                loop.call_soon_threadsafe(progress, r)

    job = loop.run_in_executor(
        _sweep_executor(), functools.partial(sweep, host, subnets, options, report)
    )
    try:
        return await within(job, timeout)
    except TimeoutError:
        return _timed_out(host, subnets, timeout)


def sweep_argv(
    host: str,
    subnets: Sequence[str] | None = None,
    options: SweepOptions = SweepOptions(),
    *,
    python: str = sys.executable,
) -> list[str]:
    """The argv that runs the sweep in a child process (prefix it with ``ip netns exec NS``)."""
    argv = [python, "-m", __name__, "--host", host]
    argv += ["--timeout", f"{options.timeout:g}", "--wait", f"{options.wait:g}"]
    argv += ["--max-addresses", str(options.max_addresses)]
    if not options.arp:
        argv.append("--no-arp")
    if not options.icmp:
        argv.append("--no-icmp")
    if options.privileged is False:
        argv.append("--unprivileged")
    return [*argv, "--", *(subnets or ())]


@dataclass(frozen=True)
class ChildSweep:
    results: list[SourceResult]
    scapy_import_s: float | None  # the child's scapy import (None: it did not need scapy)
    wall_s: float  # the child's whole run, interpreter start-up included


async def run_sweep_argv(argv: Sequence[str], *, timeout: float = 30.0) -> ChildSweep:
    """Run a sweep child (see ``sweep_argv``) and read its JSON; errors become results."""
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await within(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()  # our own child, by its handle
        await proc.wait()
        return ChildSweep(_timed_out("?", None, timeout), None, time.perf_counter() - t0)
    wall = round(time.perf_counter() - t0, 3)
    try:
        doc = json.loads(out)
        results = [SourceResult.from_json(r) for r in doc["results"]]
        return ChildSweep(results, doc.get("scapy_import_s"), wall)
    except (ValueError, KeyError, TypeError):
        text = " ".join(err.decode(errors="replace").split())[-500:]
        error = f"sweep process failed (exit {proc.returncode}): {text}"
        return ChildSweep([SourceResult("?", SWEEP_ARP, "*", error=error)], None, wall)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m catkeeper.backend.ipscan.local_sweep",
        description="Sweep IPv4 subnets from here; print the results as JSON.",
    )
    parser.add_argument("subnets", nargs="*", help="CIDRs (default: this machine's subnets)")
    parser.add_argument("--host", default=socket.gethostname(), help="name to report")
    parser.add_argument("--no-arp", action="store_true")
    parser.add_argument("--no-icmp", action="store_true")
    parser.add_argument("--unprivileged", action="store_true", help="never use raw sockets")
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--wait", type=float, default=1.0)
    parser.add_argument("--max-addresses", type=int, default=MAX_ADDRESSES)
    args = parser.parse_args(argv)
    options = SweepOptions(
        arp=not args.no_arp,
        icmp=not args.no_icmp,
        timeout=args.timeout,
        wait=args.wait,
        privileged=False if args.unprivileged else None,
        max_addresses=args.max_addresses,
    )
    results = sweep(args.host, args.subnets or None, options)
    doc = {
        "results": [r.to_json() for r in results],
        "scapy_import_s": scapy_sweep.scapy_import_s,
        "pid": os.getpid(),
    }
    json.dump(doc, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
