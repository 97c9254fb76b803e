"""libvirt's event loop: libvirtaio on a dedicated thread, shared by the whole process.

libvirt accepts one event implementation per process, bound for good, while the TUI, the
headless run and the tests each bring their own asyncio loop. So the libvirtaio loop lives on
its own daemon thread and handlers hop to their caller's loop with ``call_soon_threadsafe``.

libvirtaio itself assumes libvirt calls it on the loop's thread, but our libvirt calls run on
per-host worker threads (``virConnectOpen`` adds handles and timers from there). The loop
proxy below forwards the loop-touching calls to the loop's thread, in order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import libvirt
import libvirtaio

_lock = threading.Lock()
_started = False


class _LoopProxy:
    """The few asyncio loop methods libvirtaio uses, made safe to call from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, thread_id: int) -> None:
        self._loop = loop
        self._thread_id = thread_id

    def _here(self) -> bool:
        return threading.get_ident() == self._thread_id

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._here():
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def add_reader(self, fd: int, cb: Callable[..., Any], *args: Any) -> None:
        self._call(self._loop.add_reader, fd, cb, *args)

    def remove_reader(self, fd: int) -> None:
        self._call(self._loop.remove_reader, fd)

    def add_writer(self, fd: int, cb: Callable[..., Any], *args: Any) -> None:
        self._call(self._loop.add_writer, fd, cb, *args)

    def remove_writer(self, fd: int) -> None:
        self._call(self._loop.remove_writer, fd)

    def create_task(
        self, coro: Coroutine[Any, Any, Any], **_: Any
    ) -> asyncio.Task[Any] | concurrent.futures.Future[Any]:
        # libvirtaio only ever cancels what it gets back; a concurrent future's cancel()
        # reaches the task on the loop's thread.
        if self._here():
            return self._loop.create_task(coro)
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)


def silence_libvirt_stderr() -> None:
    """libvirt prints every error to stderr by default, which would scribble on the TUI."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def ensure_event_loop() -> None:
    """Start the libvirt event thread once; call before opening any connection."""
    global _started
    with _lock:
        if _started:
            return
        silence_libvirt_stderr()
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            impl = libvirtaio.virEventAsyncIOImpl(loop=loop)
            impl.loop = _LoopProxy(loop, threading.get_ident())
            impl.register()
            loop.call_soon(ready.set)
            loop.run_forever()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        if not ready.wait(10):
            raise RuntimeError("the libvirt event thread did not start")
        _started = True
