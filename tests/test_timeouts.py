"""Bounded waits and cancels that Python 3.11 does not lose (catkeeper/backend/timeouts.py).

The race: a task loops on bounded waits (as a host session's ``_run`` does); the result it
waits for and a cancel arrive in one pass of the loop. ``asyncio.wait_for`` on 3.11 returns
the result and the task carries on; the closer awaiting it waits forever.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from catkeeper.backend.timeouts import RECANCEL_AFTER, cancel_and_wait, within

Wait = Callable[[Awaitable[Any], float], Awaitable[Any]]


async def _looping_on(wait: Wait, futures: list[asyncio.Future[int]]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        future: asyncio.Future[int] = loop.create_future()
        futures.append(future)
        await wait(future, 10)


async def _cancel_as_the_result_lands(wait: Wait) -> tuple[asyncio.Task[None], int]:
    """A task looping on ``wait``, cancelled in the pass its awaited result lands; returns it
    (still running or not) once the loop has had time to end it, and its waits begun."""
    futures: list[asyncio.Future[int]] = []
    task = asyncio.create_task(_looping_on(wait, futures))
    await asyncio.sleep(0)
    futures[-1].set_result(1)
    task.cancel()
    await asyncio.wait({task}, timeout=0.2)
    return task, len(futures)


async def test_within_passes_on_a_cancel_that_meets_the_result() -> None:
    task, waits = await _cancel_as_the_result_lands(within)
    assert task.cancelled()
    assert waits == 1  # it never started another wait


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12 rebuilt wait_for on timeout")
async def test_wait_for_loses_that_cancel_on_311() -> None:
    """The race above is real: the same task on ``asyncio.wait_for`` carries on."""
    task, waits = await _cancel_as_the_result_lands(asyncio.wait_for)
    try:
        assert not task.done() and waits == 2
    finally:
        await cancel_and_wait(task)
    assert task.cancelled()


async def test_cancel_and_wait_ends_a_task_that_lost_its_first_cancel() -> None:
    """The case a library's own ``wait_for`` makes inside our task: cancelled once, it
    carries on; ``cancel_and_wait`` cancels it again and returns once it has ended."""
    swallowed = []

    async def carries_on_once() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            swallowed.append(True)
        await asyncio.sleep(10)

    task = asyncio.create_task(carries_on_once())
    await asyncio.sleep(0)
    started = asyncio.get_running_loop().time()
    await cancel_and_wait(task)
    took = asyncio.get_running_loop().time() - started
    assert task.cancelled() and swallowed == [True]
    assert RECANCEL_AFTER <= took < RECANCEL_AFTER + 5  # the second cancel ended it


async def test_cancel_and_wait_takes_done_and_failed_tasks_without_raising() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    failed = asyncio.create_task(fails())
    finished = asyncio.create_task(asyncio.sleep(0))
    await asyncio.sleep(0.01)
    await cancel_and_wait(failed, finished)  # neither raises nor warns "never retrieved"
    assert isinstance(failed.exception(), ValueError) and finished.result() is None


async def test_within_bounds_the_wait_and_cancels_what_it_waited_for() -> None:
    loop = asyncio.get_running_loop()
    waited: asyncio.Future[int] = loop.create_future()
    with pytest.raises(TimeoutError):
        await within(waited, 0.05)
    assert waited.cancelled()
    done: asyncio.Future[int] = loop.create_future()
    done.set_result(7)
    assert await within(done, 0.05) == 7
    assert await within(asyncio.sleep(0, "slept"), None) == "slept"
