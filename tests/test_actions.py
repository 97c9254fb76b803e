"""Lifecycle actions against real libvirt test-driver hosts (one private node file per test)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import libvirt
import pytest

from catkeeper import commands
from catkeeper.backend import actions
from catkeeper.backend.actions import (
    ACTIONS,
    ActionError,
    GracefulStop,
    StopProgress,
    available,
)
from catkeeper.backend.errors import BackendError, HostUnavailable, ReadOnlyError
from catkeeper.backend.events import FleetEvent
from catkeeper.backend.fleet import Fleet
from catkeeper.commands import Confirm, Holder
from catkeeper.config import Config, HostConfig, Timing
from catkeeper.config import GracefulStop as StopTimings
from catkeeper.model import VM, VmState

HOST = "lab1"
_NODE_HEAD = """<node xmlns:test="http://libvirt.org/schemas/domain/test/1.0">
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>4</cores><threads>1</threads>
    <active>4</active><mhz>2000</mhz><model>x86_64</model></cpu>
  <memory unit="KiB">8388608</memory>
"""
# name → (uuid, test-driver runstate: 1 running, 3 paused, 5 shut off)
DOMAINS = {
    "web01": ("3b9d6f6e-0000-4000-8000-000000000001", 1),
    "db01": ("3b9d6f6e-0000-4000-8000-000000000002", 5),
    "ci01": ("3b9d6f6e-0000-4000-8000-000000000003", 3),
}
# A running guest whose reboot policy is to power off (``<on_reboot>destroy``): only for
# the reboot test, so that the walk over DOMAINS below stays as it is.
HALTS_ON_REBOOT = {"halt01": ("3b9d6f6e-0000-4000-8000-000000000004", 1)}


def write_node(
    path: Path, domains: dict[str, tuple[str, int]] = DOMAINS, on_reboot: str = "restart"
) -> Path:
    doms = "".join(
        f"""  <domain type="test">
    <name>{name}</name><uuid>{uuid}</uuid>
    <memory unit="KiB">262144</memory><vcpu>1</vcpu><os><type>hvm</type></os>
    <on_reboot>{on_reboot}</on_reboot>
    <test:runstate>{runstate}</test:runstate>
  </domain>
"""
        for name, (uuid, runstate) in domains.items()
    )
    path.write_text(_NODE_HEAD + doms + "</node>\n")
    return path


def make_config(
    node: Path,
    *,
    readonly: bool = False,
    host_readonly: bool = False,
    extra: tuple[HostConfig, ...] = (),
    stop: StopTimings | None = None,
    timing: Timing | None = None,
) -> Config:
    return Config(
        hosts=(HostConfig(name=HOST, uri=f"test://{node}", readonly=host_readonly), *extra),
        source="<test>",
        timing=timing
        or Timing(connect_timeout=3, call_timeout=5, refresh_interval=0, backoff_initial=30),
        graceful_stop=stop or StopTimings(),
        readonly=readonly,
    )


async def started(config: Config) -> Fleet:
    fleet = Fleet(config)
    await fleet.start()
    assert await fleet.wait_settled(5)
    return fleet


@pytest.fixture
def node(tmp_path: Path) -> Path:
    return write_node(tmp_path / "node.xml")


@pytest.fixture
async def fleet(node: Path) -> AsyncIterator[Fleet]:
    f = await started(make_config(node))
    try:
        yield f
    finally:
        await f.aclose()


async def libvirt_state(fleet: Fleet, vm: VM) -> VmState:
    """The state libvirt itself reports now, on the session's own connection (a test-driver
    file gives every connection a private copy, so a second connection would not see it)."""
    code = await fleet.session(vm.host).call_domain(vm.uuid, lambda d: d.state()[0])
    return VmState.from_libvirt(code)


async def libvirt_state_and_reason(fleet: Fleet, vm: VM) -> tuple[int, int]:
    """``virDomainGetState``: the state and the reason for it, as libvirt's codes."""
    state, reason = await fleet.session(vm.host).call_domain(vm.uuid, lambda d: d.state())
    return int(state), int(reason)


