"""Live stats from a running TCG guest on the real libvirtd: CPU time grows, rates are per
second of the clock the poll is given, and the fleet's poller fills the rings."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path

import jsonschema
import pytest

import catkeeper
from catkeeper.backend.events import FleetEvent, StatsUpdated
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.stats import HostStats, read_stats
from catkeeper.config import Timing
from tests.cli_support import run_catkeeper
from tests.daemons import DomainFactory
from tests.fleet_helpers import fleet_config

pytestmark = pytest.mark.daemon
SCHEMA = json.loads((Path(catkeeper.__file__).parent / "fleet.schema.json").read_text())


def _cpu_ns(dom: object) -> int:
    return int(dom.getCPUStats(True)[0]["cpu_time"])  # type: ignore[attr-defined]


def test_cpu_rate_is_per_second_of_the_given_clock(tcg_domain: DomainFactory) -> None:
    dom = tcg_domain(start=True)
    uuid = dom.UUIDString()
    conn = tcg_domain.conn
    stats = HostStats("qemu")
    # The poll's monotonic clock says 2 s passed between the samples, whatever really did.
    ticks = itertools.count(1000.0, 2.0)
    before = _cpu_ns(dom)
    read_stats(conn, stats, lambda: next(ticks), time.time)
    time.sleep(0.5)  # a measuring window, not a speed assertion
    read_stats(conn, stats, lambda: next(ticks), time.time)
    after = _cpu_ns(dom)
    first, second = stats.series(uuid)
    assert first.cpu_pct is None  # one sample has no rate
    assert second.running and second.cpu_pct is not None
    used_ns = second.cpu_pct / 100 * 1 * 2.0 * 1e9  # 1 vCPU, 2 s by the given clock
    assert 0 < used_ns <= after - before + 1e7  # CPU time grew, within what really grew
    assert second.mem_used_kib is not None and second.mem_used_kib > 1000  # qemu's RSS
    assert second.disk_rd is None  # no disk: unknown, not zero


async def test_fleet_poller_fills_the_ring_of_a_running_guest(tcg_domain: DomainFactory) -> None:
    timing = Timing(connect_timeout=10, call_timeout=15, refresh_interval=0, stats_interval=0.3)
    fleet = Fleet(fleet_config([("qemu", "qemu:///system")], timing=timing))
    dom = tcg_domain(start=True)
    uuid = dom.UUIDString()
    updates: list[FleetEvent] = []
    fleet.subscribe(lambda e: updates.append(e) if isinstance(e, StatsUpdated) else None)
    await fleet.start()
    try:
        assert await fleet.wait_settled(20)
        stats = fleet.session("qemu").stats
        deadline = time.monotonic() + 30
        while sum(1 for r in stats.series(uuid) if r.cpu_pct is not None) < 2:
            assert time.monotonic() < deadline, stats.series(uuid)
            await asyncio.sleep(0.05)
        rates = [r for r in stats.series(uuid) if r.cpu_pct is not None]
        assert all(0 <= (r.cpu_pct or 0) <= 100 for r in rates)
        assert any((r.cpu_pct or 0) > 0 for r in rates)  # a booting guest uses some CPU
        assert rates[-1].at > rates[0].at
        assert updates and all(isinstance(e, StatsUpdated) and e.host == "qemu" for e in updates)
    finally:
        await fleet.aclose()


def test_json_stats_through_the_binary(tcg_domain: DomainFactory, tmp_path: Path) -> None:
    dom = tcg_domain(start=True)
    config = tmp_path / "config.yaml"
    config.write_text(
        "hosts:\n  - name: qemu\n    uri: qemu:///system\ntiming:\n  stats_interval: 0.5\n"
    )
    result = run_catkeeper("--config", str(config), "--json", "--stats", cwd=tmp_path)
    assert result.code == 0, result.err
    jsonschema.validate(result.json(), SCHEMA)  # the documented schema knows "stats"
    (vm,) = [v for v in result.json()["vms"] if v["uuid"] == dom.UUIDString()]
    stats = vm["stats"]
    assert 0 < stats["cpu_percent"] <= 100
    assert stats["memory_used_kib"] > 1000
    assert stats["disk_read_bytes_per_s"] is None  # no disk: unknown, not zero
    plain = run_catkeeper("--config", str(config), "--json", cwd=tmp_path)
    assert all("stats" not in v for v in plain.json()["vms"])
