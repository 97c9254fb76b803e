"""IpBook: matching by MAC, freshness, retraction, conflicts, and best_ip. Pure data, no I/O."""

from __future__ import annotations

import dataclasses
import json

from catkeeper.backend.ipscan.book import (
    IP_ON_TWO_MACS,
    MAC_ON_TWO_HOSTS,
    IpBook,
    best_ip,
)
from catkeeper.backend.ipscan.results import SourceResult
from catkeeper.model import VM, IpSighting, Nic, VmState, to_jsonable

MAC_A = "52:54:00:00:00:0a"
MAC_B = "52:54:00:00:00:0b"


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def vm(name: str, *macs: str, host: str = "h1") -> VM:
    return VM(
        host=host,
        name=name,
        uuid=f"uuid-{host}-{name}",
        state=VmState.RUNNING,
        vcpus=1,
        memory_kib=1024,
        max_memory_kib=1024,
        autostart=False,
        persistent=True,
        nics=tuple(Nic(mac=m, type="network", source="default") for m in macs),
    )


def s(mac: str, ip: str, source: str, at: float, prefix: int | None = 24) -> IpSighting:
    return IpSighting(mac=mac, ip=ip, prefix=prefix, source=source, seen_at=at)


def test_matches_by_mac_and_normalises_spelling() -> None:
    book = IpBook(clock=Clock())
    book.add([s("52:54:0:0:0:A", "10.0.0.5", "sweep-arp", 999.0)])
    decorated = book.decorator()(vm("a", MAC_A))
    assert [(x.mac, x.ip, x.source) for x in decorated.ips] == [(MAC_A, "10.0.0.5", "sweep-arp")]
    assert decorated.ips[0].mac == MAC_A  # normalised, so it matches the NIC


def test_freshest_per_ip_and_source_rank_within_one_scan() -> None:
    clock = Clock(2000.0)
    book = IpBook(clock=clock)
    book.add([s(MAC_A, "10.0.0.5", "lease", 1000.0), s(MAC_A, "10.0.0.5", "sweep-arp", 1500.0)])
    assert book.sightings_for(MAC_A)[0].source == "sweep-arp"  # fresher wins
    # Milliseconds apart in one scan: the source that knows most is shown.
    book.add([s(MAC_A, "10.0.0.5", "arp", 1999.99), s(MAC_A, "10.0.0.5", "agent", 1999.98)])
    assert book.sightings_for(MAC_A)[0].source == "agent"
    # Every source's own latest sighting stays available.
    assert {x.source for x in book.all_sightings(MAC_A)} == {"lease", "sweep-arp", "arp", "agent"}


def test_older_sighting_never_replaces_newer_and_prefix_survives() -> None:
    book = IpBook(clock=Clock())
    book.add([s(MAC_A, "10.0.0.5", "neigh", 900.0, prefix=24)])
    assert not book.add([s(MAC_A, "10.0.0.5", "neigh", 800.0)])
    book.add([s(MAC_A, "10.0.0.5", "neigh", 950.0, prefix=None)])
    (only,) = book.sightings_for(MAC_A)
    assert only.seen_at == 950.0 and only.prefix == 24


def test_ipv4_first_and_nic_order() -> None:
    book = IpBook(clock=Clock())
    book.add(
        [
            s(MAC_A, "fe80::5054:ff:fe00:a", "agent", 999.0, 64),
            s(MAC_A, "2001:db8::a", "agent", 999.0, 64),
            s(MAC_A, "10.0.0.20", "agent", 999.0),
            s(MAC_A, "10.0.0.3", "agent", 999.0),
            s(MAC_B, "10.0.1.1", "agent", 999.0),
        ]
    )
    v = book.decorator()(vm("a", MAC_B, MAC_A))
    assert [x.ip for x in v.ips] == [
        "10.0.1.1",
        "10.0.0.3",
        "10.0.0.20",
        "2001:db8::a",
        "fe80::5054:ff:fe00:a",
    ]
    assert best_ip(v) == "10.0.1.1"


