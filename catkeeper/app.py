"""The Textual app: wiring, bindings, the command palette and the one error router.

Backend events arrive through ``Fleet.subscribe`` on this app's loop (the fleet is started
from ``on_mount``), are batched for a moment so a refresh storm repaints once, folded into
the ``FleetStore`` and posted to the screens as ``FleetUpdated``. Every libvirt call runs in
a worker on the host's own threads; failures reach ``report_error`` and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import libvirt
from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen
from textual.worker import Worker, WorkerState

from catkeeper import looplag
from catkeeper.backend import actions, reservations
from catkeeper.backend.console.serial import open_serial
from catkeeper.backend.console.viewer import Console, Consoles
from catkeeper.backend.errors import BackendError, describe
from catkeeper.backend.events import DomainEvent, FleetEvent
from catkeeper.backend.fleet import Fleet, UnknownHost
from catkeeper.backend.ipscan.book import IpBook
from catkeeper.backend.ipscan.local_sweep import SweepOptions
from catkeeper.backend.ipscan.scheduler import HostScan, IpScanner, ScanProgress
from catkeeper.backend.reservations import ReservationConflict, ReservationRequest
from catkeeper.backend.vm import create, netinstall, vmops
from catkeeper.config import Config, current_user
from catkeeper.model import VM
from catkeeper.screens.confirm import ConfirmScreen
from catkeeper.screens.console_info import ConsoleInfoScreen
from catkeeper.screens.create_form import CreateFormScreen
from catkeeper.screens.delete_confirm import DeleteConfirmScreen
from catkeeper.screens.detail import DetailScreen
from catkeeper.screens.error import ErrorScreen
from catkeeper.screens.fleet import FleetScreen
from catkeeper.screens.help import HelpScreen, Section
from catkeeper.screens.messages import FleetUpdated, StopProgressed
from catkeeper.screens.palette import FleetCommands
from catkeeper.screens.reservation import ReservationScreen
from catkeeper.screens.serial import SerialScreen
from catkeeper.screens.snapshots import SnapshotsScreen
from catkeeper.screens.store import FleetStore, vm_key
from catkeeper.screens.xml_edit import edit_vm_xml
from catkeeper.widgets import format as fmt
from catkeeper.widgets.filter_bar import FilterBar, Mode
from catkeeper.widgets.host_strip import HostStrip
from catkeeper.widgets.vm_table import COLUMN_KEYS, VmTable

log = logging.getLogger(__name__)

# Long enough to merge a burst of events into one repaint, short enough to feel instant.
BATCH_SECONDS = 0.05
# Actions that change VMs: hidden (footer, help, palette) and refused in read-only mode.
MUTATING = frozenset(
    {"lifecycle", "cancel_stops", "reserve", "release", "edit_xml", "create", "delete"}
)
# Actions on the selected VMs: only where there are rows to act on (never behind a dialog).
ON_VMS = MUTATING | {"console", "serial", "scan_vm", "scan_host"}
# Lifecycle actions that do not interrupt whoever holds the VM (everything else asks first
# when someone else has reserved it).
_HARMLESS = frozenset({"start", "resume"})


class CatkeeperApp(App[int]):
    TITLE = "catkeeper"
    COMMANDS: ClassVar[set[Any]] = App.COMMANDS | {FleetCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark,f1", "help", "Help"),
        Binding("q", "quit", "Quit"),
        Binding("s", "lifecycle('start')", "Start"),
        Binding("S", "lifecycle('stop')", "Stop"),
        Binding("ctrl+k", "lifecycle('destroy')", "Force off", key_display="^k"),
        Binding("d", "lifecycle('shutdown')", "ACPI shutdown", show=False),
        Binding("b", "lifecycle('reboot')", "Reboot", show=False),
        Binding("B", "lifecycle('reset')", "Reset", show=False),
        Binding("p", "lifecycle('suspend')", "Pause", show=False),
        Binding("u", "lifecycle('resume')", "Resume", show=False),
        Binding("C", "cancel_stops", "Cancel graceful stop", show=False),
        Binding("r", "reserve", "Reserve"),
        Binding("R", "release", "Release reservation", show=False),
        Binding("v", "console", "Console"),
        Binding("c", "serial", "Serial console", show=False),
        Binding("i", "scan_vm", "Find IPs of the VM", show=False),
        Binding("I", "scan_host", "Find IPs on its host", show=False),
        Binding("e", "edit_xml", "Edit XML", show=False),
        Binding("n", "create", "New VM", show=False),
        Binding("ctrl+d", "delete", "Delete VM", key_display="^d", show=False),
    ]

    def __init__(
        self,
        config: Config,
        *,
        readonly: bool = False,
        only: Sequence[str] | None = None,
        fleet: Fleet | None = None,
        clock: fmt.Clock = time.time,
        monotonic: fmt.Clock = time.monotonic,
        latency_format: fmt.LatencyFormat = fmt.latency,
        me: str | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.fleet = fleet or Fleet(config, readonly=readonly, only=only, clock=clock)
        self.readonly = readonly or config.readonly or self.fleet.readonly
        self._forced_readonly = self.readonly
        self.clock = clock
        self.monotonic = monotonic
        self.latency_format = latency_format
        self.me = me or current_user(config)
        self.store = FleetStore(self.fleet.hosts())
        self._pending: list[FleetEvent] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._serial = 0
        self._unsubscribe: Any = None
        self.stops: dict[str, actions.GracefulStop] = {}
        self.consoles = Consoles(config.viewer)
        ips = config.ipscan
        self.ipscan = IpScanner(
            self.fleet,
            IpBook(max_age=ips.max_age, clock=clock),
            libvirt_interval=ips.libvirt_interval,
            sweep_interval=ips.sweep_interval,
            host_timeout=ips.host_timeout,
            sweep_options=SweepOptions(
                timeout=ips.sweep_timeout, wait=ips.sweep_wait, max_addresses=ips.max_addresses
            ),
        )
        self.fleet_screen = FleetScreen(
            me=self.me,
            hosts=self.fleet.hosts(),
            clock=clock,
            monotonic=monotonic,
            latency_format=latency_format,
        )

    # ---- start and stop ------------------------------------------------------------------

    async def on_mount(self) -> None:
        self._looplag = looplag.start_from_env()  # opt-in: CATKEEPER_LOOPLAG=FILE (bench/soak)
        await self.push_screen(self.fleet_screen)
        self._unsubscribe = self.fleet.subscribe(self._on_fleet_event)
        # Before the fleet starts, so the first inventory already carries what is known.
        self.ipscan.start()
        await self.fleet.start()  # here, so backend events arrive on this app's loop

    async def wait_idle(self, timeout: float = 10.0) -> bool:
        """Until every host has answered once and the events are on screen (for tests)."""
        settled = await self.fleet.wait_settled(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (
            self._pending
            or self._flush_handle is not None
            or self.fleet_screen.seen_serial < self._serial
        ):
            await asyncio.sleep(BATCH_SECONDS / 5)
        return settled

    async def action_quit(self) -> None:
        await self.close_fleet()
        self.exit(0)

    async def close_fleet(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        for stop in self.stops.values():
            stop.cancel()
        self.workers.cancel_group(self, "installs")
        # Viewers and tunnels first (they ride on the hosts' ssh connections), then scans.
        for closing in (self.consoles.aclose(), self.ipscan.aclose()):
            try:
                await asyncio.wait_for(closing, 5)
            except (TimeoutError, Exception) as exc:
                log.info("closing consoles/scans: %s", describe(exc))
        try:
            await asyncio.wait_for(self.fleet.aclose(), 2)  # a hung host must not hold us up
        except (TimeoutError, Exception) as exc:
            log.info("closing the fleet: %s", describe(exc))

    # ---- backend events → screens ----------------------------------------------------------

    def _on_fleet_event(self, event: FleetEvent) -> None:
        if isinstance(event, DomainEvent):
            return  # the VmChanged that follows carries what the screens show
        self._pending.append(event)
        if self._flush_handle is None:
            # A plain loop timer, not a Textual one: backend callbacks may run outside the
            # app's context, where Textual timers cannot tick. call_later then hands the
            # flush to the app's own message queue.
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(
                BATCH_SECONDS, lambda: self.call_later(self._flush_events)
            )

    def _flush_events(self) -> None:
        self._flush_handle = None
        events, self._pending = self._pending, []
        changes = self.store.apply(events, self.clock())
        if changes:
            self._serial += 1
            for screen in self.screen_stack:
                screen.post_message(FleetUpdated(changes, self._serial))

    def _on_stop_progress(self, key: str, progress: actions.StopProgress | None) -> None:
        for screen in self.screen_stack:
            screen.post_message(StopProgressed(key, progress))

    # ---- the one error router ------------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR and event.worker.error is not None:
            self.report_error(event.worker.error, context=event.worker.name)

    def report_error(self, exc: BaseException, *, context: str = "") -> None:
        """Expected failures (libvirt said no, a host is down) are toasts; anything else is
        a bug the user must not miss, so it gets a modal (and the traceback goes to the log)."""
        if isinstance(exc, BackendError | libvirt.libvirtError):
            self.notify(describe(exc), title="Failed", severity="error", timeout=8)
            return
        log.error("unexpected error in %s", context or "the TUI", exc_info=exc)
        where = f"{context}: " if context else ""
        self.push_screen(
            ErrorScreen(
                "Something went wrong",
                f"{where}{describe(exc)}\n\nThe details are in the log file.",
            )
        )

    # ---- selection and actions -----------------------------------------------------------

    def selected_vms(self) -> list[VM]:
        screen = self.screen
        if isinstance(screen, FleetScreen | DetailScreen):
            return screen.selected_vms()
        return []

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Keys that change VMs are hidden (footer) and refused in read-only mode; keys that
        # act on VMs work only where VMs are shown, never on the rows behind a dialog.
        if action in MUTATING and self.readonly:
            return False
        if action in ON_VMS:
            screen = self.screen
            return isinstance(screen, FleetScreen | DetailScreen) and not isinstance(
                screen, ModalScreen
            )
        return True

    def refuse_readonly(self, what: str) -> bool:
        """True (and says so) when read-only mode forbids ``what``."""
        if self.readonly:
            self.notify(f"read-only mode: {what} refused", title="Refused", severity="error")
        return self.readonly

    def held_by_other(self, vm: VM) -> bool:
        """Someone else holds a reservation of ``vm`` that has not expired."""
        res = vm.reservation
        return res is not None and res.owner != self.me and not res.is_expired(self.clock())

    def one_vm(self, what: str) -> VM | None:
        """The one VM an action works on: the marked one, else the cursor's."""
        chosen = self.selected_vms()
        if len(chosen) == 1:
            return chosen[0]
        if chosen:
            self.notify(
                f"{what}: one VM at a time ({len(chosen)} are marked; esc clears the marks)",
                severity="warning",
            )
        return None

    def set_activity(self, key: str, text: str | None) -> None:
        """Background work in the fleet screen's status line (None: it is over)."""
        self.fleet_screen.set_activity(key, text)

    def action_lifecycle(self, name: str) -> None:
        self.run_lifecycle(name)

    def run_lifecycle(self, name: str, vms: Sequence[VM] | None = None) -> None:
        """Run a lifecycle action on ``vms`` (default: the marked rows or the cursor's)."""
        action = actions.ACTIONS.get(name)
        if action is None:
            self.notify(f"no action {name!r}", severity="error")
            return
        if self.refuse_readonly(action.label.lower()):
            return
        chosen = list(vms) if vms is not None else self.selected_vms()
        if name == "destroy":
            # Force off during a graceful stop means "skip the waits", not a second stop.
            forcing = [vm for vm in chosen if vm_key(vm) in self.stops]
            chosen = [vm for vm in chosen if vm_key(vm) not in self.stops]
            if forcing and not chosen:
                self._confirm("Force off", forcing, lambda: self._force_stops(forcing))
                return
        ready = [vm for vm in chosen if action.applies(vm)]
        if not ready:
            if chosen:
                states = ", ".join(
                    sorted({("stale" if vm.stale else vm.state.value) for vm in chosen})
                )
                self.notify(
                    f"{action.label}: not possible for a VM that is {states}", severity="warning"
                )
            return
        skipped = len(chosen) - len(ready)
        detail = (
            f"{skipped} other marked VM(s) skipped: not in a state for this." if skipped else ""
        )
        held = [] if name in _HARMLESS else [vm for vm in ready if self.held_by_other(vm)]
        if action.needs_confirm or len(ready) > 1 or held:
            self._confirm(action.label, ready, lambda: self._launch(action, ready), detail, held)
        else:
            self._launch(action, ready)

    def _confirm(
        self, verb: str, vms: list[VM], then: Any, detail: str = "", held: Sequence[VM] = ()
    ) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                then()

        dialog = ConfirmScreen(verb, vms, detail=detail, held=held, now=self.clock())
        self.push_screen(dialog, answered)

    def _launch(self, action: actions.Action, vms: Sequence[VM]) -> None:
        for vm in vms:
            if action.name == "stop":
                self._graceful_stop(vm)
            else:
                self.run_worker(
                    action.fn(self.fleet, vm),
                    name=f"{action.name} {vm.ref}",
                    group="actions",
                    exit_on_error=False,
                )

    def _graceful_stop(self, vm: VM) -> None:
        key = vm_key(vm)
        if key in self.stops:
            self.notify(f"{vm.ref} is already stopping", severity="warning")
            return
        cfg = self.config.graceful_stop
        stop = actions.GracefulStop(
            self.fleet,
            vm,
            acpi_wait=cfg.acpi_wait,
            ctrl_alt_del_wait=cfg.ctrl_alt_del_wait,
            on_progress=lambda p: self._on_stop_progress(key, p),
            monotonic=self.monotonic,
        )
        self.stops[key] = stop

        async def run() -> None:
            try:
                final = await stop.run()
            finally:
                self.stops.pop(key, None)
                self._on_stop_progress(key, None)
            if final.stage == "failed":
                raise actions.ActionError(final.message)
            if final.stage == "cancelled":
                self.notify(final.message, title="Stop cancelled")

        self.run_worker(run(), name=f"stop {vm.ref}", group="actions", exit_on_error=False)

    def _force_stops(self, vms: Sequence[VM]) -> None:
        for vm in vms:
            stop = self.stops.get(vm_key(vm))
            if stop is not None:
                stop.force()

    def action_cancel_stops(self) -> None:
        self.cancel_stops()

    def cancel_stops(self) -> None:
        keys = [vm_key(vm) for vm in self.selected_vms()]
        running = [self.stops[k] for k in keys if k in self.stops]
        if not running:
            self.notify("no graceful stop in progress here", severity="warning")
        for stop in running:
            stop.cancel()

    async def fetch_domain_xml(self, vm: VM) -> str:
        """The domain XML (never the secure one: no passwords on screen)."""
        session = self.fleet.session(vm.host)
        try:
            return await session.call_domain(
                vm.uuid, lambda dom: str(dom.XMLDesc(0)), what=f"reading the XML of {vm.ref}"
            )
        except libvirt.libvirtError as exc:
            raise BackendError(f"domain XML of {vm.ref}: {describe(exc)}") from exc

    # ---- reservations ---------------------------------------------------------------------

    def action_reserve(self) -> None:
        if self.refuse_readonly("reserving"):
            return
        vm = self.one_vm("reserve")
        if vm is not None:
            self.open_reservation_form(vm)

    def open_reservation_form(self, vm: VM, draft: ReservationRequest | None = None) -> None:
        """The form for ``vm`` as the user sees it; ``draft``: what they typed before."""

        def submitted(request: ReservationRequest | None) -> None:
            if request is not None:
                self.run_worker(
                    self._reserve(vm, request),
                    name=f"reserve {vm.ref}",
                    group="reservations",
                    exit_on_error=False,
                )

        form = ReservationScreen(vm, me=self.me, clock=self.clock, draft=draft)
        self.push_screen(form, submitted)

    async def _reserve(self, vm: VM, request: ReservationRequest) -> None:
        try:
            change = await reservations.apply(self.fleet, vm, request, me=self.me)
        except ReservationConflict as exc:
            # Someone changed it behind the form's back: say who, and reopen the form on
            # what the host holds now, with everything the user typed.
            self.report_error(exc, context=f"reserve {vm.ref}")
            fresh = await self.fleet.session(vm.host).refresh_domain(vm.uuid)
            if fresh is not None:
                self.open_reservation_form(fresh, draft=request)
            return
        verb = {"took-over": "took over", "updated": "updated your reservation of"}
        self.notify(f"{verb.get(change.action, change.action)} {change.ref}", title="Reservation")

    def action_release(self) -> None:
        if self.refuse_readonly("releasing"):
            return
        vm = self.one_vm("release")
        if vm is None:
            return
        res = vm.reservation
        if res is None:
            self.notify(f"{vm.ref} is not reserved", severity="warning")
            return
        now = self.clock()
        mine = res.owner == self.me
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
                self.run_worker(
                    self._release(vm, force=not mine),
                    name=f"release {vm.ref}",
                    group="reservations",
                    exit_on_error=False,
                )

        self.push_screen(dialog, answered)

    async def _release(self, vm: VM, *, force: bool) -> None:
        change = await reservations.release(self.fleet, vm, force=force, me=self.me)
        if change.action == "released":
            self.notify(f"released {change.ref}", title="Reservation")
        else:
            self.notify(f"{change.ref} was not reserved any more", title="Reservation")

    # ---- consoles -----------------------------------------------------------------------

    def action_console(self) -> None:
        vm = self.one_vm("console")
        if vm is not None:
            self.run_worker(
                self._open_console(vm), name=f"console of {vm.ref}", exit_on_error=False
            )

    async def _open_console(self, vm: VM) -> None:
        console = await self.consoles.open(self.fleet.session(vm.host), vm)
        if console.viewer is None:
            await self.push_screen(ConsoleInfoScreen(console.info))
            return

        def ended(done: Console) -> None:
            failure = done.failure
            if failure:
                self.notify(failure, title=f"Console of {vm.ref}", severity="error", timeout=10)

        console.on_exit.append(ended)
        if console.closed:  # it may have ended before the callback was in place
            ended(console)
        self.notify(f"viewer started for {vm.ref} ({console.info.endpoint})", title="Console")

    def action_serial(self) -> None:
        vm = self.one_vm("serial console")
        if vm is not None:
            self.run_worker(self._open_serial(vm), name=f"serial of {vm.ref}", exit_on_error=False)

    async def _open_serial(self, vm: VM) -> None:
        serial = await open_serial(self.fleet.session(vm.host), vm.uuid)
        await self.push_screen(SerialScreen(vm.ref, serial, close=serial.aclose))

    # ---- guest IPs ----------------------------------------------------------------------

    def action_scan_vm(self) -> None:
        for vm in self.selected_vms():
            self.run_worker(
                self._scan(f"ips {vm.ref}", vm.ref, partial(self.ipscan.scan_vm, vm)),
                name=f"find IPs of {vm.ref}",
                group="ipscan",
                exit_on_error=False,
            )

    def action_scan_host(self) -> None:
        for host in dict.fromkeys(vm.host for vm in self.selected_vms()):
            self.run_worker(
                self._scan(f"ips {host}", f"host {host}", partial(self.ipscan.scan_host, host)),
                name=f"find IPs on {host}",
                group="ipscan",
                exit_on_error=False,
            )

    async def _scan(
        self,
        key: str,
        what: str,
        run: Callable[..., Awaitable[HostScan]],
    ) -> None:
        """Run one scan, its progress in the status line, its outcome as a toast."""

        def progress(p: ScanProgress) -> None:
            if p.stage != "done":
                count = f" {p.done}/{p.total}" if p.total > 1 else ""
                self.set_activity(key, f"finding IPs of {what}: {p.stage}{count}")

        self.set_activity(key, f"finding IPs of {what}…")
        try:
            scan = await run(progress=progress)
        finally:
            self.set_activity(key, None)
        found = sorted({s.ip for r in scan.results for s in r.sightings})
        shown = ", ".join(found[:6]) + (f" and {len(found) - 6} more" if len(found) > 6 else "")
        message = f"{what}: {shown}" if found else f"{what}: no address found"
        if scan.error:
            message += f" ({scan.error})"
        self.notify(message, title="IP scan", severity="warning" if scan.error else "information")

    # ---- VM operations --------------------------------------------------------------------

    def action_edit_xml(self) -> None:
        if self.refuse_readonly("editing"):
            return
        vm = self.one_vm("edit")
        if vm is not None:
            self.run_worker(
                edit_vm_xml(self, self.fleet, vm),
                name=f"edit {vm.ref}",
                group="edit",
                exclusive=True,
                exit_on_error=False,
            )

    def action_create(self) -> None:
        if self.refuse_readonly("creating a VM"):
            return
        self.run_worker(self._create(), name="create a VM", group="create", exit_on_error=False)

    async def _create(self) -> None:
        cursor = self.selected_vms()
        hosts = [name for name, s in self.fleet.sessions.items() if not s.readonly]
        if not hosts:
            self.notify("every host is read-only", severity="error")
            return
        form = CreateFormScreen(
            hosts, host=cursor[0].host if cursor else None, ssh_keys=_own_ssh_keys()
        )
        spec = await self.push_screen_wait(form)
        if spec is None:
            return
        ref = f"{spec.host}/{spec.name}"
        key = f"create {ref}"

        def progress(p: create.CreateProgress) -> None:
            done = ""
            if p.done is not None and p.total:
                done = f" {100 * p.done // p.total}%"
            self.set_activity(key, f"creating {ref}: {p.message}{done}")

        self.set_activity(key, f"creating {ref}…")
        try:
            created = await create.create_vm(self.fleet, spec, progress)
        finally:
            self.set_activity(key, None)
        self.notify(f"created {created.ref}", title="New VM")
        if created.vm is not None:
            self.jump_to(vm_key(created.vm))
        if created.install_pending:
            self.run_worker(
                self._watch_install(spec.host, created.uuid, created.ref),
                name=f"install of {created.ref}",
                group="installs",
                exit_on_error=False,
            )

    async def _watch_install(self, host: str, uuid: str, ref: str) -> None:
        key = f"install {ref}"
        watcher = netinstall.InstallWatcher(
            self.fleet, host, uuid, on_progress=lambda m: self.set_activity(key, f"{ref}: {m}")
        )
        try:
            finished = await watcher.wait()
        finally:
            self.set_activity(key, None)
        left = f"; left behind: {', '.join(finished.left)}" if finished.left else ""
        started = ", started from its disk" if finished.started else ""
        self.notify(f"install of {ref} finished{started}{left}", title="New VM")

    def action_delete(self) -> None:
        if self.refuse_readonly("deleting"):
            return
        vm = self.one_vm("delete")
        if vm is not None:
            self.run_worker(
                self._delete(vm), name=f"delete {vm.ref}", group="delete", exit_on_error=False
            )

    async def _delete(self, vm: VM) -> None:
        disks = await vmops.disks(self.fleet, vm)
        dialog = DeleteConfirmScreen(vm, disks, me=self.me, now=self.clock())
        choice = await self.push_screen_wait(dialog)
        if choice is None:
            return
        result = await vmops.delete(
            self.fleet, vm, volumes=choice.volumes, force_off=choice.force_off
        )
        gone = len(result.removed_volumes)
        extra = f" and {gone} volume{'s' if gone != 1 else ''}" if gone else ""
        self.notify(f"deleted {result.ref}{extra}", title="Delete")

    def rename_vm(self, new_name: str) -> None:
        if self.refuse_readonly("renaming"):
            return
        vm = self.one_vm("rename")
        if vm is None:
            return

        async def run() -> None:
            renamed = await vmops.rename(self.fleet, vm, new_name)
            self.notify(f"renamed {vm.ref} to {renamed.name}", title="Rename")

        self.run_worker(run(), name=f"rename {vm.ref}", group="vmops", exit_on_error=False)

    def clone_vm(self, new_name: str, mode: vmops.CloneMode = "copy") -> None:
        if self.refuse_readonly("cloning"):
            return
        vm = self.one_vm("clone")
        if vm is None:
            return
        key = f"clone {vm.ref}"

        async def run() -> None:
            self.set_activity(key, f"cloning {vm.ref} as {new_name}…")
            try:
                clone = await vmops.clone(
                    self.fleet,
                    vm,
                    new_name,
                    mode=mode,
                    on_progress=lambda m: self.set_activity(key, f"clone of {vm.ref}: {m}"),
                )
            finally:
                self.set_activity(key, None)
            self.notify(f"cloned {vm.ref} as {clone.ref}", title="Clone")

        self.run_worker(run(), name=key, group="vmops", exit_on_error=False)

    def open_snapshots(self, vm: VM) -> None:
        self.push_screen(SnapshotsScreen(self.fleet, vm))

    # ---- screens ------------------------------------------------------------------------

    def open_detail(self, vm: VM) -> None:
        key = vm_key(vm)
        self.push_screen(
            DetailScreen(
                key,
                self.store.vms.get(key, vm),
                host=self.store.hosts.get(vm.host),
                history=self.store.history.setdefault(key, []),
                fetch_xml=self.fetch_domain_xml,
                clock=self.clock,
                sightings=self.ipscan.book.all_sightings,
                conflicts=self.ipscan.conflicts,
            )
        )

    def vm_action(self, action: str) -> None:
        """An action by name, as its key would run it (the palette, : commands)."""
        if not self.check_action(action, ()) and not (action in MUTATING and self.readonly):
            self.notify(f"{action.replace('_', ' ')}: no VM here to act on", severity="warning")
            return
        getattr(self, f"action_{action}")()

    def _to_fleet_screen(self) -> FleetScreen:
        while len(self.screen_stack) > 1 and self.screen is not self.fleet_screen:
            self.pop_screen()
        return self.fleet_screen

    def jump_to(self, key: str) -> None:
        fleet = self._to_fleet_screen()
        if not fleet.table.move_cursor_to(key):
            fleet.apply_filter("")
            fleet.table.move_cursor_to(key)
        fleet.table.focus()

    def open_prompt(self, mode: Mode, text: str = "") -> None:
        self._to_fleet_screen().bar.open(mode, text)

    def help_sections(self) -> list[Section]:
        return [
            ("Everywhere", self.BINDINGS),
            ("Fleet", [*FleetScreen.BINDINGS, *VmTable.BINDINGS]),
            ("Host strip (tab to focus)", HostStrip.BINDINGS),
            ("Filter / command line", FilterBar.BINDINGS),
            ("VM detail", DetailScreen.BINDINGS),
            ("Snapshots (^s in the VM detail)", SnapshotsScreen.BINDINGS),
            ("Command palette", [Binding("ctrl+p", "command_palette", "Actions and jump to VM")]),
        ]

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.help_sections(), readonly=self.readonly))

    # ---- : commands -------------------------------------------------------------------------

    def run_command_line(self, text: str) -> None:
        try:
            words = shlex.split(text)
        except ValueError as exc:
            self.notify(f":{text}: {exc}", severity="error")
            return
        if not words:
            return
        verb, args = words[0].lower(), words[1:]
        fleet = self._to_fleet_screen()
        if verb in ("q", "quit", "exit"):
            self.run_worker(self.action_quit(), name="quit", exit_on_error=False)
        elif verb in ("host", "hosts"):
            if not args:
                fleet.apply_filter("")
            elif args[0] not in self.store.hosts:
                self.notify(
                    f"no host {args[0]!r} (hosts: {', '.join(self.store.hosts)})", severity="error"
                )
            else:
                fleet.filter_host(args[0])
        elif verb == "filter":
            fleet.apply_filter(" ".join(args))
        elif verb == "sort":
            column = args[0] if args else ""
            if column not in COLUMN_KEYS:
                self.notify(f"sort by one of: {', '.join(COLUMN_KEYS)}", severity="error")
            else:
                fleet.table.sort_by(column)
        elif verb in ("vm", "goto"):
            self._goto(" ".join(args))
        elif verb in ("readonly", "ro"):
            self.set_readonly(not args or args[0].lower() not in ("off", "no", "false"))
        elif verb in ("help", "?"):
            self.action_help()
        elif verb in actions.ACTIONS:
            self.run_lifecycle(verb)
        elif verb in ("rename", "clone"):
            self._rename_or_clone(verb, args)
        elif verb in ("reserve", "release", "console", "serial", "edit", "create", "delete"):
            action = {"console": "console", "serial": "serial", "edit": "edit_xml"}
            self.vm_action(action.get(verb, verb))
        elif verb == "scan":
            self.vm_action("scan_host" if args and args[0] == "host" else "scan_vm")
        else:
            self.notify(
                f"unknown command :{verb} (try :host, :filter, :sort, :vm, :readonly, "
                f":{', :'.join(actions.ACTIONS)}, :reserve, :release, :rename, :clone, "
                ":scan, :quit)",
                severity="error",
            )

    def _rename_or_clone(self, verb: str, args: list[str]) -> None:
        usage = ":rename NEWNAME" if verb == "rename" else ":clone NEWNAME [overlay]"
        if not args or len(args) > (1 if verb == "rename" else 2):
            self.notify(f"usage: {usage}", severity="error")
            return
        if verb == "rename":
            self.rename_vm(args[0])
        elif len(args) == 2 and args[1] not in ("copy", "overlay"):
            self.notify(f"usage: {usage} (copy is the default)", severity="error")
        else:
            self.clone_vm(args[0], "overlay" if args[1:] == ["overlay"] else "copy")

    def _goto(self, ref: str) -> None:
        try:
            vm = self.fleet.find(ref) if ref else None
        except BackendError as exc:
            self.notify(str(exc), severity="error")
            return
        if vm is not None:
            self.jump_to(vm_key(vm))

    def set_readonly(self, on: bool) -> None:
        if not on and self._forced_readonly:
            self.notify(
                "read-only was asked for at start-up; restart to leave it", severity="warning"
            )
            return
        self.readonly = on
        for session in self.fleet.sessions.values():
            # The backend refuses too (ReadOnlyError), not just the bindings.
            session.readonly = on or session.cfg.readonly
        self.refresh_bindings()
        self.fleet_screen.refresh_status()
        self.notify("read-only mode: changes to VMs refused" if on else "read-write mode")


def _own_ssh_keys() -> list[str]:
    """The user's public keys (``~/.ssh/id_*.pub``), to offer in the create form."""
    keys = []
    for path in sorted(Path.home().glob(".ssh/id_*.pub")):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            line = path.read_text(encoding="utf-8").strip()
            if line:
                keys.append(line)
    return keys


def run_app(config: Config, *, readonly: bool, only: list[str] | None) -> int:
    """Run the TUI until the user quits; the process exit code."""
    try:
        fleet = Fleet(config, readonly=readonly, only=only)
    except UnknownHost as exc:
        print(f"catkeeper: {exc}", file=sys.stderr)
        return 2
    app = CatkeeperApp(config, readonly=readonly, fleet=fleet)
    code = app.run()
    return code if isinstance(code, int) else (app.return_code or 0)
