"""Stale-reservation evidence without a daemon: the rules, disk times through the test
driver (a local ``test:///`` host: ``os.stat`` stands in for the missing volume), the
``reserved:stale`` filter and marker in the TUI, and ``catkeeper reservations --stale``
through the real binary. Dates are far apart so the tests pass under faketime, too."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import libvirt

from catkeeper.backend.fleet import Fleet
from catkeeper.backend.stale import (
    BUSY,
    IDLE,
    OFF,
    UNKNOWN,
    DiskTime,
    Staleness,
    evidence,
    is_stale,
    read_disk_times,
)
from catkeeper.backend.stats.ring import Activity
from catkeeper.config import Config, HostConfig, StaleSettings, Timing
from catkeeper.filtering import parse_filter
from catkeeper.model import VM, Reservation, VmState
from catkeeper.screens.detail import DetailScreen
from tests.cli_support import run_catkeeper
from tests.tui_support import make_app, plain

DAY = 86400.0
OLD = 1_000_000_000.0  # 2001: older than any "now" these tests run at, faked or not
NS = "https://catkeeper.dev/xmlns/reservation/1"


def _vm(state: VmState, *, since: float | None = OLD, until: float | None = None) -> VM:
    res = Reservation("alice", "x", since=since, until=until) if since is not None else None
    return VM("h", "v", "u", state, 1, 1024, 1024, False, True, reservation=res)


def test_evidence_rules() -> None:
    now = OLD + 100 * DAY
    running, off = _vm(VmState.RUNNING), _vm(VmState.SHUTOFF)
    assert evidence(running, Activity(now - 60, None), None, now).kind == BUSY
    idle = evidence(running, Activity(now - 9 * DAY, now - 8 * DAY), None, now)
    assert (idle.kind, idle.since, idle.at_least) == (IDLE, now - 8 * DAY, False)
    # Idle since the watch began: all catkeeper can say is "at least since".
    watched = evidence(running, Activity(now - 60, now - 60), None, now)
    assert (watched.kind, watched.at_least) == (IDLE, True)
    assert evidence(running, None, None, now).kind == UNKNOWN
    assert evidence(off, None, DiskTime(now - 30 * DAY, "/d"), now).since == now - 30 * DAY
    assert evidence(off, None, DiskTime(None, None, unknown=1), now).kind == UNKNOWN
    assert evidence(off, None, None, now).kind == UNKNOWN


def test_stale_counts_from_the_reservation_at_the_earliest() -> None:
    now = OLD + 100 * DAY
    ev = evidence(_vm(VmState.SHUTOFF), None, DiskTime(now - 30 * DAY, "/d"), now)
    assert is_stale(_vm(VmState.SHUTOFF), ev, now, 7 * DAY)
    fresh = _vm(VmState.SHUTOFF, since=now - 2 * DAY)  # reserved two days ago: not yet
    assert not is_stale(fresh, ev, now, 7 * DAY)
    expired = _vm(VmState.SHUTOFF, until=now - DAY)  # expired is its own hint
    assert not is_stale(expired, ev, now, 7 * DAY)
    unreserved = _vm(VmState.SHUTOFF, since=None)
    assert not is_stale(unreserved, ev, now, 7 * DAY)
    busy = evidence(_vm(VmState.RUNNING), Activity(OLD, None), None, now)
    assert not is_stale(_vm(VmState.RUNNING), busy, now, 0)


def _domain(name: str, uuid: str, disk: Path | None, reserved: bool) -> str:
    disk_xml = (
        f"<disk type='file' device='disk'><source file='{disk}'/><target dev='vda'/></disk>"
        if disk
        else ""
    )
    meta = (
        f"<metadata><catkeeper:reservation revision='1' xmlns:catkeeper='{NS}'>"
        "<catkeeper:owner>alice</catkeeper:owner><catkeeper:note>bisecting</catkeeper:note>"
        "<catkeeper:since>2001-01-01T00:00:00Z</catkeeper:since>"
        "</catkeeper:reservation></metadata>"
        if reserved
        else ""
    )
    return (
        f"<domain type='test'><name>{name}</name><uuid>{uuid}</uuid>{meta}"
        "<memory>1048576</memory><vcpu>1</vcpu><os><type>hvm</type></os>"
        f"<devices>{disk_xml}</devices>"
        "<test:runstate xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>5"
        "</test:runstate></domain>"
    )


def node(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A host with a reserved VM whose disk was last written in 2001, a reserved VM
    written just now, and an unreserved one with an old disk."""
    old, new = tmp_path / "old.img", tmp_path / "new.img"
    old.write_bytes(b"\0" * 512)
    new.write_bytes(b"\0" * 512)
    os.utime(old, (OLD, OLD))
    now = time.time()  # the clock catkeeper reads (faked under faketime; a new file's is not)
    os.utime(new, (now, now))
    domains = [
        _domain("idle-box", "11111111-1111-1111-1111-111111111111", old, True),
        _domain("fresh-box", "22222222-2222-2222-2222-222222222222", new, True),
        _domain("free-box", "33333333-3333-3333-3333-333333333333", old, False),
    ]
    path = tmp_path / "node.xml"
    path.write_text(f"<node>{''.join(domains)}</node>")
    return path, old, new


