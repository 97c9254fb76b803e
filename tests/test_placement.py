"""``:place`` in the TUI and the create form's best fit, on test-driver hosts whose CPUs and
memory the node files give (the test driver reads a node's ``<memory>`` in KiB whatever its
``unit`` says, so the files give KiB), plus one host that refuses.

The fleet (also the host strip's, ``test_host_strip.py``):

    lab1  16 CPUs  64 GiB  gpu, big  a run 4/8G, b run 8/16G, c off 8/24G -> 40 GiB left
    lab2   8 CPUs  32 GiB            d run 2/8G                            -> 24 GiB left
    lab3  refused                gpu
    lab4   4 CPUs  16 GiB  gpu       e run 4/12G, f off 2/4G               ->  4 GiB left
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.app import App
from textual.containers import VerticalScroll
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Label, Select, Static

from catkeeper.app import CatkeeperApp
from catkeeper.backend.capacity import Fit, Misfit, Placement
from catkeeper.config import Config, HostConfig, Timing
from catkeeper.screens.create_form import CreateFormScreen
from catkeeper.screens.placement import BestFit, PlacementScreen
from catkeeper.tui.placement import parse_args
from tests.tui_support import NO_BACKGROUND_SCANS, key_of, make_app, plain, until

RUNNING, SHUTOFF = 1, 5
GIB = 1024 * 1024  # KiB
REFUSED = "qemu+tcp://127.0.0.1:1/system"  # nothing listens on port 1: refused at once
SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 50), id="160x50")]
X = "\N{MULTIPLICATION SIGN}"  # the overcommit sign on screen
Snap = Callable[..., bool]


def node(path: Path, cpus: int, gib: int, doms: list[tuple[str, int, int, int]]) -> Path:
    """A node file with ``cpus`` CPUs, ``gib`` GiB and domains (name, state, vcpus, GiB)."""
    body = "".join(
        f"""
  <domain type='test'>
    <name>{name}</name>
    <uuid>{uuid.uuid5(uuid.NAMESPACE_DNS, f"{path.stem}.{name}")}</uuid>
    <memory unit='KiB'>{mem * GIB}</memory>
    <vcpu>{vcpus}</vcpu>
    <os><type>hvm</type></os>
    <test:runstate>{state}</test:runstate>
  </domain>"""
        for name, state, vcpus, mem in doms
    )
    path.write_text(
        f"""<node xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>{cpus}</cores><threads>1</threads>
    <active>{cpus}</active><mhz>2000</mhz><model>x86_64</model></cpu>
  <memory>{gib * GIB}</memory>{body}
