"""The fleet table: every VM of every host, filtered and sorted, drawn a line at a time.

A Line API widget rather than a ``DataTable``: at 10,000 rows a filter keystroke must only
recompute which keys are shown (a list of strings) and repaint the visible lines, never
rebuild 10,000 row objects. Rows are keyed by ``HOST/UUID``; the cursor follows its key
across updates, filters and sorts, and keeps its place on screen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.timer import Timer

from catkeeper.backend.actions import StopProgress
from catkeeper.filtering import MATCH_ALL, Filter, haystack
from catkeeper.model import VM, VmState
from catkeeper.widgets import format as fmt

_STATE_ORDER = {s: i for i, s in enumerate(VmState)}


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    sort_key: Callable[[VM], Any]
    align_right: bool = False
    short: str = ""  # the label when the column is narrower than ``label``


COLUMNS: tuple[Column, ...] = (
    Column("host", "HOST", lambda vm: vm.host.lower()),
    Column("name", "NAME", lambda vm: vm.name.lower()),
    Column("state", "STATE", lambda vm: _STATE_ORDER[vm.state]),
    Column("vcpus", "CPU", lambda vm: vm.vcpus, align_right=True),
    Column("memory", "MEM", lambda vm: vm.memory_kib, align_right=True),
    Column("ips", "IP", lambda vm: fmt.ips(vm)),
    Column(
        "owner",
        "RESERVED BY",
        lambda vm: vm.reservation.owner.lower() if vm.reservation else "",
        short="OWNER",
    ),
    Column(
        "until",
        "UNTIL",
        lambda vm: (
            vm.reservation.until
            if vm.reservation and vm.reservation.until is not None
            else float("inf")
        ),
    ),
    Column("note", "NOTE", lambda vm: fmt.note(vm).lower()),
)
COLUMN_KEYS = tuple(c.key for c in COLUMNS)
_RIGHT = frozenset(c.key for c in COLUMNS if c.align_right)
_STATE_STYLES = {state: Style.parse(colour) for state, colour in fmt.STATE_COLOURS.items()}
_STAGE_STYLE = Style.parse("bold yellow")
_DIM = Style(dim=True)
_EXPIRED = Style(color="red")
_ROW_CACHE_SIZE = 1000
_BY_KEY = {c.key: c for c in COLUMNS}
_STATE_WIDTH = 9  # "shutoff", "running", "acpi 59s", "c-a-d 29s"


def _fit(text: str, width: int, right: bool = False) -> str:
    """``text`` cut or padded to exactly ``width`` cells, with an ellipsis when cut."""
    if width <= 0:
        return ""
    if text.isascii():
        if len(text) > width:
            return text[: width - 1] + "…"
        return text.rjust(width) if right else text.ljust(width)
    if cell_len(text) > width:
        return set_cell_size(text, width - 1) + "…"
    pad = " " * (width - cell_len(text))
    return pad + text if right else text + pad


class VmTable(ScrollView, can_focus=True):
    """Keyboard: arrows/j/k move, space marks, enter opens, 1-9 sort by that column."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "vm-table--header",
        "vm-table--header-sorted",
        "vm-table--cursor",
        "vm-table--marked",
        "vm-table--stale",
    }
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
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._clock = clock
        self._monotonic = monotonic
        self._vms: dict[str, VM] = {}
        self._hay: dict[str, str] = {}
        self._order: list[str] = []  # every key, sorted
        # (key, vm, haystack) in _order, kept between keystrokes: building 10,000 tuples per
        # keystroke costs more than the filtering itself.
        self._rows: list[tuple[str, VM, str]] | None = None
        self._order_dirty = False
        self._shown: list[str] = []
        self._pos: dict[str, int] = {}
        self._filter: Filter = MATCH_ALL
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
    def current_filter(self) -> Filter:
        return self._filter

    # ---- changing the data ------------------------------------------------------------

    def apply(self, upserts: Mapping[str, VM], removed: Iterable[str] = ()) -> None:
        """Add, change or drop rows. Re-sorts/re-filters only when a row's place may move."""
        column = _BY_KEY[self.sort_column]
        reorder = False
        refilter = False
        now = self._clock()
        for key in removed:
            if self._vms.pop(key, None) is not None:
                self._hay.pop(key, None)
                self._marked.discard(key)
                self._progress.pop(key, None)
                reorder = True
        for key, vm in upserts.items():
            old = self._vms.get(key)
            self._vms[key] = vm
            hay = haystack(vm)
            self._hay[key] = hay
            if old is None:
                reorder = True
                continue
            if column.sort_key(old) != column.sort_key(vm) or old.host != vm.host:
                reorder = True
            if not refilter and not self._filter.is_empty:
                before = key in self._pos
                refilter = before != self._filter.matches(vm, now, hay=hay)
        if upserts or reorder:
            self._rows = None  # they hold the old VM objects
        if reorder or refilter or upserts:
            self._measure_content()
        if reorder:
            self._order_dirty = True
        if reorder or refilter:
            self._recompute()
        else:
            self.refresh()
            self._report_cursor()

    def set_filter(self, vm_filter: Filter) -> None:
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

    def set_progress(self, key: str, progress: StopProgress | None) -> None:
        """Show a graceful stop's stage and countdown in the row's state cell."""
        if progress is None or progress.final:
            self._progress.pop(key, None)
        else:
            self._progress[key] = progress
        if self._progress and self._ticker is None:
            self._ticker = self.set_interval(1.0, self.refresh, name="stop countdown")
        elif not self._progress and self._ticker is not None:
            self._ticker.stop()
            self._ticker = None
        self.refresh()

    # ---- marks -------------------------------------------------------------------------

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

    # ---- recomputing ------------------------------------------------------------------

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

    def _recompute(self) -> None:
        old_row, old_top = self._cursor, round(self.scroll_y)
        if self._order_dirty:
            self._sort()
        f = self._filter
        if f.is_empty:
            shown = list(self._order)
        else:
            if self._rows is None:
                vms, hay = self._vms, self._hay
                self._rows = [(k, vms[k], hay[k]) for k in self._order]
            shown = f.select(self._rows, self._clock())
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

    def _measure_content(self) -> None:
        """Widths of the columns sized by their content (over all rows, so a filter keystroke
        does not make columns jump)."""
        vms = self._vms.values()
        self._content_width = {
            "host": max((len(vm.host) for vm in vms), default=4),
            "name": max((cell_len(vm.name) for vm in vms), default=4),
            "ips": max((len(fmt.ips(vm)) for vm in vms if vm.ips), default=2),
            "owner": max((len(vm.reservation.owner) for vm in vms if vm.reservation), default=1),
            "note": max((len(fmt.note(vm)) for vm in vms if vm.reservation), default=0),
        }
        self._layout()

    def _layout(self) -> None:
        width = self.scrollable_content_region.width or self.size.width
        cw = self._content_width
        widths = {
            "mark": 1,
            "host": min(max(cw.get("host", 4), 4), 14),
            "state": _STATE_WIDTH,
            "vcpus": 3,
            "memory": 5,
            "ips": min(max(cw.get("ips", 2), 2), 31),
            "owner": min(max(cw.get("owner", 1), len("OWNER")), 12),
            "until": 7,
        }
        # Narrow terminals give up the least telling columns first.
        for drop in ("ips", "until", "vcpus"):
            fixed = sum(widths.values()) + len(widths)  # one space after each column
            if width - fixed >= 16 or drop not in widths:
                break
            if cw.get(drop, 0) <= 2 or width - fixed < 16:
                del widths[drop]
        if width - sum(widths.values()) - len(widths) < 16 and widths.get("owner", 0) > 8:
            widths["owner"] = 8
        rest = max(0, width - sum(widths.values()) - len(widths))
        spare = rest - cw.get("name", 4) - cw.get("note", 0) - 1
        if "owner" in widths and widths["owner"] < 11 <= widths["owner"] + spare:
            # Room to spell the header out.
            rest -= 11 - widths["owner"]
            widths["owner"] = 11
        name_w = min(max(cw.get("name", 4), 4), rest)
        note_w = rest - name_w - 1
        # Names come first: rows that cannot be told apart are worse than a hidden note,
        # which the detail screen shows anyway. A note column too narrow to read is noise.
        if note_w < 6:
            name_w, note_w = rest, 0
        widths["name"] = name_w
        widths["note"] = note_w
        self._widths = widths
        self._layout_width = width
        self._rows_cache.clear()

    def on_resize(self, _event: events.Resize) -> None:
        self._layout()
        self.virtual_size = Size(self.size.width, len(self._shown) + 1)
        self._scroll_to_cursor()

    def on_mount(self) -> None:
        self._layout()

    # ---- drawing --------------------------------------------------------------------------

    def _columns(self) -> list[tuple[str, int]]:
        # The vertical scrollbar comes and goes with the row count, without a Resize:
        # lay out again whenever the drawable width is not the one laid out for.
        if self._layout_width != self.scrollable_content_region.width:
            self._layout()
        order = ("mark", *COLUMN_KEYS)
        return [(k, self._widths[k]) for k in order if self._widths.get(k)]

    def _header(self) -> Strip:
        base = self.get_component_rich_style("vm-table--header")
        sorted_style = self.get_component_rich_style("vm-table--header-sorted")
        segments: list[Segment] = []
        for key, width in self._columns():
            if key == "mark":
                segments.append(Segment(" " * (width + 1), base))
                continue
            col = _BY_KEY[key]
            label = col.short if len(col.label) > width and col.short else col.label
            style = base
            if key == self.sort_column:
                label += "▼" if self.sort_reverse else "▲"
                style = sorted_style
            segments.append(Segment(_fit(label, width, col.align_right), style))
            segments.append(Segment(" ", base))
        return self._finish(segments, base)

    def _finish(self, segments: list[Segment], fill: Style) -> Strip:
        width = self.scrollable_content_region.width
        used = sum(w + 1 for _k, w in self._columns())
        if used < width:
            segments.append(Segment(" " * (width - used), fill))
            return Strip(segments, width)
        return Strip(segments, used).crop(0, width)

    def _styles(self) -> dict[str, Style]:
        """Component styles, looked up once per style change rather than once per row."""
        focus = self.has_focus
        if self._style_cache_focus is not focus or not self._style_cache:
            self._style_cache = {
                "base": self.rich_style,
                "stale": self.get_component_rich_style("vm-table--stale"),
                "marked": self.get_component_rich_style("vm-table--marked"),
                "cursor": self.get_component_rich_style("vm-table--cursor"),
            }
            self._style_cache_focus = focus
            self._rows_cache.clear()
        return self._style_cache

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._style_cache.clear()
        self._rows_cache.clear()

    def _state_text(self, key: str, vm: VM) -> tuple[str, Style | None]:
        progress = self._progress.get(key)
        if progress is not None:
            label = fmt.STAGE_LABELS.get(progress.stage, progress.stage)
            if progress.deadline is not None:
                left = max(0, int(progress.deadline - self._monotonic() + 0.999))
                label = f"{label} {left}s"
            return label, _STAGE_STYLE
        text = vm.state.value
        if vm.stale:
            return "~" + text, _DIM
        return text, _STATE_STYLES.get(vm.state)

    def _row(self, key: str, vm: VM, cursor: bool, marked: bool) -> Strip:
        styles = self._styles()
        base = styles["base"]
        if vm.stale:
            base = base + styles["stale"]
        if marked:
            base = base + styles["marked"]
        over = styles["cursor"] if cursor else None
        now = self._clock()
        until: tuple[str, Style | None] = (fmt.until(vm.reservation, now), None)
        owner: tuple[str, Style | None] = (fmt.owner(vm), None)
        note: tuple[str, Style | None] = (fmt.note(vm), None)
        if vm.reservation is not None and vm.reservation.is_expired(now):
            # Expired: still shown (nothing is deleted silently), dimmed, and said so, in
            # the owner cell too when the terminal is too narrow for the UNTIL column.
            until = ("expired", _EXPIRED)
            owner_text = owner[0] if "until" in self._widths else f"{owner[0]} (exp)"
            owner, note = (owner_text, _DIM), (note[0], _DIM)
        cells: dict[str, tuple[str, Style | None]] = {
            "mark": ("●" if marked else " ", None),
            "host": (vm.host, None),
            "name": (vm.name, None),
            "state": self._state_text(key, vm),
            "vcpus": (str(vm.vcpus), None),
            "memory": (fmt.memory(vm.memory_kib), None),
            "ips": (fmt.ips(vm), None),
            "owner": owner,
            "until": until,
            "note": note,
        }
        segments: list[Segment] = []
        fill = base + over if over is not None else base
        for column, width in self._columns():
            text, extra = cells[column]
            style = base + extra if extra is not None else base
            if over is not None:
                style = style + over
            # The gap after a cell shares its segment: only the background shows there.
            segments.append(Segment(_fit(text, width, column in _RIGHT) + " ", style))
        return self._finish(segments, fill)

    def render_line(self, y: int) -> Strip:
        if y == 0:
            return self._header()
        row = round(self.scroll_y) + y - 1
        if row >= len(self._shown):
            return Strip.blank(self.scrollable_content_region.width, self._styles()["base"])
        key = self._shown[row]
        vm = self._vms[key]
        cursor, marked = row == self._cursor, key in self._marked
        if key in self._progress:  # a countdown changes every second: never cached
            return self._row(key, vm, cursor, marked)
        # Cached per row state: a cursor move repaints every visible line, but only the two
        # rows whose look changed are drawn again. The minute bucket ages "until" columns.
        cache_key = (key, vm, cursor, marked, int(self._clock() // 60))
        strip = self._rows_cache.get(cache_key)
        if strip is None:
            if len(self._rows_cache) > _ROW_CACHE_SIZE:
                self._rows_cache.clear()
            strip = self._rows_cache[cache_key] = self._row(key, vm, cursor, marked)
        return strip

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
