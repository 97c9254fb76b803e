"""Per-VM work on the loop in slices (catkeeper/backend/turns.py): other work gets its turn."""

from __future__ import annotations

import asyncio

from catkeeper.backend.turns import map_in_turns


async def test_other_work_runs_between_the_slices() -> None:
    order: list[object] = []

    async def other() -> None:
        order.append("other")

    waiting = asyncio.create_task(other())

    def make(key: int, value: int) -> int:
        order.append(key)
        return value * 2

    result = await map_in_turns({i: i for i in range(10)}, make, per_turn=3)
    await waiting
    assert result == {i: i * 2 for i in range(10)}
    assert order == [0, 1, 2, "other", 3, 4, 5, 6, 7, 8, 9]
