"""The collector policy of a long-running TUI (catkeeper/heap.py): what is alive when the
fleet has loaded leaves the full passes, survivors of a slow full pass follow (of a quick one
they do not), and a full collection, once the frozen objects have grown, still frees cycles
that became garbage after being frozen."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from catkeeper.heap import FrozenHeap
from tests.tui_support import fleet_config, make_app


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> tuple[_Node, weakref.ref[_Node]]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return a, weakref.ref(b)


@pytest.fixture
def heap() -> Iterator[FrozenHeap]:
    h = FrozenHeap()
    try:
        yield h
    finally:
        h.stop()
        assert gc.get_freeze_count() == 0  # everything is the collector's again


def test_start_freezes_and_slow_full_passes_freeze_their_survivors() -> None:
    heap = FrozenHeap(slow_pass_ms=0)  # every pass counts as slow
    gc.collect()
    heap.start()
    frozen = gc.get_freeze_count()
    assert frozen > 0
    kept = [_Node() for _ in range(1000)]  # new, alive: not frozen yet
    gc.collect()  # a full pass (the collector's own passes call back the same way)
    assert heap.full_passes >= 1 and heap.freezes >= 1
    assert gc.get_freeze_count() >= frozen + len(kept)
    heap.stop()
    assert gc.get_freeze_count() == 0 and heap._after_pass not in gc.callbacks


def test_quick_full_passes_leave_their_survivors_to_the_collector() -> None:
    heap = FrozenHeap(slow_pass_ms=60_000)
    try:
        heap.start()
        frozen = gc.get_freeze_count()
        a, gone = _cycle()
        gc.collect()
        assert heap.full_passes >= 1 and heap.freezes == 0
        assert gc.get_freeze_count() == frozen
        del a
        gc.collect()
        assert gone() is None  # never frozen: the next pass frees it
    finally:
        heap.stop()


def test_a_full_collection_is_due_once_the_frozen_objects_have_grown() -> None:
    heap = FrozenHeap(slow_pass_ms=0, growth=0.1)
    try:
        heap.start()
        assert not heap.due()
        garbage = [_cycle()[0] for _ in range(gc.get_freeze_count() // 10)]
        gc.collect()  # alive now: frozen by the pass
        del garbage  # garbage now, kept by the freeze
        assert heap.due()
        heap.full_collect()
        assert not heap.due()  # measured again from what the collection left
    finally:
        heap.stop()


def test_the_frozen_objects_are_counted_again_only_after_a_freeze() -> None:
    """Counting walks every frozen object (tens of ms at 10k VMs): a check with no freeze
    since the last count reuses it, and a freeze still makes the collection due."""
    counts: list[int] = []

    def count() -> int:
        counts.append(gc.get_freeze_count())
        return counts[-1]

    heap = FrozenHeap(slow_pass_ms=60_000, growth=0.1, count_frozen=count)
    try:
        heap.start()
        assert len(counts) == 1
        assert not any(heap.due() for _ in range(5))
        gc.collect()  # a quick pass: nothing frozen, nothing to count
        assert not heap.due() and len(counts) == 1
        heap.slow_pass_ms = 0
        garbage = [_cycle()[0] for _ in range(counts[0] // 5)]
        gc.collect()  # a slow pass: its survivors are frozen
        del garbage
        assert heap.due() and len(counts) == 2 and counts[1] > counts[0] * 1.1
        assert heap.due() and len(counts) == 2
        heap.full_collect()
        assert not heap.due() and len(counts) == 3
    finally:
        heap.stop()


def test_a_frozen_cycle_that_became_garbage_is_freed_by_the_full_collection(
    heap: FrozenHeap,
) -> None:
    a, gone = _cycle()
    heap.start()  # the cycle is alive now: frozen with everything else
    del a
    gc.collect()
    assert gone() is not None  # a full pass does not look at frozen objects
    took = heap.full_collect()
    assert gone() is None  # the periodic full collection does
    assert took >= 0 and heap.last_full_ms == took
    assert heap.last_found >= 2  # the cycle's two objects, at least
    assert gc.get_freeze_count() > 0 and heap._after_pass in gc.callbacks  # still on


def test_garbage_made_before_a_full_pass_is_never_frozen(heap: FrozenHeap) -> None:
    heap.start()
    a, gone = _cycle()
    del a
    gc.collect()  # collects the cycle first, then freezes what survived
    assert gone() is None


async def test_the_app_freezes_once_the_fleet_has_loaded_and_gives_back_on_quit(
    tmp_path: Path, heap: FrozenHeap
) -> None:
    app = make_app(fleet_config(tmp_path), heap=heap)
    async with app.run_test() as pilot:
        await app.wait_idle()
        for _ in range(50):
            if heap.on:
                break
            await pilot.pause(0.02)
        assert heap.on and gc.get_freeze_count() > 0
        await app.action_quit()
    assert not heap.on and gc.get_freeze_count() == 0


async def test_tests_and_embedders_get_no_collector_policy(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path))  # no heap given: the process's gc is untouched
    async with app.run_test():
        await app.wait_idle()
        assert app.heap is None and gc.get_freeze_count() == 0


async def test_kept_after_the_load_it_collects_everything_when_due_until_stopped() -> None:
    heap = FrozenHeap(check_every=0.02, slow_pass_ms=0, growth=0)
    loaded = asyncio.Event()

    async def settled() -> None:
        await loaded.wait()

    try:
        heap.keep_after(settled)
        await asyncio.sleep(0.05)
        assert not heap.on  # nothing before the cold load has settled
        loaded.set()
        await asyncio.sleep(0.01)
        assert heap.on and heap.last_full_ms is None
        kept = [_Node() for _ in range(100)]
        gc.collect()  # frozen: more than right after the start, so a collection is due
        for _ in range(100):
            if heap.last_full_ms is not None:
                break
            await asyncio.sleep(0.01)
        assert heap.on and heap.last_full_ms is not None and kept
    finally:
        heap.stop()
    assert not heap.on and gc.get_freeze_count() == 0
    await asyncio.sleep(0.05)  # the cancelled loop collects nothing more
    assert heap._task is None
