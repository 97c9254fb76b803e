"""Every IP sighting from every source, matched to VMs by MAC.

The book keeps, per MAC, per IP, per source the latest sighting; a VM row shows per IP the
freshest of them, with its source and time, so a person can tell a guest-agent answer from
ten minutes ago apart from an ARP reply a second old. Matching is by MAC only: that is the
one identity the domain XML, DHCP, ARP and the guest agent all share.

Conflicts are reported, never resolved silently: one IP claimed by two MACs (a duplicate
address, or a stale lease), one MAC on VMs of two hosts (a cloned domain XML).

The book lives on the event loop's thread (sweeps hand their results back to the loop); it
has no locks.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from catkeeper.backend.ipscan.results import (
    LIBVIRT_SOURCES,
    SourceResult,
    normalize_mac,
    usable_address,
)
from catkeeper.backend.small_index import index_add, index_discard
from catkeeper.model import VM, IpSighting
from catkeeper.model import best_ip as best_ip  # moved to the model; kept importable here

# Sources whose answer for a VM is its complete list: an address it no longer reports is
# gone (the guest changed address), not merely unseen.
AUTHORITATIVE = frozenset({"agent", "lease"})
# Sources that watch one network segment from one host: there an address has one owner at
# a time, so a newer answer from another MAC means the address moved. Per-VM sources
# (agent, lease, libvirt's arp) say nothing about other VMs, whose isolated networks may
# well reuse the same address.
SEGMENT_SOURCES = frozenset({"sweep-arp", "sweep-icmp", "neigh"})
# A sighting seen again only refreshes the VMs that show it this often (seconds).
RESEEN_NEWS_S = 300.0

# Which source to show when several saw the same address within TIE_WINDOW seconds: the
# one that knows most (the guest itself, then the DHCP server, then the wire).
SOURCE_RANK = ("agent", "lease", "sweep-arp", "sweep-icmp", "neigh", "arp")
TIE_WINDOW = 5.0

IP_ON_TWO_MACS = "ip-on-two-macs"
MAC_ON_TWO_HOSTS = "mac-on-two-hosts"


@dataclass(frozen=True)
class IpConflict:
    kind: str  # IP_ON_TWO_MACS or MAC_ON_TWO_HOSTS
    key: str  # the IP, or the MAC
    claims: tuple[str, ...]  # "MAC (sources)" for an IP; "HOST/VM" for a MAC
    host: str | None = None  # IP_ON_TWO_MACS: whose view (private networks repeat per host)


# Who saw it: (source, observing host). The same private address (every host's default
# NAT network is 192.168.122.0/24) may belong to different guests on different hosts, so
# "moved" and "duplicate" are judged within one host's view only.
_Key = tuple[str, str]


def _ip_sort_key(ip: str) -> tuple[int, int]:
    addr = ipaddress.ip_address(ip)
    return (addr.version, int(addr))


def _rank(source: str) -> int:
    return SOURCE_RANK.index(source) if source in SOURCE_RANK else len(SOURCE_RANK)


def _pick(sightings: Iterable[IpSighting]) -> IpSighting:
    """The freshest sighting; among those within TIE_WINDOW of it, the best-ranked source
    (so one scan's agent, lease and ARP answers, milliseconds apart, show as "agent")."""
    pool = list(sightings)
    newest = max(s.seen_at for s in pool)
    close = [s for s in pool if newest - s.seen_at <= TIE_WINDOW]
    return min(close, key=lambda s: (_rank(s.source), -s.seen_at))


class IpBook:
    """Sightings by MAC; ``decorator()`` is what ``HostSession.decorate`` wants."""

    def __init__(self, *, max_age: float = 3600.0, clock: Callable[[], float] = time.time) -> None:
        # Sightings older than this are dropped: an address nobody confirmed for an hour is
        # more likely wrong than right.
        self.max_age = max_age
        self._clock = clock
        self._by_mac: dict[str, dict[str, dict[_Key, IpSighting]]] = {}  # mac → ip → who
        # ip → the MACs with a sighting of it: which MACs a segment answer can move an
        # address away from, without walking every MAC of the fleet per answer.
        self._macs_at: dict[str, tuple[str, ...]] = {}  # backend/small_index.py
        self.results: dict[tuple[str, str, str], SourceResult] = {}  # (host, source, scope)
        self.revision = 0  # bumped on every change, for cheap "anything new?" checks
        # MACs whose addresses changed since take_dirty(): only their VMs need redecorating,
        # which at 10,000 VMs is the difference between milliseconds and seconds of UI stall.
        self._dirty: set[str] = set()
        self._news_at: dict[str, float] = {}  # MAC → when it was last made dirty
        # No sighting is older than this (a lower bound), so most prunes need not look.
        self._oldest = math.inf

    # ---- feeding ---------------------------------------------------------------------

    def _only_seen_again(self, mac: str, old: IpSighting | None, new: IpSighting) -> bool:
        """The same answer at a later time, while the VM's shown sighting is recent enough.

        Every background scan sees most addresses again; passing each new time on remade
        every such VM (10,000 VM objects, table rows and events a minute at 20 x 500): the
        ages shown are in minutes, so a sighting seen again is news at most every
        ``RESEEN_NEWS_S``. A new, moved or lost address is news at once."""
        return (
            old is not None
            and dataclasses.replace(old, seen_at=new.seen_at) == new
            and new.seen_at - self._news_at.get(mac, -math.inf) < RESEEN_NEWS_S
        )

    def add(self, sightings: Iterable[IpSighting], host: str = "") -> bool:
        """Record sightings made from ``host``'s point of view (newer replaces older per
        MAC, IP, source and host); True if anything changed."""
        changed = False
        for s in sightings:
            mac = normalize_mac(s.mac)
            if mac is None or not usable_address(s.ip):
                continue
            ip = str(ipaddress.ip_address(s.ip))  # one spelling per address (IPv6!)
            if mac != s.mac or ip != s.ip:
                s = dataclasses.replace(s, mac=mac, ip=ip)
            by_ip = self._by_mac.setdefault(mac, {})
            if ip not in by_ip:
                index_add(self._macs_at, ip, mac)
            who = by_ip.setdefault(ip, {})
            old = who.get((s.source, host))
            if old is not None and old.seen_at > s.seen_at:
                continue
            if old is not None and old.prefix is not None and s.prefix is None:
                s = dataclasses.replace(s, prefix=old.prefix)
            if old != s:
                who[(s.source, host)] = s
                self._oldest = min(self._oldest, s.seen_at)
                if not self._only_seen_again(mac, old, s):
                    self._dirty.add(mac)
                    self._news_at[mac] = s.seen_at
                changed = True
        if changed:
            self.revision += 1
        return changed

    def apply(self, result: SourceResult) -> bool:
        """Take one source's result; True if any VM's addresses may have changed.

        An authoritative source's answer for a VM replaces what that source said before for
        the VM's MACs; on a segment source, an address that moved to another MAC in a newer
        answer of the same source on the same host leaves the old MAC. A failed source
        changes nothing: its old sightings age.
        """
        self.results[(result.host, result.source, result.scope)] = result
        if not result.ok:
            return False
        fresh = [
            (mac, str(ipaddress.ip_address(s.ip)))
            for s in result.sightings
            if (mac := normalize_mac(s.mac)) is not None and usable_address(s.ip)
        ]
        mine = (result.source, result.host)
        changed = False
        if result.source in AUTHORITATIVE and result.macs:
            covered = {m for m in map(normalize_mac, result.macs) if m}
            keep = set(fresh)
            changed |= self._retract(
                lambda m, ip, who, _s: who == mine and m in covered and (m, ip) not in keep,
                macs=covered,
            )
        newest = dict((ip, mac) for mac, ip in fresh) if result.source in SEGMENT_SOURCES else {}
        if newest:
            # Only MACs seen at one of these addresses, from the index: neither a call per
            # sighting nor a test per MAC of the fleet (at 20 x 500 with every local host
            # reading the same neighbour table, that walk was most of the loop's IP work).
            holders = {m for ip in newest for m in self._macs_at.get(ip, ())}
            changed |= self._retract(
                lambda m, ip, who, s: (
                    who == mine
                    and ip in newest
                    and m != newest[ip]
                    and s.seen_at < result.started_at
                ),
                macs=holders,
            )
        changed |= self.add(result.sightings, result.host)
        return changed

    def _retract(
        self,
        doomed: Callable[[str, str, _Key, IpSighting], bool],
        macs: Iterable[str] | None = None,
    ) -> bool:
        """Drop the sightings ``doomed`` names; ``macs`` limits the search to those MACs."""
        changed = False
        candidates = (
            list(self._by_mac.items())
            if macs is None
            else [(m, self._by_mac[m]) for m in macs if m in self._by_mac]
        )
        for mac, by_ip in candidates:
            for ip, who in list(by_ip.items()):
                for key, s in list(who.items()):
                    if doomed(mac, ip, key, s):
                        del who[key]
                        self._dirty.add(mac)
                        changed = True
                if not who:
                    del by_ip[ip]
                    index_discard(self._macs_at, ip, mac)
            if not by_ip:
                del self._by_mac[mac]
                self._news_at.pop(mac, None)
        if changed:
            self.revision += 1
        return changed

    def forget_vm(self, host: str, uuid: str) -> None:
        """A VM left its host: its per-VM answers go (its MACs' sightings age as usual).
        Kept, they grew with every VM ever defined and undefined (the soak's churn)."""
        for source in LIBVIRT_SOURCES:
            self.results.pop((host, source, uuid), None)

    def prune(self, now: float | None = None) -> bool:
        """Forget sightings older than ``max_age``; True if any went."""
        limit = (self._clock() if now is None else now) - self.max_age
        if self._oldest >= limit:  # nothing that old: no walk over every sighting
            return False
        changed = self._retract(lambda _m, _ip, _who, s: s.seen_at < limit)
        self._oldest = min(
            (
                s.seen_at
                for by_ip in self._by_mac.values()
                for who in by_ip.values()
                for s in who.values()
            ),
            default=math.inf,
        )
        return changed

    def take_dirty(self) -> set[str]:
        """The MACs whose addresses changed since the last call (and forget them)."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    # ---- reading ---------------------------------------------------------------------

    def macs(self) -> set[str]:
        return set(self._by_mac)

    def all_sightings(self, mac: str) -> tuple[IpSighting, ...]:
        """Every source's latest sighting for this MAC (newest first)."""
        key = normalize_mac(mac)
        by_ip = self._by_mac.get(key, {}) if key else {}
        found = [s for who in by_ip.values() for s in who.values()]
        return tuple(sorted(found, key=lambda s: -s.seen_at))

    def seen_since(self, mac: str, since: float) -> bool:
        """Whether any source saw this MAC, at any address, at ``since`` or later: the
        question a background pass asks per MAC, without picking or sorting anything."""
        key = normalize_mac(mac)
        by_ip = self._by_mac.get(key, {}) if key else {}
        return any(s.seen_at >= since for who in by_ip.values() for s in who.values())

    def sightings_for(self, mac: str) -> tuple[IpSighting, ...]:
        """Per IP the freshest sighting of this MAC, IPv4 first, then by address."""
        key = normalize_mac(mac)
        by_ip = self._by_mac.get(key, {}) if key else {}
        limit = self._clock() - self.max_age
        out = []
        for ip in sorted(by_ip, key=_ip_sort_key):
            shown = _pick(by_ip[ip].values())
            if shown.seen_at >= limit:
                out.append(shown)
        return tuple(out)

    def ips_for(self, vm: VM) -> tuple[IpSighting, ...]:
        """The VM's addresses: per NIC in XML order, per IP the freshest sighting."""
        out: list[IpSighting] = []
        seen: set[tuple[str, str]] = set()
        for nic in vm.nics:
            for s in self.sightings_for(nic.mac):
                if (s.mac, s.ip) not in seen:
                    seen.add((s.mac, s.ip))
                    out.append(s)
        return tuple(out)

    def decorator(self) -> Callable[[VM], VM]:
        """``session.decorate = book.decorator()``: every VM the session builds gets its IPs."""

        def decorate(vm: VM) -> VM:
            ips = self.ips_for(vm)
            return vm if ips == vm.ips else dataclasses.replace(vm, ips=ips)

        return decorate

    def unmatched(self, vms: Iterable[VM]) -> tuple[IpSighting, ...]:
        """Fresh sightings whose MAC belongs to none of these VMs (routers, other machines)."""
        known = {m for vm in vms for nic in vm.nics if (m := normalize_mac(nic.mac))}
        return tuple(
            s for mac in sorted(self._by_mac) if mac not in known for s in self.sightings_for(mac)
        )

    def conflicts(self, vms: Iterable[VM]) -> list[IpConflict]:
        """What looks wrong: an IP on two MACs now, a MAC on VMs of two hosts."""
        out: list[IpConflict] = []
        limit = self._clock() - self.max_age
        claims: dict[tuple[str, str], dict[str, set[str]]] = {}  # (host, ip) → mac → sources
        for mac, by_ip in self._by_mac.items():
            for ip, who in by_ip.items():
                for (source, host), s in who.items():
                    if s.seen_at >= limit:
                        claims.setdefault((host, ip), {}).setdefault(mac, set()).add(source)
        for host, ip in sorted(claims, key=lambda k: (k[0], _ip_sort_key(k[1]))):
            if len(claims[(host, ip)]) > 1:
                parts = tuple(
                    f"{mac} ({', '.join(sorted(sources))})"
                    for mac, sources in sorted(claims[(host, ip)].items())
                )
                out.append(IpConflict(IP_ON_TWO_MACS, ip, parts, host or None))
        owners: dict[str, set[tuple[str, str]]] = {}
        for vm in vms:
            for nic in vm.nics:
                if (m := normalize_mac(nic.mac)) is not None:
                    owners.setdefault(m, set()).add((vm.host, vm.name))
        for mac in sorted(owners):
            hosts = {h for h, _ in owners[mac]}
            if len(hosts) > 1:
                refs = tuple(f"{h}/{n}" for h, n in sorted(owners[mac]))
                out.append(IpConflict(MAC_ON_TWO_HOSTS, mac, refs))
        return out
