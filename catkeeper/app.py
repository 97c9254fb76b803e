"""The Textual app: wiring, bindings, the command palette and the one error router.

Backend events arrive through ``Fleet.subscribe`` on this app's loop (the fleet is started
from ``on_mount``), are batched for a moment so a refresh storm repaints once, folded into
the ``FleetStore`` and posted to the screens as ``FleetUpdated``. Every libvirt call runs in
a worker on the host's own threads; failures reach ``report_error`` and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import libvirt
from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen
from textual.worker import Worker, WorkerState

from catkeeper.backend import actions
from catkeeper.backend.errors import BackendError, describe
from catkeeper.backend.events import DomainEvent, FleetEvent
from catkeeper.backend.fleet import Fleet, UnknownHost
from catkeeper.cli import current_user
from catkeeper.config import Config
from catkeeper.model import VM
from catkeeper.screens.confirm import ConfirmScreen
from catkeeper.screens.detail import DetailScreen
from catkeeper.screens.error import ErrorScreen
from catkeeper.screens.fleet import FleetScreen
from catkeeper.screens.help import HelpScreen, Section
from catkeeper.screens.messages import FleetUpdated, StopProgressed
from catkeeper.screens.palette import FleetCommands
from catkeeper.screens.store import FleetStore, vm_key
from catkeeper.widgets import format as fmt
from catkeeper.widgets.filter_bar import FilterBar, Mode
from catkeeper.widgets.host_strip import HostStrip
from catkeeper.widgets.vm_table import COLUMN_KEYS, VmTable

log = logging.getLogger(__name__)

# Long enough to merge a burst of events into one repaint, short enough to feel instant.
BATCH_SECONDS = 0.05


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
        Binding("r", "lifecycle('reboot')", "Reboot", show=False),
        Binding("R", "lifecycle('reset')", "Reset", show=False),
        Binding("p", "lifecycle('suspend')", "Pause", show=False),
        Binding("u", "lifecycle('resume')", "Resume", show=False),
        Binding("c", "cancel_stops", "Cancel graceful stop", show=False),
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
        self.fleet = fleet or Fleet(config, readonly=readonly, only=only)
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
        self.fleet_screen = FleetScreen(
            me=self.me,
            hosts=self.fleet.hosts(),
            clock=clock,
            monotonic=monotonic,
            latency_format=latency_format,
        )

    # ---- start and stop ------------------------------------------------------------------

    async def on_mount(self) -> None:
        await self.push_screen(self.fleet_screen)
        self._unsubscribe = self.fleet.subscribe(self._on_fleet_event)
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
        # Lifecycle keys are hidden (footer, help) and refused in read-only mode, and never
        # act on the rows behind a dialog.
        changes_vms = action in ("lifecycle", "cancel_stops")
        return not (changes_vms and (self.readonly or isinstance(self.screen, ModalScreen)))

    def action_lifecycle(self, name: str) -> None:
        self.run_lifecycle(name)

    def run_lifecycle(self, name: str, vms: Sequence[VM] | None = None) -> None:
        """Run a lifecycle action on ``vms`` (default: the marked rows or the cursor's)."""
        action = actions.ACTIONS.get(name)
        if action is None:
            self.notify(f"no action {name!r}", severity="error")
            return
        if self.readonly:
            self.notify(
                f"read-only mode: {action.label.lower()} refused",
                title="Refused",
                severity="error",
            )
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
        if action.needs_confirm or len(ready) > 1:
            self._confirm(action.label, ready, lambda: self._launch(action, ready), detail)
        else:
            self._launch(action, ready)

    def _confirm(self, verb: str, vms: list[VM], then: Any, detail: str = "") -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                then()

        self.push_screen(ConfirmScreen(verb, vms, detail=detail), answered)

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
            )
        )

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

    def open_prompt(self, mode: Mode) -> None:
        self._to_fleet_screen().bar.open(mode)

    def help_sections(self) -> list[Section]:
        return [
            ("Everywhere", self.BINDINGS),
            ("Fleet", [*FleetScreen.BINDINGS, *VmTable.BINDINGS]),
            ("Host strip (tab to focus)", HostStrip.BINDINGS),
            ("Filter / command line", FilterBar.BINDINGS),
            ("VM detail", DetailScreen.BINDINGS),
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
        else:
            self.notify(
                f"unknown command :{verb} (try :host, :filter, :sort, :vm, :readonly, "
                f":{', :'.join(actions.ACTIONS)}, :quit)",
                severity="error",
            )

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
        self.notify("read-only mode: lifecycle actions refused" if on else "read-write mode")


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
