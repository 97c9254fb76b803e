"""DHCP leases of a host's libvirt networks, in one call per network.

``virNetworkGetDHCPLeases`` answers for every guest on a network at once, where
``interfaceAddresses(LEASE)`` costs a round trip per VM. A driver without the call (the test
driver, older daemons) is not an error: the result says so in a note and those VMs get
per-VM calls (``bulk.host_pass``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import libvirt

from catkeeper.backend.errors import describe
from catkeeper.backend.host import HostSession
from catkeeper.backend.ipscan.calls import LIST_NETWORKS, unsupported
from catkeeper.backend.ipscan.results import LEASE, SourceResult, normalize_mac, usable_address
from catkeeper.model import VM, IpSighting


def parse_leases(leases: Iterable[Mapping[str, Any]] | None, *, seen_at: float) -> list[IpSighting]:
    """``virNetwork.DHCPLeases()`` output → sightings (libvirt already leaves out expired
    leases; DHCPv6 leases without a MAC cannot be matched and are dropped)."""
    out = []
    for lease in leases or ():
        mac = normalize_mac(str(lease.get("mac") or ""))
        ip = str(lease.get("ipaddr") or "")
        if mac is None or not usable_address(ip):
            continue
        prefix = lease.get("prefix")
        out.append(
            IpSighting(
                mac=mac,
                ip=ip,
                prefix=int(prefix) if prefix is not None else None,
                source=LEASE,
                seen_at=seen_at,
            )
        )
    return out


async def bulk_leases(
    session: HostSession,
    vms: Sequence[VM],
    record: Callable[[Sequence[SourceResult]], None],
    *,
    timeout: float | None,
    clock: Callable[[], float],
) -> set[str]:
    """Every active network's DHCP leases: one listing, then one call per network, side by
    side. Results go to ``record``; returns the networks whose leases were read (a VM on
    any other network needs its own per-VM lease call)."""
    host = session.name
    started, t0 = clock(), time.perf_counter()
    try:
        nets = await session.call(
            lambda c: c.listAllNetworks(libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE),
            timeout=timeout,
            what="listing networks",
        )
    except Exception as exc:
        no_call = unsupported(exc)
        record(
            [
                SourceResult(
                    host,
                    LEASE,
                    LIST_NETWORKS,
                    error=None if no_call else describe(exc),
                    note="no networks on this driver: leases asked per VM" if no_call else None,
                    started_at=started,
                    elapsed_s=round(time.perf_counter() - t0, 4),
                )
            ]
        )
        return set()
    names = [n.name() for n in nets]  # local: the handle carries its name
    record(
        [
            SourceResult(
                host,
                LEASE,
                LIST_NETWORKS,
                started_at=started,
                elapsed_s=round(time.perf_counter() - t0, 4),
                note=f"{len(names)} active network(s)" + (f": {', '.join(names)}" if names else ""),
            )
        ]
    )
    on_net: dict[str, set[str]] = {}
    for vm in vms:
        for nic in vm.nics:
            if nic.type == "network" and nic.source and (m := normalize_mac(nic.mac)):
                on_net.setdefault(nic.source, set()).add(m)

    async def one(net: Any, name: str) -> str | None:
        started, t0 = clock(), time.perf_counter()
        try:
            raw = await session.call(
                lambda _c: net.DHCPLeases(), timeout=timeout, what=f"leases of {name}"
            )
        except Exception as exc:
            no_call = unsupported(exc)
            note = "no bulk lease call on this driver: leases asked per VM"
            record(
                [
                    SourceResult(
                        host,
                        LEASE,
                        f"network:{name}",
                        error=None if no_call else describe(exc),
                        note=note if no_call else None,
                        started_at=started,
                        elapsed_s=round(time.perf_counter() - t0, 4),
                    )
                ]
            )
            return None
        record(
            [
                SourceResult(
                    host,
                    LEASE,
                    f"network:{name}",
                    sightings=tuple(parse_leases(raw, seen_at=clock())),
                    started_at=started,
                    elapsed_s=round(time.perf_counter() - t0, 4),
                    # The network's whole answer: a NIC on it whose lease is gone has none.
                    macs=tuple(sorted(on_net.get(name, ()))),
                )
            ]
        )
        return name

    covered = await asyncio.gather(*(one(n, name) for n, name in zip(nets, names, strict=True)))
    return {name for name in covered if name is not None}