def shown(fleet: Fleet, vm: VM) -> VmState:
    """The state the inventory (table, --json) shows."""
    return fleet.session(vm.host).vms[vm.uuid].state


# ---- each action's effect ------------------------------------------------------------


async def test_start_boots_a_shut_off_vm_and_the_inventory_shows_it_at_once(
    fleet: Fleet,
) -> None:
    vm = fleet.find(f"{HOST}/db01")
    assert vm.state is VmState.SHUTOFF
    await actions.start(fleet, vm)
    assert await libvirt_state(fleet, vm) is VmState.RUNNING
    # No waiting for events: the action re-reads the domain itself.
    assert shown(fleet, vm) is VmState.RUNNING


async def test_destroy_forces_a_running_vm_off(fleet: Fleet) -> None:
    vm = fleet.find(f"{HOST}/web01")
    await actions.destroy(fleet, vm)
    assert await libvirt_state(fleet, vm) is VmState.SHUTOFF
    assert shown(fleet, vm) is VmState.SHUTOFF


async def test_shutdown_on_the_test_driver_shuts_off(fleet: Fleet) -> None:
    # The test driver's guest obeys ACPI at once; real guests take their time.
    vm = fleet.find(f"{HOST}/web01")
    await actions.shutdown(fleet, vm)
    assert await libvirt_state(fleet, vm) is VmState.SHUTOFF
    assert shown(fleet, vm) is VmState.SHUTOFF


async def test_suspend_then_resume(fleet: Fleet) -> None:
    vm = fleet.find(f"{HOST}/web01")
    await actions.suspend(fleet, vm)
    assert await libvirt_state(fleet, vm) is VmState.PAUSED
    assert shown(fleet, vm) is VmState.PAUSED
    await actions.resume(fleet, vm)
    assert await libvirt_state(fleet, vm) is VmState.RUNNING
    assert shown(fleet, vm) is VmState.RUNNING


async def test_resume_a_vm_that_was_paused_from_the_start(fleet: Fleet) -> None:
    vm = fleet.find(f"{HOST}/ci01")
    assert vm.state is VmState.PAUSED
    await actions.resume(fleet, vm)
    assert await libvirt_state(fleet, vm) is VmState.RUNNING


# What the test driver does on reboot and reset (libvirt 9.0, measured; it sends no event
# for either): reboot() puts the domain through its <on_reboot> policy, so a guest that
# "restarts" is running again with the reason BOOTED (a domain loaded from the node file
# starts with reason UNKNOWN), and one whose policy is "destroy" ends shut off. reset() only
# checks that the domain is active (it refuses a shut-off one) and then does nothing at all,
# so no test on this driver can see a reset happen; tests/test_actions_daemon.py sees qemu
# reset a real guest.


async def test_reboot_restarts_a_running_vm_on_the_test_driver(fleet: Fleet) -> None:
    vm = fleet.find(f"{HOST}/web01")
    assert await libvirt_state_and_reason(fleet, vm) == (
        libvirt.VIR_DOMAIN_RUNNING,
        libvirt.VIR_DOMAIN_RUNNING_UNKNOWN,
    )
    await actions.reboot(fleet, vm)
    assert await libvirt_state_and_reason(fleet, vm) == (
        libvirt.VIR_DOMAIN_RUNNING,
        libvirt.VIR_DOMAIN_RUNNING_BOOTED,
    )
    assert shown(fleet, vm) is VmState.RUNNING


async def test_reboot_follows_the_guests_on_reboot_policy(tmp_path: Path) -> None:
    node = write_node(tmp_path / "halts.xml", HALTS_ON_REBOOT, on_reboot="destroy")
    fleet = await started(make_config(node))
    try:
        vm = fleet.find(f"{HOST}/halt01")
        assert vm.state is VmState.RUNNING
        await actions.reboot(fleet, vm)
        assert await libvirt_state_and_reason(fleet, vm) == (
            libvirt.VIR_DOMAIN_SHUTOFF,
            libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN,
        )
        assert shown(fleet, vm) is VmState.SHUTOFF  # the action re-read it
    finally:
        await fleet.aclose()


