"""Messages between the app and its screens. Down: the backend has news. Up: a screen
asks the app for something (run a command, open a VM, report a failed worker), so no
screen imports the app."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from catkeeper.model import VM, StopProgress
from catkeeper.screens.store import Changes


@dataclass
class FleetUpdated(Message):
    """A batch of backend events, already folded into the app's store."""

    changes: Changes
    serial: int = 0  # counts batches, so a test can wait until a screen has seen them all


@dataclass
class StopProgressed(Message):
    """A graceful stop moved on (``progress`` None: it is over and the row shows the state)."""

    key: str
    progress: StopProgress | None


@dataclass
class RunCommand(Message):
    """Run a command-table entry (``args``: the words a ``:`` line would give it)."""

    name: str
    args: tuple[str, ...] = ()


@dataclass
class RunCommandLine(Message):
    """The ``:`` line was submitted with ``text``."""

    text: str


@dataclass
class OpenDetail(Message):
    vm: VM


@dataclass
class WorkerFailed(Message):
    """A screen's worker failed; ``Worker.StateChanged`` does not bubble, this does."""

    error: BaseException
    context: str
