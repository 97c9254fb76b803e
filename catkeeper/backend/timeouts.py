"""Bounded waits, and cancelling a task for good, on Python 3.11.

On 3.11 ``asyncio.wait_for`` loses a cancel that arrives in the same pass of the loop as the
result it waits for: it returns the result and its task carries on as if never cancelled
(CPython gh-86296; 3.12 rebuilt ``wait_for`` on ``asyncio.timeout``, cpython#98518). A host
session's ``_run`` is a chain of such waits, so closing it (cancel, then await the task)
could wait forever: the teardown hang of tests/test_ssh_transport.py, about one run in ten
on a busy machine, where a worker's answer and the close met in one pass.

``within`` is the bounded wait built on ``asyncio.timeout``, which lets such a cancel
through; ruff bans ``asyncio.wait_for`` in the package (pyproject.toml). Libraries still
call ``wait_for`` inside our tasks (asyncssh's connect does), so ``cancel_and_wait``
cancels again while a task carries on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")

# How long a cancelled task may take to end before it is cancelled again: longer than any
# clean-up a cancelled task here does on the loop, short enough not to hold up a close.
RECANCEL_AFTER = 0.5


async def within(aw: Awaitable[T], seconds: float | None) -> T:
    """``await aw``, or ``TimeoutError`` after ``seconds`` (None: no bound); as
    ``asyncio.wait_for``, but a cancel of the caller is never lost."""
    try:
        async with asyncio.timeout(seconds):
            return await aw
    finally:
        # A failure's traceback keeps this frame and its callers', and ``aw`` (a failed
        # future) keeps the failure: a cycle that held the callers' locals (a lease pass's
        # network handle, a domain), and through them a dropped connection's client and
        # eventfd, until a full collection; never, once catkeeper/heap.py had frozen it
        # (eventfds +2 in a 5-minute soak, gone without the cycle). The callers that hold
        # the future drop it too (HostConnection._submit).
        del aw


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    """Cancel ``tasks`` and return once every one has ended, cancelling again each
    ``RECANCEL_AFTER`` seconds a task that carries on; their outcomes are not raised."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=RECANCEL_AFTER)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: an ending's error is not worth a warning here
