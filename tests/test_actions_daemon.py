"""Lifecycle actions and graceful-stop escalation against a real libvirtd with TCG guests.

The guests have no OS, so they ignore ACPI shutdown (and ctrl-alt-del cannot power them
off): the only way a graceful stop ends is by escalating all the way to destroy.
"""

from __future__ import annotations

import asyncio
import time

import libvirt
import pytest

from catkeeper.backend import actions
from catkeeper.backend.actions import ActionError, GracefulStop, StopProgress
from catkeeper.backend.fleet import Fleet
from catkeeper.model import VmState
from tests.daemons import DomainFactory
from tests.vmops_support import HOST, vm_of
from tests.vmops_support import fleet_fixture as fleet_fixture  # the real-libvirtd `fleet`

pytestmark = pytest.mark.daemon

ACPI_WAIT = 1.5
CAD_WAIT = 1.5


class Recorder:
    """Progress reports with the monotonic time each arrived."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.seen: list[tuple[float, StopProgress]] = []

    def __call__(self, progress: StopProgress) -> None:
        self.seen.append((time.monotonic(), progress))

    @property
    def stages(self) -> list[str]:
        return [p.stage for _, p in self.seen]

    def at(self, stage: str) -> float:
        return next(t for t, p in self.seen if p.stage == stage) - self.t0

    def timeline(self) -> str:
        return ", ".join(f"{p.stage}@{t - self.t0:.2f}s" for t, p in self.seen)


async def test_actions_on_a_real_qemu_guest(fleet: Fleet, tcg_domain: DomainFactory) -> None:
    dom = tcg_domain()
    vm = await vm_of(fleet, dom)
    assert vm.state is VmState.SHUTOFF
    await actions.start(fleet, vm)
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert fleet.session(HOST).vms[vm.uuid].state is VmState.RUNNING
    with pytest.raises(ActionError) as info:
        await actions.start(fleet, vm)
    assert str(info.value) == (
        f"start {HOST}/{dom.name()}: Requested operation is not valid: domain is already running"
    )
    await actions.suspend(fleet, vm)
    assert dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
    await actions.resume(fleet, vm)
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    await actions.reset(fleet, vm)
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    await actions.destroy(fleet, vm)
    assert dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
    assert fleet.session(HOST).vms[vm.uuid].state is VmState.SHUTOFF


async def test_graceful_stop_escalates_to_destroy_when_the_guest_ignores_everything(
    fleet: Fleet, tcg_domain: DomainFactory
) -> None:
    dom = tcg_domain(start=True)
    vm = await vm_of(fleet, dom)
    rec = Recorder()
    stop = GracefulStop(
        fleet, vm, acpi_wait=ACPI_WAIT, ctrl_alt_del_wait=CAD_WAIT, on_progress=rec, poll=0.25
    )
    final = await stop.run()
    took = time.monotonic() - rec.t0
    print(f"\nescalation: {rec.timeline()}; total {took:.2f} s")

    assert rec.stages == ["acpi", "ctrl-alt-del", "destroy", "stopped"], final.message
    assert final.stage == "stopped"
    for t, p in rec.seen[:2]:  # the two waits carry a deadline for the countdown
        wait = ACPI_WAIT if p.stage == "acpi" else CAD_WAIT
        assert p.deadline is not None and abs(p.deadline - t - wait) < 0.2
    assert ACPI_WAIT - 0.1 <= rec.at("ctrl-alt-del") - rec.at("acpi") < ACPI_WAIT + 1
    assert CAD_WAIT - 0.1 <= rec.at("destroy") - rec.at("ctrl-alt-del") < CAD_WAIT + 1
    assert "ignored" in rec.seen[2][1].message
    assert dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
    assert fleet.session(HOST).vms[vm.uuid].state is VmState.SHUTOFF


async def test_cancel_mid_escalation_leaves_the_guest_running(
    fleet: Fleet, tcg_domain: DomainFactory
) -> None:
    dom = tcg_domain(start=True)
    vm = await vm_of(fleet, dom)
    rec = Recorder()

    def on_progress(p: StopProgress) -> None:
        rec(p)
        if p.stage == "ctrl-alt-del":
            stop.cancel()

    stop = GracefulStop(
        fleet,
        vm,
        acpi_wait=ACPI_WAIT,
        ctrl_alt_del_wait=CAD_WAIT,
        on_progress=on_progress,
        poll=0.25,
    )
    final = await stop.run()
    print(f"\ncancel: {rec.timeline()}")
    assert rec.stages == ["acpi", "ctrl-alt-del", "cancelled"]
    assert final.stage == "cancelled"
    assert rec.at("cancelled") - rec.at("ctrl-alt-del") < 0.5  # not after the wait
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert fleet.session(HOST).vms[vm.uuid].state is VmState.RUNNING


async def test_force_during_acpi_wait_jumps_to_destroy(
    fleet: Fleet, tcg_domain: DomainFactory
) -> None:
    dom = tcg_domain(start=True)
    vm = await vm_of(fleet, dom)
    rec = Recorder()

    def on_progress(p: StopProgress) -> None:
        rec(p)
        if p.stage == "acpi":  # force once the wait has begun, not before
            asyncio.get_running_loop().call_later(0.3, stop.force)

    stop = GracefulStop(
        fleet, vm, acpi_wait=30, ctrl_alt_del_wait=30, on_progress=on_progress, poll=0.25
    )
    final = await stop.run()
    print(f"\nforce: {rec.timeline()}")
    assert rec.stages == ["acpi", "destroy", "stopped"]
    assert final.stage == "stopped"
    assert rec.at("destroy") - rec.at("acpi") < 1.5  # not the 30 s ACPI wait
    assert "forced" in rec.seen[1][1].message
    assert dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
