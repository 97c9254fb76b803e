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
