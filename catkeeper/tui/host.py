"""What a controller may ask of the app: the narrow interface that keeps ``tui/`` from
importing ``app.py`` (the app passes itself; tests could pass anything that fits)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol, TypeVar

from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widget import Widget

from catkeeper.backend.console.viewer import Consoles
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.ipscan.scheduler import IpScanner
from catkeeper.commands import Command
from catkeeper.config import Config
from catkeeper.model import VM, StopProgress
from catkeeper.screens.fleet import FleetScreen
from catkeeper.screens.store import FleetStore

T = TypeVar("T")
Clock = Callable[[], float]
# Runs one command-table entry with the words typed after it (none from a key or the palette).
Handler = Callable[[Command, Sequence[str]], None]


class Host(Protocol):
    fleet: Fleet
    config: Config
    store: FleetStore
    ipscan: IpScanner
    consoles: Consoles
    fleet_screen: FleetScreen
    me: str
    readonly: bool
    forced_readonly: bool  # asked for at start-up: :readonly off cannot undo it
    clock: Clock
    monotonic: Clock

    @property
    def focused(self) -> Widget | None: ...

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
    ) -> None: ...

    def show(self, screen: Screen[Any], then: Callable[[Any], None] | None = None) -> None:
        """Push ``screen``; ``then`` gets what it is dismissed with."""

    async def wait_for(self, screen: Screen[T]) -> T | None:
        """Push ``screen`` and wait for its answer (only from a worker)."""

    def start(self, work: Coroutine[Any, Any, object], *, name: str, group: str = "") -> None:
        """Run ``work`` as a worker whose failure goes to the error router."""

    def report_error(self, exc: BaseException, *, context: str = "") -> None: ...

    def selected_vms(self) -> list[VM]: ...

    def set_activity(self, key: str, text: str | None) -> None: ...

    def jump_to(self, key: str) -> None: ...

    def to_fleet_screen(self) -> FleetScreen: ...

    def stop_progressed(self, key: str, progress: StopProgress | None) -> None: ...

    def refresh_bindings(self) -> None: ...

    def action_command_palette(self) -> None: ...

    async def action_quit(self) -> None: ...