def test_best_ip_prefers_ipv4_then_global_ipv6() -> None:
    base = vm("a", MAC_A)
    assert best_ip(base) is None
    v6 = dataclasses.replace(
        base,
        ips=(s(MAC_A, "fe80::1", "agent", 1.0, 64), s(MAC_A, "2001:db8::1", "agent", 1.0, 64)),
    )
    assert best_ip(v6) == "2001:db8::1"
    both = dataclasses.replace(v6, ips=(*v6.ips, s(MAC_A, "10.1.2.3", "neigh", 1.0)))
    assert best_ip(both) == "10.1.2.3"


def test_unusable_addresses_and_macs_are_dropped() -> None:
    book = IpBook(clock=Clock())
    changed = book.add(
        [
            s("00:00:00:00:00:00", "10.0.0.1", "agent", 999.0),
            s(MAC_A, "127.0.0.1", "agent", 999.0),
            s(MAC_A, "::1", "agent", 999.0),
            s("not-a-mac", "10.0.0.2", "agent", 999.0),
        ]
    )
    assert not changed and book.macs() == set()


def test_max_age_hides_then_prune_forgets() -> None:
    clock = Clock(1000.0)
    book = IpBook(max_age=60.0, clock=clock)
    book.add([s(MAC_A, "10.0.0.5", "neigh", 990.0)])
    assert book.sightings_for(MAC_A)
    clock.now = 1100.0
    assert book.sightings_for(MAC_A) == ()
    assert book.prune() and book.macs() == set()


def test_seen_since_asks_about_any_address_of_the_mac() -> None:
    book = IpBook(clock=Clock(1000.0))
    book.add([s(MAC_A, "10.0.0.5", "neigh", 900.0), s(MAC_A, "10.0.0.6", "lease", 950.0)])
    assert book.seen_since(MAC_A, 950.0)  # the newer address counts
    assert book.seen_since(MAC_A.upper(), 900.0)  # any spelling of the MAC
    assert not book.seen_since(MAC_A, 950.5)
    assert not book.seen_since(MAC_B, 0.0)  # never seen
    assert not book.seen_since("not a mac", 0.0)


def test_prune_again_later_forgets_what_aged_since() -> None:
    clock = Clock(1000.0)
    book = IpBook(max_age=60.0, clock=clock)
    book.add([s(MAC_A, "10.0.0.5", "neigh", 990.0), s(MAC_B, "10.0.0.6", "neigh", 1030.0)])
    assert not book.prune()  # nothing old enough yet
    clock.now = 1060.0
    assert book.prune() and book.macs() == {MAC_B}
    clock.now = 1080.0
    assert not book.prune() and book.macs() == {MAC_B}
    book.add([s(MAC_A, "10.0.0.5", "neigh", 1075.0)])
    clock.now = 1100.0
    assert book.prune() and book.macs() == {MAC_A}  # B (1030) aged out; A (1075) stays
    clock.now = 1140.0
    assert book.prune() and book.macs() == set()


def test_authoritative_source_retracts_addresses_it_no_longer_reports() -> None:
    book = IpBook(clock=Clock(2000.0))
    first = SourceResult(
        "h1", "agent", "uuid-1", (s(MAC_A, "10.0.0.5", "agent", 1000.0),), macs=(MAC_A,)
    )
    book.apply(first)
    book.add([s(MAC_A, "10.0.0.5", "neigh", 1000.0)])  # another source saw it too
    moved = SourceResult(
        "h1",
        "agent",
        "uuid-1",
        (s(MAC_A, "10.0.0.9", "agent", 1500.0),),
        started_at=1499.0,
        macs=(MAC_A,),
    )
    assert book.apply(moved)
    by_ip = {
        x.ip: {y.source for y in book.all_sightings(MAC_A) if y.ip == x.ip}
        for x in book.all_sightings(MAC_A)
    }
    # The agent no longer claims .5; the neighbour table's own (older) sighting remains.
    assert by_ip == {"10.0.0.9": {"agent"}, "10.0.0.5": {"neigh"}}


