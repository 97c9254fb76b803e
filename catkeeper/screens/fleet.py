"""The main screen: host health strip, the merged VM table, the status line, the prompt."""

from __future__ import annotations

import time
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer
from textual.worker import Worker, WorkerState

from catkeeper.backend.stale import Staleness
from catkeeper.filtering import MATCH_ALL, FilterError, haystack, parse_filter, tags_of
from catkeeper.model import VM, Host, HostState
from catkeeper.screens.messages import (
    FleetUpdated,
    OpenDetail,
    RunCommandLine,
    StopProgressed,
    WorkerFailed,
)
from catkeeper.widgets import format as fmt
from catkeeper.widgets.filter_bar import FilterBar
from catkeeper.widgets.host_strip import HostStrip
from catkeeper.widgets.vm_table import VmTable


class StatusLine(Widget):
    """One line of counts and state. Not a Static: Static.update re-lays out the whole
    screen, and this line changes on every cursor move."""

    DEFAULT_CSS = """
    StatusLine { height: 1; padding: 0 1; background: $panel; color: $text-muted; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.text = Text()

    def update(self, text: Text) -> None:
        if text != self.text:
            self.text = text
            self.refresh()

    def render(self) -> Text:
        return self.text


class FleetScreen(Screen[None]):
    # Without this the screen focuses its first focusable widget (the host strip) after
    # mount, racing on_mount's table.focus().
    AUTO_FOCUS = "#vms"
    staleness: Staleness | None = None  # the evidence behind reserved:stale (app sets it)
    # "/" and ":" are the command table's (app bindings); this is the screen's own key.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "clear", "Clear marks/filter", show=False),
    ]

    def __init__(
        self,
        *,
        me: str,
        hosts: list[Host],
        clock: fmt.Clock = time.time,
        monotonic: fmt.Clock = time.monotonic,
        latency_format: fmt.LatencyFormat = fmt.latency,
        readonly: bool = False,
    ) -> None:
        super().__init__()
        self.me = me
        self.readonly = readonly
        self._clock = clock
        self._hosts = {h.name: h for h in hosts}
        self.table = VmTable(clock=clock, monotonic=monotonic, haystack=haystack, id="vms")
        self.strip = HostStrip(hosts, clock=clock, latency_format=latency_format, id="hosts")
        self.bar = FilterBar(id="prompt")
        self.status = StatusLine(id="status")
        self._filter_text = ""
        self._filter_due = False  # a typed filter waits for the next frame (on_filter_bar_changed)
        self.seen_serial = 0
        # Background work in progress (IP scans, creations, clones): key → one short line.
        self.activities: dict[str, str] = {}

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # Worker.StateChanged does not bubble: hand it to the app's one error router.
        if event.state is WorkerState.ERROR and event.worker.error is not None:
            self.post_message(WorkerFailed(event.worker.error, event.worker.name))

    def set_readonly(self, on: bool) -> None:
        self.readonly = on
        self.refresh_status()

    def compose(self) -> ComposeResult:
        yield self.strip
        yield self.table
        yield self.bar
        yield self.status
        yield Footer()

    def on_mount(self) -> None:
        self.table.focus()
        self.refresh_status()

    # ---- data in ----------------------------------------------------------------------

    def on_fleet_updated(self, message: FleetUpdated) -> None:
        changes = message.changes
        self.seen_serial = max(self.seen_serial, message.serial)
        if changes.hosts:
            self._hosts.update(changes.hosts)
            self.strip.update_hosts(changes.hosts.values())
        if changes.upserts or changes.removed:
            self.strip.update_vms(changes.upserts, changes.removed)
            self.table.apply(changes.upserts, changes.removed)
        if changes.stats:
            self.table.stats_updated(changes.stats)
            if "stale" in self._filter_text:  # new evidence may change what reserved:stale shows
                self.set_filter_text(self._filter_text)
        self.refresh_status()

    def on_stop_progressed(self, message: StopProgressed) -> None:
        self.table.set_progress(message.key, message.progress)

    # ---- selection, for the app's actions -------------------------------------------------

    def selected_vms(self) -> list[VM]:
        return self.table.selection()

    # ---- filter -----------------------------------------------------------------------

    def set_filter_text(self, text: str) -> str | None:
        """Apply a filter; returns what is wrong with it (the table keeps the last good one)."""
        try:
            tags = tags_of(self._hosts.values())
            stale = self.staleness.stale if self.staleness is not None else None
            chosen = (
                parse_filter(text, me=self.me, host_tags=tags, stale=stale)
                if text.strip()
                else MATCH_ALL
            )
        except FilterError as exc:
            self.bar.set_problem(str(exc))
            return str(exc)
        self.bar.set_problem(None)
        self._filter_text = text if not chosen.is_empty else ""
        self.table.set_filter(chosen)
        self.refresh_status()
        return None

    def action_clear(self) -> None:
        if self.table.marked_keys:
            self.table.clear_marks()
        elif self._filter_text:
            self.bar.action_close()

    def on_filter_bar_changed(self, message: FilterBar.Changed) -> None:
        if message.mode == "filter" and not self._filter_due:
            # Typed text first, rows next: the bar's own repaint goes out with the next
            # frame instead of waiting for 60 new table lines (at 10k rows the keystroke's
            # 95th percentile), and keys typed meanwhile fold into one filtering.
            self._filter_due = True
            self.call_after_refresh(self._apply_typed_filter)

    def _apply_typed_filter(self) -> None:
        self._filter_due = False
        if self.bar.is_open and self.bar.mode == "filter":  # not after Escape or Enter
            self.set_filter_text(self.bar.input.value)

    def on_filter_bar_submitted(self, message: FilterBar.Submitted) -> None:
        if message.mode == "filter":
            if self.set_filter_text(message.text) is None:
                self.bar.close()
                self.table.focus()
        else:
            self.bar.close()
            self.bar.mode = "filter"
            self.table.focus()
            self.post_message(RunCommandLine(message.text))

    def on_filter_bar_closed(self, message: FilterBar.Closed) -> None:
        if message.mode == "filter":
            self.set_filter_text("")
        self.bar.mode = "filter"
        self.table.focus()

    # ---- table and strip events -----------------------------------------------------------

    def on_vm_table_activated(self, message: VmTable.Activated) -> None:
        self.post_message(OpenDetail(message.vm))

    def on_vm_table_cursor_moved(self, _message: VmTable.CursorMoved) -> None:
        self.refresh_status()

    def on_vm_table_marks_changed(self, _message: VmTable.MarksChanged) -> None:
        self.refresh_status()

    def on_host_strip_host_chosen(self, message: HostStrip.HostChosen) -> None:
        self.filter_host(message.host)

    def filter_host(self, host: str) -> None:
        self.strip.pick(host)
        self.apply_filter(f"host:{host}")

    def apply_filter(self, text: str) -> bool:
        """A filter from elsewhere (``:host``, ``:filter``, the strip): shown as if typed."""
        problem = self.set_filter_text(text)
        if problem is not None:
            self.notify(problem, title="Bad filter", severity="error")
            return False
        self.bar.set_filter_text(text)
        self.table.focus()
        return True

    # ---- status -------------------------------------------------------------------------

    def set_activity(self, key: str, text: str | None) -> None:
        """Show (``text``) or drop (None) one piece of background work in the status line."""
        if text is None:
            if self.activities.pop(key, None) is None:
                return
        elif self.activities.get(key) == text:
            return
        else:
            self.activities[key] = text
        self.refresh_status()

    def refresh_status(self) -> None:
        table = self.table
        text = Text(no_wrap=True, overflow="ellipsis")
        if self.readonly:
            text.append(" READ-ONLY ", "bold reverse red")
            text.append(" ")
        text.append(f"{table.row_count}/{table.total_count} VMs")
        marked = len(table.marked_keys)
        if marked:
            text.append(f" · {marked} marked", "bold yellow")
        if self._filter_text:
            text.append(" · ")
            text.append(f"/{self._filter_text}", "bold")
        shown = HostStrip.shown_state
        waiting = [h for h in self._hosts.values() if shown(h) is HostState.CONNECTING]
        if waiting:
            text.append(f" · connecting to {len(waiting)} host(s)…", "yellow")
        for activity in self.activities.values():
            text.append(f" · {activity}", "cyan")
        vm = table.cursor_vm
        if vm is not None:
            host = self._hosts.get(vm.host)
            if host is not None and shown(host) is HostState.UNREACHABLE:
                text.append(f" · {host.name} unreachable: {host.error or '?'}", "red")
        self.status.update(text)
