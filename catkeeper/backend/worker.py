"""Per-host worker threads for blocking libvirt calls.

Each host gets its own small pool so that a hung host only ever blocks its own threads. The
threads are daemons and never joined: a call stuck in a dead TCP connection must not keep
``catkeeper --json`` from exiting once its timeout has passed (ThreadPoolExecutor joins its
workers at interpreter exit).
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...]] | None


class HostExecutor(concurrent.futures.Executor):
    def __init__(self, name: str, threads: int) -> None:
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._shutdown = False
        for i in range(max(1, threads)):
            threading.Thread(target=self._work, name=f"libvirt-{name}-{i}", daemon=True).start()
        self._threads = max(1, threads)

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        if self._shutdown:
            raise RuntimeError("executor is shut down")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        call = (lambda: fn(*args, **kwargs)) if kwargs else fn
        self._queue.put((future, call, () if kwargs else args))
        return future

    def shutdown(self, wait: bool = False, *, cancel_futures: bool = False) -> None:
        # Never waits: a thread may be stuck in a dead host's socket for minutes.
        self._shutdown = True
        for _ in range(self._threads):
            self._queue.put(None)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to the awaiting side, not lost
                future.set_exception(exc)