def test_failed_source_changes_nothing_but_is_recorded() -> None:
    book = IpBook(clock=Clock())
    book.add([s(MAC_A, "10.0.0.5", "agent", 999.0)])
    failed = SourceResult(
        "h1", "agent", "uuid-1", error="QEMU guest agent is not configured", macs=(MAC_A,)
    )
    assert not book.apply(failed)
    assert book.sightings_for(MAC_A)[0].ip == "10.0.0.5"
    assert book.results[("h1", "agent", "uuid-1")].error == "QEMU guest agent is not configured"


def test_a_vm_that_left_takes_its_per_vm_answers_with_it() -> None:
    book = IpBook(clock=Clock())
    for uuid, mac in (("uuid-1", MAC_A), ("uuid-2", MAC_B)):
        for source in ("agent", "lease", "arp"):
            book.apply(SourceResult("h1", source, uuid, error="no answer", macs=(mac,)))
    book.apply(SourceResult("h1", "neigh", "*", sightings=(s(MAC_A, "10.0.0.5", "neigh", 999),)))
    book.forget_vm("h1", "uuid-1")
    book.forget_vm("h2", "uuid-2")  # another host's VM of that UUID: nothing of h1's goes
    assert sorted(k for k in book.results if k[2] != "*") == [
        ("h1", src, "uuid-2") for src in ("agent", "arp", "lease")
    ]
    assert ("h1", "neigh", "*") in book.results  # a host-wide answer is not the VM's
    assert book.sightings_for(MAC_A)[0].ip == "10.0.0.5"  # its MAC's sightings age as usual


def test_an_address_seen_again_is_news_for_the_vms_at_most_every_five_minutes() -> None:
    book = IpBook(clock=Clock(2000.0))
    book.add([s(MAC_A, "10.0.0.5", "sweep-arp", 1000.0)])
    assert book.take_dirty() == {MAC_A}
    book.add([s(MAC_A, "10.0.0.5", "sweep-arp", 1060.0)])  # the next scan: same answer
    assert book.take_dirty() == set()
    assert book.sightings_for(MAC_A)[0].seen_at == 1060.0  # the book itself is current
    book.add([s(MAC_A, "10.0.0.6", "sweep-arp", 1070.0)])  # a new address: news at once
    assert book.take_dirty() == {MAC_A}
    book.add([s(MAC_A, "10.0.0.6", "sweep-arp", 1369.0)])
    assert book.take_dirty() == set()
    book.add([s(MAC_A, "10.0.0.6", "sweep-arp", 1371.0)])  # five minutes after the news
    assert book.take_dirty() == {MAC_A}
    decorated = book.decorator()(vm("a", MAC_A))  # decorating reads the book: current
    assert ("10.0.0.6", 1371.0) in [(i.ip, i.seen_at) for i in decorated.ips]


def test_address_that_moved_to_another_mac_leaves_the_old_one() -> None:
    book = IpBook(clock=Clock(2000.0))
    book.apply(
        SourceResult(
            "h1",
            "sweep-arp",
            "10.0.0.0/24",
            (s(MAC_A, "10.0.0.5", "sweep-arp", 1000.0),),
            started_at=999.0,
        )
    )
    book.apply(
        SourceResult(
            "h1",
            "sweep-arp",
            "10.0.0.0/24",
            (s(MAC_B, "10.0.0.5", "sweep-arp", 1900.0),),
            started_at=1899.0,
        )
    )
    assert book.sightings_for(MAC_A) == ()
    assert [x.ip for x in book.sightings_for(MAC_B)] == ["10.0.0.5"]
    assert book.conflicts([]) == []