async def test_reset_reaches_libvirt_on_the_test_driver(fleet: Fleet) -> None:
    """All this driver lets us see of a reset: libvirt's reset call ran and checked the
    domain (it refuses a shut-off one), and a running VM stays running."""
    web = fleet.find(f"{HOST}/web01")
    await actions.reset(fleet, web)
    assert await libvirt_state(fleet, web) is VmState.RUNNING
    assert shown(fleet, web) is VmState.RUNNING
    db = fleet.find(f"{HOST}/db01")
    with pytest.raises(ActionError) as info:
        await actions.reset(fleet, db)
    assert str(info.value) == (
        "reset lab1/db01: Requested operation is not valid: domain is not running"
    )
    assert info.value.code == libvirt.VIR_ERR_OPERATION_INVALID
    assert await libvirt_state(fleet, db) is VmState.SHUTOFF


# ---- errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "name", "prefix", "libvirt_says"),
    [
        (actions.start, "web01", "start lab1/web01: ", "already running"),
        (actions.destroy, "db01", "force off lab1/db01: ", "Requested operation is not valid"),
        (actions.resume, "web01", "resume lab1/web01: ", "not paused"),
        (actions.suspend, "db01", "pause lab1/db01: ", "not running"),
        (actions.shutdown, "db01", "shut down lab1/db01: ", "not running"),
    ],
)
async def test_invalid_transitions_carry_libvirts_message(
    fleet: Fleet,
    action: Callable[[Fleet, VM], Awaitable[None]],
    name: str,
    prefix: str,
    libvirt_says: str,
) -> None:
    vm = fleet.find(f"{HOST}/{name}")
    before = await libvirt_state(fleet, vm)
    with pytest.raises(ActionError) as info:
        await action(fleet, vm)
    message = str(info.value)
    assert message.startswith(prefix)
    assert libvirt_says in message
    assert "\n" not in message and "libvirt:" not in message
    assert isinstance(info.value, BackendError)
    assert info.value.code is not None
    assert await libvirt_state(fleet, vm) is before


async def test_a_vm_that_no_longer_exists_is_reported_and_dropped(fleet: Fleet) -> None:
    vm = fleet.find(f"{HOST}/db01")
    await fleet.session(HOST).call_domain(vm.uuid, lambda d: d.undefine())
    with pytest.raises(ActionError) as info:
        await actions.start(fleet, vm)
    assert str(info.value).startswith("start lab1/db01: Domain not found")
    assert info.value.code == libvirt.VIR_ERR_NO_DOMAIN
    assert vm.uuid not in fleet.session(HOST).vms


async def test_an_unreachable_host_says_what_was_attempted(node: Path, tmp_path: Path) -> None:
    missing = HostConfig(name="lab9", uri=f"test://{tmp_path / 'no-such-node.xml'}")
    slow = Timing(connect_timeout=60, call_timeout=60, refresh_interval=0, backoff_initial=30)
    fleet = await started(make_config(node, extra=(missing,), timing=slow))
    try:
        ghost = VM(
            host="lab9",
            name="old",
            uuid="3b9d6f6e-0000-4000-8000-0000000000ff",
            state=VmState.SHUTOFF,
            vcpus=1,
            memory_kib=1,
            max_memory_kib=1,
            autostart=False,
            persistent=True,
        )
        started_at = time.monotonic()
        with pytest.raises(HostUnavailable) as info:
            await actions.start(fleet, ghost)
        # Refused at once (~1 ms), not after a connect or call timeout (60 s each here).
        assert time.monotonic() - started_at < 20
        assert str(info.value).startswith("start lab9/old: lab9 is unreachable")
    finally:
        await fleet.aclose()


