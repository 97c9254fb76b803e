"""The loop-lag probe the soak reads (catkeeper/looplag.py): one line per tick, its time on
the loop's clock and how late it ran, written once a second and on stop."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from catkeeper.looplag import LoopLagLog


async def test_each_tick_is_logged_with_its_lateness(tmp_path: Path) -> None:
    path = tmp_path / "lag.log"
    probe = LoopLagLog(str(path), interval=0.01).start()
    await asyncio.sleep(0.1)
    time.sleep(0.15)  # a stall of the loop: the next tick is that late
    await asyncio.sleep(0.05)
    probe.stop()
    rows = [tuple(map(float, line.split())) for line in path.read_text().splitlines()]
    assert len(rows) >= 5
    assert all(late >= 0 for _at, late in rows)
    assert [at for at, _late in rows] == sorted(at for at, _late in rows)
    assert max(late for _at, late in rows) >= 100  # milliseconds


async def test_a_slow_callback_is_named_with_how_long_it_held_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "lag.log"
    probe = LoopLagLog(str(path), interval=0.01).start()
    probe.watch_slow_callbacks(0.08)

    async def hold(seconds: float) -> None:
        await asyncio.sleep(0.02)
        time.sleep(seconds)  # holds the loop inside one step of this task

    try:
        await asyncio.create_task(hold(0.02), name="under the threshold")
        await asyncio.create_task(hold(0.12), name="the hog")
        await asyncio.sleep(0.05)
    finally:
        probe.stop()
    assert asyncio.Handle._run.__name__ == "_run"  # stop() took the wrapper off again
    slow = [line.split(maxsplit=3) for line in path.read_text().splitlines() if " slow " in line]
    took = {what: float(ms) for _at, _word, ms, what in slow}
    assert not [what for what in took if "under the threshold" in what], slow
    assert 110 <= took[f"task 'the hog' {hold.__qualname__}"] < 1000, slow
    ticks = [line for line in path.read_text().splitlines() if " slow " not in line]
    assert all(len(line.split()) == 2 for line in ticks)  # the soak's reader skips the rest
