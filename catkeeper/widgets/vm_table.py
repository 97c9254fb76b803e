"""The fleet table: every VM of every host, filtered and sorted, drawn a line at a time.

A Line API widget rather than a ``DataTable``: at 10,000 rows a filter keystroke must only
recompute which keys are shown (a list of strings) and repaint the visible lines, never
rebuild 10,000 row objects. Rows are keyed by ``HOST/UUID``; the cursor follows its key
across updates, filters and sorts, and keeps its place on screen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.strip import Strip
from textual.timer import Timer

from catkeeper.model import VM, StopProgress
from catkeeper.widgets import format as fmt
from catkeeper.widgets.row_order import ContentWidths
from catkeeper.widgets.vm_columns import (
    COLUMN_KEYS,
    COLUMNS,
    Column,
    RowFilter,
    _names,
    _ShowAll,
)
from catkeeper.widgets.vm_rows import VmRows

__all__ = ["COLUMNS", "COLUMN_KEYS", "Column", "RowFilter", "VmTable"]


class VmTable(VmRows, can_focus=True):
    """Keyboard: arrows/j/k move, space marks, enter opens, 1-9 sort by that column."""

    DEFAULT_CSS = """
    VmTable {
        height: 1fr;
        overflow-x: hidden;
        scrollbar-size-vertical: 1;
        background: $surface;
    }
    VmTable > .vm-table--header { color: $text-primary; background: $panel; text-style: bold; }
    VmTable > .vm-table--header-sorted {
        color: $text-accent; background: $panel; text-style: bold underline;
    }
    VmTable > .vm-table--cursor { background: $block-cursor-blurred-background; }
    VmTable:focus > .vm-table--cursor {
        background: $block-cursor-background; color: $block-cursor-foreground;
    }
    VmTable > .vm-table--marked { color: $text-warning; text-style: bold; }
    VmTable > .vm-table--stale { color: $text-muted; text-style: italic; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup,ctrl+b", "page(-1)", "Page up", show=False),
        Binding("pagedown,ctrl+f", "page(1)", "Page down", show=False),
        Binding("home,g", "jump(0)", "First row", show=False),
        Binding("end,G", "jump(-1)", "Last row", show=False),
        Binding("space", "toggle_mark", "Mark", key_display="space"),
        Binding("ctrl+a", "mark_all", "Mark all shown", show=False),
        Binding("enter", "activate", "Details"),
        *(
            Binding(str(i), f"sort('{c.key}')", f"Sort by {c.label.lower()}", show=False)
            for i, c in enumerate(COLUMNS, start=1)
        ),
    ]

    @dataclass
    class CursorMoved(Message):
        vm: VM | None

    @dataclass
    class Activated(Message):
        vm: VM

    @dataclass
    class MarksChanged(Message):
        count: int

    def __init__(
        self,
        *,
        clock: fmt.Clock = time.time,
        monotonic: fmt.Clock = time.monotonic,
        haystack: Callable[[VM], str] = _names,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._clock = clock
        self._monotonic = monotonic
        # What free words match (``filtering.haystack``), cached per VM version.
        self._haystack = haystack
        self._vms: dict[str, VM] = {}
        self._hay: dict[str, str] = {}
        self._order: list[str] = []  # every key, sorted
        # (key, vm, haystack) in _order, kept between keystrokes: building 10,000 tuples per
        # keystroke costs more than the filtering itself.
        self._rows: list[tuple[str, VM, str]] | None = None
        self._order_dirty = False
        self._shown: list[str] = []
        self._pos: dict[str, int] = {}
        self._filter: RowFilter = _ShowAll()
        self.sort_column = "host"
        self.sort_reverse = False
        self._cursor = 0
        self._cursor_key: str | None = None
        # Until someone moves the cursor it stays on the first row: otherwise it would sit
        # on whichever host happened to answer first.
        self._cursor_chosen = False
        self._marked: set[str] = set()
        self._progress: dict[str, StopProgress] = {}
        self._ticker: Timer | None = None
        self._widths: dict[str, int] = {}
        self._layout_width = -1
        self._style_cache: dict[str, Style] = {}
        self._style_cache_focus: bool | None = None
        self._rows_cache: dict[tuple[Any, ...], Strip] = {}
        self._content_width: dict[str, int] = {}
        self._measured = ContentWidths()
        self._last_reported: tuple[str | None, VM | None] = (None, None)

    # ---- reading ---------------------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self._shown)

    @property
    def total_count(self) -> int:
        return len(self._vms)

    @property
    def shown_keys(self) -> list[str]:
        return list(self._shown)

    @property
    def cursor_row(self) -> int:
        return self._cursor

    @property
    def cursor_key(self) -> str | None:
        return self._shown[self._cursor] if self._shown else None

    @property
    def cursor_vm(self) -> VM | None:
        key = self.cursor_key
        return self._vms[key] if key is not None else None

    @property
    def marked_keys(self) -> set[str]:
        return set(self._marked)

    def vm(self, key: str) -> VM | None:
        return self._vms.get(key)

    def selection(self) -> list[VM]:
        """The marked VMs (in table order), or the one under the cursor."""
        if self._marked:
            keys = [k for k in self._order if k in self._marked]
            return [self._vms[k] for k in keys]
        vm = self.cursor_vm
        return [vm] if vm is not None else []

    @property
    def current_filter(self) -> RowFilter:
        return self._filter

    def toggle_mark(self, key: str | None = None) -> None:
        key = key or self.cursor_key
        if key is None:
            return
        self._marked.symmetric_difference_update({key})
        self.refresh()
        self.post_message(self.MarksChanged(len(self._marked)))

    def clear_marks(self) -> None:
        if self._marked:
            self._marked.clear()
            self.refresh()
            self.post_message(self.MarksChanged(0))

    def mark_all_shown(self) -> None:
        shown = set(self._shown)
        if shown <= self._marked:
            self._marked -= shown
        else:
            self._marked |= shown
        self.refresh()
        self.post_message(self.MarksChanged(len(self._marked)))

    # ---- cursor ----------------------------------------------------------------------

    def move_cursor(self, row: int) -> None:
        if not self._shown:
            self._cursor, self._cursor_key = 0, None
            self.refresh()
            self._report_cursor()
            return
        row = max(0, min(row, len(self._shown) - 1))
        before, top = self._cursor, self.scroll_offset.y
        self._cursor_chosen = True
        self._cursor = row
        self._cursor_key = self._shown[row]
        self._scroll_to_cursor()
        if self.scroll_offset.y == top:
            # Only the two rows whose look changed; line y+1 because line 0 is the header.
            self.refresh_line(before + 1)
            self.refresh_line(row + 1)
        else:
            self.refresh()
        self._report_cursor()

    def move_cursor_to(self, key: str) -> bool:
        """Put the cursor on this VM's row; False when it is not shown."""
        row = self._pos.get(key)
        if row is None:
            return False
        self.move_cursor(row)
        return True

    def _rows_visible(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def _scroll_to_cursor(self) -> None:
        top = round(self.scroll_y)
        visible = self._rows_visible()
        if self._cursor < top:
            self.scroll_to(y=self._cursor, animate=False, immediate=True)
        elif self._cursor >= top + visible:
            self.scroll_to(y=self._cursor - visible + 1, animate=False, immediate=True)

    def _report_cursor(self) -> None:
        key = self.cursor_key
        vm = self._vms.get(key) if key else None
        if (key, vm) != self._last_reported:
            self._last_reported = (key, vm)
            self.post_message(self.CursorMoved(vm))

    def on_resize(self, _event: events.Resize) -> None:
        self._layout()
        self.virtual_size = Size(self.size.width, len(self._shown) + 1)
        self._scroll_to_cursor()

    def on_mount(self) -> None:
        self._layout()

    # ---- drawing --------------------------------------------------------------------------

    # ---- input -------------------------------------------------------------------------

    def action_cursor(self, delta: int) -> None:
        self.move_cursor(self._cursor + delta)

    def action_page(self, direction: int) -> None:
        step = self._rows_visible()
        self.move_cursor(self._cursor + direction * step)
        top = max(0, round(self.scroll_y) + direction * step)
        self.scroll_to(y=top, animate=False, immediate=True)
        self._scroll_to_cursor()

    def action_jump(self, row: int) -> None:
        self.move_cursor(len(self._shown) - 1 if row < 0 else row)

    def action_toggle_mark(self) -> None:
        self.toggle_mark()
        self.action_cursor(1)

    def action_mark_all(self) -> None:
        self.mark_all_shown()

    def action_activate(self) -> None:
        vm = self.cursor_vm
        if vm is not None:
            self.post_message(self.Activated(vm))

    def action_sort(self, column: str) -> None:
        self.sort_by(column)

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        if offset.y == 0:
            x = 0
            for key, width in self._columns():
                if x <= offset.x < x + width + 1:
                    if key != "mark":
                        self.sort_by(key)
                    return
                x += width + 1
            return
        row = round(self.scroll_y) + offset.y - 1
        if row < len(self._shown):
            self.move_cursor(row)
            if event.chain >= 2:
                self.action_activate()
