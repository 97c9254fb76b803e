"""Lifecycle actions and graceful-stop escalation against a real libvirtd with TCG guests.

The guests have no OS, so they ignore ACPI shutdown (and ctrl-alt-del cannot power them
off): the only way a graceful stop ends is by escalating all the way to destroy. Reboot and
reset are seen in qemu's own events (``tests/guest_watch.py``); reboot, which is the ACPI
power button, on a guest that obeys it (a boot sector that powers off through ACPI).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import libvirt
import pytest

from catkeeper.backend import actions
from catkeeper.backend.actions import ActionError, GracefulStop, StopProgress
from catkeeper.backend.fleet import Fleet
from catkeeper.model import VmState
from tests.daemons import DomainFactory
from tests.guest_watch import GuestWatch, acpi_guest_disk, wait_armed
from tests.guest_watch import guest_watch_fixture as guest_watch_fixture  # `guest_watch`
from tests.vmops_support import HOST, Lab, vm_of
from tests.vmops_support import fleet_fixture as fleet_fixture  # the real-libvirtd `fleet`
from tests.vmops_support import lab_fixture as lab_fixture  # the real-libvirtd `lab`

pytestmark = pytest.mark.daemon

# Two different waits, so that a stage that waits the other stage's time shows.
ACPI_WAIT = 2.0
CAD_WAIT = 1.0
# A wait the test must never sit through, and the bound proving it did not: well below
# LONG, and over 10x the normal time (a cancel or force takes effect within ms; the force
# below is sent 0.3 s into the wait).
LONG = 120.0
SLACK = 30.0
Watch = Callable[[libvirt.virDomain], GuestWatch]


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


async def test_actions_on_a_real_qemu_guest(
    fleet: Fleet, tcg_domain: DomainFactory, guest_watch: Watch
) -> None:
    dom = tcg_domain()
    watch = guest_watch(dom)
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

    # Reset: qemu resets the machine at the host's request and libvirt says so.
    mark = watch.mark()
    await actions.reset(fleet, vm)
    await watch.wait_for(
        lambda: watch.host_resets(mark) and watch.libvirt_reboots(mark), what="the reset"
    )
    assert not watch.qmp("POWERDOWN", mark)  # the reset button, not the power button
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING

    # Reboot is the ACPI power button (no guest agent here): qemu presses it, and this guest,
    # with no OS, does nothing about it. test_reboot_of_a_guest_that_obeys_acpi sees more.
    mark = watch.mark()
    await actions.reboot(fleet, vm)
    await watch.wait_for(lambda: watch.qmp("POWERDOWN", mark), what="the power button")
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING

    await actions.destroy(fleet, vm)
    assert dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
    assert fleet.session(HOST).vms[vm.uuid].state is VmState.SHUTOFF


async def test_reboot_of_a_guest_that_obeys_acpi(
    fleet: Fleet, lab: Lab, guest_watch: Watch
) -> None:
    dom = lab.domain(disk=acpi_guest_disk(lab), start=True)
    watch = guest_watch(dom)
    vm = await vm_of(fleet, dom)
    await wait_armed(dom)

    mark = watch.mark()
    await actions.reboot(fleet, vm)
    # The button, the guest powering off, then libvirt resetting it and letting it run.
    await watch.wait_for(
        lambda: (
            watch.host_resets(mark) and watch.libvirt_reboots(mark) and watch.qmp("RESUME", mark)
        ),
        what="the reboot",
    )
    assert watch.in_order(
        "POWERDOWN", "SHUTDOWN(guest-shutdown)", "RESET(host-qmp-system-reset)", since=mark
    ), watch.names(mark)
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert fleet.session(HOST).vms[vm.uuid].state is VmState.RUNNING

    # Reset of the same guest: a reset without the button, and it keeps running.
    await wait_armed(dom)
    mark = watch.mark()
    await actions.reset(fleet, vm)
    await watch.wait_for(
        lambda: watch.host_resets(mark) and watch.libvirt_reboots(mark), what="the reset"
    )
    assert not watch.qmp("POWERDOWN", mark) and not watch.qmp("SHUTDOWN", mark)
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING

    # And the guest really obeys ACPI: a plain shutdown powers it off for good.
    await wait_armed(dom)
    mark = watch.mark()
    await actions.shutdown(fleet, vm)
    await watch.wait_for(
        lambda: dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF, what="the guest powered off"
    )
    assert not watch.host_resets(mark)


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
        # Set just before the report arrived (nothing awaits in between).
        assert p.deadline is not None and wait - 0.5 < p.deadline - t <= wait + 1e-6
    # Each stage sat through its own wait (the two differ, so a swap shows).
    assert rec.at("ctrl-alt-del") - rec.at("acpi") >= ACPI_WAIT - 1e-6
    assert rec.at("destroy") - rec.at("ctrl-alt-del") >= CAD_WAIT - 1e-6
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
        ctrl_alt_del_wait=LONG,
        on_progress=on_progress,
        poll=0.25,
    )
    final = await stop.run()
    print(f"\ncancel: {rec.timeline()}")
    assert rec.stages == ["acpi", "ctrl-alt-del", "cancelled"]
    assert final.stage == "cancelled"
    assert rec.at("cancelled") - rec.at("ctrl-alt-del") < SLACK  # not after the long wait
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
        fleet, vm, acpi_wait=LONG, ctrl_alt_del_wait=LONG, on_progress=on_progress, poll=0.25
    )
    final = await stop.run()
    print(f"\nforce: {rec.timeline()}")
    assert rec.stages == ["acpi", "destroy", "stopped"]
    assert final.stage == "stopped"
    assert 0.29 <= rec.at("destroy") - rec.at("acpi") < SLACK  # the force, not the ACPI wait
    assert "forced" in rec.seen[1][1].message
    assert dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
