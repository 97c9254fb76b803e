"""Per-VM work on the event loop, a slice per turn of the loop.

When libvirtd restarts, every host it serves drops at once and comes back at once: each
one marks its 500 VMs stale, then builds them again, and in the soak (20 hosts x 500 VMs)
those turns ran back to back and held the loop for half a second (keys waited as long).
Done ``PER_TURN`` VMs at a time, the hosts' slices interleave with everything else the loop
has to do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")
R = TypeVar("R")

PER_TURN = 200


async def map_in_turns(
    items: Mapping[K, V], make: Callable[[K, V], R], per_turn: int = PER_TURN
) -> dict[K, R]:
    """``{key: make(key, value)}``, yielding to the loop after every ``per_turn`` items."""
    out: dict[K, R] = {}
    for done, (key, value) in enumerate(list(items.items()), start=1):
        out[key] = make(key, value)
        if done % per_turn == 0:
            await asyncio.sleep(0)
    return out
