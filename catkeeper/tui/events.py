"""Backend events → screens: batched for a moment so a refresh storm repaints once, folded
into the ``FleetStore`` and handed on as one ``FleetUpdated`` per batch.

Events arrive through ``Fleet.subscribe`` on the app's loop, possibly outside the app's
context, where Textual timers cannot tick: a plain loop timer starts the batch and the
app's ``call_later`` runs the flush on its own message queue."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from catkeeper.backend.events import DomainEvent, FleetEvent, HostChanged, InventoryLoaded
from catkeeper.screens.messages import FleetUpdated
from catkeeper.screens.store import FleetStore

# Long enough to merge a burst of events into one repaint, short enough to feel instant.
BATCH_SECONDS = 0.05
# VMs folded in per turn of the loop. When every host reconnects at once (a libvirtd
# restart: 21 hosts x 500 VMs) one batch carried 10,000 changed VMs, and folding them plus the
# table's update held the loop ~385 ms; in slices of this size keys get in between (a slice
# of 2,000 still held it 230 ms: the table's per-row work is ~0.1 ms a VM).
VMS_PER_SLICE = 500


def _weight(event: FleetEvent) -> int:
    return len(event.vms) if isinstance(event, InventoryLoaded) else 1


class EventPump:
    def __init__(
        self,
        store: FleetStore,
        clock: Callable[[], float],
        call_later: Callable[[Callable[[], None]], object],
        post: Callable[[FleetUpdated], None],
    ) -> None:
        self.store = store
        self._clock = clock
        self._call_later = call_later
        self._post = post
        self.pending: list[FleetEvent] = []
        self.handle: asyncio.Handle | None = None
        self.serial = 0  # counts batches, so tests can wait until screens saw them all

    @property
    def busy(self) -> bool:
        return bool(self.pending) or self.handle is not None

    def on_event(self, event: FleetEvent) -> None:
        if isinstance(event, DomainEvent):
            return  # the VmChanged that follows carries what the screens show
        self.pending.append(event)
        if self.handle is None:
            loop = asyncio.get_running_loop()
            self.handle = loop.call_later(BATCH_SECONDS, lambda: self._call_later(self.flush))

    def flush(self) -> None:
        self.handle = None
        taken, weight = 0, 0
        for event in self.pending:
            taken += 1
            weight += _weight(event)
            if weight >= VMS_PER_SLICE:
                break
        events, self.pending = self.pending[:taken], self.pending[taken:]
        # A host's own news goes in every slice, not behind other hosts' VMs: after a
        # libvirtd restart the last of 21 hosts showed "up" 2 s after it was, its state
        # queued behind ten thousand rows (its own rows follow in their slice).
        events += [e for e in self.pending if isinstance(e, HostChanged)]
        self.pending = [e for e in self.pending if not isinstance(e, HostChanged)]
        changes = self.store.apply(events, self._clock())
        if changes:
            self.serial += 1
            self._post(FleetUpdated(changes, self.serial))
        if self.pending and self.handle is None:
            # The rest on the next turn, after what queued meanwhile (keys, repaints).
            loop = asyncio.get_running_loop()
            self.handle = loop.call_soon(lambda: self._call_later(self.flush))

    def close(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
