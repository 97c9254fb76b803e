"""Give freed heap memory back to the system after a big load.

Parsing thousands of domain XMLs on many threads leaves glibc holding the freed memory
(measured: 10,000 VMs on 20 hosts, 277 MB RSS before ``malloc_trim(0)``, 163 MB after).
Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


def release_freed_memory() -> None:
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
