"""What one round of reading a host costs on its worker thread: the bulk calls, the XML.

These functions run on the host's own threads (never on the event loop) and return plain
data, so that a warm refresh in which nothing changed costs the loop no per-VM work.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import libvirt

from catkeeper.backend.inventory import StaticInfo, parse_domain_xml
from catkeeper.backend.stats import STATS_GROUPS
from catkeeper.model import Capacity, VmState

_STATS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_VCPU
    | libvirt.VIR_DOMAIN_STATS_BALLOON
)

# The Python work of reading hosts (parsing XML, going through the bulk records) holds the
# GIL, so threads doing it run one at a time anyway; when every host reloads at once (a
# libvirtd restart: 21 hosts) twenty of them took turns with the event loop for the GIL and
# the loop waited ~400 ms. Two at a time parse as fast and leave the loop its share.
PYTHON_WORK = threading.BoundedSemaphore(2)
# Reading again the XML a reconnect showed from before the drop is background work: one
# host's parsing at a time. After a libvirtd restart twenty hosts re-read 500 domains each
# while the table takes in their reloads, and the loop had about a third of the GIL.
RECHECK_WORK = threading.BoundedSemaphore(1)

# libvirt's state codes, looked up once rather than through the enum per VM per refresh.
_STATES = tuple(VmState.from_libvirt(code) for code in range(len(VmState)))
# What a warm refresh compares per domain: (state code, autostart, persistent, live vCPUs,
# live balloon). Equal signatures mean the row cannot have changed.
Signature = tuple[int, bool, bool, Any, Any]


def _state(code: int) -> VmState:
    return _STATES[code] if 0 <= code < len(_STATES) else VmState.NOSTATE


@dataclass(frozen=True)
class HostFacts:
    """What a host says once per connection: its size and its software cannot change while
    the connection lasts (a libvirtd upgrade or restart drops it). Read with the cold load,
    so that a warm refresh makes four calls, not seven: each call is a round trip and wakes
    libvirt's event thread twice, 20 hosts every 10 s."""

    cpus: int
    memory_kib: int
    hypervisor: str
    libvirt_version: str


def _version_text(v: int) -> str:
    return f"{v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"


def read_facts(conn: libvirt.virConnect) -> HostFacts:
    info = conn.getInfo()
    return HostFacts(
        cpus=int(info[2]),
        memory_kib=int(info[1]) * 1024,
        hypervisor=conn.getType(),
        libvirt_version=_version_text(conn.getLibVersion()),
    )


@dataclass
class Bulk:
    """One round of the bulk calls: everything but the per-domain XML.

    ``changed`` lists the domains whose signature differs from the ``previous`` one the
    read was given (new domains included), worked out on the worker thread so that a warm
    refresh in which nothing changed costs the event loop no per-VM work. ``domains``,
    ``states`` and ``stats`` hold the changed ones only: the rest are freed on the worker
    thread, where the read made them (freeing 500 handles on the loop after every refresh
    of a 500-VM host cost the loop ~1 % of a core at 20 such hosts; freeing 500 stats
    records, ~1 ms a refresh, was the loop's largest idle cost after that).
    """

    uuids: list[str]
    states: dict[str, VmState]
    stats: dict[str, dict[str, Any]]
    autostart: set[str]
    persistent: set[str]
    capacity: Capacity
    latency_ms: float
    facts: HostFacts
    domains: dict[str, Any] = field(repr=False, default_factory=dict)
    signatures: dict[str, Signature] = field(repr=False, default_factory=dict)
    changed: list[str] = field(default_factory=list)
    full: bool = True  # every domain was listed (else the shut-off ones were carried over)


# A warm refresh lists the running domains only (their states and stats are what changes
# while nothing happens) and every domain one refresh in this many: a minute at the default
# 10 s. Shut-off domains change through someone's define, undefine or start, which
# libvirt's events report at once (autostart, which no event reports, is read every time);
# the full listing is the net for a missed event. At 20 hosts x 500 VMs (half running) the
# full bulk call was most of the idle CPU of the hosts' threads: 3.5 ms a host, 1.7 ms for
# the running half.
FULL_LISTING_EVERY = 6
_SHUTOFF = libvirt.VIR_DOMAIN_SHUTOFF


@dataclass
class _Folded:
    signatures: dict[str, Signature]
    changed: list[str]
    states: dict[str, VmState]
    stats: dict[str, dict[str, Any]]
    domains: dict[str, Any]
    every: list[tuple[str, dict[str, Any]]]


def _fold(
    records: list[tuple[Any, dict[str, Any]]],
    old: dict[str, Signature],
    autostart: set[str],
    transient: set[str],
    keep_every: bool,
) -> _Folded:
    """Signatures of the listed domains; states, stats and handles of the changed ones."""
    out = _Folded({}, [], {}, {}, {}, [])
    with PYTHON_WORK:
        for dom, record in records:
            uuid = sys.intern(dom.UUIDString())  # one copy shared by every dict keyed on it
            if keep_every:
                out.every.append((uuid, record))
            code = int(record.get("state.state", 0))
            signature = (
                code,
                uuid in autostart,
                uuid not in transient,
                record.get("vcpu.current"),
                record.get("balloon.current"),
            )
            out.signatures[uuid] = signature
            if old.get(uuid) != signature:
                out.changed.append(uuid)
                out.domains[uuid] = dom
                out.states[uuid] = _state(code)
                out.stats[uuid] = record
    return out


