"""The table's bookkeeping kept one changed row at a time: where a row goes in the sorted
order, and how wide the content-sized columns must be.

At 10,000 rows a change from a host (someone pauses a VM) used to re-measure every row and,
when the row could move, re-sort them all: 24 ms per change, 40-130 ms sorted by state,
on the event loop, twice a second under churn. Here a change costs a bisection and a few
counter updates for the rows it touches.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from rich.cells import cell_len

from catkeeper.model import VM
from catkeeper.widgets import format as fmt


class Descending:
    """A sort key compared the other way round: a reversed column whose ties still go by
    host and name in the usual direction (what a stable reversed sort does)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Descending) and bool(self.value == other.value)

    def __lt__(self, other: Descending) -> bool:
        return bool(other.value < self.value)

    __hash__ = None  # type: ignore[assignment]


def take_out(
    keys: list[str],
    rows: list[Any] | None,
    gone: Iterable[tuple[str, Any]],
    place: Callable[[str], Any],
) -> None:
    """Remove each ``(key, where)`` from ``keys``, sorted by ``place``, and the item at the
    same index from ``rows`` (kept parallel to it); ``where`` is the row's place when it
    was put in (its VM may have changed since)."""
    for key, where in gone:
        i = bisect_left(keys, where, key=place)
        if i >= len(keys) or keys[i] != key:
            # Not where its place says: a column sorted by live figures (CPU%) keeps the
            # order it had when sorted, so places move without the VMs changing.
            try:
                i = keys.index(key)
            except ValueError:
                continue
        del keys[i]
        if rows is not None:
            del rows[i]


def put_in(
    keys: list[str],
    rows: list[Any] | None,
    new: Iterable[str],
    place: Callable[[str], Any],
    row: Callable[[str], Any],
) -> None:
    """Insert each key where ``place`` sorts it, and ``row(key)`` at the same index."""
    for key in new:
        i = bisect_right(keys, place(key), key=place)
        keys.insert(i, key)
        if rows is not None:
            rows.insert(i, row(key))


def replace(
    keys: list[str],
    rows: list[Any],
    same: Iterable[str],
    place: Callable[[str], Any],
    row: Callable[[str], Any],
) -> None:
    """Renew ``row(key)`` for keys that changed without moving."""
    for key in same:
        i = bisect_left(keys, place(key), key=place)
        if i >= len(keys) or keys[i] != key:
            # A column sorted by live figures (CPU%) keeps the order it had when sorted,
            # so a row's place may no longer find it.
            try:
                i = keys.index(key)
            except ValueError:
                continue
        rows[i] = row(key)


# The columns sized by their content: a row's cell length (None: the row has no such cell)
# and the width when no row has one.
_MEASURES: tuple[tuple[str, Callable[[VM], int | None], int], ...] = (
    ("host", lambda vm: len(vm.host), 4),
    ("name", lambda vm: cell_len(vm.name), 4),
    ("ips", lambda vm: len(fmt.ips(vm)) if vm.ips else None, 2),
    ("owner", lambda vm: len(vm.reservation.owner) if vm.reservation else None, 1),
    ("note", lambda vm: len(fmt.note(vm)) if vm.reservation else None, 0),
)


class ContentWidths:
    """The widest cell of each content-sized column over all rows (not just the shown ones,
    so a filter keystroke does not make columns jump), as counts of cell lengths."""

    def __init__(self) -> None:
        self._counts: tuple[Counter[int], ...] = tuple(Counter() for _ in _MEASURES)
        self._rows: dict[str, tuple[int | None, ...]] = {}

    def put(self, key: str, vm: VM) -> None:
        lengths = tuple(measure(vm) for _name, measure, _default in _MEASURES)
        old = self._rows.get(key)
        if old == lengths:
            return
        if old is not None:
            self._forget(old)
        self._rows[key] = lengths
        for counts, n in zip(self._counts, lengths, strict=True):
            if n is not None:
                counts[n] += 1

    def remove(self, key: str) -> None:
        old = self._rows.pop(key, None)
        if old is not None:
            self._forget(old)

    def _forget(self, lengths: tuple[int | None, ...]) -> None:
        for counts, n in zip(self._counts, lengths, strict=True):
            if n is not None:
                counts[n] -= 1
                if not counts[n]:
                    del counts[n]

    def widths(self) -> dict[str, int]:
        return {
            name: max(counts, default=default)
            for (name, _measure, default), counts in zip(_MEASURES, self._counts, strict=True)
        }
