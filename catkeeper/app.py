"""The Textual app: wiring only. Bindings come from the command table, every face ends in
one dispatcher, each feature lives in its controller (``catkeeper.tui``), and failures reach
``report_error`` and nowhere else.

Backend events arrive through ``Fleet.subscribe`` on this app's loop (the fleet is started
from ``on_mount``) and go through ``tui.events.EventPump`` to the screens. Every libvirt
call runs in a worker on the host's own threads.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ClassVar, TypeVar

import libvirt
from textual.app import App
from textual.binding import BindingType
from textual.screen import ModalScreen, Screen
from textual.worker import Worker, WorkerState

from catkeeper import looplag
from catkeeper.backend.console.viewer import Consoles
from catkeeper.backend.errors import BackendError, describe
from catkeeper.backend.fleet import Fleet, UnknownHost
from catkeeper.backend.ipscan.book import IpBook
from catkeeper.backend.ipscan.local_sweep import SweepOptions
from catkeeper.backend.ipscan.scheduler import IpScanner
from catkeeper.backend.stale import Staleness
from catkeeper.backend.stats import FleetStats
from catkeeper.backend.timeouts import cancel_and_wait, within
from catkeeper.config import Config, current_user
from catkeeper.heap import FrozenHeap
from catkeeper.model import VM, StopProgress
from catkeeper.screens.detail import DetailScreen
from catkeeper.screens.error import ErrorScreen
from catkeeper.screens.fleet import FleetScreen
from catkeeper.screens.messages import (
    OpenDetail,
    RunCommand,
    RunCommandLine,
    StopProgressed,
    WorkerFailed,
)
from catkeeper.screens.palette import FleetCommands
from catkeeper.screens.store import FleetStore
from catkeeper.tui.command_line import run_line
from catkeeper.tui.consoles import ConsoleControl
from catkeeper.tui.dispatch import Dispatcher
from catkeeper.tui.events import BATCH_SECONDS, EventPump
from catkeeper.tui.ipscans import IpScans
from catkeeper.tui.keys import HELP_SECTIONS, bindings
from catkeeper.tui.lifecycle import Lifecycle
from catkeeper.tui.navigation import Navigation
from catkeeper.tui.placement import Placing
from catkeeper.tui.reservations import Reservations
from catkeeper.tui.views import ViewCommands, Views
from catkeeper.tui.vmops import VmOps
from catkeeper.widgets import format as fmt

log = logging.getLogger(__name__)
T = TypeVar("T")


class CatkeeperApp(App[int]):
    TITLE = "catkeeper"
    COMMANDS: ClassVar[set[Any]] = App.COMMANDS | {FleetCommands, ViewCommands}
    BINDINGS: ClassVar[list[BindingType]] = bindings()

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
        heap: FrozenHeap | None = None,
    ) -> None:
        super().__init__()
        self.heap = heap  # the real run's collector policy (catkeeper/heap.py); tests: None
        self.config = config
        self.fleet = fleet or Fleet(config, readonly=readonly, only=only, clock=clock)
        self.readonly = readonly or config.readonly or self.fleet.readonly
        self.forced_readonly = self.readonly
        self.clock = clock
        self.monotonic = monotonic
        self.me = me or current_user(config)
        self.store = FleetStore(self.fleet.hosts())
        self._unsubscribe: Callable[[], None] | None = None
        self._disk_times: asyncio.Task[None] | None = None
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
            readonly=self.readonly,
        )
        self.staleness = Staleness(self.fleet.sessions, config.stale, monotonic)
        self.fleet_screen.staleness = self.staleness
        self.fleet_screen.table.use_stats(FleetStats.of(self.fleet.sessions, self.staleness.stale))
        self.events = EventPump(self.store, clock, self.call_later, self._post_to_screens)
        self.lifecycle = Lifecycle(self)
        self.reservations = Reservations(self)
        self.navigation = Navigation(self, HELP_SECTIONS)
        self.views = Views(self)
        controllers = (
            self.lifecycle,
            self.reservations,
            ConsoleControl(self),
            IpScans(self),
            vmops := VmOps(self, self),
            Placing(self, vmops.create_on),
            self.navigation,
            self.views,
        )
        self.dispatcher = Dispatcher(
            self,
            controllers,
            vms_shown=self._vms_shown,
            prompt=lambda text: self.to_fleet_screen().bar.open("command", text),
        )

    # ---- start and stop ------------------------------------------------------------------

    async def on_mount(self) -> None:
        self._looplag = looplag.start_from_env()  # opt-in: CATKEEPER_LOOPLAG=FILE (bench/soak)
        await self.push_screen(self.fleet_screen)
        self.views.apply_pending()  # catkeeper --view NAME
        self._unsubscribe = self.fleet.subscribe(self.events.on_event)
        # Before the fleet starts, so the first inventory already carries what is known.
        self.ipscan.start()
        await self.fleet.start()  # here, so backend events arrive on this app's loop
        # A loop for the app's life, not a worker: workers are what a person started.
        self._disk_times = asyncio.create_task(
            self.staleness.disks.run(30, self.fleet.wait_settled), name="disk times"
        )
        if self.heap is not None:  # once every host has answered (heap.py)
            self.heap.keep_after(lambda: self.fleet.wait_settled(None))

    async def wait_idle(self, timeout: float = 10.0) -> bool:
        """Until every host has answered once and the events are on screen (for tests)."""
        settled = await self.fleet.wait_settled(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (
            self.events.busy or self.fleet_screen.seen_serial < self.events.serial
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
        self.events.close()
        if self._disk_times is not None:
            await cancel_and_wait(self._disk_times)
        if self.heap is not None:
            self.heap.stop()
        self.lifecycle.cancel_all()
        self.workers.cancel_group(self, "installs")
        # Viewers and tunnels first (they ride on the hosts' ssh connections), then scans,
        # then the hosts: each bounded, so a hung host does not hold us up.
        closings = ((self.consoles.aclose, 5), (self.ipscan.aclose, 5), (self.fleet.aclose, 2))
        for close, bound in closings:
            try:
                await within(close(), bound)
            except (TimeoutError, Exception) as exc:
                log.info("%s: %s", close.__qualname__, describe(exc))

    # ---- messages between the backend, the screens and the controllers -----------------------

    def _post_to_screens(self, message: Any) -> None:
        # Not Textual's blank screen under ours: one under the top that handles a message
        # repaints all of the top one (Textual 8), so each fleet update was a full frame.
        for screen in self.screen_stack:
            if type(screen) is not Screen:
                screen.post_message(message)

    def stop_progressed(self, key: str, progress: StopProgress | None) -> None:
        self._post_to_screens(StopProgressed(key, progress))

    def action_command(self, name: str, *args: str) -> None:
        """Every face ends here: a key binding, a ``:`` line, a palette hit."""
        self.dispatcher.run(name, args)

    def on_run_command(self, message: RunCommand) -> None:
        self.dispatcher.run(message.name, message.args)

    def on_run_command_line(self, message: RunCommandLine) -> None:
        self.run_command_line(message.text)

    def run_command_line(self, text: str) -> None:
        run_line(text, self.dispatcher.run, lambda problem: self.notify(problem, severity="error"))

    def on_open_detail(self, message: OpenDetail) -> None:
        self.navigation.open_detail(message.vm)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # The table's keys: hidden (footer) and inert when read-only forbids them or when
        # they act on VMs and none are shown (never on the rows behind a dialog).
        if action == "command" and parameters:
            return self.dispatcher.allowed(str(parameters[0]))
        return True

    # ---- the one error router ------------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR and event.worker.error is not None:
            self.report_error(event.worker.error, context=event.worker.name)

    def on_worker_failed(self, message: WorkerFailed) -> None:
        self.report_error(message.error, context=message.context)

    def report_error(self, exc: BaseException, *, context: str = "") -> None:
        """Expected failures (libvirt said no, a host is down) are toasts; anything else is
        a bug the user must not miss, so it gets a modal (and the traceback goes to the log)."""
        if isinstance(exc, BackendError | libvirt.libvirtError):
            self.notify(describe(exc), title="Failed", severity="error", timeout=8)
            return
        log.error("unexpected error in %s", context or "the TUI", exc_info=exc)
        where = f"{context}: " if context else ""
        text = f"{where}{describe(exc)}\n\nThe details are in the log file."
        self.push_screen(ErrorScreen("Something went wrong", text))

    # ---- what controllers use (tui.host.Host) ------------------------------------------------

    def _vms_shown(self) -> bool:
        shown = self.screen
        return isinstance(shown, FleetScreen | DetailScreen) and not isinstance(shown, ModalScreen)

    def selected_vms(self) -> list[VM]:
        screen = self.screen
        if isinstance(screen, FleetScreen | DetailScreen):
            return screen.selected_vms()
        return []

    def show(self, screen: Screen[Any], then: Callable[[Any], None] | None = None) -> None:
        self.push_screen(screen, then)

    async def wait_for(self, screen: Screen[T]) -> T | None:
        return await self.push_screen_wait(screen)

    def start(self, work: Coroutine[Any, Any, object], *, name: str, group: str = "") -> None:
        self.run_worker(work, name=name, group=group or "default", exit_on_error=False)

    def set_activity(self, key: str, text: str | None) -> None:
        """Background work in the fleet screen's status line (None: it is over)."""
        self.fleet_screen.set_activity(key, text)

    def to_fleet_screen(self) -> FleetScreen:
        while len(self.screen_stack) > 1 and self.screen is not self.fleet_screen:
            self.pop_screen()
        return self.fleet_screen

    def jump_to(self, key: str) -> None:
        fleet = self.to_fleet_screen()
        if not fleet.table.move_cursor_to(key):
            fleet.apply_filter("")
            fleet.table.move_cursor_to(key)
        fleet.table.focus()


def run_app(
    config: Config, *, readonly: bool, only: list[str] | None, view: str | None = None
) -> int:
    """Run the TUI until the user quits (``view``: open with that saved view); the exit code."""
    try:
        fleet = Fleet(config, readonly=readonly, only=only)
    except UnknownHost as exc:
        print(f"catkeeper: {exc}", file=sys.stderr)
        return 2
    app = CatkeeperApp(config, readonly=readonly, fleet=fleet, heap=FrozenHeap())
    app.views.pending = view
    code = app.run()
    return code if isinstance(code, int) else (app.return_code or 0)
