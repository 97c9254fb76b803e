"""One chip per host: state, VM count, latency, and how much of it the VMs take. Focus it to
read a host's error or its allocation in full.

What the VMs take is kept as a running tally per host, changed by the VMs each batch of
events changes (``update_vms``): adding up 10,000 VMs on every repaint, or on every warm
refresh of every host, would be per-VM work on the UI thread for a figure that rarely moves.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.timer import Timer
from textual.widget import Widget

from catkeeper.model import VM, Host, HostState, memory_taken_kib
from catkeeper.widgets import format as fmt

GLYPHS: dict[HostState, tuple[str, str]] = {
    HostState.UP: ("●", "green"),
    HostState.CONNECTING: ("◌", "yellow"),
    HostState.DEGRADED: ("▲", "yellow"),
    HostState.UNREACHABLE: ("✖", "bold red"),
}
_GAP = "  "
GIB = 1024 * 1024  # KiB
TIMES = "\N{MULTIPLICATION SIGN}"
# A host whose only news is a new latency figure is repainted at most this often: every
# warm refresh measures one, and on real links it moves by a millisecond each time.
LATENCY_REPAINT_S = 5.0


@dataclass
class Allocation:
    """What the VMs of one host take: the running (active) ones, and all defined ones.

    Counted as ``backend.capacity`` counts: a paused VM keeps its memory, so it is running
    here; a VM takes the larger of its current and maximum memory."""

    vms_running: int = 0
    vcpus_running: int = 0
    memory_running_kib: int = 0
    vms_defined: int = 0
    vcpus_defined: int = 0
    memory_defined_kib: int = 0

    def add(self, vm: VM, sign: int = 1) -> None:
        memory = memory_taken_kib(vm) * sign
        self.vms_defined += sign
        self.vcpus_defined += vm.vcpus * sign
        self.memory_defined_kib += memory
        if vm.state.is_active:
            self.vms_running += sign
            self.vcpus_running += vm.vcpus * sign
            self.memory_running_kib += memory

    def shown(self) -> tuple[int, ...]:
        return (
            self.vms_running,
            self.vcpus_running,
            self.memory_running_kib,
            self.vms_defined,
            self.vcpus_defined,
            self.memory_defined_kib,
        )


def _counted(vm: VM) -> tuple[object, ...]:
    """What of a VM the tally counts: a new IP or reservation changes none of it."""
    return (vm.host, vm.state.is_active, vm.vcpus, memory_taken_kib(vm))


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
        self._vms: dict[str, VM] = {}  # row key -> the VM as last counted
        self._alloc: dict[str, Allocation] = {}
        self.tooltip = "VMs defined, vCPUs of running VMs per CPU, their memory of the host's"

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

    def update_vms(self, upserts: Mapping[str, VM], removed: Iterable[str] = ()) -> None:
        """Take the VMs one batch of events changed (by row key) into the per-host tally:
        work per changed VM, never per VM of the fleet; a repaint only when a figure moved."""
        before: dict[str, tuple[int, ...]] = {}

        def count(vm: VM, sign: int) -> None:
            alloc = self._alloc.setdefault(vm.host, Allocation())
            before.setdefault(vm.host, alloc.shown())
            alloc.add(vm, sign)

        for key in removed:
            if (gone := self._vms.pop(key, None)) is not None:
                count(gone, -1)
        for key, vm in upserts.items():
            old = self._vms.get(key)
            self._vms[key] = vm
            if old is not None:
                if _counted(old) == _counted(vm):
                    continue
                count(old, -1)
            count(vm, 1)
        if any(self._alloc[host].shown() != was for host, was in before.items()):
            self._repaint()

    def allocation(self, host: str) -> Allocation:
        """What the VMs of ``host`` take (all zero before any is known)."""
        return self._alloc.get(host) or Allocation()

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

    def _usage(self, host: Host) -> tuple[float, float] | None:
        """(vCPUs of running VMs per CPU, their memory per the host's), None if unknown."""
        cap = host.capacity
        if cap is None or cap.cpus <= 0 or cap.memory_kib <= 0:
            return None
        alloc = self.allocation(host.name)
        return alloc.vcpus_running / cap.cpus, alloc.memory_running_kib / cap.memory_kib

    def _chip(self, host: Host, level: int, picked: bool) -> Text:
        """``level`` 0: all; 1: without latency and CPU; 2: state and VM count only."""
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
        usage = self._usage(host) if level < 2 else None
        if level == 0:
            chip.append(f" {self._latency(host.latency_ms)}", "dim")
            if usage is not None:
                chip.append(f" cpu {usage[0]:.1f}{TIMES}", "dim")
        if usage is not None:
            chip.append(" mem " if level == 0 else " ", "dim")
            chip.append(f"{usage[1]:.0%}", _memory_colour(usage[1]))
        return chip

    def _lines(self, width: int) -> list[Text]:
        hosts = self.hosts
        picked = self.picked if self.has_focus else -1
        lines: list[Text] = []
        # The most that fits on one line; when nothing does, the shortest chips wrap.
        for level in (0, 1, 2):
            chips = [self._chip(h, level, i == picked) for i, h in enumerate(hosts)]
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
            alloc = self.allocation(host.name)
            text.append(f" · {host.vm_count} VMs, {alloc.vms_running} running")
            self._allocation(text, host, alloc)
            text.append(f" · latency {self._latency(host.latency_ms)}")
        text.append(f" · {host.uri}", "dim")
        return text

    def _allocation(self, text: Text, host: Host, alloc: Allocation) -> None:
        """``vCPU 34/16 (2.1x) · mem 48/64 GiB (12 GiB free) · defined 60 vCPU 96 GiB``:
        the first two of running VMs, the physical figures after the slash."""
        cap = host.capacity
        usage = self._usage(host)
        if cap is None or usage is None:
            return
        text.append(f" · vCPU {alloc.vcpus_running}/{cap.cpus} ({usage[0]:.1f}{TIMES})")
        text.append(" · mem ")
        text.append(
            f"{_gib(alloc.memory_running_kib)}/{_gib(cap.memory_kib)} GiB",
            _memory_colour(usage[1]),
        )
        # The test driver reports 0 free: no real host has nothing free, so it means unknown
        # and what the running VMs leave of the physical memory is shown instead.
        if cap.free_memory_kib:
            text.append(f" ({_gib(cap.free_memory_kib)} GiB free)")
        else:
            text.append(f" ({_gib(cap.memory_kib - alloc.memory_running_kib)} GiB left)")
        text.append(
            f" · defined {alloc.vcpus_defined} vCPU {_gib(alloc.memory_defined_kib)} GiB", "dim"
        )

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


def _gib(kib: int) -> str:
    """48, 12.5, 0.5: GiB with a decimal only where it says something."""
    gib = kib / GIB
    return f"{gib:.0f}" if abs(gib) >= 100 or gib == int(gib) else f"{gib:.1f}"


def _memory_colour(share: float) -> str:
    """Running VMs' memory per the host's: red past all of it, yellow near it."""
    if share > 1:
        return "bold red"
    return "yellow" if share >= 0.85 else "dim"
