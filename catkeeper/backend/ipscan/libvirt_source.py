"""libvirt's own idea of a guest's addresses: ``virDomainInterfaceAddresses``.

Three sources, each tried where it applies and each reported on its own, failures included:

* ``agent``: the qemu guest agent inside the guest (running guests; fails with "QEMU guest
  agent is not configured" when the domain has no agent channel, which is common);
* ``lease``: dnsmasq leases of libvirt-managed networks (only NICs of ``type='network'``);
* ``arp``: the host's ARP table as libvirt reads it (fails with "wrong nlmsg len" on some
  kernels, including the one these tests run on).

Calls run on the host's own worker threads through ``HostSession.call_domain``, bounded by
its timeout. This is the per-VM path, for one VM and explicit sources (an agent-lifecycle
event, tests); a scan of a whole host goes through ``bulk.host_pass``, which asks per VM only
what no bulk call answered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import libvirt

from catkeeper.backend.errors import describe
from catkeeper.backend.host import HostSession
from catkeeper.backend.ipscan.results import (
    AGENT,
    ARP,
    LEASE,
    LIBVIRT_SOURCES,
    SourceResult,
    normalize_mac,
    usable_address,
)
from catkeeper.model import VM, IpSighting, VmState

FLAGS = {
    AGENT: libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
    LEASE: libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
    ARP: libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP,
}
# Calls in flight for one VM's sources when no gate is given.
DEFAULT_CONCURRENCY = 2


def applicable_sources(vm: VM) -> list[str]:
    """Which sources can know anything about this VM right now."""
    if not vm.state.is_active or not vm.nics:
        return []
    out = []
    if vm.state is VmState.RUNNING:
        out.append(AGENT)  # a paused guest's agent cannot answer
    if any(nic.type == "network" for nic in vm.nics):
        out.append(LEASE)
    out.append(ARP)
    return out


def parse_addresses(
    raw: Mapping[str, Any] | None, *, source: str, seen_at: float
) -> tuple[IpSighting, ...]:
    """``interfaceAddresses`` output → sightings; loopback and MAC-less interfaces dropped."""
    out = []
    for info in (raw or {}).values():
        mac = normalize_mac(str(info.get("hwaddr") or ""))
        if mac is None:  # lo (00:00:…), tunnels: nothing to match a NIC with
            continue
        for addr in info.get("addrs") or ():
            ip = str(addr.get("addr", ""))
            if not usable_address(ip):
                continue
            prefix = addr.get("prefix")
            out.append(
                IpSighting(
                    mac=mac,
                    ip=ip,
                    prefix=int(prefix) if prefix is not None else None,
                    source=source,
                    seen_at=seen_at,
                )
            )
    return tuple(out)


async def libvirt_sightings(
    session: HostSession,
    vm: VM,
    *,
    sources: Sequence[str] | None = None,
    timeout: float | None = None,
    limit: asyncio.Semaphore | None = None,
    clock: Callable[[], float] = time.time,
) -> list[SourceResult]:
    """One result per source tried for ``vm`` (none for a shut-off VM)."""
    chosen = applicable_sources(vm) if sources is None else list(sources)
    unknown = [s for s in chosen if s not in FLAGS]
    if unknown:
        raise ValueError(f"unknown libvirt source(s) {unknown}; known: {LIBVIRT_SOURCES}")
    macs = tuple(m for nic in vm.nics if (m := normalize_mac(nic.mac)))
    gate = limit or asyncio.Semaphore(DEFAULT_CONCURRENCY)

    async def one(source: str) -> SourceResult:
        flag = FLAGS[source]
        async with gate:
            started, t0 = clock(), time.perf_counter()
            try:
                raw = await session.call_domain(
                    vm.uuid,
                    lambda dom: dom.interfaceAddresses(flag, 0),
                    timeout=timeout,
                    what=f"{source} addresses of {vm.name}",
                )
                sightings = parse_addresses(raw, source=source, seen_at=clock())
                error = None
            except Exception as exc:  # per-source failures are data
                sightings, error = (), describe(exc)
        return SourceResult(
            host=session.name,
            source=source,
            scope=vm.uuid,
            sightings=sightings,
            error=error,
            started_at=started,
            elapsed_s=round(time.perf_counter() - t0, 4),
            macs=macs,
        )

    return list(await asyncio.gather(*(one(s) for s in chosen)))
