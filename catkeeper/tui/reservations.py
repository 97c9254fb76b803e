"""Reserve and release, for one VM or every marked one.

One VM: the reservation form (reserve, edit one's own, take over), or the release dialog
that says whose reservation it is. Several: one confirmation listing them and naming each
holder, then (reserve) one form whose answer is written to each, and one summary notice."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from catkeeper.backend import reservations
from catkeeper.backend.reservations import ReservationConflict, ReservationRequest
from catkeeper.commands import Command
from catkeeper.model import VM
from catkeeper.screens.confirm import ConfirmScreen
from catkeeper.screens.reservation import ReservationScreen
from catkeeper.tui.asking import holder, run_each
from catkeeper.tui.host import Handler, Host


class Reservations:
    def __init__(self, host: Host) -> None:
        self.host = host

    def handlers(self) -> dict[str, Handler]:
        return {"reserve": self.reserve, "release": self.release}

    # ---- reserve ------------------------------------------------------------------------

    def reserve(self, _command: Command, _args: Sequence[str]) -> None:
        vms = self.host.selected_vms()
        if len(vms) == 1:
            self.open_form(vms[0])
        elif vms:
            now = self.host.clock()
            held = [vm for vm in vms if holder(vm, self.host.me, now)]
            dialog = ConfirmScreen(
                "Reserve",
                vms,
                held=held,
                now=now,
                detail="One form follows; what it says is written to each of them.",
            )
            self.host.show(dialog, lambda yes: self._bulk_form(vms) if yes else None)

    def open_form(self, vm: VM, draft: ReservationRequest | None = None) -> None:
        """The form for ``vm`` as the user sees it; ``draft``: what they typed before."""

        def submitted(request: ReservationRequest | None) -> None:
            if request is not None:
                self.host.start(
                    self._reserve(vm, request), name=f"reserve {vm.ref}", group="reservations"
                )

        form = ReservationScreen(vm, me=self.host.me, clock=self.host.clock, draft=draft)
        self.host.show(form, submitted)

    async def _reserve(self, vm: VM, request: ReservationRequest) -> None:
        host = self.host
        try:
            change = await reservations.apply(host.fleet, vm, request, me=host.me)
        except ReservationConflict as exc:
            # Someone changed it behind the form's back: say who, and reopen the form on
            # what the host holds now, with everything the user typed.
            host.report_error(exc, context=f"reserve {vm.ref}")
            fresh = await host.fleet.session(vm.host).refresh_domain(vm.uuid)
            if fresh is not None:
                self.open_form(fresh, draft=request)
            return
        verb = {"took-over": "took over", "updated": "updated your reservation of"}
        host.notify(f"{verb.get(change.action, change.action)} {change.ref}", title="Reservation")

    def _bulk_form(self, vms: Sequence[VM]) -> None:
        host = self.host
        # The first VM free or the user's own shapes the form; the yes above covered the rest.
        now = host.clock()
        template = next((vm for vm in vms if holder(vm, host.me, now) is None), vms[0])

        def submitted(request: ReservationRequest | None) -> None:
            if request is None:
                return

            async def one(vm: VM) -> None:
                taking = holder(vm, host.me, now) is not None
                wanted = dataclasses.replace(request, take_over=request.take_over or taking)
                await reservations.apply(host.fleet, vm, wanted, me=host.me)

            run_each(host, "reserve", vms, one, group="reservations")

        form = ReservationScreen(template, me=host.me, clock=host.clock)
        host.show(form, submitted)

    # ---- release ------------------------------------------------------------------------

    def release(self, _command: Command, _args: Sequence[str]) -> None:
        vms = self.host.selected_vms()
        if len(vms) > 1:
            self._release_many([vm for vm in vms if vm.reservation is not None])
            return
        if not vms:
            return
        vm = vms[0]
        res = vm.reservation
        if res is None:
            self.host.notify(f"{vm.ref} is not reserved", severity="warning")
            return
        now = self.host.clock()
        mine = res.owner == self.host.me
        if mine:
            question = f"Release your reservation of {vm.ref}?"
            detail = f"Note: {res.note}" if res.note else ""
        else:
            state = "expired" if res.is_expired(now) else "still active"
            question = f"Release {res.owner}'s reservation of {vm.ref}?"
            detail = (
                f"It is {res.owner}'s, not yours ({state}"
                + (f": {res.note}" if res.note else "")
                + "). Releasing it takes it from them."
            )
        dialog = ConfirmScreen(
            "Release",
            [vm],
            question=question,
            detail=detail,
            yes_label="Release" if mine else f"Release {res.owner}'s",
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self.host.start(
                    self._release(vm, force=not mine),
                    name=f"release {vm.ref}",
                    group="reservations",
                )

        self.host.show(dialog, answered)

    def _release_many(self, vms: list[VM]) -> None:
        host = self.host
        if not vms:
            host.notify("none of the marked VMs is reserved", severity="warning")
            return
        now = host.clock()
        others = [
            vm for vm in vms if vm.reservation is not None and vm.reservation.owner != host.me
        ]
        dialog = ConfirmScreen(
            "Release", vms, held=[vm for vm in others if holder(vm, host.me, now)], now=now
        )

        async def one(vm: VM) -> None:
            await reservations.release(host.fleet, vm, force=vm in others, me=host.me)

        host.show(
            dialog,
            lambda yes: run_each(host, "release", vms, one, group="reservations") if yes else None,
        )

    async def _release(self, vm: VM, *, force: bool) -> None:
        change = await reservations.release(self.host.fleet, vm, force=force, me=self.host.me)
        if change.action == "released":
            self.host.notify(f"released {change.ref}", title="Reservation")
        else:
            self.host.notify(f"{change.ref} was not reserved any more", title="Reservation")
