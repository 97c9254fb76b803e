"""Stale-reservation evidence: when was a reserved VM last *used*? Evidence only: nothing
here releases anything.

* running and busy now (CPU at or above ``BUSY_CPU`` % of its vCPUs in the latest sample);
* running but idle since the first idle sample after the last busy one, or "at least since"
  catkeeper started watching it (``HostStats.activity``, kept for the session's life);
* shut off since the newest modification time of its disks: ``storageVolLookupByPath`` +
  the volume XML's ``<timestamps><mtime>``, which needs no history kept anywhere. Only for
  a local ``test:///`` host, whose paths are this machine's, ``os.stat`` stands in when
  libvirt has no volume for the path; otherwise the time is unknown.

Disk times are read on the host's worker thread, per host in one pass, for the reserved
shut-off VMs only, and cached: read again when one of those VMs changes state or after
``stale.disk_recheck`` seconds, never on every refresh. "Now" is always the caller's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

import libvirt

from catkeeper.backend.stats.cli import two_samples
from catkeeper.backend.stats.ring import Activity, HostStats
from catkeeper.config import HostConfig, StaleSettings
from catkeeper.model import VM

if TYPE_CHECKING:
    from catkeeper.backend.fleet import Fleet

log = logging.getLogger(__name__)
Clock = Callable[[], float]
T = TypeVar("T")

BUSY, IDLE, OFF, UNKNOWN = "busy", "idle", "off", "unknown"
_CHUNK = 20  # VMs per disk-time call


@dataclass(frozen=True)
class DiskTime:
    """The newest modification time of a VM's disks (None: none could be read)."""

    mtime: float | None
    path: str | None = None  # the disk it came from
    unknown: int = 0  # disks whose time could not be read


@dataclass(frozen=True)
class Evidence:
    kind: str  # BUSY, IDLE, OFF, UNKNOWN
    since: float | None  # last used (busy: now); None: unknown
    at_least: bool = False  # "idle at least since": catkeeper watched no longer
    detail: str = ""

    def text(self, moment: Callable[[float], str]) -> str:
        """One line for a person; ``moment`` formats a time."""
        when = moment(self.since) if self.since is not None else ""
        if self.kind == BUSY:
            return "in use now (busy CPU)"
        if self.kind == IDLE:
            return f"running, idle {'at least ' if self.at_least else ''}since {when}"
        if self.kind == OFF and self.since is not None:
            return f"shut off, disks last written {when}"
        return f"unknown ({self.detail})" if self.detail else "unknown"


def evidence(vm: VM, activity: Activity | None, disks: DiskTime | None, now: float) -> Evidence:
    """What is known about when ``vm`` was last used, at ``now``."""
    if vm.state.is_active:
        if activity is None:
            return Evidence(UNKNOWN, None, detail="running, no CPU samples yet")
        if activity.idle_since is None:
            return Evidence(BUSY, now)
        return Evidence(
            IDLE, activity.idle_since, at_least=activity.idle_since <= activity.watched_since
        )
    if disks is None:
        return Evidence(UNKNOWN, None, detail="disk times not read yet")
    if disks.mtime is None:
        why = "no disk" if not disks.unknown else "disk times unavailable"
        return Evidence(UNKNOWN, None, detail=why)
    return Evidence(OFF, disks.mtime, detail=disks.path or "")


def evidence_json(ev: Evidence) -> dict[str, object]:
    """The evidence as plain JSON (``catkeeper reservations --stale --json``)."""
    return {"kind": ev.kind, "since": ev.since, "at_least": ev.at_least, "detail": ev.detail}


def is_stale(vm: VM, ev: Evidence, now: float, stale_after: float) -> bool:
    """Reserved (and not expired: that is its own hint) and unused for ``stale_after``
    seconds, counted from the reservation's start at the earliest: a fresh reservation is
    never stale, however old the disks."""
    res = vm.reservation
    if res is None or res.is_expired(now) or ev.kind in (BUSY, UNKNOWN) or ev.since is None:
        return False
    last = max(ev.since, res.since) if res.since is not None else ev.since
    return now - last >= stale_after


# ---- disk times (worker thread) ----------------------------------------------------------


def _volume_mtime(conn: libvirt.virConnect, path: str) -> float | None:
    vol = conn.storageVolLookupByPath(path)
    text = ET.fromstring(vol.XMLDesc(0)).findtext("target/timestamps/mtime")
    return float(text) if text else None


def disk_paths(vm: VM) -> list[str]:
    return [d.source for d in vm.disks if d.device == "disk" and d.source]


def read_disk_times(
    conn: libvirt.virConnect, disks: Mapping[str, Sequence[str]], *, local: bool
) -> dict[str, DiskTime]:
    """UUID → newest disk mtime, for these VMs' disk paths (one pass, on the worker)."""
    out: dict[str, DiskTime] = {}
    for uuid, paths in disks.items():
        newest: tuple[float, str] | None = None
        unknown = 0
        for path in paths:
            mtime: float | None = None
            try:
                mtime = _volume_mtime(conn, path)
            except libvirt.libvirtError:
                if local:  # a test:/// host: its paths are this machine's
                    with contextlib.suppress(OSError):
                        mtime = os.stat(path).st_mtime
            if mtime is None:
                unknown += 1
            elif newest is None or mtime > newest[0]:
                newest = (mtime, path)
        out[uuid] = DiskTime(newest[0] if newest else None, newest[1] if newest else None, unknown)
    return out


