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
* after a full pass of the collector's own that was slow (``slow_pass_ms``: it walked many
  long-lived objects, VMs remade since), its survivors are frozen too. A full pass has just
  removed every unreachable cycle, so freezing then keeps no garbage; but what is alive at
  that moment and later dies only through a cycle stays frozen: Textual's rendered lines
  (``Strip``) cache themselves, and freezing after every pass kept ~10,000 such objects a
  minute. Quick passes leave their survivors to the collector;
* ``full_collect()`` unfreezes and collects everything, then freezes again: it runs when
  the frozen objects have grown by ``growth`` since the last time, checked every
  ``check_every`` seconds, so its pause is as rare as the garbage it frees.
  Counting the frozen objects walks all of them (60 ms with the GIL held at 10k VMs in the
  soak: their memory is cold), and only a freeze can add to them: they are counted again
  only after one.

Since then the fleet's values (``catkeeper/values.py``) are out of the collector's sight
altogether: at 10k VMs a full collection walks ~88,000 objects instead of ~196,000 (55-75 ms
instead of 140-190 in a Pilot load; it was 330-390 ms in the soak), and a remade VM no longer
adds to the frozen objects.

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

SLOW_PASS_MS = 20.0
GROWTH = 0.25
CHECK_EVERY_S = 60.0


class FrozenHeap:
    """Freezes long-lived objects out of the collector's full passes (see the module text)."""

    def __init__(
        self,
        mono: Callable[[], float] = time.monotonic,
        *,
        slow_pass_ms: float = SLOW_PASS_MS,
        growth: float = GROWTH,
        check_every: float = CHECK_EVERY_S,
        count_frozen: Callable[[], int] = gc.get_freeze_count,
    ) -> None:
        self._mono = mono
        self._count_frozen = count_frozen
        self.slow_pass_ms = slow_pass_ms
        self.growth = growth
        self.check_every = check_every
        self._on = False
        self.full_passes = 0  # full passes the collector made itself since start()
        self.freezes = 0  # of which slow ones, whose survivors were frozen
        self.last_full_ms: float | None = None
        self.last_found = 0  # unreachable objects the last full_collect() found and freed
        self._baseline = 0  # objects frozen right after everything was last collected
        self._frozen = 0  # objects frozen when last counted …
        self._counted_after = 0  # … which was after this many freezes
        self._pass_started: float | None = None
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
        self._baseline = self._recount()

    def due(self) -> bool:
        """The frozen objects grew by ``growth`` since everything was last collected: some
        of that is likely garbage the freezing keeps."""
        if not self._on:
            return False
        frozen = self._frozen if self._counted_after == self.freezes else self._recount()
        return frozen > self._baseline * (1 + self.growth)

    def _recount(self) -> int:
        self._frozen, self._counted_after = self._count_frozen(), self.freezes
        return self._frozen

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
            self.last_found = gc.collect()
        finally:
            if self._on:
                gc.freeze()
                self._baseline = self._recount()
                gc.callbacks.append(self._after_pass)
        self.last_full_ms = (self._mono() - started) * 1000
        return self.last_full_ms

    def keep_after(self, settled: Callable[[], Awaitable[object]]) -> None:
        """On the running loop: start once ``settled`` returns (the cold load is done), then
        collect everything whenever it is ``due()``, until ``stop()``."""
        self._task = asyncio.get_running_loop().create_task(self._keep(settled), name="heap")

    async def _keep(self, settled: Callable[[], Awaitable[object]]) -> None:
        await settled()
        self.start()
        while True:
            await asyncio.sleep(self.check_every)
            if self.due():
                took = self.full_collect()
                log.info(
                    "full collection: %.0f ms, freed %d objects, %d kept (%d freezes)",
                    took, self.last_found, self._baseline, self.freezes,
                )  # fmt: skip

    def _after_pass(self, phase: str, info: dict[str, Any]) -> None:
        # Runs inside the collector, on whichever thread allocated: only cheap list moves.
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._pass_started = self._mono()
            return
        self.full_passes += 1
        started, self._pass_started = self._pass_started, None
        if started is not None and (self._mono() - started) * 1000 >= self.slow_pass_ms:
            gc.freeze()
            self.freezes += 1  # after the freeze: a count taken in between sees it