def test_an_address_moves_again_after_its_old_holder_was_forgotten_and_seen_anew() -> None:
    """Who holds an address is indexed (a segment answer no longer walks every MAC): the
    index must follow prunes, retractions and re-sightings, and one spelling per IPv6."""
    clock = Clock(1000.0)
    book = IpBook(max_age=60.0, clock=clock)

    def neigh(at: float, *sightings: IpSighting) -> None:
        book.apply(SourceResult("h1", "neigh", "h1", sightings, started_at=at - 1))

    neigh(1000.0, s(MAC_A, "10.0.0.5", "neigh", 1000.0))
    neigh(1010.0, s(MAC_B, "10.0.0.5", "neigh", 1010.0))  # moved: A loses it
    assert book.sightings_for(MAC_A) == ()
    clock.now = 1100.0
    assert book.prune() and book.macs() == set()  # B aged out too
    neigh(1100.0, s(MAC_A, "10.0.0.5", "neigh", 1100.0))  # A has it again
    neigh(1110.0, s(MAC_B, "10.0.0.5", "neigh", 1110.0), s(MAC_A, "fe80::0001", "neigh", 1110.0))
    assert [x.ip for x in book.sightings_for(MAC_A)] == ["fe80::1"]
    assert [x.ip for x in book.sightings_for(MAC_B)] == ["10.0.0.5"]
    neigh(1120.0, s(MAC_B, "FE80:0:0::1", "neigh", 1120.0))  # the same address, spelled anew
    assert book.sightings_for(MAC_A) == ()
    # neigh is not authoritative: B keeps 10.0.0.5, unseen in this answer but not taken.
    assert [x.ip for x in book.sightings_for(MAC_B)] == ["10.0.0.5", "fe80::1"]


def test_conflicts_ip_on_two_macs_and_mac_on_two_hosts() -> None:
    book = IpBook(clock=Clock(2000.0))
    # Same sweep, two answers for one address: a real duplicate.
    book.apply(
        SourceResult(
            "h1",
            "sweep-arp",
            "10.0.0.0/24",
            (s(MAC_A, "10.0.0.7", "sweep-arp", 1990.0), s(MAC_B, "10.0.0.7", "sweep-arp", 1990.0)),
            started_at=1989.0,
        )
    )
    book.add([s(MAC_A, "10.0.0.8", "lease", 1990.0), s(MAC_B, "10.0.0.8", "agent", 1990.0)], "h1")
    vms = [vm("a", MAC_A, host="h1"), vm("a-clone", MAC_A, host="h2"), vm("b", MAC_B)]
    conflicts = book.conflicts(vms)
    assert [(c.kind, c.key) for c in conflicts] == [
        (IP_ON_TWO_MACS, "10.0.0.7"),
        (IP_ON_TWO_MACS, "10.0.0.8"),
        (MAC_ON_TWO_HOSTS, MAC_A),
    ]
    assert conflicts[1].claims == (f"{MAC_A} (lease)", f"{MAC_B} (agent)")
    assert conflicts[2].claims == ("h1/a", "h2/a-clone")
    json.dumps(to_jsonable(conflicts))  # plain data


def test_unmatched_lists_macs_of_no_vm() -> None:
    book = IpBook(clock=Clock())
    book.add([s(MAC_A, "10.0.0.5", "neigh", 999.0), s(MAC_B, "10.0.0.1", "neigh", 999.0)])
    assert [x.mac for x in book.unmatched([vm("a", MAC_A)])] == [MAC_B]


def test_decorated_vm_serialises_with_source_and_time() -> None:
    book = IpBook(clock=Clock())
    book.add([s(MAC_A, "10.0.0.5", "sweep-icmp", 999.5)])
    doc = json.loads(json.dumps(to_jsonable(book.decorator()(vm("a", MAC_A)))))
    assert doc["ips"] == [
        {"mac": MAC_A, "ip": "10.0.0.5", "prefix": 24, "source": "sweep-icmp", "seen_at": 999.5}
    ]


def test_decorator_returns_the_same_object_when_nothing_changed() -> None:
    book = IpBook(clock=Clock())
    v = vm("a", MAC_A)
    assert book.decorator()(v) is v  # cheap on every warm refresh


