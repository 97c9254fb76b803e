"""Worker threads for blocking libvirt calls: per host, made on demand, bounded fleet-wide.

libvirt-python blocks (it releases the GIL), so every call for a host runs on a thread of
that host's ``HostExecutor``, never on a shared pool: a hung host must only ever block its
own threads. The rules, and why:

* **Threads are made when a call finds none idle.** A host has at most ``max_threads``
  (``timing.workers_per_host``): enough to overlap the per-domain round trips of a cold load
  over a slow link. The most recently idle thread takes the next call (LIFO), so the spare
  ones really go idle and end.
* **A host's first thread is its own; every further one takes a token from the fleet's
  ``ThreadBudget``** (``timing.shared_workers``). So the process never has more than
  ``hosts + shared_workers`` worker threads: at 100 hosts the old fixed 8 per host made 800
  threads; this makes at most 100 + 56 during the cold load. A spare thread gives its token
  back after ``SPARE_IDLE_S`` without work, so another host can have it; the host's own
  thread ends after ``idle_timeout`` (``timing.worker_idle``), so a host refreshed every
  10 s keeps exactly one.
* **A hung host delays no other**: its stuck calls hold its own thread and at most
  ``max_threads - 1`` tokens; every other host still has its own first thread, so it keeps
  working (with fewer threads until the tokens come back). Calls a host cannot start yet
  wait in that host's queue, not in a shared one.
* **An idle thread holds nothing**: it drops the job (its future and result) before it
  waits. Holding the last result kept one bulk read (500 domain handles and their stats)
  alive per idle thread: at 20 hosts x 500 VMs RSS grew 79 → 141 MB in the first minute.
* The threads are daemons and never joined: a call stuck in a dead TCP connection must not
  keep ``catkeeper --json`` from exiting once its timeout has passed (ThreadPoolExecutor
  joins its workers at interpreter exit). ``shutdown`` lets queued calls (closing the
  connection) run, then the threads end.

Measured at 100 hosts x 100 VMs (test+unix through a real libvirtd, 2 cores, backend
only): 803 → 103 threads after the cold load (peak 159 during it), RSS 125 → 156 MB in the
first 40 s before, a flat 96 MB after. bench/remote_bench.py (8 hosts x 200 VMs over ssh,
10 ms each way) did not slow down (2.45 → 2.29 s for the fleet, 2.21 → 2.15 s for one
host): 8 hosts x 7 spare threads fit in the default budget.
"""

from __future__ import annotations

import concurrent.futures
import threading
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...]]
# A spare thread (one holding a budget token) ends after this long without work.
SPARE_IDLE_S = 1.0


class ThreadBudget:
    """Tokens for worker threads beyond each host's first, shared by a fleet's hosts."""

    def __init__(self, tokens: int) -> None:
        self.tokens = max(0, tokens)
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        return self._used

    def try_take(self) -> bool:
        with self._lock:
            if self._used >= self.tokens:
                return False
            self._used += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self._used -= 1


class _Worker:
    __slots__ = ("job", "token", "wake")

    def __init__(self, job: _Job, token: bool) -> None:
        self.job: _Job | None = job
        self.token = token  # True: holds a budget token; False: the host's own thread
        self.wake = threading.Event()


class HostExecutor(concurrent.futures.Executor):
    def __init__(
        self,
        name: str,
        max_threads: int,
        *,
        budget: ThreadBudget | None = None,
        idle_timeout: float = 30.0,
    ) -> None:
        self.name = name
        self.max_threads = max(1, max_threads)
        self.idle_timeout = idle_timeout
        self._budget = budget if budget is not None else ThreadBudget(self.max_threads - 1)
        self._lock = threading.Lock()
        self._backlog: deque[_Job] = deque()
        self._idle: list[_Worker] = []  # most recently idle last
        self._threads = 0
        self._own_taken = False
        self._serial = 0
        self._shutdown = False

    @property
    def threads(self) -> int:
        """Worker threads alive now (busy or idle)."""
        return self._threads

    @property
    def queued(self) -> int:
        """Calls waiting for a thread."""
        return len(self._backlog)

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        call = (lambda: fn(*args, **kwargs)) if kwargs else fn
        job: _Job = (future, call, () if kwargs else args)
        with self._lock:
            if self._shutdown:
                raise RuntimeError("executor is shut down")
            if self._idle:
                worker = self._idle.pop()
                worker.job = job
                worker.wake.set()
            elif not self._spawn_locked(job):
                self._backlog.append(job)
        return future

    def shutdown(self, wait: bool = False, *, cancel_futures: bool = False) -> None:
        # Never waits: a thread may be stuck in a dead host's socket for minutes.
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._backlog:
                    self._backlog.popleft()[0].cancel()
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.wake.set()

    def _spawn_locked(self, job: _Job) -> bool:
        """Start a thread for ``job`` if this host may have one more; caller holds the lock."""
        if self._threads >= self.max_threads:
            return False
        if not self._own_taken:
            token = False
            self._own_taken = True
        elif self._budget.try_take():
            token = True
        else:
            return False
        self._threads += 1
        self._serial += 1
        worker = _Worker(job, token)
        name = f"libvirt-{self.name}-{self._serial}"
        threading.Thread(target=self._work, args=(worker,), name=name, daemon=True).start()
        return True

    def _work(self, worker: _Worker) -> None:
        while True:
            job, worker.job = worker.job, None
            if job is not None:
                future, fn, args = job
                del job
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args))
                    except BaseException as exc:  # handed to the awaiting side, not lost
                        # The traceback keeps the failed call's frames, and with them its
                        # locals: domain handles, each holding its libvirt connection (an
                        # eventfd, the client) open. The awaiting side makes that a cycle
                        # (future -> exception -> frames -> future) which the collector
                        # may have frozen (catkeeper/heap.py): at 20 hosts with faults,
                        # dropped connections stayed until the next full collection.
                        # The lines of the traceback stay; the locals go now.
                        traceback.clear_frames(exc.__traceback__)
                        future.set_exception(exc)
                # Drop every reference to the call and its result before going idle.
                del future, fn, args
            with self._lock:
                if self._backlog:
                    worker.job = self._backlog.popleft()
                    # Tokens may have come back since this call was queued.
                    if self._backlog and self._spawn_locked(self._backlog[0]):
                        self._backlog.popleft()
                    continue
                if self._shutdown:
                    self._exit_locked(worker)
                    return
                worker.wake.clear()
                self._idle.append(worker)
            worker.wake.wait(
                min(self.idle_timeout, SPARE_IDLE_S) if worker.token else self.idle_timeout
            )
            with self._lock:
                if worker.job is not None:
                    continue
                if worker in self._idle:
                    self._idle.remove(worker)
                self._exit_locked(worker)
                return

    def _exit_locked(self, worker: _Worker) -> None:
        self._threads -= 1
        if worker.token:
            self._budget.give_back()
        else:
            self._own_taken = False
