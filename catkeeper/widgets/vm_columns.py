"""The VM table's columns and drawing: what each column shows and how wide it is, and the
strips a row is painted with. Apart from the table's keys, marks and filtering
(``vm_table.py``) so neither module grows past a screenful of concerns."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.timer import Timer

from catkeeper.model import VM, StopProgress, VmState
from catkeeper.widgets import format as fmt
from catkeeper.widgets import stats_cells
from catkeeper.widgets.row_order import ContentWidths

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
    Column("cpu", "CPU%", stats_cells.sort_cpu),  # live stats: figure + sparkline
    Column("net", "NET", stats_cells.sort_net),
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


class RowFilter(Protocol):
    """What the table needs of a filter (``catkeeper.filtering.Filter`` is one): the
    table is handed it, so it imports nothing but the model."""

    @property
    def is_empty(self) -> bool: ...

    def matches(self, vm: VM, now: float, *, hay: str | None = None) -> bool: ...

    def select(self, rows: Sequence[tuple[str, VM, str]], now: float) -> list[str]: ...


class _ShowAll:
    is_empty = True

    def matches(self, vm: VM, now: float, *, hay: str | None = None) -> bool:
        return True

    def select(self, rows: Sequence[tuple[str, VM, str]], now: float) -> list[str]:
        return [key for key, _vm, _hay in rows]


def _names(vm: VM) -> str:
    return f"{vm.name}\x00{vm.host}".lower()


class VmTableDrawing(ScrollView):
    """Column widths and row painting; the state it reads is the table's (``VmTable``)."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "vm-table--header",
        "vm-table--header-sorted",
        "vm-table--cursor",
        "vm-table--marked",
        "vm-table--stale",
    }
    _clock: fmt.Clock = time.time
    _monotonic: fmt.Clock = time.monotonic
    _vms: dict[str, VM]
    _shown: list[str]
    _cursor: int
    _marked: set[str]
    _progress: dict[str, StopProgress]
    _widths: dict[str, int]
    _layout_width: int
    _style_cache: dict[str, Style]
    _style_cache_focus: bool | None
    _rows_cache: dict[tuple[Any, ...], Strip]
    _content_width: dict[str, int]
    _measured: ContentWidths
    sort_column: str
    sort_reverse: bool
    _order: list[str]
    _order_dirty: bool
    _rows: list[tuple[str, VM, str]] | None
    _ticker: Timer | None
    stats: stats_cells.StatsSource | None = None  # live rates (use_stats)
    _stats_serial = 0  # in the row cache key: a poll redraws the visible rows only
    _stats_shown = False

    def use_stats(self, source: stats_cells.StatsSource | None) -> None:
        self.stats = source
        stats_cells.use(source)

    def stats_updated(self, hosts: Collection[str]) -> None:
        """A poll of ``hosts``: repaint if a visible row is theirs (once some host has rates)."""
        if not self._stats_shown:
            if self.stats is None or not self.stats.reporting():
                return
            self._stats_shown = True
            self._layout()
        top = round(self.scroll_y)
        if stats_cells.shows_any(hosts, self._shown[top : top + self.size.height], self._vms):
            self._stats_serial += 1
            self.refresh()

    # The columns drawn, in order: a saved view picks them (show_columns). Rows build every
    # cell whichever are shown, so a row costs what it did.
    visible_columns: tuple[str, ...] = COLUMN_KEYS

    def show_columns(self, keys: Sequence[str] | None) -> None:
        """Draw only these columns, in this order (None or empty: every column)."""
        if any(k not in _BY_KEY for k in keys or ()):
            raise ValueError(f"unknown column in {keys} (columns: {', '.join(COLUMN_KEYS)})")
        visible = tuple(dict.fromkeys(keys)) if keys else COLUMN_KEYS
        if visible != self.visible_columns:
            self.visible_columns = visible
            self._layout()
            self.refresh()

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

    def _measure_content(self) -> bool:
        """Widths of the columns sized by their content (kept over all rows as they change,
        so a filter keystroke does not make columns jump); lays out again when they moved
        (True)."""
        widths = self._measured.widths()
        if widths == self._content_width:
            return False
        self._content_width = widths
        self._layout()
        return True

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
            **stats_cells.widths(self._stats_shown),
        }
        widths = {k: w for k, w in widths.items() if k == "mark" or k in self.visible_columns}
        # Narrow terminals give up the least telling columns first.
        for drop in (*stats_cells.widths(self._stats_shown), "ips", "until", "vcpus"):
            fixed = sum(widths.values()) + len(widths)  # one space after each column
            if width - fixed >= 16:
                break
            if drop not in widths:
                continue
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
        if "note" not in self.visible_columns:  # a view without notes: columns packed left
            note_w = 0
        elif note_w < 6:
            name_w, note_w = rest, 0
        if "name" not in self.visible_columns:
            name_w, note_w = 0, rest
        widths["name"] = name_w
        widths["note"] = note_w
        self._widths = widths
        self._layout_width = width
        self._rows_cache.clear()

    def _columns(self) -> list[tuple[str, int]]:
        # The vertical scrollbar comes and goes with the row count, without a Resize:
        # lay out again whenever the drawable width is not the one laid out for.
        if self._layout_width != self.scrollable_content_region.width:
            self._layout()
        order = ("mark", *self.visible_columns)
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
        owner: tuple[str, Style | None] = (stats_cells.stale_mark(self.stats, vm, now), None)
        note: tuple[str, Style | None] = (fmt.note(vm), None)
        cpu, net = stats_cells.cells(self.stats, vm)
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
            "cpu": (cpu, None),
            "net": (net, None),
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
        cache_key = (key, vm, cursor, marked, int(self._clock() // 60), self._stats_serial)
        strip = self._rows_cache.get(cache_key)
        if strip is None:
            if len(self._rows_cache) > _ROW_CACHE_SIZE:
                self._rows_cache.clear()
            strip = self._rows_cache[cache_key] = self._row(key, vm, cursor, marked)
        return strip
