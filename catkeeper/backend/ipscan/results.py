"""What one IP source reports: plain data, JSON-ready, failures included.

Every source (a libvirt ``interfaceAddresses`` call, a sweep of one subnet, one read of a
neighbour table) yields one :class:`SourceResult`, whether it worked or not: a failing source
is a fact to show ("agent: not configured"), never an exception that hides the other sources.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from catkeeper.model import IpSighting
from catkeeper.values import Value

# Source names, as they appear in IpSighting.source and in JSON.
AGENT = "agent"  # qemu guest agent, via libvirt
LEASE = "lease"  # libvirt network DHCP leases
ARP = "arp"  # libvirt's reading of the host's ARP table
SWEEP_ARP = "sweep-arp"  # our own ARP who-has sweep (raw sockets)
SWEEP_ICMP = "sweep-icmp"  # our own ICMP echo sweep, sent at layer 2 (raw sockets)
NEIGH = "neigh"  # a kernel neighbour table after a UDP poke (no privileges needed)

LIBVIRT_SOURCES = (AGENT, LEASE, ARP)


@dataclass(frozen=True)
class SourceResult(Value):
    """One source's answer for one scope (a VM, a subnet, a whole neighbour table)."""

    host: str  # the host whose point of view this is
    source: str  # one of the names above
    scope: str  # a VM's UUID, a CIDR, or "*" (a whole neighbour table)
    sightings: tuple[IpSighting, ...] = ()
    error: str | None = None
    started_at: float = 0.0
    elapsed_s: float = 0.0
    # Sweeps only: True when raw sockets were used, False for the unprivileged fallback.
    privileged: bool | None = None
    # A remark a person should see: "unprivileged: no CAP_NET_RAW", "poked with ping", ...
    note: str | None = None
    # Addresses that answered but whose MAC we cannot know (ICMP through a router).
    alive: tuple[str, ...] = ()
    # The scope's MACs, when the scope is a VM: what an authoritative answer covers.
    macs: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SourceResult:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["sightings"] = tuple(IpSighting(**s) for s in data.get("sightings", ()))
        values["alive"] = tuple(data.get("alive", ()))
        values["macs"] = tuple(data.get("macs", ()))
        return cls(**values)


_CANONICAL_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")


def normalize_mac(mac: str) -> str | None:
    """``52:54:0:A:b:C`` → ``52:54:00:0a:0b:0c``; None for anything that is not a MAC-48
    or is all zeros (the "no address yet" of incomplete neighbour entries)."""
    if _CANONICAL_MAC.fullmatch(mac) and mac != "00:00:00:00:00:00":
        return mac  # the common case (libvirt's own spelling), and a hot path at 10k VMs
    parts = mac.strip().replace("-", ":").split(":")
    if len(parts) != 6:
        return None
    try:
        octets = [int(p, 16) for p in parts]
    except ValueError:
        return None
    if any(not 0 <= o <= 255 for o in octets) or not any(octets):
        return None
    return ":".join(f"{o:02x}" for o in octets)


def usable_address(ip: str) -> bool:
    """Addresses worth showing for a guest: not loopback, unspecified or multicast."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return not (addr.is_loopback or addr.is_unspecified or addr.is_multicast)
