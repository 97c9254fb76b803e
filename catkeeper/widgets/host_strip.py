"""One chip per host: state, VM count, latency, free memory. Focus it to read a host's error."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.timer import Timer
from textual.widget import Widget

from catkeeper.model import Host, HostState
from catkeeper.widgets import format as fmt

GLYPHS: dict[HostState, tuple[str, str]] = {
    HostState.UP: ("●", "green"),
    HostState.CONNECTING: ("◌", "yellow"),
    HostState.DEGRADED: ("▲", "yellow"),
    HostState.UNREACHABLE: ("✖", "bold red"),
}
_GAP = "  "
# A host whose only news is a new latency figure is repainted at most this often: every
# warm refresh measures one, and on real links it moves by a millisecond each time.
LATENCY_REPAINT_S = 5.0


class HostStrip(Widget, can_focus=True):
    """Left/right pick a host while focused; the line below the chips tells its story."""

    DEFAULT_CSS = """
    HostStrip {
        height: auto;
        max-height: 5;
        padding: 0 1;
        background: $panel;
    }
    HostStrip:focus { background: $panel-lighten-1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left,h", "pick(-1)", "Previous host", show=False),
        Binding("right,l", "pick(1)", "Next host", show=False),
        Binding("enter", "choose", "Filter to host", show=False),
    ]

    @dataclass
    class HostChosen(Message):
        host: str

    def __init__(
        self,
        hosts: Iterable[Host] = (),
        *,
        clock: fmt.Clock = time.time,
        latency_format: fmt.LatencyFormat = fmt.latency,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self._hosts: dict[str, Host] = {h.name: h for h in hosts}
        self._clock = clock
        self._latency = latency_format
        self.picked = 0
        self._laid_lines = 0  # lines at the last layout
        self._latency_timer: Timer | None = None

    @property
    def hosts(self) -> list[Host]:
        return list(self._hosts.values())

    def update_hosts(self, hosts: Iterable[Host]) -> None:
        """Take new host states; repaint only if what the strip shows changed.

        Every warm refresh sends each host again (a new ``last_ok_at``, a new latency). A
        layout refresh re-lays out the whole screen, scrollbars included: at 20 hosts x 500
        VMs that was the TUI's largest cost while nothing changed (1.7 % of a core). So:
        nothing shown changed, nothing happens; only a latency figure changed, one repaint
        within ``LATENCY_REPAINT_S``; the screen is laid out again only when the strip's
        number of lines changes.
        """
        hosts = list(hosts)
        urgent = latency = False
        for host in hosts:
            old = self._hosts.get(host.name)
            self._hosts[host.name] = host
            if old is None or self._shown(old) != self._shown(host):
                urgent = True
            elif self._latency(old.latency_ms) != self._latency(host.latency_ms):
                latency = True
        if urgent:
            self._repaint()
        elif latency and self._latency_timer is None:
            self._latency_timer = self.set_timer(LATENCY_REPAINT_S, self._repaint)

    def _repaint(self) -> None:
        if self._latency_timer is not None:
            self._latency_timer.stop()
            self._latency_timer = None
        width = self.content_region.width or self.size.width
        self.refresh(layout=not width or len(self._lines(width)) != self._laid_lines)

    def _shown(self, host: Host) -> tuple[object, ...]:
        """What the chip or the detail line shows of a host, but its latency."""
        cap = host.capacity
        return (
            self.shown_state(host),
            host.state,
            host.vm_count,
            host.error,
            host.error_since,
            host.uri,
            None
            if cap is None
            else (cap.cpus, cap.memory_kib, fmt.memory(cap.free_memory_kib or 0)),
        )

    def pick(self, name: str) -> bool:
        names = list(self._hosts)
        if name not in names:
            return False
        self.picked = names.index(name)
        self.refresh(layout=True)
        return True

    @property
    def picked_host(self) -> Host | None:
        hosts = self.hosts
        return hosts[self.picked] if 0 <= self.picked < len(hosts) else None

    # ---- drawing ---------------------------------------------------------------------

    @staticmethod
    def shown_state(host: Host) -> HostState:
        """A host retrying after a failure stays "unreachable" on screen: flipping to
        "connecting" every backoff round would only make the strip flicker."""
        if host.state is HostState.CONNECTING and host.error:
            return HostState.UNREACHABLE
        return host.state

    def _chip(self, host: Host, compact: bool, picked: bool) -> Text:
        state = self.shown_state(host)
        glyph, colour = GLYPHS[state]
        chip = Text()
        chip.append(glyph + " ", colour)
        chip.append(host.name, "bold reverse" if picked else "bold")
        if state is HostState.UNREACHABLE:
            chip.append(" unreachable", "red")
            return chip
        if state is HostState.CONNECTING:
            chip.append(" connecting…", "yellow")
            return chip
        chip.append(f" {host.vm_count}vm")
        if state is HostState.DEGRADED:
            chip.append(" degraded", "yellow")
        if not compact:
            chip.append(f" {self._latency(host.latency_ms)}", "dim")
            cap = host.capacity
            # The test driver reports 0 free: no real host has nothing free, so say nothing.
            if cap is not None and cap.free_memory_kib:
                chip.append(f" {fmt.memory(cap.free_memory_kib)} free", "dim")
        return chip

    def _lines(self, width: int) -> list[Text]:
        hosts = self.hosts
        picked = self.picked if self.has_focus else -1
        lines: list[Text] = []
        for compact in (False, True):
            chips = [self._chip(h, compact, i == picked) for i, h in enumerate(hosts)]
            lines = [Text()]
            for chip in chips:
                line = lines[-1]
                needed = chip.cell_len + (len(_GAP) if line.cell_len else 0)
                if line.cell_len and line.cell_len + needed > width:
                    lines.append(Text())
                    line = lines[-1]
                if line.cell_len:
                    line.append(_GAP)
                line.append_text(chip)
            if len(lines) == 1:
                break
        if self.has_focus and (host := self.picked_host) is not None:
            lines.append(self._detail(host))
        return lines

    def _detail(self, host: Host) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        state = self.shown_state(host)
        glyph, colour = GLYPHS[state]
        text.append(f"{glyph} {host.name} {state.value}", colour)
        if host.state is HostState.CONNECTING and host.error:
            text.append(" (retrying)", "yellow")
        if host.error:
            age = ""
            if host.error_since is not None:
                age = f" for {fmt.duration(self._clock() - host.error_since)}"
            text.append(f"{age}: {host.error}", "red" if state is HostState.UNREACHABLE else "")
        else:
            text.append(f" · {host.vm_count} VMs · latency {self._latency(host.latency_ms)}")
            if host.capacity is not None:
                cap = host.capacity
                text.append(f" · {cap.cpus} CPUs")
                if cap.memory_kib:
                    text.append(f" · {fmt.memory(cap.memory_kib)} memory")
                if cap.free_memory_kib:
                    text.append(f", {fmt.memory(cap.free_memory_kib)} free")
        text.append(f" · {host.uri}", "dim")
        return text

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        self._laid_lines = len(self._lines(width))
        return max(1, self._laid_lines)

    def render(self) -> Text:
        return Text("\n").join(self._lines(self.content_region.width or self.size.width))

    # ---- input -------------------------------------------------------------------------

    def on_focus(self) -> None:
        self.refresh(layout=True)

    def on_blur(self) -> None:
        self.refresh(layout=True)

    def action_pick(self, delta: int) -> None:
        if self._hosts:
            self.picked = (self.picked + delta) % len(self._hosts)
            self.refresh(layout=True)

    def action_choose(self) -> None:
        if (host := self.picked_host) is not None:
            self.post_message(self.HostChosen(host.name))