</node>
""",
        encoding="utf-8",
    )
    return path


def capacity_config(directory: Path, *, refused: bool = True) -> Config:
    directory.mkdir(parents=True, exist_ok=True)
    lab1 = node(
        directory / "lab1.xml",
        16,
        64,
        [("a", RUNNING, 4, 8), ("b", RUNNING, 8, 16), ("c", SHUTOFF, 8, 24)],
    )
    lab2 = node(directory / "lab2.xml", 8, 32, [("d", RUNNING, 2, 8)])
    lab4 = node(directory / "lab4.xml", 4, 16, [("e", RUNNING, 4, 12), ("f", SHUTOFF, 2, 4)])
    hosts = [
        HostConfig("lab1", f"test://{lab1}", tags=("gpu", "big")),
        HostConfig("lab2", f"test://{lab2}"),
    ]
    if refused:
        hosts.append(HostConfig("lab3", REFUSED, tags=("gpu",)))
    hosts.append(HostConfig("lab4", f"test://{lab4}", tags=("gpu",)))
    return Config(
        hosts=tuple(hosts),
        source=str(directory / "config.yaml"),
        ipscan=NO_BACKGROUND_SCANS,
        # No retry while a test runs: lab3 stays refused with the same error.
        timing=Timing(backoff_initial=600, backoff_max=600),
    )


def capacity_app(directory: Path, **kw: Any) -> CatkeeperApp:
    return make_app(capacity_config(directory), **kw)


async def ready(app: CatkeeperApp, pilot: Pilot[Any]) -> None:
    await app.wait_idle(30)
    await until(lambda: len(app.store.vms) == 6, timeout=30, what="the six VMs listed")
    await pilot.pause()


async def type_line(pilot: Pilot[Any], line: str) -> None:
    await pilot.press("colon", *line, "enter")
    await pilot.pause()


async def placement_screen(app: CatkeeperApp, pilot: Pilot[Any], line: str) -> PlacementScreen:
    await type_line(pilot, line)
    await until(lambda: isinstance(app.screen, PlacementScreen), what="the placement screen")
    await pilot.pause()
    screen = app.screen
    assert isinstance(screen, PlacementScreen)
    return screen


def fit_rows(screen: PlacementScreen) -> list[list[str]]:
    table: DataTable[str] = screen.query_one("#fits", DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


# ---- arguments -------------------------------------------------------------------------


def test_arguments_memory_then_vcpus_then_tags() -> None:
    wanted = parse_args(["16G", "8", "gpu", "big", "gpu"])
    assert not isinstance(wanted, str)
    assert (wanted.memory, wanted.memory_kib, wanted.vcpus, wanted.tags) == (
        "16G",
        16 * GIB,
        8,
        ("gpu", "big"),
    )
    # No count after the memory: the default vCPUs, and the word is a tag.
    tagged = parse_args(["512", "gpu"])
    assert not isinstance(tagged, str)
    assert (tagged.memory_kib, tagged.vcpus, tagged.tags) == (512 * 1024, 2, ("gpu",))
    assert parse_args(["lots"]) == "place: memory 'lots' is not a size (e.g. 20G, 512M)"
    assert parse_args([]) == "place: how much memory? e.g. :place 16G 8"
    assert parse_args(["16G", "0"]) == "place: a VM needs at least 1 vCPU"


# ---- the screen ------------------------------------------------------------------------


async def test_place_ranks_the_fits_and_says_why_the_others_do_not(tmp_path: Path) -> None:
    app = capacity_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(app, pilot)
        screen = await placement_screen(app, pilot, "place 16G 8")
        assert str(screen.query_one("#title", Label).content) == (
            "A VM of 16 GiB and 8 vCPUs fits on 2 hosts"
        )
        # lab1 keeps the most memory after it; both end at (running + 8) vCPUs / CPUs = 1.25.
        assert fit_rows(screen) == [
            ["lab1", "24 GiB left", f"1.25{X}"],
            ["lab2", "8 GiB left", f"1.25{X}"],
        ]
        why = plain(screen.query_one("#misfits", Static))
        assert "Does not fit:" in why
        assert "lab3: unreachable (" in why and "Connection refused" in why
        assert "lab4: 4 GiB free after running VMs, needs 16 GiB" in why
        await pilot.press("escape")
        await until(lambda: app.screen is app.fleet_screen, what="back on the fleet")


async def test_a_tag_narrows_and_fits_nowhere_lists_every_reason(tmp_path: Path) -> None:
    app = capacity_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(app, pilot)
        screen = await placement_screen(app, pilot, "place 16G 8 gpu")
        assert [row[0] for row in fit_rows(screen)] == ["lab1"]
        assert "lab2: no tag gpu" in plain(screen.query_one("#misfits", Static))
        await pilot.press("escape")
        await until(lambda: app.screen is app.fleet_screen, what="closed")

        screen = await placement_screen(app, pilot, "place 48G")
        assert str(screen.query_one("#title", Label).content).endswith("fits nowhere")
        assert not screen.query("#fits")
        why = plain(screen.query_one("#misfits", Static))
        assert "Why not:" in why
        for line in (
            "lab1: 40 GiB free after running VMs, needs 48 GiB",
            "lab2: 24 GiB free after running VMs, needs 48 GiB",
            "lab4: 4 GiB free after running VMs, needs 48 GiB",
        ):
            assert line in why
        assert "esc: close" in str(screen.query_one("#keys", Label).content)
        await pilot.press("enter")  # nothing to choose: still here
        await pilot.pause()
        assert app.screen is screen


async def test_enter_on_a_fitting_host_opens_the_create_form_there(tmp_path: Path) -> None:
    app = capacity_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(app, pilot)
        await placement_screen(app, pilot, "place 16G 8")
        await pilot.press("down", "enter")  # lab2, the second best
        await until(lambda: isinstance(app.screen, CreateFormScreen), what="the create form")
        form = app.screen
        assert isinstance(form, CreateFormScreen)
        await until(lambda: "best fit: lab1" in plain(form.query_one(BestFit)), what="the hint")
        await pilot.pause()
        # Chosen on the placement screen: the best fit (lab1) does not move it.
        assert form.query_one("#host", Select).value == "lab2"
        assert form.query_one("#memory", Input).value == "16G"
        assert form.query_one("#vcpus", Input).value == "8"


async def test_bad_arguments_come_back_on_the_command_line(tmp_path: Path) -> None:
    app = capacity_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(app, pilot)
        bar = app.fleet_screen.bar
        for line, problem in (
            ("place lots 8", "place: memory 'lots'"),
            ("place 16G 0", "place: a VM needs at least 1 vCPU"),
        ):
            await type_line(pilot, line)
            await until(lambda: bar.is_open, what=f":{line} reopened")
            assert bar.mode == "command"
            assert bar.input.value == line  # as typed: fix a word, press enter
            shown = str(bar.query_one("#problem", Label).content)
            assert shown.startswith(problem), shown
            assert app.screen is app.fleet_screen
            await pilot.press("escape")
            await pilot.pause()


async def test_readonly_lists_but_does_not_offer_create(tmp_path: Path) -> None:
    app = capacity_app(tmp_path, readonly=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(app, pilot)
        screen = await placement_screen(app, pilot, "place 16G 8")
        assert [row[0] for row in fit_rows(screen)] == ["lab1", "lab2"]
        assert str(screen.query_one("#keys", Label).content) == "esc: close"
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is screen  # no create form


# ---- the create form's best fit ------------------------------------------------------------


async def test_the_create_form_proposes_the_best_host_until_one_is_picked(tmp_path: Path) -> None:
    app = capacity_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(app, pilot)
        table = app.fleet_screen.table
        assert table.move_cursor_to(key_of(app, "d"))  # on lab2: the form would start there
        await pilot.press("n")
        await until(lambda: isinstance(app.screen, CreateFormScreen), what="the create form")
        form = app.screen
        assert isinstance(form, CreateFormScreen)
        hint = form.query_one(BestFit)
        host = form.query_one("#host", Select)

        def shows(text: str) -> Callable[[], bool]:
            return lambda: plain(hint).strip() == text

        # 2G and 2 vCPUs (the defaults): lab1 keeps 38 GiB, (12 + 2) / 16 vCPUs per CPU.
        await until(shows(f"best fit: lab1 (38 GiB left, cpu 0.9{X})"), what="the first hint")
        await until(lambda: host.value == "lab1", what="the host moved to the best fit")

        memory = form.query_one("#memory", Input)
        memory.value = "30G"
        await until(shows(f"best fit: lab1 (10 GiB left, cpu 0.9{X})"), what="the hint for 30G")
        memory.value = "45G"
        await until(lambda: plain(hint).startswith("fits on no host ("), what="no host")
        assert "lab2: 24 GiB free after running VMs, needs 45 GiB" in plain(hint)
        assert host.value == "lab1"  # nothing fits: the host stays where it was
        memory.value = "lots"
        await until(lambda: "waiting for a memory size" in plain(hint), what="bad size")

        # The user picks lab2: later proposals say lab1 but leave the field alone.
        host.value = "lab2"
        await pilot.pause()
        memory.value = "4G"
        await until(shows(f"best fit: lab1 (36 GiB left, cpu 0.9{X})"), what="the hint for 4G")
        await pilot.pause()
        assert host.value == "lab2"
        form.query_one("#vcpus", Input).value = "8"
        await until(shows(f"best fit: lab1 (36 GiB left, cpu 1.2{X})"), what="the hint for 8")


# ---- what a person sees ----------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_placement_screen_snapshot(snap_compare: Snap, size: tuple[int, int]) -> None:
    # A fixed directory: the URIs (in the host strip's detail) must not depend on tmp_path.
    directory = Path("/tmp/catkeeper-snapshot-placement")
    app = capacity_app(directory)

    async def run_before(pilot: Pilot[Any]) -> None:
        await ready(app, pilot)
        await placement_screen(app, pilot, "place 16G 8")
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


async def test_many_misfits_scroll_rather_than_vanish() -> None:
    """50 hosts that do not fit at 80x24: the reasons scroll, the last one can be reached."""
    misfits = tuple(Misfit(f"lab{i:02}", f"no tag gpu ({i})") for i in range(50))
    placement = Placement(16 * GIB, 8, ("gpu",), (Fit("big", 8 * GIB, None, 1.0),), misfits)

    class Harness(App[None]):
        def on_mount(self) -> None:
            self.push_screen(PlacementScreen(placement, can_create=["big"]))

    app = Harness()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        why = app.screen.query_one("#why", VerticalScroll)
        assert why.max_scroll_y > 0  # more reasons than lines: it scrolls
        why.scroll_end(animate=False)
        await pilot.pause()
        assert why.scroll_y == why.max_scroll_y
        assert "lab49: no tag gpu (49)" in plain(app.screen.query_one("#misfits", Static))
