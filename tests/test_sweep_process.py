"""Local sweeps in one long-lived child process (sweep_process.py), with real packets inside
the namespaces of tests/netns.py: answers as the one-shot child gives them, timed by the
fleet's clock, several sweeps on one child, a child that dies or idles replaced, and the
parent process never importing scapy."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from catkeeper.backend.ipscan.local_sweep import SweepOptions
from catkeeper.backend.ipscan.results import SWEEP_ARP, SWEEP_ICMP, SourceResult
from catkeeper.backend.ipscan.sweep_process import SweepProcess
from tests.netns import ANSWERS, NO_ICMP, Topology, reap_stale, require_netns

pytestmark = pytest.mark.daemon

FAR_FUTURE = 4_000_000_000.0  # 2096: a clock nobody's wall clock agrees with


@pytest.fixture(scope="module", autouse=True)
def _reap() -> None:
    require_netns()
    reap_stale()


@pytest.fixture
def topo() -> Iterator[Topology]:
    t = Topology()
    try:
        yield t.build()
    finally:
        t.destroy()


def _child_argv(topo: Topology) -> list[str]:
    return topo.in_host(sys.executable, "-m", "catkeeper.backend.ipscan.sweep_process")


def _found(results: list[SourceResult], source: str) -> dict[str, str]:
    (r,) = [r for r in results if r.source == source]
    assert r.ok, r.error
    return {s.ip: s.mac for s in r.sightings}


async def test_sweeps_share_one_child_and_keep_the_fleets_clock(topo: Topology) -> None:
    sweeps = SweepProcess(argv=_child_argv(topo))
    options = SweepOptions(clock=lambda: FAR_FUTURE)
    progress: list[SourceResult] = []
    try:
        first, second = await asyncio.gather(
            sweeps.sweep("a", [topo.subnet], options, timeout=60, progress=progress.append),
            sweeps.sweep("b", [topo.subnet], options, timeout=60),
        )
        for results in (first, second):
            assert _found(results, SWEEP_ARP) == topo.answering(ANSWERS, NO_ICMP)
            assert _found(results, SWEEP_ICMP) == topo.answering(ANSWERS)
            for r in results:
                assert all(FAR_FUTURE <= s.seen_at < FAR_FUTURE + 60 for s in r.sightings)
        assert {r.host for r in first} == {"a"} and {r.host for r in second} == {"b"}
        assert {r.source for r in progress} == {SWEEP_ARP, SWEEP_ICMP}  # as each finished
        third = await sweeps.sweep("a", [topo.subnet], SweepOptions(icmp=False), timeout=60)
        assert _found(third, SWEEP_ARP) == topo.answering(ANSWERS, NO_ICMP)
        assert sweeps.started == 1
    finally:
        await sweeps.aclose()
    assert sweeps.pid is None


async def test_a_child_that_dies_fails_its_sweep_and_is_replaced(topo: Topology) -> None:
    sweeps = SweepProcess(argv=_child_argv(topo))
    try:
        await sweeps.sweep("a", [topo.subnet], SweepOptions(icmp=False), timeout=60)
        pid = sweeps.pid
        assert pid is not None
        # A sweep that waits long for stragglers, and the child killed under it.
        slow = asyncio.ensure_future(
            sweeps.sweep("a", [topo.subnet], SweepOptions(icmp=False, timeout=20), timeout=60)
        )
        await asyncio.sleep(0.5)
        os.kill(pid, signal.SIGKILL)  # the child this test's SweepProcess started
        (failed,) = await asyncio.wait_for(slow, 30)
        assert not failed.ok and "sweep process ended" in (failed.error or "")
        again = await sweeps.sweep("a", [topo.subnet], SweepOptions(icmp=False), timeout=60)
        assert _found(again, SWEEP_ARP) == topo.answering(ANSWERS, NO_ICMP)
        assert sweeps.started == 2 and sweeps.pid not in (None, pid)
    finally:
        await sweeps.aclose()


async def test_an_idle_child_ends_and_the_next_sweep_starts_another(topo: Topology) -> None:
    sweeps = SweepProcess(argv=_child_argv(topo), idle_timeout=0.3)
    try:
        await sweeps.sweep("a", [topo.subnet], SweepOptions(icmp=False), timeout=60)
        for _ in range(200):
            if sweeps.pid is None:
                break
            await asyncio.sleep(0.05)
        assert sweeps.pid is None  # it ended by itself once its input closed
        again = await sweeps.sweep("a", [topo.subnet], SweepOptions(icmp=False), timeout=60)
        assert _found(again, SWEEP_ARP) == topo.answering(ANSWERS, NO_ICMP)
        assert sweeps.started == 2
    finally:
        await sweeps.aclose()


_PARENT = """
import asyncio, json, sys
from catkeeper.backend.ipscan.local_sweep import SweepOptions
from catkeeper.backend.ipscan.sweep_process import SweepProcess

async def main():
    sweeps = SweepProcess()
    results = await sweeps.sweep("a", [sys.argv[1]], SweepOptions(icmp=False), timeout=60)
    await sweeps.aclose()
    print(json.dumps({"found": sum(len(r.sightings) for r in results),
                      "scapy": sorted(m for m in sys.modules if m.split(".")[0] == "scapy")}))

asyncio.run(main())
"""


def test_the_process_that_asks_never_imports_scapy(topo: Topology) -> None:
    done = subprocess.run(
        topo.in_host(sys.executable, "-c", _PARENT, topo.subnet),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["found"] == len(topo.answering(ANSWERS, NO_ICMP))
    assert doc["scapy"] == []
