"""A unix-socket relay that adds faults in front of libvirtd's socket (for bench/soak.py).

``tests/daemons.py``'s ``DelayRelay`` is the model (and soak.py uses it as is for the ssh
hosts, in front of sshd's TCP port); this one listens on a unix socket, so a test-driver
host opened as ``test+unix:///abs/node.xml?socket=RELAY`` reaches the real libvirtd through
it, with no ssh and no TCP. Every relay shares one event loop on one thread.

Faults, switched while it runs:

* ``delay``: each chunk is held this long in each direction (pipelined, like a long link);
  ``1.0`` makes a 2 s round trip;
* ``blackhole``: connections are accepted (and held), nothing moves either way — a hung host;
  turning it off lets held data flow again;
* ``refuse()``: the listener closes and every relayed connection is aborted, so the next
  connect fails with ECONNREFUSED (the socket file stays, nobody listens) — a host that is
  down; ``accept()`` listens again;
* ``close_connections()``: abort every relayed connection once (a crashed daemon).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
CHUNK = 65536


class RelayLoop:
    """One asyncio loop on a daemon thread for all relays."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="soak-relays", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


class UnixRelay:
    """``path`` (a unix socket we create) → ``target`` (libvirtd's unix socket)."""

    def __init__(self, relays: RelayLoop, path: str, target: str, delay: float = 0.0) -> None:
        self._relays = relays
        self._loop = relays.loop
        self.path = path
        self.target = target
        self.delay = delay  # read per chunk: may be changed while running
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- control (from any thread) ----------------------------------------------------

    def start(self) -> UnixRelay:
        self._relays.run(self._listen())
        self.blackhole = False
        return self

    @property
    def blackhole(self) -> bool:
        return not self._flowing.is_set()

    @blackhole.setter
    def blackhole(self, on: bool) -> None:
        self._loop.call_soon_threadsafe(self._flowing.clear if on else self._flowing.set)

    def refuse(self) -> None:
        self._relays.run(self._refuse())

    def accept(self) -> None:
        if self._server is None:
            self._relays.run(self._listen())

    def close_connections(self) -> None:
        self._loop.call_soon_threadsafe(self._abort_all)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._relays.run(self._shutdown())
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    # ---- on the relay loop ------------------------------------------------------------

    async def _listen(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # the socket file a refuse() left behind
        self._server = await asyncio.start_unix_server(self._handle, self.path)

    async def _refuse(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()  # the socket file stays: connecting now gets ECONNREFUSED
        self._abort_all()

    def _abort_all(self) -> None:
        for w in list(self._writers):
            w.transport.abort()

    async def _shutdown(self) -> None:
        await self._refuse()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(cw)
        self.accepted += 1
        tw: asyncio.StreamWriter | None = None
        try:
            await self._flowing.wait()  # a hung host: accepted, then silence
            tr, tw = await asyncio.open_unix_connection(self.target)
            self._writers.add(tw)
            pipes = [
                asyncio.ensure_future(self._pipe(cr, tw)),
                asyncio.ensure_future(self._pipe(tr, cw)),
            ]
            try:
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for p in pipes:
                    p.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        except OSError:
            pass
        finally:
            self._tasks.discard(task)
            for w in (cw, tw):
                if w is not None:
                    self._writers.discard(w)
                    w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - self._loop.time()))
                await self._flowing.wait()
                if not data:
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(send())
        try:
            while True:
                data = await reader.read(CHUNK)
                queue.put_nowait((self._loop.time() + self.delay, data))
                if not data or sender.done():
                    break
            await sender
        finally:
            sender.cancel()
