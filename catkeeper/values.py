"""Value objects the cycle collector does not walk.

A big fleet is mostly values: per VM one ``VM``, its parsed XML (``StaticInfo``), NICs,
disks, graphics, address sightings and the IP sources' answers, each a frozen dataclass of
strings, numbers, enum members and tuples of other such values. Such an object cannot be
part of a garbage reference cycle: nothing it reaches refers back to it (its fields are
immutable and hold no containers that could), so reference counting alone frees it. CPython's
collector walks it anyway, because every instance of a Python class is "tracked": at
20 hosts x 500 VMs these values were two thirds of the references a full collection walked
(196,000 tracked objects, 1.25 million references, 140-190 ms with the GIL held; with the
values and their tuples untracked 88,000 and 0.53 million, 55-75 ms; measured in a Pilot
load on a 2-core machine).

:class:`Value` untracks each instance when it is made (``PyObject_GC_UnTrack``, CPython's own
call for this; CPython does the same by itself for tuples and dicts holding only atomic
values), and the tuples among its fields, whose items are values too. Where ``ctypes`` cannot
reach that call (not CPython) instances stay tracked, which is only slower.

The rule that makes this safe, checked by ``tests/test_values.py`` for every subclass: the
fields hold only ``str``, ``int``, ``float``, ``bool``, ``None``, enum members, other values
and tuples of these. A field that could hold a list, a dict or an arbitrary object would
let a cycle through an untracked object go unfreed: such a class must not be a ``Value``.
"""

from __future__ import annotations

import ctypes
import dataclasses
from collections.abc import Callable


def _find_untrack() -> Callable[[object], None] | None:
    try:
        # pythonapi is a PyDLL: the call keeps the GIL, as touching the collector's lists must.
        untrack = ctypes.pythonapi.PyObject_GC_UnTrack
    except (AttributeError, ValueError):  # pragma: no cover - not CPython
        return None
    untrack.argtypes = [ctypes.py_object]
    untrack.restype = None
    return untrack


untrack: Callable[[object], None] | None = _find_untrack()
_TUPLE_FIELDS: dict[type, tuple[str, ...]] = {}  # per Value class, its tuple fields' names


class Value:
    """Base of a frozen dataclass of values: see the module text for the rule its fields
    follow. A subclass that needs its own ``__post_init__`` calls this one."""

    __slots__ = ()

    def __post_init__(self) -> None:
        if untrack is None:
            return
        untrack(self)
        cls = type(self)
        names = _TUPLE_FIELDS.get(cls)
        if names is None:
            names = _TUPLE_FIELDS[cls] = _tuple_field_names(cls)
        for name in names:
            items = getattr(self, name)
            if type(items) is tuple and items:  # () is a shared singleton, never tracked
                untrack(items)


def _tuple_field_names(cls: type) -> tuple[str, ...]:
    # Annotations are strings here (``from __future__ import annotations``).
    return tuple(
        f.name for f in dataclasses.fields(cls) if str(f.type).startswith(("tuple[", "Tuple["))
    )


def is_untracking() -> bool:
    """Whether values are taken out of the collector's sight on this interpreter."""
    return untrack is not None
