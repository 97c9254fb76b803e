"""The table's rows as data changes: which VMs are shown, in what order, after a change from
a host, a filter or a sort. The cursor and keys are the table's (``vm_table.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from textual.geometry import Size

from catkeeper.model import VM
from catkeeper.widgets.row_order import Descending, put_in, replace, take_out
from catkeeper.widgets.vm_columns import _BY_KEY, COLUMN_KEYS, RowFilter, VmTableDrawing

# Up to this many rows changed at once are put in place one by one; more (the cold load of
# many hosts at once) sort everything, which is cheaper then. At or above the event pump's
# slice (tui/events.py), so that the slices of a reconnect storm stay on the cheap path: at
# 10k rows under a filter a 500-VM slice cost 8.5 ms sorted and filtered afresh (the rows'
# filter list rebuilt each time), 4.5 ms put in place.
_FEW = 1000


class VmRows(VmTableDrawing):
    _filter: RowFilter
    _hay: dict[str, str]
    _haystack: Callable[[VM], str]
    _pos: dict[str, int]
    _cursor_key: str | None
    _cursor_chosen: bool

    # The table's cursor, which follows its VM through every change below.
    def _scroll_to_cursor(self) -> None:
        raise NotImplementedError

    def _report_cursor(self) -> None:
        raise NotImplementedError

    # ---- the order ----------------------------------------------------------------------

    def _sort(self) -> None:
        column = _BY_KEY[self.sort_column]
        vms = self._vms
        # Two stable passes: host/name first, so rows that tie on the chosen column keep a
        # predictable order whichever way the column is sorted.
        keys = sorted(vms, key=lambda k: (vms[k].host, vms[k].name, k))
        if column.key != "host":
            sort_key = column.sort_key
            keys.sort(key=lambda k: sort_key(vms[k]), reverse=self.sort_reverse)
        elif self.sort_reverse:
            keys.sort(key=lambda k: vms[k].host, reverse=True)
        self._order = keys
        self._order_dirty = False
        self._rows = None

    def _place_of(self, key: str, vm: VM) -> tuple[Any, ...]:
        """Where a row goes in the order ``_sort`` makes: the same order, as one key, so a
        changed row can be put back by bisection."""
        column = _BY_KEY[self.sort_column]
        primary = vm.host if column.key == "host" else column.sort_key(vm)
        if self.sort_reverse:
            primary = Descending(primary)
        return (primary, vm.host, vm.name, key)

    # ---- changing the data ------------------------------------------------------------

    def apply(self, upserts: Mapping[str, VM], removed: Iterable[str] = ()) -> None:
        """Add, change or drop rows. A few changes cost a few rows' work (bisection into the
        order and the shown rows); many at once (a host's first load) sort everything."""
        vms, place_of = self._vms, self._place_of
        gone = [k for k in dict.fromkeys(removed) if k in vms]
        few = not self._order_dirty and len(upserts) + len(gone) <= _FEW
        # Where the rows that leave or move were, found while their old VMs are in place.
        was = [(k, place_of(k, vms[k])) for k in gone]
        moved: list[str] = []
        for key, vm in upserts.items():
            old = vms.get(key)
            if old is None:
                moved.append(key)
                continue
            before = place_of(key, old)
            if before != place_of(key, vm):
                was.append((key, before))
                moved.append(key)
        place = self._place
        if few:
            take_out(self._order, self._rows, was, place)
        for key in gone:
            del vms[key]
            self._hay.pop(key, None)
            self._marked.discard(key)
            self._progress.pop(key, None)
            self._measured.remove(key)
        for key, vm in upserts.items():
            vms[key] = vm
            self._hay[key] = self._haystack(vm)
            self._measured.put(key, vm)
        relaid = self._measure_content() if upserts or gone else False
        if not few:
            self._rows = None  # they hold the old VM objects
            self._order_dirty = self._order_dirty or bool(moved or gone)
            self._recompute()
            return
        # The filter's rows follow the order, so a keystroke after a change need not
        # rebuild 10,000 of them.
        make_row = self._filter_row
        put_in(self._order, self._rows, moved, place, make_row)
        if self._rows is not None:
            moving = set(moved)
            replace(
                self._order, self._rows, (k for k in upserts if k not in moving), place, make_row
            )
        if self._show_changes(upserts, gone, set(moved)):
            return
        if relaid:
            self.refresh()
        else:  # rows changed in place: repaint those on screen, not the whole table
            top = round(self.scroll_y)
            for key in upserts:
                row = self._pos.get(key)
                if row is not None and top <= row <= top + self.size.height:
                    self.refresh_line(row + 1)  # line 0 is the header
        self._report_cursor()

    def _place(self, key: str) -> tuple[object, ...]:
        return self._place_of(key, self._vms[key])

    def _filter_row(self, key: str) -> tuple[str, VM, str]:
        return (key, self._vms[key], self._hay[key])

    def _show_changes(self, upserts: Mapping[str, VM], gone: list[str], moved: set[str]) -> bool:
        """Bring the shown rows up to date with a few changed ones; False when none of them
        appeared, left or moved."""
        f = self._filter
        if f.is_empty:
            if not (moved or gone):
                return False
            self._show(list(self._order))
            return True
        pos, now = self._pos, self._clock()
        drop = [pos[k] for k in gone if k in pos]
        add: list[str] = []
        for key, vm in upserts.items():
            shown = key in pos
            match = f.matches(vm, now, hay=self._hay[key])
            if shown and (key in moved or not match):
                drop.append(pos[key])
            if match and (key in moved or not shown):
                add.append(key)
        if not (drop or add):
            return False
        rows = self._shown
        for i in sorted(drop, reverse=True):
            del rows[i]
        put_in(rows, None, add, self._place, self._filter_row)
        self._show(rows)
        return True

    def set_filter(self, vm_filter: RowFilter) -> None:
        self._filter = vm_filter
        self._recompute()

    def sort_by(self, column: str, reverse: bool | None = None) -> None:
        """Sort by ``column``; the same column again flips the direction."""
        if column not in _BY_KEY:
            raise ValueError(f"no column {column!r} (columns: {', '.join(COLUMN_KEYS)})")
        if reverse is None:
            reverse = not self.sort_reverse if column == self.sort_column else False
        self.sort_column, self.sort_reverse = column, reverse
        self._order_dirty = True
        self._recompute()

    # ---- recomputing ------------------------------------------------------------------

    def _recompute(self) -> None:
        if self._order_dirty:
            self._sort()
        f = self._filter
        if f.is_empty:
            shown = list(self._order)
        else:
            if self._rows is None:
                vms, hay = self._vms, self._hay
                self._rows = [(k, vms[k], hay[k]) for k in self._order]  # kept up to date by apply
            shown = f.select(self._rows, self._clock())
        self._show(shown)

    def _show(self, shown: list[str]) -> None:
        """Show these rows; the cursor stays on its VM and where it was on screen."""
        old_row, old_top = self._cursor, round(self.scroll_y)
        self._shown = shown
        self._pos = {k: i for i, k in enumerate(shown)}
        self.virtual_size = Size(self.size.width, len(shown) + 1)
        key = self._cursor_key if self._cursor_chosen else None
        row = self._pos.get(key) if key is not None else None
        if not self._cursor_chosen:
            row = 0
        elif row is None:
            row = min(old_row, max(0, len(shown) - 1))
        self._cursor = row
        self._cursor_key = shown[row] if shown else None
        # Keep the cursor where it was on screen, so updates do not make the table jump.
        offset = old_row - old_top
        target = max(0, row - offset)
        if target != old_top:
            self.scroll_to(y=target, animate=False, immediate=True)
        self._scroll_to_cursor()
        self.refresh()
        self._report_cursor()
