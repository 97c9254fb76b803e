"""Per-VM rings of recent rates for one host, filled on that host's worker thread.

Not in the frozen ``VM`` model on purpose: counters change on every poll, so keeping them
there would make every poll a model diff (and a repaint) of every VM. Here a poll touches
only this host's rings, then tells the UI once "stats updated for host H"; the table
repaints only the rows it shows.

Writers: one poll at a time per host (the host's calls take turns, conn_guard.py), on a
worker thread. Readers (the UI) take a reference to a ring; a poll builds new rings and
swaps them in whole, so a reader never sees half a poll.

Compact on purpose: only running VMs have a ring, six float32 figures per sample in one
``array`` (the poll times are the host's, shared by its VMs), and ``Rates`` objects are made
only for the rows a reader asks for. A tuple of 30 ``Rates`` per VM held 83 MB at 10,000
running VMs (tracemalloc, 20 hosts x 500); this, with the counters, holds 13 MB.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, Protocol

from catkeeper.backend.stats.sample import RUNNING, Counters, Rates, counters, has_figures, rates
from catkeeper.model import VM

RING = 30  # samples kept per VM: 5 minutes at the default 10 s
BUSY_CPU = 5.0  # CPU % of its vCPUs from which a running VM counts as in use
_WIDTH = 6  # figures per sample: cpu %, memory KiB, net rx, net tx, disk read, disk write
_NAN = math.nan  # "unknown" in a ring


class Activity(NamedTuple):
    """How long a running VM has been watched, and since when it has been idle (None: busy
    in the latest sample). Kept for the session's life, not just the ring's window, so a
    TUI left open for days knows "idle for days" (stale-reservation evidence, stale.py)."""

    watched_since: float
    idle_since: float | None


def _known(value: float) -> float | None:
    return None if math.isnan(value) else value


def _rates(at: float, ring: array[float], start: int) -> Rates:
    cpu, mem, rx, tx, rd, wr = ring[start : start + _WIDTH]
    return Rates(
        at,
        True,
        _known(cpu),
        None if math.isnan(mem) else int(mem),
        _known(rx),
        _known(tx),
        _known(rd),
        _known(wr),
    )


class HostStats:
    def __init__(self, host: str, *, ring: int = RING, busy_cpu: float = BUSY_CPU) -> None:
        self.host = host
        self.ring = ring
        self.busy_cpu = busy_cpu
        self._activity: dict[str, Activity] = {}
        self._last: dict[str, Counters] = {}
        self._rings: dict[str, array[float]] = {}
        self._times: tuple[float, ...] = ()  # each kept poll's wall time, oldest first
        self.reporting = False  # whether the last poll gave any VM a CPU rate
        self.polls = 0  # counts polls taken, so tests and the CLI can wait for the next one
        # Called (on the worker thread) after each poll; the session posts it to its loop.
        self.on_poll: Callable[[], None] | None = None

    def take(self, records: Iterable[tuple[str, dict[str, Any]]], mono: float, wall: float) -> None:
        """Fold one bulk stats read (``(uuid, record)`` pairs) taken at these times."""
        last = self._last
        old_rings = self._rings
        new_last: dict[str, Counters] = {}
        new_rings: dict[str, array[float]] = {}
        keep = max(1, self.ring - 1)
        keep_values = keep * _WIDTH
        reporting = False
        old_activity, activity = self._activity, {}
        busy = self.busy_cpu
        for uuid, record in records:
            if not has_figures(record):
                # Nothing to rate or draw (no ring: a running VM's ring of blanks cost
                # 30 x 6 floats); a watch already begun survives a poll without figures.
                if uuid in old_activity and record.get("state.state") == RUNNING:
                    activity[uuid] = old_activity[uuid]
                continue
            sample = counters(record, mono)
            new_last[uuid] = sample
            now = rates(sample, last.get(uuid), wall)
            if now.cpu_pct is not None:
                reporting = True
                seen = old_activity.get(uuid)
                watched = seen.watched_since if seen is not None else wall
                if now.cpu_pct >= busy:
                    activity[uuid] = Activity(watched, None)
                else:  # the first idle sample after a busy one, or the watch's start
                    idle = seen.idle_since if seen is not None else None
                    activity[uuid] = Activity(watched, idle if idle is not None else wall)
            elif now.running and uuid in old_activity and last.get(uuid) is not None:
                activity[uuid] = old_activity[uuid]  # a gap (counter reset): keep the watch
            if not now.running:
                continue  # no ring: nothing to draw, and memory stays per running VM
            new = array("f", [_NAN if v is None else v for v in now.figures])
            old = old_rings.get(uuid)
            # A new array each poll (slicing copies): a reader's ring never changes under it.
            new_rings[uuid] = old[-keep_values:] + new if old is not None else new
        # Domains gone from the host are dropped with the old dicts.
        self._times = (*self._times[-keep:], wall)
        self._last, self._rings, self._activity = new_last, new_rings, activity
        self.reporting = reporting
        self.polls += 1
        if self.on_poll is not None:
            self.on_poll()

    def series(self, uuid: str) -> list[Rates]:
        """This VM's samples, oldest first (empty when it is not running or not sampled)."""
        ring, times = self._rings.get(uuid), self._times
        if ring is None:
            return []
        count = len(ring) // _WIDTH
        # Every poll extends every running VM's ring and the times: they end together.
        return [_rates(times[-count + i], ring, i * _WIDTH) for i in range(count)]

    def latest(self, uuid: str) -> Rates | None:
        ring = self._rings.get(uuid)
        if not ring:
            return None
        return _rates(self._times[-1], ring, len(ring) - _WIDTH)

    def activity(self, uuid: str) -> Activity | None:
        """Since when a running VM is watched and idle; None when not running or unsampled."""
        return self._activity.get(uuid)

    def uuids(self) -> list[str]:
        return list(self._rings)


class _HasStats(Protocol):
    @property
    def stats(self) -> HostStats: ...


class FleetStats:
    """Every host's rings behind one lookup (what the TUI's table and detail screen read)."""

    def __init__(
        self, hosts: Mapping[str, HostStats], stale: Callable[[VM, float], bool] | None = None
    ) -> None:
        self._hosts = dict(hosts)  # a session keeps its HostStats for life
        self._stale = stale  # backend/stale.py's judge, for the table's marker

    @classmethod
    def of(
        cls, sessions: Mapping[str, _HasStats], stale: Callable[[VM, float], bool] | None = None
    ) -> FleetStats:
        return cls({name: session.stats for name, session in sessions.items()}, stale)

    def series(self, host: str, uuid: str) -> list[Rates]:
        stats = self._hosts.get(host)
        return stats.series(uuid) if stats is not None else []

    def latest(self, host: str, uuid: str) -> Rates | None:
        stats = self._hosts.get(host)
        return stats.latest(uuid) if stats is not None else None

    def reporting(self) -> bool:
        return any(s.reporting for s in self._hosts.values())

    def stale(self, vm: VM, now: float) -> bool:
        return self._stale is not None and self._stale(vm, now)
