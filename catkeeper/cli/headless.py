"""``catkeeper --json``: one JSON document of the whole fleet. Imports neither textual nor rich."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from catkeeper import __version__
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.host import HostSession
from catkeeper.backend.stale import Staleness, gather_evidence
from catkeeper.backend.stats.cli import stats_json, two_samples
from catkeeper.backend.timeouts import cancel_and_wait, within
from catkeeper.cli.common import Exit, running
from catkeeper.config import Config
from catkeeper.config.views import sort_vms
from catkeeper.model import VM, Host, HostState, to_jsonable


def _unsettled(host: Host, timeout: float) -> Host:
    """A host still connecting when the run's time was up is reported unreachable."""
    if host.state is not HostState.CONNECTING:
        return host
    return dataclasses.replace(
        host,
        state=HostState.UNREACHABLE,
        error=host.error or f"no answer within {timeout:g} s",
    )


async def _ips_as_hosts_answer(fleet: Fleet) -> None:
    """Each host's IP pass (the TUI's and ``catkeeper scan``'s path: bulk sources first,
    per VM only for what is left) as soon as that host's inventory is in, not after the
    slowest host's: the passes of the early hosts overlap the loading of the late ones."""
    from catkeeper.backend.ipscan.scheduler import IpScanner

    scanner = IpScanner(fleet, libvirt_interval=0, sweep_interval=0)
    scanner.attach()

    async def one(session: HostSession) -> None:
        scanner.prefetch_neigh(session.name)  # overlaps the host's cold load
        await session.wait_settled()
        if session.host.state in (HostState.UP, HostState.DEGRADED):
            await scanner.scan_host(session.name, sweep=False)

    try:
        await asyncio.gather(*(one(s) for s in fleet.sessions.values()))
    finally:
        await scanner.aclose()


async def collect(
    config: Config,
    *,
    only: Sequence[str] | None = None,
    readonly: bool = False,
    timeout: float,
    vm_filter: Callable[[VM, float], bool] | None = None,
    ips: bool = False,
    clock: Callable[[], float] = time.time,
    stats: bool = False,
    sort: tuple[str, bool] | None = None,
    evidence: list[Staleness] | None = None,
) -> tuple[dict[str, Any], int]:
    """Connect to every host at once, wait up to ``timeout`` s, return (document, exit code).

    With ``ips``, guest addresses are looked for too (DHCP leases per network, the host's
    neighbour table, connected guest agents, per-VM calls for the rest), each host as soon
    as it has answered, within the same ``timeout``; active sweeps are ``catkeeper scan``'s
    job. ``vm_filter(vm, now)`` and the document's ``generated_at`` use ``clock``. With
    ``stats``, each VM gets its current rates (``stats_json``: two samples, one interval
    apart, so the run takes that much longer). ``sort``: (column, descending), in the
    table's order for that column (a saved view's). ``evidence``: a list to put the
    stale-reservation evidence in once the hosts answered (what ``reserved:stale`` asks).
    """
    started = time.monotonic()
    fleet = Fleet(config, readonly=readonly, only=only, clock=clock)
    async with running(fleet, wait=None):
        addresses = asyncio.ensure_future(_ips_as_hosts_answer(fleet)) if ips else None
        try:
            await fleet.wait_settled(timeout)
            if addresses is not None:
                # Addresses are extras: a host slow to answer them costs its IPs, never the
                # document.
                budget = max(0.0, timeout - (time.monotonic() - started))
                with contextlib.suppress(TimeoutError):
                    await within(asyncio.shield(addresses), budget)
            if evidence is not None:
                evidence.append(await gather_evidence(fleet, config.stale, clock))
            if stats:
                await two_samples(fleet, clock)
            hosts = [_unsettled(h, timeout) for h in fleet.hosts()]
            vms = sorted(fleet.vms(), key=lambda v: (v.host, v.name))
        finally:
            if addresses is not None:
                await cancel_and_wait(addresses)
    now = clock()
    if vm_filter is not None:
        vms = [vm for vm in vms if vm_filter(vm, now)]
    if sort is not None:
        vms = sort_vms(vms, *sort)
    doc = {
        "catkeeper_version": __version__,
        "generated_at": now,
        "config": config.source,
        "hosts": to_jsonable(hosts),
        "vms": to_jsonable(vms),
    }
    if stats:
        for vm, item in zip(vms, doc["vms"], strict=True):
            item["stats"] = stats_json(fleet.session(vm.host).stats.latest(vm.uuid))
    down = any(h.state is HostState.UNREACHABLE for h in hosts)
    return doc, Exit.UNREACHABLE if down else Exit.OK


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=False)