def test_source_result_json_round_trip() -> None:
    r = SourceResult(
        "h1",
        "sweep-icmp",
        "10.0.0.0/24",
        (s(MAC_A, "10.0.0.5", "sweep-icmp", 1.0),),
        privileged=True,
        alive=("10.9.9.9",),
        note="via br0",
    )
    assert SourceResult.from_json(json.loads(json.dumps(r.to_json()))) == r


def test_private_addresses_repeat_per_host_without_conflict() -> None:
    """Every host's default NAT network is 192.168.122.0/24: the same address on two hosts
    is two guests, neither a move nor a duplicate."""
    book = IpBook(clock=Clock(2000.0))
    for host, mac in (("h1", MAC_A), ("h2", MAC_B)):
        book.apply(
            SourceResult(
                host,
                "neigh",
                "192.168.122.0/24",
                (s(mac, "192.168.122.10", "neigh", 1990.0),),
                started_at=1989.0,
            )
        )
    assert [x.ip for x in book.sightings_for(MAC_A)] == ["192.168.122.10"]
    assert [x.ip for x in book.sightings_for(MAC_B)] == ["192.168.122.10"]
    assert book.conflicts([vm("a", MAC_A, host="h1"), vm("b", MAC_B, host="h2")]) == []
    # Within one host's view the same pair is a duplicate, and says whose view it is.
    book.apply(
        SourceResult(
            "h1", "agent", "uuid-b", (s(MAC_B, "192.168.122.10", "agent", 1995.0),), macs=(MAC_B,)
        )
    )
    (c,) = book.conflicts([])
    assert (c.kind, c.key, c.host) == (IP_ON_TWO_MACS, "192.168.122.10", "h1")


def test_per_vm_sources_never_take_an_address_from_another_vm() -> None:
    """Two guests on two isolated networks of one host may both be 192.168.100.10: their
    agents each say so, and neither answer unseats the other (only flagged)."""
    book = IpBook(clock=Clock(2000.0))
    for mac, uuid, at in ((MAC_A, "uuid-a", 1990.0), (MAC_B, "uuid-b", 1995.0)):
        book.apply(
            SourceResult(
                "h1",
                "agent",
                uuid,
                (s(mac, "192.168.100.10", "agent", at),),
                started_at=at - 0.1,
                macs=(mac,),
            )
        )
    assert [x.ip for x in book.sightings_for(MAC_A)] == ["192.168.100.10"]
    assert [x.ip for x in book.sightings_for(MAC_B)] == ["192.168.100.10"]
    assert [c.kind for c in book.conflicts([])] == [IP_ON_TWO_MACS]


def test_dirty_macs_name_exactly_what_changed() -> None:
    clock = Clock(2000.0)
    book = IpBook(clock=clock, max_age=600)
    book.add([s(MAC_A, "10.0.0.5", "lease", 1900.0), s(MAC_B, "10.0.0.6", "lease", 1900.0)])
    assert book.take_dirty() == {MAC_A, MAC_B}
    assert book.take_dirty() == set()
    book.add([s(MAC_A, "10.0.0.5", "lease", 1900.0)])  # nothing new
    assert book.take_dirty() == set()
    book.add([s(MAC_B, "10.0.0.7", "agent", 1950.0)])
    assert book.take_dirty() == {MAC_B}
    clock.now = 2560.0  # MAC_A's and MAC_B's lease sightings are now too old
    assert book.prune()
    assert book.take_dirty() == {MAC_A, MAC_B}


def test_normalize_mac_fast_path_agrees_with_the_slow_one() -> None:
    from catkeeper.backend.ipscan.results import normalize_mac

    assert normalize_mac("52:54:00:0a:0b:0c") == "52:54:00:0a:0b:0c"
    assert normalize_mac("52:54:0:A:b:C") == "52:54:00:0a:0b:0c"
    assert normalize_mac("52-54-00-0A-0B-0C") == "52:54:00:0a:0b:0c"
    assert normalize_mac("00:00:00:00:00:00") is None
    assert normalize_mac("52:54:00:0a:0b") is None