@pytest.mark.parametrize("where", ["fleet", "host"])
async def test_read_only_refuses_every_action_without_touching_the_vm(
    node: Path, where: str
) -> None:
    fleet = await started(
        make_config(node, readonly=where == "fleet", host_readonly=where == "host")
    )
    try:
        for name, action in ACTIONS.items():
            for vm in list(fleet.session(HOST).vms.values()):
                before = await libvirt_state(fleet, vm)
                with pytest.raises(ReadOnlyError) as info:
                    await action.fn(fleet, vm)
                assert str(info.value).startswith(f"{HOST} is read-only: "), name
                assert vm.ref in str(info.value)
                assert await libvirt_state(fleet, vm) is before
                assert shown(fleet, vm) is before
        seen: list[StopProgress] = []
        stop = GracefulStop(
            fleet,
            fleet.find(f"{HOST}/web01"),
            acpi_wait=1,
            ctrl_alt_del_wait=1,
            on_progress=seen.append,
        )
        with pytest.raises(ReadOnlyError, match=r"^lab1 is read-only: cannot stop lab1/web01$"):
            await stop.run()
        assert seen == []
        assert await libvirt_state(fleet, fleet.find(f"{HOST}/web01")) is VmState.RUNNING
    finally:
        await fleet.aclose()


# ---- the table -----------------------------------------------------------------------


def _vm(state: VmState, *, stale: bool = False) -> VM:
    return VM(
        host=HOST,
        name="x",
        uuid="u",
        state=state,
        vcpus=1,
        memory_kib=1,
        max_memory_kib=1,
        autostart=False,
        persistent=True,
        stale=stale,
    )


def test_the_table_names_every_action_once_with_its_function() -> None:
    assert set(ACTIONS) >= {
        "start",
        "shutdown",
        "destroy",
        "reboot",
        "reset",
        "suspend",
        "resume",
        "stop",
    }
    for name, action in ACTIONS.items():
        assert action.name == name
    assert ACTIONS["start"].fn is actions.start
    assert ACTIONS["destroy"].fn is actions.destroy
    # Every power entry of the command table reaches one of these; what can cost the guest
    # its unsaved state asks first on every face (labels and help live in the table only).
    power = [c for c in commands.COMMANDS if c.call.startswith("catkeeper.backend.actions:")]
    assert {c.call.rpartition(":")[2] for c in power} - {"GracefulStop"} <= set(ACTIONS)
    for name in ("stop", "shutdown", "destroy", "reboot", "reset"):
        assert commands.get(name).confirm is Confirm.ALWAYS, name
    for command in power:
        assert command.holder is Holder.ASK, command.name


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (VmState.SHUTOFF, {"start"}),
        (VmState.CRASHED, {"start"}),
        (VmState.RUNNING, {"shutdown", "stop", "reboot", "reset", "destroy", "suspend"}),
        (VmState.PAUSED, {"resume", "destroy"}),
        (VmState.PMSUSPENDED, {"destroy"}),
        (VmState.SHUTDOWN, {"destroy"}),
    ],
)
def test_applies_follows_the_vm_state(state: VmState, expected: set[str]) -> None:
    assert {a.name for a in available(_vm(state))} == expected
    assert {n for n, a in ACTIONS.items() if a.applies(_vm(state))} == expected


def test_nothing_applies_to_a_stale_vm() -> None:
    for state in VmState:
        assert available(_vm(state, stale=True)) == []


async def test_every_applicable_action_succeeds_on_the_test_driver(fleet: Fleet) -> None:
    """``applies`` never offers something libvirt then refuses (for the basic states)."""
    for name in DOMAINS:
        for action in ACTIONS.values():
            vm = fleet.find(f"{HOST}/{name}")
            if action.name in ("stop", "shutdown", "destroy"):
                continue  # would end the walk; covered above
            if action.applies(vm):
                await action.fn(fleet, vm)
                assert fleet.find(f"{HOST}/{name}").state is await libvirt_state(fleet, vm)


# ---- graceful stop on the test driver -------------------------------------------------


def stages(seen: list[StopProgress]) -> list[str]:
    return [p.stage for p in seen]


