"""Guest IPs at about one round trip per host: bulk sources first, per-VM calls for what is left.

Asking libvirt's ``interfaceAddresses`` for agent, lease and arp per VM costs a round trip per
VM and source: at 8 hosts x 250 VMs (half running) over 40 ms RTT it took ``catkeeper --json
--ips`` from 5.0 s to 22.6 s (issue 12). One pass over a host now makes:

* ``lease``: ``listAllNetworks(ACTIVE)``, then one ``virNetworkGetDHCPLeases`` per active
  network, side by side: every guest on libvirt's networks in one call per network;
* ``neigh``: the host's neighbour table, read once (``ip -j neigh``, no poke): over the host's
  shared ssh connection for remote hosts, here for this machine. libvirt's own ``arp`` source
  reads the same table, one VM at a time;
* ``agent``: ``interfaceAddresses(AGENT)`` only for running VMs whose live XML shows the guest
  agent's channel connected (``VM.agent_connected``), and again on agent-lifecycle events
  (``scheduler.IpScanner``);
* per VM, only for VMs none of whose MACs has an address yet: ``interfaceAddresses(LEASE)``
  when a NIC is on a network no bulk call covered (the test driver has no lease call, nor
  do older daemons), then ``(ARP)`` when no neighbour table could be read. These go over the
  host's worker threads side by side (they pipeline on the one connection), one thread left
  free for a person's action, each on a domain handle from one ``listAllDomains``.

A driver without a bulk call is not an error: its result says so in a note, and the VMs
fall back to the per-VM path. Every call becomes a :class:`Call` (source, scope, seconds),
so ``catkeeper scan`` can say what was asked and what it cost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import libvirt

from catkeeper.backend.errors import describe
from catkeeper.backend.host import HostSession
from catkeeper.backend.ipscan.calls import DOMAINS, Call, summarize_calls
from catkeeper.backend.ipscan.leases import bulk_leases
from catkeeper.backend.ipscan.libvirt_source import FLAGS, parse_addresses
from catkeeper.backend.ipscan.neigh import read_local_table_async, to_sightings
from catkeeper.backend.ipscan.results import (
    AGENT,
    ARP,
    LEASE,
    NEIGH,
    SourceResult,
    normalize_mac,
)
from catkeeper.model import VM, VmState

__all__ = [
    "DOMAINS",
    "Call",
    "NeighReader",
    "PassOutcome",
    "host_pass",
    "macs_of",
    "read_local_neigh",
    "summarize_calls",
]

NeighReader = Callable[[], Awaitable[list[SourceResult]]]


@dataclass(frozen=True)
class PassOutcome:
    results: tuple[SourceResult, ...]
    calls: tuple[Call, ...]
    lease_networks: frozenset[str]  # networks whose leases one bulk call read
    neigh_ok: bool  # the host's neighbour table was read


def macs_of(vm: VM) -> tuple[str, ...]:
    return tuple(m for nic in vm.nics if (m := normalize_mac(nic.mac)))


async def read_local_neigh(
    host: str, *, clock: Callable[[], float] = time.time
) -> list[SourceResult]:
    """This machine's neighbour table, as one passive ``neigh`` result for a local host."""
    started, t0 = clock(), time.perf_counter()
    try:
        entries, origin = await read_local_table_async()
    except OSError as exc:
        return [
            SourceResult(
                host,
                NEIGH,
                "*",
                error=f"cannot read the neighbour table: {exc}",
                started_at=started,
                elapsed_s=round(time.perf_counter() - t0, 4),
            )
        ]
    seen_at = clock()
    return [
        SourceResult(
            host,
            NEIGH,
            "*",
            sightings=tuple(to_sightings(entries, [], seen_at=seen_at)),
            started_at=started,
            elapsed_s=round(time.perf_counter() - t0, 4),
            note=f"passive: {origin} on this machine",
        )
    ]


def _drop_macs(result: SourceResult, gone: frozenset[str]) -> SourceResult:
    if not gone or not any(s.mac in gone for s in result.sightings):
        return result
    return dataclasses.replace(
        result, sightings=tuple(s for s in result.sightings if s.mac not in gone)
    )


