"""Opt-in event-loop lag log: how late a plain timer fires inside the running app.

A loop that is busy (a long callback, parsing on the UI thread, a GIL held by a busy worker
thread) runs every timer late by as long as it was stuck, so the lateness of a timer that
asks to run every ``interval`` seconds is the loop's lag as a user feels it: keys and
repaints wait just as long. ``bench/soak.py`` sets the variable and reads the file.

    CATKEEPER_LOOPLAG=/tmp/lag.log catkeeper          # one line per tick
    CATKEEPER_LOOPLAG_INTERVAL=0.1                    # seconds between ticks (default 0.05)

    CATKEEPER_LOOPLAG_SLOW=100                        # also name callbacks over 100 ms

Each line is ``MONOTONIC LAG_MS``: the loop's clock (``time.monotonic``, the same clock in
every process on the machine) when the timer ran, and how many milliseconds after its due
time. The next tick is due ``interval`` after this one ran (no catching up, so one stall is
one late tick). Lines are buffered and written once a second; the cost is one wake-up of
the loop per tick (20 a second by default): in the TUI at 10k static VMs the main thread
used 0.9-1.1 % of a core with it and 0.5-0.65 % without. Off unless the variable is set;
nothing here imports Textual, so any asyncio program can use it.

With ``CATKEEPER_LOOPLAG_SLOW=MS``, every callback of the loop that runs at least that long
adds a line ``MONOTONIC slow TOOK_MS WHAT`` (WHAT: the task's name and coroutine, or the
callback): which turn held the loop, where a lag figure alone only says that one did. It
times every callback (two clock reads each), so it is for finding a stall, not for figures.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import time
from typing import Any, TextIO

ENV = "CATKEEPER_LOOPLAG"
ENV_INTERVAL = "CATKEEPER_LOOPLAG_INTERVAL"
ENV_SLOW = "CATKEEPER_LOOPLAG_SLOW"
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
        self._slow: list[str] = []
        self._unwrapped: Any = None  # Handle._run before watch_slow_callbacks wrapped it
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

    def watch_slow_callbacks(self, threshold: float) -> None:
        """Log each loop callback that runs ``threshold`` seconds or more (see the module doc).

        asyncio has no hook for this short of debug mode, whose bookkeeping (a traceback per
        handle made) would distort the stall being looked for: ``Handle._run`` is wrapped."""
        slow = self._slow
        run = self._unwrapped = asyncio.Handle._run

        def timed(handle: asyncio.Handle) -> None:
            t0 = time.monotonic()
            run(handle)
            took = time.monotonic() - t0
            if took >= threshold:
                slow.append(f"{t0 + took:.4f} slow {took * 1000:.1f} {_what(handle)}\n")

        asyncio.Handle._run = timed  # type: ignore[method-assign,assignment]

    def flush(self) -> None:
        if self._out is None or not (self._ticks or self._slow):
            return
        ticks, self._ticks = self._ticks, []
        slow = self._slow[:]
        del self._slow[:]  # the same list the timed callbacks append to
        text = "".join(f"{at:.4f} {late * 1000:.2f}\n" for at, late in ticks) + "".join(slow)
        with contextlib.suppress(OSError):  # a full disk must not take the app down
            self._out.write(text)
            self._out.flush()

    def stop(self) -> None:
        if self._unwrapped is not None:
            asyncio.Handle._run = self._unwrapped  # type: ignore[method-assign]
            self._unwrapped = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.flush()
        if self._out is not None:
            self._out.close()
            self._out = None


def _what(handle: asyncio.Handle) -> str:
    """A callback as a person can place it: a task by its name and coroutine."""
    callback: Any = getattr(handle, "_callback", None)
    task = getattr(callback, "__self__", None)
    if isinstance(task, asyncio.Task):
        coro: Any = task.get_coro()
        return f"task {task.get_name()!r} {getattr(coro, '__qualname__', coro)}"
    return " ".join(repr(handle).split())[:200]


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
        lag = LoopLagLog(path, interval).start()
    except OSError:
        return None  # an unwritable path must not stop the app from starting
    with contextlib.suppress(ValueError):
        lag.watch_slow_callbacks(float(os.environ.get(ENV_SLOW, "")) / 1000)
    return lag
