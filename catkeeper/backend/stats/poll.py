"""When a host's stats are read: one bulk call per host every ``timing.stats_interval``.

With ``stats_interval`` equal to ``refresh_interval`` the warm refresh asks for the stats
groups too and no second call is made (``folded``); 0 turns stats off. The call and the
rate arithmetic run on the host's worker thread; the loop only learns "stats updated for
host H" (one ``StatsUpdated`` per poll), so idle cost stays per host, not per VM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import libvirt

from catkeeper.backend.events import FleetEvent, StatsUpdated
from catkeeper.backend.stats.ring import HostStats
from catkeeper.backend.stats.sample import STATS_GROUPS
from catkeeper.config import Timing

log = logging.getLogger(__name__)
Clock = Callable[[], float]


class _Session(Protocol):
    timing: Timing
    stats: HostStats

    @property
    def name(self) -> str: ...

    async def call(
        self,
        fn: Callable[[libvirt.virConnect], Any],
        *,
        timeout: float | None = ...,
        what: str = ...,
    ) -> Any: ...


def folded(timing: Timing) -> bool:
    """Whether the warm refresh carries the stats (same interval, both on)."""
    return timing.stats_interval > 0 and timing.stats_interval == timing.refresh_interval


def read_stats(conn: libvirt.virConnect, stats: HostStats, mono: Clock, wall: Clock) -> None:
    """One bulk call for every domain of the host, folded into ``stats`` (worker thread)."""
    records = conn.getAllDomainStats(STATS_GROUPS, 0)
    stats.take(((dom.UUIDString(), rec) for dom, rec in records), mono(), wall())


def announce(stats: HostStats, emit: Callable[[FleetEvent], None]) -> None:
    """Post ``StatsUpdated`` to the running loop after each poll (polls run on threads)."""
    loop = asyncio.get_running_loop()
    event = StatsUpdated(stats.host)

    def posted() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(emit, event)

    stats.on_poll = posted


async def sample_now(session: _Session, mono: Clock, wall: Clock) -> None:
    await session.call(lambda c: read_stats(c, session.stats, mono, wall), what="reading VM stats")


async def _poll(session: _Session, mono: Clock, wall: Clock) -> None:
    interval = session.timing.stats_interval
    while True:
        try:
            await sample_now(session, mono, wall)
        except Exception as exc:  # a host that is down has no stats; the session says why
            log.debug("host %s: stats: %s", session.name, exc)
        await asyncio.sleep(interval)


def fold_sampler(
    session: _Session, mono: Clock = time.monotonic, wall: Clock = time.time
) -> Callable[[Iterable[tuple[str, dict[str, Any]]]], None] | None:
    """What ``read_bulk`` hands its records to when the warm refresh carries the stats."""
    if not folded(session.timing):
        return None
    stats = session.stats
    return lambda records: stats.take(records, mono(), wall())


def start_polling(
    session: _Session,
    emit: Callable[[FleetEvent], None],
    mono: Clock = time.monotonic,
    wall: Clock = time.time,
) -> asyncio.Task[None] | None:
    """Announce each poll to ``emit``; the host's stats task, or None when stats are off or
    ride on the warm refresh."""
    timing = session.timing
    if timing.stats_interval <= 0:
        return None
    announce(session.stats, emit)
    if folded(timing):
        return None
    return asyncio.get_running_loop().create_task(
        _poll(session, mono, wall), name=f"stats-{session.name}"
    )
