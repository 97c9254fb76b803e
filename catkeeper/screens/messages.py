"""Messages the app posts to its screens when the backend has news."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from catkeeper.backend.actions import StopProgress
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
