"""Live stats without a daemon: the rate arithmetic, the rings, polling through the test
driver (whose stats carry only ``state.*``) and the folding into the warm refresh."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import libvirt

from catkeeper.backend.events import FleetEvent, HostChanged, StatsUpdated
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.stats import HostStats, counters, rates
from catkeeper.config import Timing
from catkeeper.demo.fleetgen import write_fleet
from tests.fleet_helpers import fleet_config

RUNNING = {"state.state": libvirt.VIR_DOMAIN_RUNNING, "vcpu.current": 2}


def _record(cpu_s: float, rx: int, tx: int, rd: int, wr: int) -> dict[str, object]:
    return {
        **RUNNING,
        "cpu.time": int(cpu_s * 1e9),
        "balloon.rss": 1000,
        "net.count": 2,
        "net.0.rx.bytes": rx,
        "net.0.tx.bytes": tx,
        "net.1.rx.bytes": rx,  # a second NIC: the rates are the sum over NICs
        "net.1.tx.bytes": 0,
        "block.count": 1,
        "block.0.rd.bytes": rd,
        "block.0.wr.bytes": wr,
    }


def test_rates_are_per_second_and_of_the_vms_own_vcpus() -> None:
    old = counters(_record(10.0, 1000, 500, 0, 0), at=100.0)
    new = counters(_record(13.0, 5000, 2500, 8192, 4096), at=104.0)
    r = rates(new, old, wall=1_000_000.0)
    # 3 s of CPU in 4 s on 2 vCPUs: 37.5 % of the VM's vCPUs.
    assert r.cpu_pct == 37.5
    assert r.net_rx == (4000 + 4000) / 4 and r.net_tx == 2000 / 4
    assert r.net == r.net_rx + r.net_tx
    assert (r.disk_rd, r.disk_wr) == (2048.0, 1024.0)
    assert r.mem_used_kib == 1000 and r.at == 1_000_000.0


def test_guest_reported_memory_wins_over_rss() -> None:
    record = {**_record(1, 0, 0, 0, 0), "balloon.available": 4000, "balloon.unused": 1500}
    assert counters(record, 0).mem_used_kib == 2500


def test_no_rates_from_one_sample_a_restart_or_a_stopped_vm() -> None:
    first = counters(_record(10, 0, 0, 0, 0), at=1)
    assert rates(first, None, 0).cpu_pct is None
    restarted = counters(_record(1, 0, 0, 0, 0), at=2)  # counters went back: not negative
    assert rates(restarted, first, 0).cpu_pct is None
    stopped = counters({"state.state": libvirt.VIR_DOMAIN_SHUTOFF}, at=3)
    r = rates(stopped, restarted, 0)
    assert (r.running, r.cpu_pct, r.mem_used_kib) == (False, None, None)


def test_ring_is_bounded_and_forgets_vms_that_are_gone() -> None:
    stats = HostStats("h", ring=3)
    polls: list[int] = []
    stats.on_poll = lambda: polls.append(stats.polls)
    for i in range(5):
        stats.take([("a", _record(i, 0, 0, 0, 0)), ("b", _record(i, 0, 0, 0, 0))], i, 100 + i)
    assert [r.at for r in stats.series("a")] == [102, 103, 104]
    assert stats.latest("a") is not None and stats.latest("a").cpu_pct == 50.0  # type: ignore[union-attr]
    stats.take([("a", _record(6, 0, 0, 0, 0))], 6, 106)
    assert stats.series("b") == [] and stats.uuids() == ["a"]
    assert polls == [1, 2, 3, 4, 5, 6]
    # A VM that stops keeps no ring (nothing to draw); started again, it starts afresh.
    stopped = {"state.state": libvirt.VIR_DOMAIN_SHUTOFF}
    stats.take([("a", stopped)], 7, 107)
    assert stats.series("a") == [] and stats.latest("a") is None
    stats.take([("a", _record(8, 0, 0, 0, 0))], 8, 108)
    (only,) = stats.series("a")
    assert (only.at, only.cpu_pct, only.mem_used_kib) == (108, None, 1000)


def test_a_poll_without_figures_keeps_no_ring_but_keeps_the_watch() -> None:
    stats = HostStats("h", ring=3)
    stats.take([("a", _record(1, 0, 0, 0, 0))], 1, 101)
    stats.take([("a", _record(1.5, 0, 0, 0, 0))], 2, 102)  # 50 % of 2 vCPUs: busy
    watch = stats.activity("a")
    assert watch is not None and len(stats.series("a")) == 2
    stats.take([("a", dict(RUNNING))], 3, 103)  # running, but this poll carries no counter
    assert stats.series("a") == [] and stats.latest("a") is None
    assert stats.activity("a") == watch  # when the watch began is not forgotten
    stats.take([("b", dict(RUNNING))], 4, 104)  # never had figures: nothing kept at all
    assert stats.series("b") == [] and stats.activity("b") is None and stats.uuids() == []


async def _until(check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not true in time"
        await asyncio.sleep(0.02)


async def test_test_driver_poll_keeps_no_blank_rings_and_announces_each_host_once(
    tmp_path: Path,
) -> None:
    paths = write_fleet(tmp_path, hosts=2, vms_per_host=4, seed=3)
    timing = Timing(connect_timeout=3, call_timeout=5, refresh_interval=0, stats_interval=0.2)
    fleet = Fleet(
        fleet_config([(f"h{i}", f"test://{p}") for i, p in enumerate(paths)], timing=timing)
    )
    seen: list[FleetEvent] = []
    fleet.subscribe(seen.append)
    await fleet.start()
    try:
        assert await fleet.wait_settled(10)
        s0 = fleet.session("h0")
        await _until(lambda: s0.stats.polls >= 3, 10)
        assert any(vm.state.is_active for vm in s0.vms.values())
        # The test driver reports only the state: no figures, so no VM keeps a ring (not
        # even a running one: a ring of blanks was 30 x 6 floats per VM, and made-up zeros
        # would be worse), and the host says it is not reporting.
        assert all(s0.stats.series(uuid) == [] for uuid in s0.vms)
        assert not s0.stats.reporting
        updates = [e.host for e in seen if isinstance(e, StatsUpdated)]
        assert set(updates) == {"h0", "h1"}
        assert updates.count("h0") <= s0.stats.polls  # one announcement per poll, not per VM
    finally:
        await fleet.aclose()


async def test_equal_intervals_fold_into_the_warm_refresh_and_zero_is_off(tmp_path: Path) -> None:
    (node,) = write_fleet(tmp_path, hosts=1, vms_per_host=3, seed=5)
    folded = Timing(connect_timeout=3, call_timeout=5, refresh_interval=0.2, stats_interval=0.2)
    off = Timing(connect_timeout=3, call_timeout=5, refresh_interval=0.2, stats_interval=0)
    for timing, expect_polls in ((folded, True), (off, False)):
        fleet = Fleet(fleet_config([("h", f"test://{node}")], timing=timing))
        refreshes: list[FleetEvent] = []  # each warm refresh says HostChanged
        fleet.subscribe(refreshes.append)
        await fleet.start()
        try:
            assert await fleet.wait_settled(10)
            session = fleet.session("h")
            assert session._stats_task is None  # no second call per host either way
            if expect_polls:
                # The refresh's own call fed the sampler (the test driver's records carry
                # no figures, so nothing is kept per VM: the polls are the evidence).
                await _until(lambda s=session: s.stats.polls >= 2, 10)
            else:

                def changes(seen: list[FleetEvent] = refreshes) -> int:
                    return sum(isinstance(e, HostChanged) for e in seen)

                settled = changes()
                await _until(lambda n=settled: changes() >= n + 3, 10)  # three refreshes
                assert session.stats.polls == 0
        finally:
            await fleet.aclose()
