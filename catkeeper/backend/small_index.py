"""Indexes from a key to a few values, held in tuples rather than sets.

The collector walks every set in each of its full passes, but stops walking a tuple of
strings the first time it looks at it. At 10k VMs the per-MAC and per-address indexes
were ~18,000 sets, walked in every pass with the GIL held (catkeeper/heap.py). Their
entries hold one value, rarely a few, so a tuple's linear search costs nothing.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def index_add(index: dict[K, tuple[V, ...]], key: K, value: V) -> None:
    held = index.get(key, ())
    if value not in held:
        index[key] = (*held, value)


def index_discard(index: dict[K, tuple[V, ...]], key: K, value: V) -> None:
    """Take ``value`` from ``key``'s entry; an entry left empty goes."""
    rest = tuple(v for v in index.get(key, ()) if v != value)
    if rest:
        index[key] = rest
    else:
        index.pop(key, None)
