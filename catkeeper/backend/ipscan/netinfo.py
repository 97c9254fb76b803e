"""Which subnets to sweep and how to reach them, from this machine's own interfaces.

Read with ``ip -j`` (iproute2) rather than scapy's route table: it costs a few
milliseconds instead of scapy's 1.5 s import, and it sees the routes of the network
namespace we run in now, not the ones scapy cached at import.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Sweeping a /16 sends 65k packets and overflows the kernel's neighbour table
# (gc_thresh3 is 1024 by default), so larger subnets are refused.
MAX_ADDRESSES = 1024


class SubnetError(ValueError):
    """A subnet we will not sweep; ``str()`` says why."""


@dataclass(frozen=True)
class SweepTarget:
    subnet: str  # CIDR, normalised
    iface: str | None  # the interface packets leave by
    onlink: bool  # hosts answer ARP directly (no router between)
    gateway: str | None = None  # the next hop for a routed subnet
    own: tuple[str, ...] = ()  # our own addresses inside the subnet: never probed

    def addresses(self) -> list[str]:
        net = ipaddress.ip_network(self.subnet)
        own = set(self.own)
        return [str(a) for a in net.hosts() if str(a) not in own]


def check_subnet(text: str, max_addresses: int = MAX_ADDRESSES) -> ipaddress.IPv4Network:
    """The subnet as an IPv4 network, or SubnetError: not a CIDR, IPv6, or too large."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as exc:
        raise SubnetError(f"{text!r} is not a CIDR subnet ({exc})") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise SubnetError(
            f"{net}: IPv6 subnets are too large to sweep; their neighbours still count"
        )
    if net.num_addresses > max_addresses:
        raise SubnetError(
            f"{net}: {net.num_addresses} addresses; sweeps stop at {max_addresses} "
            f"(list smaller subnets, e.g. /{32 - (max_addresses - 1).bit_length()})"
        )
    return net


def _ip_json(*args: str, timeout: float = 5.0) -> Any:
    done = subprocess.run(
        ["ip", "-j", *args], capture_output=True, text=True, timeout=timeout, check=True
    )
    return json.loads(done.stdout or "[]")


def interface_addresses() -> list[tuple[str, ipaddress.IPv4Interface, bool]]:
    """(interface, address/prefix, is up and not loopback) for every IPv4 address here."""
    out = []
    for link in _ip_json("-4", "addr", "show"):
        flags = set(link.get("flags", ()))
        usable = "UP" in flags and "LOOPBACK" not in flags
        for info in link.get("addr_info", ()):
            if info.get("family") != "inet":
                continue
            iface = ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}")
            out.append((str(link.get("ifname")), iface, usable and info.get("scope") == "global"))
    return out


def local_subnets(max_addresses: int = MAX_ADDRESSES) -> tuple[list[str], list[str]]:
    """Subnets of this machine's global IPv4 addresses, and notes on the ones left out."""
    subnets: list[str] = []
    notes: list[str] = []
    for name, iface, usable in interface_addresses():
        if not usable:
            continue
        net = iface.network
        if net.num_addresses > max_addresses:
            notes.append(f"{name} {net}: too large to sweep (more than {max_addresses} addresses)")
        elif net.prefixlen >= 31:
            continue  # point-to-point: nothing to find
        elif str(net) not in subnets:
            subnets.append(str(net))
    return subnets, notes


def plan(
    subnets: Sequence[str], max_addresses: int = MAX_ADDRESSES
) -> tuple[list[SweepTarget], dict[str, str]]:
    """How to sweep each subnet from here; failures (subnet → reason) are returned, not raised."""
    targets: list[SweepTarget] = []
    errors: dict[str, str] = {}
    try:
        mine = interface_addresses()
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return [], {s: f"cannot read interface addresses: {exc}" for s in subnets}
    for text in subnets:
        try:
            net = check_subnet(text, max_addresses)
        except SubnetError as exc:
            errors[text] = str(exc)
            continue
        own = tuple(str(i.ip) for _, i, _ in mine if i.ip in net)
        onlink_iface = next((n for n, i, ok in mine if ok and i.network.overlaps(net)), None)
        if onlink_iface is not None:
            targets.append(SweepTarget(str(net), onlink_iface, True, None, own))
            continue
        probe = str(next(iter(net.hosts()), net.network_address))
        try:
            route = _ip_json("route", "get", probe)
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            errors[str(net)] = f"no route to {net}: {getattr(exc, 'stderr', '') or exc}".strip()
            continue
        first = route[0] if route else {}
        gateway = first.get("gateway")
        targets.append(SweepTarget(str(net), first.get("dev"), gateway is None, gateway, own))
    return targets, errors