async def host_pass(
    session: HostSession,
    *,
    take: Callable[[Sequence[SourceResult]], None],
    targets: Sequence[VM] | None = None,
    known: Callable[[str], bool] | None = None,
    neigh: NeighReader | None = None,
    concurrency: int = 1,
    timeout: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> PassOutcome:
    """One pass over one host: bulk sources, agents where connected, per-VM for the rest.

    ``targets``: the VMs to find addresses for (default: every active VM of the host);
    ``known(mac)``: True when that MAC needs no per-VM call (the background loop passes
    what the book already knows; on-demand scans only count what this pass found);
    ``neigh``: how to read the host's neighbour table, None when it cannot be read.
    Results reach ``take`` as they come in; ``progress(done, total)`` counts per-VM calls.
    Bulk sightings of MACs that belong only to the host's shut-off VMs are dropped: a lease
    outlives its guest by up to an hour.
    """
    host = session.name
    every = list(session.vms.values())
    # Each VM's MACs once: this runs on the loop for every host each background pass.
    mac_list = {vm.uuid: macs_of(vm) for vm in every}

    def vm_macs(vm: VM) -> tuple[str, ...]:
        listed = mac_list.get(vm.uuid)
        return macs_of(vm) if listed is None else listed

    active_macs = {m for vm in every if vm.state.is_active for m in mac_list[vm.uuid]}
    gone = frozenset({m for vm in every if not vm.state.is_active for m in mac_list[vm.uuid]})
    gone -= active_macs
    chosen = [
        vm for vm in (every if targets is None else targets) if vm.state.is_active and vm_macs(vm)
    ]
    uuids = set(session.vms)
    found: set[str] = set()
    calls: list[Call] = []
    results: list[SourceResult] = []
    gate = asyncio.Semaphore(max(1, concurrency))
    handles: asyncio.Future[dict[str, Any]] | None = None
    done = 0
    total = 0

    def record(batch: Sequence[SourceResult]) -> None:
        batch = [_drop_macs(r, gone) for r in batch]
        for r in batch:
            calls.append(
                Call(r.source, r.scope, r.elapsed_s, r.ok, per_vm=bool(r.macs) and r.scope in uuids)
            )
            found.update(s.mac for s in r.sightings)
        results.extend(batch)
        take(batch)

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    # ---- lease: one listing, then one call per active network (leases.py) -----------

    async def leases() -> set[str]:
        return await bulk_leases(session, every, record, timeout=timeout, clock=clock)

    # ---- neigh: one read of the host's table ------------------------------------------

    async def neighbours() -> bool:
        if neigh is None:
            return False
        batch = await neigh()
        record(batch)
        return any(r.ok for r in batch)

    # ---- per VM: agent where connected, then lease/arp for what is left ----------------

    async def fetch_handles() -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            got: dict[str, Any] = await session.call(
                lambda c: {
                    d.UUIDString(): d
                    for d in c.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
                },
                timeout=timeout,
                what="listing running domains",
            )
        except Exception:
            # Each call then looks its domain up itself (one more round trip, still correct).
            calls.append(Call(DOMAINS, "active", round(time.perf_counter() - t0, 4), False))
            return {}
        calls.append(Call(DOMAINS, "active", round(time.perf_counter() - t0, 4)))
        return got

    async def ask(vm: VM, source: str) -> SourceResult:
        nonlocal handles
        if handles is None:
            handles = asyncio.ensure_future(fetch_handles())
        dom = (await handles).get(vm.uuid)
        flag = FLAGS[source]
        async with gate:
            started, t0 = clock(), time.perf_counter()
            what = f"{source} addresses of {vm.name}"
            try:
                if dom is not None:
                    raw = await session.call(
                        lambda _c: dom.interfaceAddresses(flag, 0), timeout=timeout, what=what
                    )
                else:  # started after the listing
                    raw = await session.call_domain(
                        vm.uuid, lambda d: d.interfaceAddresses(flag, 0), timeout=timeout, what=what
                    )
                sightings, error = parse_addresses(raw, source=source, seen_at=clock()), None
            except Exception as exc:  # per-source failures are data
                sightings, error = (), describe(exc)
        return SourceResult(
            host=host,
            source=source,
            scope=vm.uuid,
            sightings=sightings,
            error=error,
            started_at=started,
            elapsed_s=round(time.perf_counter() - t0, 4),
            macs=macs_of(vm),
        )

    agents = [vm for vm in chosen if vm.state is VmState.RUNNING and vm.agent_connected]
    total = len(agents)

    async def agent(vm: VM) -> None:
        record([await ask(vm, AGENT)])
        step()

    bulk = asyncio.gather(leases(), neighbours())
    await asyncio.gather(bulk, *(agent(vm) for vm in agents))
    covered, neigh_ok = bulk.result()

    def fallback_sources(vm: VM) -> list[str]:
        out = []
        if any(n.type == "network" and n.source not in covered for n in vm.nics):
            out.append(LEASE)
        if not neigh_ok:
            out.append(ARP)
        return out

    is_known = known or (lambda _m: False)
    left = [
        (vm, sources)
        for vm in chosen
        if not any(m in found or is_known(m) for m in vm_macs(vm))
        and (sources := fallback_sources(vm))
    ]
    total += len(left)
    if progress is not None:
        progress(done, total)

    async def per_vm(vm: VM, sources: list[str]) -> None:
        for source in sources:  # cheapest answer first; stop at the first address
            r = await ask(vm, source)
            record([r])
            if r.sightings:
                break
        step()

    await asyncio.gather(*(per_vm(vm, sources) for vm, sources in left))
    return PassOutcome(
        results=tuple(results),
        calls=tuple(calls),
        lease_networks=frozenset(covered),
        neigh_ok=bool(neigh_ok),
    )