def test_disk_times_of_a_local_test_host_fall_back_to_stat(tmp_path: Path) -> None:
    path, old, new = node(tmp_path)
    conn = libvirt.open(f"test://{path}")
    try:
        times = read_disk_times(
            conn, {"a": [str(old), str(new)], "b": [str(old)], "c": []}, local=True
        )
        remote = read_disk_times(conn, {"a": [str(old)]}, local=False)
    finally:
        conn.close()
    assert times["a"] == DiskTime(os.stat(new).st_mtime, str(new), 0)  # the newest disk
    assert times["b"].mtime == os.stat(old).st_mtime
    assert times["c"] == DiskTime(None, None, 0)
    # Not this machine's paths: no volume means unknown, never a local file's time.
    assert remote["a"] == DiskTime(None, None, 1)


def _config(path: Path) -> Config:
    timing = Timing(connect_timeout=3, call_timeout=5, refresh_interval=0, stats_interval=0)
    return Config(hosts=(HostConfig("lab", f"test://{path}"),), source="<test>", timing=timing)


async def test_filter_marker_and_detail_in_the_tui(tmp_path: Path) -> None:
    path, _old, _new = node(tmp_path)
    config = _config(path)
    now = time.time()
    app = make_app(config, clock=lambda: now, fleet=Fleet(config, clock=lambda: now))
    async with app.run_test(size=(160, 50)) as pilot:
        await app.wait_idle(15)
        await app.staleness.disks.refresh(force=True)
        table = app.fleet_screen.table
        assert app.fleet_screen.set_filter_text("reserved:stale") is None
        await pilot.pause()
        assert [table.vm(k).name for k in table.shown_keys] == ["idle-box"]  # type: ignore[union-attr]
        row = "".join(seg.text for seg in table.render_line(1))
        assert "⌛alice" in row
        await pilot.press("enter")
        deadline = time.monotonic() + 10
        while not isinstance(app.screen, DetailScreen) or "Last used" not in (
            text := plain(app.screen.query_one("#info"))
        ):
            assert time.monotonic() < deadline, "the detail screen did not open"
            await pilot.pause(0.05)
        assert "Last used" in text and "shut off, disks last written 2001" in text
        assert "stale: unused for 7d or more" in text


def test_filter_without_evidence_matches_nothing() -> None:
    vm = _vm(VmState.SHUTOFF)
    assert not parse_filter("reserved:stale", me="me").matches(vm, OLD)
    judged = parse_filter("reserved:stale", me="me", stale=lambda v, now: v is vm)
    assert judged.matches(vm, OLD)
    assert not parse_filter("!reserved:stale", me="me", stale=lambda v, now: True).matches(vm, OLD)


