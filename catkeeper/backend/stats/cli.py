"""Stats for one-shot runs (``catkeeper --json --stats``): rates need two samples, so the
run reads every reachable host twice, one ``stats_interval`` apart (1 s when stats are off).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from catkeeper.backend.errors import BackendError
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.stats.poll import sample_now
from catkeeper.backend.stats.sample import Rates
from catkeeper.model import HostState

_OFF_WAIT_S = 1.0


def sample_wait(interval: float) -> float:
    return interval if interval > 0 else _OFF_WAIT_S


async def two_samples(fleet: Fleet, wall: Callable[[], float]) -> None:
    """Two stats reads of every host that is up, one interval apart, all hosts at once."""
    up = [s for s in fleet.sessions.values() if s.host.state in (HostState.UP, HostState.DEGRADED)]
    wait = sample_wait(fleet.config.timing.stats_interval)

    async def one(session: Any) -> None:
        with contextlib.suppress(BackendError):  # a host that fails has no rates
            await sample_now(session, time.monotonic, wall)
            await asyncio.sleep(wait)
            await sample_now(session, time.monotonic, wall)

    await asyncio.gather(*(one(s) for s in up))


def stats_json(rates: Rates | None) -> dict[str, Any] | None:
    """One VM's current rates as plain JSON (None: no sample, e.g. its host is down)."""
    if rates is None:
        return None
    return {
        "at": rates.at,
        "cpu_percent": rates.cpu_pct,  # of the VM's own vCPUs
        "memory_used_kib": rates.mem_used_kib,
        "net_rx_bytes_per_s": rates.net_rx,
        "net_tx_bytes_per_s": rates.net_tx,
        "disk_read_bytes_per_s": rates.disk_rd,
        "disk_write_bytes_per_s": rates.disk_wr,
    }
