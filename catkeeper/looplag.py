"""Opt-in event-loop lag log: how late a plain timer fires inside the running app.

A loop that is busy (a long callback, parsing on the UI thread, a GIL held by a busy worker
thread) runs every timer late by as long as it was stuck, so the lateness of a timer that
asks to run every ``interval`` seconds is the loop's lag as a user feels it: keys and
repaints wait just as long. ``bench/soak.py`` sets the variable and reads the file.

    CATKEEPER_LOOPLAG=/tmp/lag.log catkeeper          # one line per tick
    CATKEEPER_LOOPLAG_INTERVAL=0.1                    # seconds between ticks (default 0.05)

Each line is ``MONOTONIC LAG_MS``: the loop's clock (``time.monotonic``, the same clock in
every process on the machine) when the timer ran, and how many milliseconds after its due
time. The next tick is due ``interval`` after this one ran (no catching up, so one stall is
one late tick). Lines are buffered and written once a second; the cost is one timer callback
per tick (20 a second by default), well under 0.1 % of a core. Off unless the variable is
set; nothing here imports Textual, so any asyncio program can use it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
from typing import TextIO

ENV = "CATKEEPER_LOOPLAG"
ENV_INTERVAL = "CATKEEPER_LOOPLAG_INTERVAL"
DEFAULT_INTERVAL = 0.05
FLUSH_EVERY = 1.0  # seconds between writes to the file


class LoopLagLog:
    """Ticks on ``loop`` every ``interval`` seconds and logs each tick's lateness."""

    def __init__(self, path: str, interval: float = DEFAULT_INTERVAL) -> None:
        self.path = path
        self.interval = max(0.001, interval)
        self._out: TextIO | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._ticks: list[tuple[float, float]] = []
        self._flushed = 0.0

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> LoopLagLog:
        self._loop = loop or asyncio.get_running_loop()
        self._out = open(self.path, "a", encoding="ascii")  # noqa: SIM115 - closed in stop()
        self._flushed = self._loop.time()
        self._schedule(self._flushed)
        atexit.register(self.stop)  # the last second's lines too
        return self

    def _schedule(self, now: float) -> None:
        assert self._loop is not None
        self._due = now + self.interval
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self._ticks.append((now, now - self._due))  # formatted once a second, in flush()
        if now - self._flushed >= FLUSH_EVERY:
            self.flush()
            self._flushed = now
        self._schedule(now)

    def flush(self) -> None:
        if self._out is None or not self._ticks:
            return
        ticks, self._ticks = self._ticks, []
        text = "".join(f"{at:.4f} {late * 1000:.2f}\n" for at, late in ticks)
        with contextlib.suppress(OSError):  # a full disk must not take the app down
            self._out.write(text)
            self._out.flush()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.flush()
        if self._out is not None:
            self._out.close()
            self._out = None


def start_from_env() -> LoopLagLog | None:
    """Start logging on the running loop if ``CATKEEPER_LOOPLAG`` names a file, else None."""
    path = os.environ.get(ENV)
    if not path:
        return None
    try:
        interval = float(os.environ.get(ENV_INTERVAL, DEFAULT_INTERVAL))
    except ValueError:
        interval = DEFAULT_INTERVAL
    try:
        return LoopLagLog(path, interval).start()
    except OSError:
        return None  # an unwritable path must not stop the app from starting