def test_reservations_stale_through_the_binary(tmp_path: Path) -> None:
    path, _old, _new = node(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(f"hosts:\n  - name: lab\n    uri: test://{path}\n")
    result = run_catkeeper(
        "--config", str(config), "reservations", "--stale", "--json", cwd=tmp_path
    )
    assert result.code == 0, result.err
    (only,) = result.json()
    assert only["vm"] == "idle-box"
    assert only["last_used"]["kind"] == OFF and only["last_used"]["since"] < OLD + DAY
    text = run_catkeeper("--config", str(config), "reservations", "--stale", cwd=tmp_path)
    assert text.code == 0 and "lab/idle-box  alice  shut off, disks last written" in text.out
    by_filter = run_catkeeper(
        "--config",
        str(config),
        "reservations",
        "--filter",
        "reserved:stale",
        "--json",
        cwd=tmp_path,
    )
    assert [v["vm"] for v in by_filter.json()] == ["idle-box"]
    # The same term in --json --filter gathers the same evidence.
    fleet = run_catkeeper(
        "--config", str(config), "--json", "--filter", "reserved:stale", cwd=tmp_path
    )
    assert fleet.code == 0, fleet.err
    assert [v["name"] for v in fleet.json()["vms"]] == ["idle-box"]
    every = run_catkeeper("--config", str(config), "reservations", "--json", cwd=tmp_path)
    assert {v["vm"] for v in every.json()} == {"idle-box", "fresh-box"}  # nothing released
    assert StaleSettings().stale_after == 7 * DAY


async def test_a_host_without_cpu_figures_says_so(tmp_path: Path) -> None:
    from catkeeper.config import DEMO_DIR

    node = tmp_path / "lab1.xml"
    node.write_text((DEMO_DIR / "lab1.xml").read_text())
    timing = Timing(connect_timeout=3, call_timeout=5, refresh_interval=0, stats_interval=0.1)
    config = Config(hosts=(HostConfig("lab1", f"test://{node}"),), source="<t>", timing=timing)
    fleet = Fleet(config)
    staleness = Staleness(fleet.sessions, StaleSettings(), time.monotonic)
    await fleet.start()
    try:
        assert await fleet.wait_settled(10)
        session = fleet.session("lab1")
        vm = next(v for v in session.vms.values() if v.name == "rhel9-db")
        assert vm.state is VmState.RUNNING and vm.reservation is not None
        deadline = time.monotonic() + 10
        while session.stats.polls < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        ev = staleness.evidence(vm, time.time())
        assert (ev.kind, ev.detail) == (UNKNOWN, "running; this host reports no CPU time")
        assert not staleness.stale(vm, time.time())
    finally:
        await fleet.aclose()


async def test_disk_times_of_many_vms_are_read_in_chunks(tmp_path: Path) -> None:
    disks = []
    domains = []
    for i in range(45):  # more than two calls' worth
        disk = tmp_path / f"d{i}.img"
        disk.write_bytes(b"\0")
        os.utime(disk, (OLD + i, OLD + i))
        disks.append(disk)
        domains.append(_domain(f"vm{i}", f"00000000-0000-0000-0000-{i:012d}", disk, True))
    path = tmp_path / "node.xml"
    path.write_text(f"<node>{''.join(domains)}</node>")
    fleet = Fleet(_config(path))
    staleness = Staleness(fleet.sessions, StaleSettings(), time.monotonic)
    await fleet.start()
    try:
        assert await fleet.wait_settled(10)
        assert await staleness.disks.refresh_host("lab")
        got = staleness.disks.times["lab"]
        assert len(got) == 45
        assert {int(t.mtime or 0) - OLD for t in got.values()} == set(range(45))
        assert not await staleness.disks.refresh_host("lab")  # cached: nothing changed
    finally:
        await fleet.aclose()