def _carried(
    old: dict[str, Signature],
    listed: dict[str, Signature],
    autostart: set[str],
    transient: set[str],
) -> dict[str, Signature] | None:
    """The previous signatures of the domains a running-only listing left out, or None when
    one of them may have changed (it was not shut off, or its autostart or persistence
    moved): then only a listing of every domain tells."""
    carried: dict[str, Signature] = {}
    for uuid, signature in old.items():
        if uuid in listed:
            continue
        code, was_autostart, was_persistent = signature[0], signature[1], signature[2]
        if (
            code != _SHUTOFF
            or was_autostart != (uuid in autostart)
            or was_persistent != (uuid not in transient)
        ):
            return None
        carried[uuid] = signature
    return carried


def read_bulk(
    conn: libvirt.virConnect,
    previous: dict[str, Signature] | None = None,
    sample: Callable[[Iterable[tuple[str, dict[str, Any]]]], None] | None = None,
    facts: HostFacts | None = None,
    *,
    running_only: bool = False,
) -> Bulk:
    """The bulk calls: one stats call lists every domain (active or not) with its handle.

    Autostart and transient domains are the short lists (persistent = all but transient),
    so a refresh makes one domain handle per VM, not three (6.3 → 2.6 ms of CPU per
    500-VM host). With ``sample`` (live stats at the refresh's own interval) the same call
    also asks for the stats groups and hands the records over, still on this thread.
    ``facts`` are the connection's (``read_facts``), read here when not given.
    ``running_only`` (with ``previous``): the stats call lists the running domains only and
    the shut-off ones keep their previous signatures, unless one of those may have changed
    (see ``_carried``): then every domain is listed after all (``Bulk.full``).
    """
    if facts is None:
        facts = read_facts(conn)
    started = time.perf_counter()
    try:
        free: int | None = conn.getFreeMemory() // 1024
    except libvirt.libvirtError:  # unsupported: still a round trip, so still the latency
        free = None
    latency = (time.perf_counter() - started) * 1000
    autostart = {
        d.UUIDString() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART)
    }
    transient = {
        d.UUIDString() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_TRANSIENT)
    }
    old = previous or {}
    groups = _STATS | STATS_GROUPS if sample is not None else _STATS
    keep = sample is not None
    folded: _Folded | None = None
    carried: dict[str, Signature] | None = None
    if running_only and old:
        running = conn.getAllDomainStats(groups, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE)
        folded = _fold(running, old, autostart, transient, keep)
        del running
        carried = _carried(old, folded.signatures, autostart, transient)
        if carried is None:
            folded = None  # its records are freed here, on this thread
    if folded is None:
        folded = _fold(conn.getAllDomainStats(groups, 0), old, autostart, transient, keep)
        carried = None
    if sample is not None:
        with PYTHON_WORK:
            sample(folded.every)
    signatures = folded.signatures if carried is None else carried | folded.signatures
    return Bulk(
        uuids=list(signatures),
        states=folded.states,
        stats=folded.stats,
        autostart=autostart,
        persistent=signatures.keys() - transient,
        capacity=Capacity(cpus=facts.cpus, memory_kib=facts.memory_kib, free_memory_kib=free),
        latency_ms=round(latency, 2),
        facts=facts,
        domains=folded.domains,
        signatures=signatures,
        changed=folded.changed,
        full=carried is None,
    )


def read_xml(
    domains: Iterable[Any], secure: bool, *, background: bool = False
) -> dict[str, StaticInfo | BaseException]:
    """Domain XML → parsed static info, one entry per domain (errors are data);
    ``background``: a re-read nobody waits for, parsed in ``RECHECK_WORK``'s one turn."""
    flags = libvirt.VIR_DOMAIN_XML_SECURE if secure else 0
    turn = RECHECK_WORK if background else contextlib.nullcontext()
    out: dict[str, StaticInfo | BaseException] = {}
    for dom in domains:
        uuid = sys.intern(dom.UUIDString())  # one copy shared by every dict keyed on it
        try:
            # The secure XML only tells whether a VNC password exists; parse_domain_xml
            # keeps nothing of the password itself.
            xml = dom.XMLDesc(flags)
            with turn, PYTHON_WORK:
                out[uuid] = parse_domain_xml(xml, secure=secure)
        except libvirt.libvirtError as exc:
            out[uuid] = exc
    return out


def read_one(conn: libvirt.virConnect, uuid: str, secure: bool) -> tuple[Any, ...] | None:
    """Everything about one domain, or None when it no longer exists."""
    try:
        dom = conn.lookupByUUIDString(uuid)
        info = parse_domain_xml(
            dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE if secure else 0), secure=secure
        )
        state = VmState.from_libvirt(dom.state()[0])
        return info, state, bool(dom.autostart()), bool(dom.isPersistent())
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise
