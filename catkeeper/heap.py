"""Keep the garbage collector's full passes short in a process that holds a big fleet.

Measured in the soak (20 hosts x 500 VMs, 2 cores): CPython's full collection walked the
~270,000 container objects the fleet's VMs, their parsed XML and the table hold every 3-7 s
while hosts changed, 100-128 ms each time, on whichever thread happened to allocate, with
the GIL held: every such pass was a stall of the screen and the keys (it was the loop
lag's maximum and the keystroke's 95th percentile), and ~2 % of a core.

Those objects live as long as the fleet does, so walking them finds nothing. ``gc.freeze()``
moves every object alive at that moment out of the collector's sight (they are still freed
by reference counting when dropped; only a reference cycle among them would be kept). So:

* ``freeze()`` once the cold load has settled: the fleet is then out of the passes;
* after every full pass the collector itself makes, the survivors are frozen too (a full
  pass has just removed every unreachable cycle, so freezing then keeps no garbage);
* since objects frozen while alive that later become garbage only through a cycle (a closed
  screen, a toast) would be kept, ``full_collect()`` unfreezes and collects everything every
  ``full_every`` seconds, then freezes again: one pause per quarter hour by default (382 ms
  in the 30-minute soak, the loop lag's maximum there; see README "Running for days").

Process-wide state: only the TUI's real run turns it on (``catkeeper.app.run_app``), and
``stop()`` gives everything back to the collector.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

FULL_EVERY_S = 900.0


class FrozenHeap:
    """Freezes long-lived objects out of the collector's full passes (see the module text)."""

    def __init__(
        self, mono: Callable[[], float] = time.monotonic, full_every: float = FULL_EVERY_S
    ) -> None:
        self._mono = mono
        self.full_every = full_every
        self._on = False
        self.full_passes = 0  # full passes the collector made itself since start()
        self.last_full_ms: float | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def on(self) -> bool:
        return self._on

    def start(self) -> None:
        """Freeze what is alive now and keep freezing the survivors of every full pass."""
        if self._on:
            return
        self._on = True
        gc.callbacks.append(self._after_pass)
        gc.freeze()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if not self._on:
            return
        self._on = False
        if self._after_pass in gc.callbacks:
            gc.callbacks.remove(self._after_pass)
        gc.unfreeze()

    def full_collect(self) -> float:
        """Collect everything once, frozen or not, then freeze the survivors; milliseconds."""
        started = self._mono()
        if self._on:
            gc.callbacks.remove(self._after_pass)
        try:
            gc.unfreeze()
            gc.collect()
        finally:
            if self._on:
                gc.freeze()
                gc.callbacks.append(self._after_pass)
        self.last_full_ms = (self._mono() - started) * 1000
        return self.last_full_ms

    def keep_after(self, settled: Callable[[], Awaitable[object]]) -> None:
        """On the running loop: start once ``settled`` returns (the cold load is done), then
        collect everything every ``full_every`` seconds, until ``stop()``."""
        self._task = asyncio.get_running_loop().create_task(self._keep(settled), name="heap")

    async def _keep(self, settled: Callable[[], Awaitable[object]]) -> None:
        await settled()
        self.start()
        while True:
            await asyncio.sleep(self.full_every)
            took = self.full_collect()
            log.debug("full collection: %.0f ms, %d full passes so far", took, self.full_passes)

    def _after_pass(self, phase: str, info: dict[str, Any]) -> None:
        # Runs inside the collector, on whichever thread allocated: only cheap list moves.
        if phase == "stop" and info.get("generation") == 2:
            self.full_passes += 1
            gc.freeze()
