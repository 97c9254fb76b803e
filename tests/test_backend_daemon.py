"""The backend against a real libvirtd: events from other clients, losing and regaining it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from catkeeper.backend.events import FleetEvent, HostChanged, InventoryLoaded
from catkeeper.backend.fleet import Fleet
from catkeeper.config import Timing
from catkeeper.model import HostState, VmState
from tests.daemons import DomainFactory
from tests.fleet_helpers import fleet_config

pytestmark = pytest.mark.daemon

# refresh_interval=0: no polling at all, so only events can bring changes in.
EVENTS_ONLY = Timing(connect_timeout=10, call_timeout=15, refresh_interval=0, backoff_initial=0.2)


async def _until(check: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not true within {timeout} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def test_changes_by_another_client_arrive_as_events(tcg_domain: DomainFactory) -> None:
    fleet = Fleet(fleet_config([("qemu", "qemu:///system")], timing=EVENTS_ONLY))
    await fleet.start()
    try:
        assert await fleet.wait_settled(20)
        session = fleet.session("qemu")
        assert session.host.state is HostState.UP, session.host.error
        dom = tcg_domain()  # defined through the fixture's own connection
        uuid = dom.UUIDString()
        await _until(lambda: uuid in session.vms, 5)
        assert session.vms[uuid].state is VmState.SHUTOFF
        assert session.vms[uuid].graphics[0].type == "vnc"

        await asyncio.to_thread(dom.create)
        # No refresh polling (EVENTS_ONLY): only the lifecycle event can bring this.
        await _until(lambda: session.vms[uuid].state is VmState.RUNNING, 30)
        # The live XML has the port autoport picked.
        await _until(lambda: (session.vms[uuid].graphics[0].port or 0) >= 5900, 2)

        await asyncio.to_thread(dom.destroy)
        await _until(lambda: session.vms[uuid].state is VmState.SHUTOFF, 10)
        await asyncio.to_thread(dom.undefine)
        await _until(lambda: uuid not in session.vms, 5)
    finally:
        await fleet.aclose()


async def test_daemon_restart_marks_stale_then_recovers(
    tcg_domain: DomainFactory, restart_libvirtd: Callable[[], float]
) -> None:
    dom = tcg_domain()
    uuid = dom.UUIDString()
    fleet = Fleet(fleet_config([("qemu", "qemu:///system")], timing=EVENTS_ONLY))
    seen: list[FleetEvent] = []
    fleet.subscribe(seen.append)
    await fleet.start()
    try:
        assert await fleet.wait_settled(20)
        session = fleet.session("qemu")
        assert uuid in session.vms and not session.vms[uuid].stale

        await asyncio.to_thread(restart_libvirtd)
        await _until(
            lambda: any(
                isinstance(e, HostChanged) and e.host.state is HostState.UNREACHABLE for e in seen
            ),
            10,
        )
        # While it was away its rows stayed, marked stale; then it came back by itself.
        await _until(lambda: session.host.state is HostState.UP and not session.vms[uuid].stale, 20)
        states = [
            e.host.state for e in seen if isinstance(e, HostChanged) and e.host.name == "qemu"
        ]
        assert HostState.UNREACHABLE in states
        assert states.index(HostState.UNREACHABLE) < len(states) - 1
        assert session.host.error is None
        stale_views = [
            e for e in seen if isinstance(e, InventoryLoaded) and any(vm.stale for vm in e.vms)
        ]
        assert stale_views and all(vm.stale for vm in stale_views[0].vms)
    finally:
        await fleet.aclose()


async def test_warm_refresh_catches_what_sends_no_event(tcg_domain: DomainFactory) -> None:
    # libvirt has no event for an autostart change: only the periodic bulk refresh sees it.
    timing = Timing(connect_timeout=10, call_timeout=15, refresh_interval=0.3)
    dom = tcg_domain()
    uuid = dom.UUIDString()
    fleet = Fleet(fleet_config([("qemu", "qemu:///system")], timing=timing))
    await fleet.start()
    try:
        assert await fleet.wait_settled(20)
        session = fleet.session("qemu")
        assert session.vms[uuid].autostart is False
        await asyncio.to_thread(dom.setAutostart, 1)
        await _until(lambda: session.vms[uuid].autostart, 5)
        await asyncio.to_thread(dom.setAutostart, 0)
        await _until(lambda: not session.vms[uuid].autostart, 5)
    finally:
        await fleet.aclose()