# Timing bounds that a loaded 2-core machine cannot break: a stage wait the test must never
# sit through (so a bug that waits it shows), and the bound that proves it did not, which is
# well below LONG and over 10x what the normal path takes (a few ms to one 0.5 s poll).
LONG = 120.0
SLACK = 30.0


async def test_graceful_stop_ends_after_acpi_when_the_guest_obeys(fleet: Fleet) -> None:
    vm = fleet.find(f"{HOST}/web01")
    seen: list[StopProgress] = []
    t0 = time.monotonic()
    stop = GracefulStop(fleet, vm, acpi_wait=LONG, ctrl_alt_del_wait=LONG, on_progress=seen.append)
    final = await stop.run()
    took = time.monotonic() - t0
    assert stages(seen) == ["acpi", "stopped"]
    assert final == seen[-1] and final.final and final.ref == "lab1/web01"
    # The countdown's deadline: the wait from when the request was sent (after t0).
    assert seen[0].deadline is not None and LONG <= seen[0].deadline - t0 < LONG + SLACK
    assert final.deadline is None
    assert "ACPI" in seen[0].message and "shut off" in final.message
    assert took < SLACK  # the event (or the first poll), not the long ACPI wait, ended it
    assert await libvirt_state(fleet, vm) is VmState.SHUTOFF
    assert shown(fleet, vm) is VmState.SHUTOFF


async def test_graceful_stop_force_before_it_runs_goes_straight_to_destroy(
    fleet: Fleet,
) -> None:
    vm = fleet.find(f"{HOST}/web01")
    seen: list[StopProgress] = []
    stop = GracefulStop(fleet, vm, acpi_wait=30, ctrl_alt_del_wait=30, on_progress=seen.append)
    stop.force()
    final = await stop.run()
    assert stages(seen) == ["destroy", "stopped"]
    assert "forced" in seen[0].message and final.stage == "stopped"
    assert await libvirt_state(fleet, vm) is VmState.SHUTOFF


async def test_graceful_stop_cancel_before_it_runs_touches_nothing(fleet: Fleet) -> None:
    vm = fleet.find(f"{HOST}/web01")
    seen: list[StopProgress] = []
    stop = GracefulStop(fleet, vm, acpi_wait=30, ctrl_alt_del_wait=30, on_progress=seen.append)
    stop.cancel()
    final = await stop.run()
    assert stages(seen) == ["cancelled"]
    assert "left as it is" in final.message
    assert await libvirt_state(fleet, vm) is VmState.RUNNING
    # Once finished, cancel() and force() change nothing.
    stop.force()
    stop.cancel()
    assert stop.progress == final


async def test_graceful_stop_of_a_vm_already_off_reports_stopped(fleet: Fleet) -> None:
    vm = fleet.find(f"{HOST}/db01")
    seen: list[StopProgress] = []
    stop = GracefulStop(fleet, vm, acpi_wait=30, ctrl_alt_del_wait=30, on_progress=seen.append)
    final = await stop.run()
    assert stages(seen) == ["stopped"]
    assert final.stage == "stopped"


async def test_graceful_stop_survives_a_broken_progress_callback(fleet: Fleet) -> None:
    vm = fleet.find(f"{HOST}/web01")
    calls: list[str] = []

    def broken(p: StopProgress) -> None:
        calls.append(p.stage)
        raise RuntimeError("display gone")

    final = await GracefulStop(
        fleet, vm, acpi_wait=5, ctrl_alt_del_wait=5, on_progress=broken
    ).run()
    assert final.stage == "stopped" and calls == ["acpi", "stopped"]
    assert await libvirt_state(fleet, vm) is VmState.SHUTOFF


async def test_graceful_stop_runs_only_once(fleet: Fleet) -> None:
    stop = GracefulStop(
        fleet,
        fleet.find(f"{HOST}/web01"),
        acpi_wait=1,
        ctrl_alt_del_wait=1,
        on_progress=lambda _p: None,
    )
    await stop.run()
    with pytest.raises(RuntimeError, match=r"^a GracefulStop runs once$"):
        await stop.run()


