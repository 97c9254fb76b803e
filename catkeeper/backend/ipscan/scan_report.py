"""What a scan reports while it runs (``ScanProgress``) and when it is done (``HostScan``)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from catkeeper.backend.ipscan.bulk import Call
from catkeeper.backend.ipscan.results import SourceResult

log = logging.getLogger(__name__)


LIBVIRT = "libvirt"
SWEEP = "sweep"
DONE = "done"


@dataclass(frozen=True)
class ScanProgress:
    host: str
    stage: str  # "libvirt", "sweep" or "done"
    done: int
    total: int
    message: str = ""


@dataclass(frozen=True)
class HostScan:
    """One scan of one host: every source's result, every call made, and a host-level error."""

    host: str
    results: tuple[SourceResult, ...]
    started_at: float
    elapsed_s: float
    error: str | None = None  # not connected, timed out: the results may be partial
    calls: tuple[Call, ...] = ()  # every libvirt call and remote command, with its seconds

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


Progress = Callable[[ScanProgress], None]
