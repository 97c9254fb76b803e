"""The host strip's allocation: each chip's memory share, the picked host's vCPUs, memory and
what all its defined VMs take, kept as a tally the changed VMs move (never a sum over the
fleet per repaint). Test-driver hosts with known capacities from ``test_placement.py``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.app import App, ComposeResult
from textual.pilot import Pilot

from catkeeper.model import VM, Capacity, Host, HostState, VmState
from catkeeper.widgets.host_strip import Allocation, HostStrip
from tests.test_placement import GIB, capacity_app, ready
from tests.tui_support import key_of, until

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 50), id="160x50")]
X = "\N{MULTIPLICATION SIGN}"  # the overcommit sign on screen
Snap = Callable[..., bool]


async def picked(strip: HostStrip, pilot: Pilot[Any], host: str) -> list[str]:
    """The strip's lines as a person reads them with ``host`` picked."""
    strip.focus()
    assert strip.pick(host)
    await pilot.pause()
    return strip.render().plain.splitlines()


async def test_chips_and_the_picked_hosts_allocation(tmp_path: Path) -> None:
    app = capacity_app(tmp_path)
    async with app.run_test(size=(160, 40)) as pilot:
        await ready(app, pilot)
        strip = app.fleet_screen.strip
        chips, detail = await picked(strip, pilot, "lab1")
        # Memory of running VMs per physical memory: 24/64, 8/32, (lab3 refused), 12/16.
        assert f"● lab1 3vm 1ms cpu 0.8{X} mem 38%" in chips
        assert f"● lab2 1vm 1ms cpu 0.2{X} mem 25%" in chips
        assert "✖ lab3 unreachable" in chips
        assert f"● lab4 2vm 1ms cpu 1.0{X} mem 75%" in chips
        assert detail.startswith(
            f"● lab1 up · 3 VMs, 2 running · vCPU 12/16 (0.8{X}) · mem 24/64 GiB (40 GiB left)"
            " · defined 20 vCPU 48 GiB · latency 1ms · test://"
        )
        # A refused host has no figures, only its error.
        _chips, detail = await picked(strip, pilot, "lab3")
        assert "vCPU" not in detail and "Connection refused" in detail


async def test_narrow_chips_keep_the_memory_share(tmp_path: Path) -> None:
    app = capacity_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(app, pilot)
        line = app.fleet_screen.strip.render().plain.splitlines()[0]
        # At 80 columns latency and CPU go first; the memory share stays, on one line.
        assert line == "● lab1 3vm 38%  ● lab2 1vm 25%  ✖ lab3 unreachable  ● lab4 2vm 75%"


async def test_a_start_moves_the_tally(tmp_path: Path) -> None:
    app = capacity_app(tmp_path)
    async with app.run_test(size=(160, 40)) as pilot:
        await ready(app, pilot)
        strip = app.fleet_screen.strip
        table = app.fleet_screen.table
        table.focus()
        assert table.move_cursor_to(key_of(app, "c"))
        await pilot.press("s")  # c: 8 vCPUs, 24 GiB, shut off -> running
        await until(lambda: strip.allocation("lab1").vms_running == 3, what="c counted running")
        _chips, detail = await picked(strip, pilot, "lab1")
        assert f"vCPU 20/16 (1.2{X}) · mem 48/64 GiB (16 GiB left)" in detail
        assert "defined 20 vCPU 48 GiB" in detail  # defined either way


# ---- the tally on its own --------------------------------------------------------------------


def vm(name: str, state: VmState, vcpus: int, gib: int, *, host: str = "h") -> VM:
    return VM(
        host=host,
        name=name,
        uuid=name,
        state=state,
        vcpus=vcpus,
        memory_kib=gib * GIB,
        max_memory_kib=gib * GIB,
        autostart=False,
        persistent=True,
    )


class StripApp(App[None]):
    def __init__(self, strip: HostStrip) -> None:
        super().__init__()
        self.strip = strip

    def compose(self) -> ComposeResult:
        yield self.strip


async def test_the_tally_follows_upserts_and_removals_without_a_full_sum() -> None:
    host = Host("h", "test:///h", HostState.UP, capacity=Capacity(8, 32 * GIB), vm_count=3)
    strip = HostStrip([host])
    async with StripApp(strip).run_test(size=(100, 5)) as pilot:
        many = {f"h/{i}": vm(f"v{i}", VmState.SHUTOFF, 1, 1) for i in range(10_000)}
        strip.update_vms(many)
        assert strip.allocation("h") == Allocation(0, 0, 0, 10_000, 10_000, 10_000 * GIB)
        # One VM starts: only it is counted again (a new IP alone changes nothing).
        strip.update_vms({"h/7": vm("v7", VmState.RUNNING, 1, 1)})
        with_ip = dataclasses.replace(many["h/8"], title="another title")
        strip.update_vms({"h/8": with_ip})
        assert strip.allocation("h") == Allocation(1, 1, GIB, 10_000, 10_000, 10_000 * GIB)
        # A paused VM keeps its memory: still running as far as room goes.
        strip.update_vms({"h/7": vm("v7", VmState.PAUSED, 1, 1)})
        assert strip.allocation("h").memory_running_kib == GIB
        strip.update_vms({}, removed=["h/7", "h/8", "h/unknown"])
        assert strip.allocation("h") == Allocation(0, 0, 0, 9_998, 9_998, 9_998 * GIB)
        assert strip.allocation("elsewhere") == Allocation()
        await pilot.pause()


async def test_over_the_memory_is_red_and_a_host_without_capacity_has_no_figures() -> None:
    full = Host("full", "test:///f", HostState.UP, capacity=Capacity(2, 4 * GIB), vm_count=1)
    unknown = Host("unknown", "test:///u", HostState.UP, vm_count=1)
    strip = HostStrip([full, unknown], latency_format=lambda _ms: "1ms")
    async with StripApp(strip).run_test(size=(100, 5)) as pilot:
        strip.update_vms(
            {
                "full/a": vm("a", VmState.RUNNING, 4, 6, host="full"),
                "unknown/b": vm("b", VmState.RUNNING, 1, 1, host="unknown"),
            }
        )
        await pilot.pause()
        line = strip.render()
        assert line.plain.splitlines()[0] == (
            f"● full 1vm 1ms cpu 2.0{X} mem 150%  ● unknown 1vm 1ms"
        )
        share = line.plain.index("150%")
        assert any(
            span.start <= share < span.end and "red" in str(span.style) for span in line.spans
        )


# ---- what a person sees ----------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_host_strip_snapshot(snap_compare: Snap, size: tuple[int, int]) -> None:
    """The fleet screen with the strip focused on lab1: chips and its allocation line."""
    app = capacity_app(Path("/tmp/catkeeper-snapshot-placement"))

    async def run_before(pilot: Pilot[Any]) -> None:
        await ready(app, pilot)
        await picked(app.fleet_screen.strip, pilot, "lab1")
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=size, run_before=run_before)