async def test_the_stop_action_uses_the_configured_waits(node: Path) -> None:
    fleet = await started(make_config(node, stop=StopTimings(acpi_wait=7, ctrl_alt_del_wait=3)))
    try:
        vm = fleet.find(f"{HOST}/web01")
        seen: list[StopProgress] = []
        t0 = time.monotonic()
        final = await actions.graceful_stop(fleet, vm, seen.append)
        assert final.stage == "stopped"
        # 7 s after the request, which was sent after t0: not the 3 s of the other stage,
        # nor the default 60 s.
        assert seen[0].deadline is not None and 7 <= seen[0].deadline - t0 < 7 + SLACK
        # The table's entry runs the same thing without progress, raising on failure.
        await actions.start(fleet, vm)
        await ACTIONS["stop"].fn(fleet, fleet.find(f"{HOST}/web01"))
        assert await libvirt_state(fleet, vm) is VmState.SHUTOFF
    finally:
        await fleet.aclose()


# ---- escalation on the test driver ----------------------------------------------------
# The test driver's guests obey ACPI at once, so these swap a stage's request for another
# real libvirt call: one the test driver lacks (pMWakeup: "this function is not supported")
# or one that succeeds without stopping anything (reboot: a guest ignoring the button).


class IgnoredAcpi(GracefulStop):
    @staticmethod
    def acpi_request(dom: Any) -> object:
        return dom.reboot(0)


class UnsupportedAcpi(GracefulStop):
    @staticmethod
    def acpi_request(dom: Any) -> object:
        return dom.pMWakeup(0)


class NothingSupported(UnsupportedAcpi):
    @staticmethod
    def ctrl_alt_del_request(dom: Any) -> object:
        return dom.pMWakeup(0)


class FailingAcpi(GracefulStop):
    @staticmethod
    def acpi_request(dom: Any) -> object:
        return dom.resume()  # "not paused": a plain failure, not "unsupported"


async def test_full_escalation_when_the_guest_ignores_acpi_and_ctrl_alt_del(
    fleet: Fleet,
) -> None:
    vm = fleet.find(f"{HOST}/web01")
    seen: list[StopProgress] = []
    t0 = time.monotonic()
    final = await IgnoredAcpi(
        fleet, vm, acpi_wait=0.3, ctrl_alt_del_wait=0.3, on_progress=seen.append, poll=0.05
    ).run()
    took = time.monotonic() - t0
    assert stages(seen) == ["acpi", "ctrl-alt-del", "destroy", "stopped"]
    assert [p.deadline is not None for p in seen] == [True, True, False, False]
    assert "ACPI shutdown ignored for 0.3 s" in seen[1].message
    assert "ctrl-alt-del ignored for 0.3 s" in seen[2].message
    assert final.stage == "stopped" and "forced off" in final.message
    # Both short waits were sat through; the configured 60 s + 30 s ones were not used.
    assert 0.6 <= took < SLACK
    assert await libvirt_state(fleet, vm) is VmState.SHUTOFF
    assert shown(fleet, vm) is VmState.SHUTOFF


async def test_an_unsupported_acpi_shutdown_escalates_to_ctrl_alt_del(fleet: Fleet) -> None:
    vm = fleet.find(f"{HOST}/web01")
    seen: list[StopProgress] = []
    final = await UnsupportedAcpi(
        fleet, vm, acpi_wait=30, ctrl_alt_del_wait=0.2, on_progress=seen.append, poll=0.05
    ).run()
    assert stages(seen) == ["ctrl-alt-del", "destroy", "stopped"]
    assert seen[0].message.startswith("ACPI shutdown not possible (this function is not supported")
    assert final.stage == "stopped"
    assert await libvirt_state(fleet, vm) is VmState.SHUTOFF


