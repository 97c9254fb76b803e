"""Indexes of small tuples (backend/small_index.py): set semantics, nothing the collector keeps
walking."""

from __future__ import annotations

import gc

from catkeeper.backend.small_index import index_add, index_discard


def test_values_are_kept_once_in_the_order_added_and_an_emptied_entry_goes() -> None:
    index: dict[str, tuple[str, ...]] = {}
    for mac, uuid in [("m1", "a"), ("m1", "b"), ("m1", "a"), ("m2", "c")]:
        index_add(index, mac, uuid)
    assert index == {"m1": ("a", "b"), "m2": ("c",)}
    index_discard(index, "m1", "a")
    index_discard(index, "m1", "zzz")  # not there: nothing happens
    index_discard(index, "nope", "a")
    assert index == {"m1": ("b",), "m2": ("c",)}
    index_discard(index, "m2", "c")
    assert index == {"m1": ("b",)}


def test_the_collector_stops_walking_the_entries() -> None:
    index: dict[str, tuple[str, ...]] = {}
    for i in range(500):
        index_add(index, f"52:54:00:00:{i // 256:02x}:{i % 256:02x}", f"uuid-{i}")
        index_add(index, f"52:54:00:00:{i // 256:02x}:{i % 256:02x}", f"uuid-{i}-again")
    gc.collect()
    assert [key for key, held in index.items() if gc.is_tracked(held)] == []