def _read_part(
    disks: Mapping[str, Sequence[str]], local: bool, conn: libvirt.virConnect
) -> dict[str, DiskTime]:
    return read_disk_times(conn, disks, local=local)


# ---- keeping them fresh ------------------------------------------------------------------


class _Session(Protocol):
    vms: dict[str, VM]
    cfg: HostConfig
    stats: HostStats

    async def call(self, fn: Callable[[libvirt.virConnect], T], *, what: str = ...) -> T: ...


def _local(uri: str) -> bool:
    return uri.startswith("test:///")


class DiskTimes:
    """Every host's cached disk times of its reserved shut-off VMs."""

    def __init__(self, sessions: Mapping[str, _Session], *, recheck: float, mono: Clock) -> None:
        self._sessions = dict(sessions)
        self.recheck = recheck
        self._mono = mono
        self.times: dict[str, dict[str, DiskTime]] = {}
        self._read: dict[str, tuple[frozenset[tuple[str, bool]], float]] = {}

    def get(self, host: str, uuid: str) -> DiskTime | None:
        return self.times.get(host, {}).get(uuid)

    async def refresh_host(self, name: str, *, force: bool = False) -> bool:
        """Read the host's disk times if its reserved VMs' states changed or the cache is
        older than ``recheck``; True when it read."""
        session = self._sessions[name]
        reserved = [vm for vm in session.vms.values() if vm.reservation is not None]
        key = frozenset((vm.uuid, vm.state.is_active) for vm in reserved)
        last = self._read.get(name)
        now = self._mono()
        if not force and last is not None and last[0] == key and now - last[1] < self.recheck:
            return False
        wanted = [(vm.uuid, disk_paths(vm)) for vm in reserved if not vm.state.is_active]
        local = _local(session.cfg.uri)
        times: dict[str, DiskTime] = {}
        # Two round trips per disk: in calls of _CHUNK VMs, so a person's action on this
        # host (calls take turns on a connection) never waits behind all of them.
        for start in range(0, len(wanted), _CHUNK):
            read = functools.partial(_read_part, dict(wanted[start : start + _CHUNK]), local)
            times |= await session.call(read, what="reading disk times")
        self.times[name] = times
        self._read[name] = (key, now)
        return True

    async def refresh(self, *, force: bool = False) -> None:
        async def one(name: str) -> None:
            try:
                await self.refresh_host(name, force=force)
            except Exception as exc:  # a host that is down keeps its last times
                log.debug("host %s: disk times: %s", name, exc)

        await asyncio.gather(*(one(n) for n in self._sessions))

    async def run(self, every: float, settled: Callable[[], Awaitable[object]]) -> None:
        """Check every ``every`` s (cheap when nothing changed: one pass over the reserved),
        the first time once every host has answered or failed once (``settled``)."""
        await settled()
        while True:
            await self.refresh()
            await asyncio.sleep(every)


def stale_vms(
    vms: Iterable[VM],
    activity: Callable[[VM], Activity | None],
    disks: Callable[[VM], DiskTime | None],
    now: float,
    stale_after: float,
) -> list[tuple[VM, Evidence]]:
    """The reserved VMs unused for ``stale_after``, each with its evidence."""
    out = []
    for vm in vms:
        if vm.reservation is None:
            continue
        ev = evidence(vm, activity(vm), disks(vm), now)
        if is_stale(vm, ev, now, stale_after):
            out.append((vm, ev))
    return out


class Staleness:
    """The fleet's evidence in one place: CPU activity from each host's stats, disk times
    from ``disks``, the threshold from the config (what the TUI's table, filter and detail
    screen ask)."""

    def __init__(
        self, sessions: Mapping[str, _Session], settings: StaleSettings, mono: Clock
    ) -> None:
        self._stats = {name: s.stats for name, s in sessions.items()}
        self.settings = settings
        self.disks = DiskTimes(sessions, recheck=settings.disk_recheck, mono=mono)

    def evidence(self, vm: VM, now: float) -> Evidence:
        stats = self._stats.get(vm.host)
        activity = stats.activity(vm.uuid) if stats is not None else None
        ev = evidence(vm, activity, self.disks.get(vm.host, vm.uuid), now)
        polled = stats is not None and stats.polls >= 2 and not stats.reporting
        if polled and vm.state.is_active and activity is None:
            # Polled, yet no host's VM has CPU figures: the driver has none (the test
            # driver). Say so rather than "no samples yet" forever.
            return Evidence(UNKNOWN, None, detail="running; this host reports no CPU time")
        return ev

    def stale(self, vm: VM, now: float) -> bool:
        if vm.reservation is None:
            return False
        return is_stale(vm, self.evidence(vm, now), now, self.settings.stale_after)


async def gather_evidence(
    fleet: Fleet, settings: StaleSettings, wall: Clock, mono: Clock = time.monotonic
) -> Staleness:
    """For one-shot runs (``catkeeper reservations --stale``): every host's disk times, and
    two stats samples one ``stats_interval`` apart (1 s when off) for the running VMs."""
    staleness = Staleness(fleet.sessions, settings, mono)
    running = any(vm.reservation is not None and vm.state.is_active for vm in fleet.vms())
    await asyncio.gather(
        staleness.disks.refresh(force=True), two_samples(fleet, wall) if running else _nothing()
    )
    return staleness


async def _nothing() -> None:
    return None