async def test_when_no_request_is_supported_it_goes_straight_to_destroy(fleet: Fleet) -> None:
    vm = fleet.find(f"{HOST}/web01")
    seen: list[StopProgress] = []
    t0 = time.monotonic()
    final = await NothingSupported(
        fleet, vm, acpi_wait=LONG, ctrl_alt_del_wait=LONG, on_progress=seen.append
    ).run()
    assert time.monotonic() - t0 < SLACK  # no waits for requests that were never sent
    assert stages(seen) == ["destroy", "stopped"]
    assert "ACPI shutdown not possible" in seen[0].message
    assert "ctrl-alt-del not possible" in seen[0].message
    assert final.stage == "stopped"


async def test_a_failing_stage_ends_in_failed_and_leaves_the_vm(fleet: Fleet) -> None:
    vm = fleet.find(f"{HOST}/web01")
    seen: list[StopProgress] = []
    final = await FailingAcpi(
        fleet, vm, acpi_wait=30, ctrl_alt_del_wait=30, on_progress=seen.append
    ).run()
    assert stages(seen) == ["failed"]
    assert final.message.startswith("shut down lab1/web01: ") and "not paused" in final.message
    assert await libvirt_state(fleet, vm) is VmState.RUNNING


async def test_cancel_during_the_ctrl_alt_del_wait(fleet: Fleet) -> None:
    vm = fleet.find(f"{HOST}/web01")
    seen: list[StopProgress] = []

    def on_progress(p: StopProgress) -> None:
        seen.append(p)
        if p.stage == "ctrl-alt-del":
            asyncio.get_running_loop().call_later(0.1, stop.cancel)

    stop = IgnoredAcpi(fleet, vm, acpi_wait=0.1, ctrl_alt_del_wait=LONG, on_progress=on_progress)
    t0 = time.monotonic()
    final = await stop.run()
    assert time.monotonic() - t0 < SLACK  # the cancel, not the end of the wait
    assert stages(seen) == ["acpi", "ctrl-alt-del", "cancelled"]
    assert "cancelled after ctrl-alt-del" in final.message
    assert await libvirt_state(fleet, vm) is VmState.RUNNING


async def test_force_during_the_acpi_wait(fleet: Fleet) -> None:
    vm = fleet.find(f"{HOST}/web01")
    seen: list[StopProgress] = []

    def on_progress(p: StopProgress) -> None:
        seen.append(p)
        if p.stage == "acpi":
            asyncio.get_running_loop().call_later(0.1, stop.force)

    stop = IgnoredAcpi(fleet, vm, acpi_wait=LONG, ctrl_alt_del_wait=LONG, on_progress=on_progress)
    t0 = time.monotonic()
    final = await stop.run()
    assert time.monotonic() - t0 < SLACK  # the force, not the end of the wait
    assert stages(seen) == ["acpi", "destroy", "stopped"]
    assert "forced by the user" in seen[1].message
    assert final.stage == "stopped"
    assert await libvirt_state(fleet, vm) is VmState.SHUTOFF


class EventBlind(GracefulStop):
    """As on a driver whose events never reach us: only polling can notice the stop."""

    def _on_fleet_event(self, event: FleetEvent) -> None:
        pass


async def test_polling_notices_the_stop_without_events(fleet: Fleet) -> None:
    vm = fleet.find(f"{HOST}/web01")
    seen: list[StopProgress] = []
    t0 = time.monotonic()
    final = await EventBlind(
        fleet, vm, acpi_wait=LONG, ctrl_alt_del_wait=LONG, on_progress=seen.append, poll=0.1
    ).run()
    assert time.monotonic() - t0 < SLACK  # a poll, not the end of the ACPI wait
    assert stages(seen) == ["acpi", "stopped"] and final.stage == "stopped"


async def test_events_notice_the_stop_without_polling(fleet: Fleet) -> None:
    vm = fleet.find(f"{HOST}/web01")
    seen: list[StopProgress] = []
    t0 = time.monotonic()
    final = await GracefulStop(
        fleet, vm, acpi_wait=LONG, ctrl_alt_del_wait=LONG, on_progress=seen.append, poll=600
    ).run()
    assert time.monotonic() - t0 < SLACK  # the event: no poll comes in 600 s
    assert stages(seen) == ["acpi", "stopped"] and final.stage == "stopped"
