"""Count the libvirt calls that really reach the daemon, on the wire.

``RpcCounter`` is a unix-socket relay in front of libvirtd's socket: catkeeper connects to it
with ``qemu+unix:///system?socket=PATH``, and every RPC call it makes crosses the relay,
which reads the message headers (libvirt's RPC protocol: a 4-byte length, then program,
version, procedure, type, serial and status, XDR big-endian) and counts calls per
procedure. Nothing is changed or held back: libvirtd and catkeeper talk as they would over
the plain socket. This is how the tests know that the leases were read with one call per
network and that no per-VM call was made, without trusting catkeeper's own report.

Procedure numbers are libvirt's stable ABI (``src/remote/remote_protocol.x``); the test
``test_rpc_counter_names_the_procedures`` checks each one used here against a direct call.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REMOTE_PROGRAM = 0x20008086
CALL_TYPES = (0, 4)  # VIR_NET_CALL, VIR_NET_CALL_WITH_FDS

# remote_protocol.x
PROC_LOOKUP_BY_UUID = 24  # REMOTE_PROC_DOMAIN_LOOKUP_BY_UUID
PROC_LIST_ALL_DOMAINS = 273  # REMOTE_PROC_CONNECT_LIST_ALL_DOMAINS
PROC_LIST_ALL_NETWORKS = 283  # REMOTE_PROC_CONNECT_LIST_ALL_NETWORKS
PROC_NETWORK_GET_DHCP_LEASES = 341  # REMOTE_PROC_NETWORK_GET_DHCP_LEASES
PROC_DOMAIN_INTERFACE_ADDRESSES = 353  # REMOTE_PROC_DOMAIN_INTERFACE_ADDRESSES

DEFAULT_TARGET = "/run/libvirt/libvirt-sock"


def _xdr_string(data: bytes, at: int) -> tuple[bytes, int]:
    (n,) = struct.unpack_from(">I", data, at)
    at += 4
    return data[at : at + n], at + (n + 3) // 4 * 4


def interface_addresses_args(payload: bytes) -> tuple[str, str, int]:
    """(domain name, UUID, source flag) of a ``virDomainInterfaceAddresses`` call."""
    name, at = _xdr_string(payload, 0)
    raw = payload[at : at + 16]
    uuid = "-".join(raw[a:b].hex() for a, b in ((0, 4), (4, 6), (6, 8), (8, 10), (10, 16)))
    at += 16 + 4  # uuid, id
    (source,) = struct.unpack_from(">I", payload, at)
    return name.decode(), uuid, source


@dataclass
class RpcCounter:
    """A relay at ``path`` in front of ``target``, counting the RPC calls that cross it.

    ``tcp_host``: listen on that loopback address (a free port) instead, for a URI that
    names a host (``qemu+tcp://127.0.0.2:PORT/system``): catkeeper then treats the daemon
    as a remote one (no neighbour table of its own to read), while libvirtd still sees a
    local unix-socket client.
    """

    path: Path
    target: str = DEFAULT_TARGET
    tcp_host: str | None = None
    # Seconds each chunk from the daemon is held (pipelined, like tests/daemons.py's
    # DelayRelay): calls made side by side then overlap for certain, calls made one after
    # another never do, whatever the machine's speed.
    reply_delay: float = 0.0
    calls: Counter[int] = field(default_factory=Counter)
    payloads: list[tuple[int, bytes]] = field(default_factory=list)
    max_in_flight: Counter[int] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = threading.Lock()
        self._pending: dict[tuple[int, int], int] = {}  # (connection, serial) → procedure
        self._in_flight: Counter[int] = Counter()
        self.port = 0

    @property
    def uri(self) -> str:
        if self.tcp_host is not None:
            return f"qemu+tcp://{self.tcp_host}:{self.port}/system"
        return f"qemu+unix:///system?socket={self.path}"

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.payloads.clear()
            self.max_in_flight.clear()

    def count(self, proc: int) -> int:
        with self._lock:
            return self.calls[proc]

    def interface_address_calls(self) -> list[tuple[str, str, int]]:
        """(name, UUID, source) of every ``interfaceAddresses`` call so far."""
        with self._lock:
            raw = [p for proc, p in self.payloads if proc == PROC_DOMAIN_INTERFACE_ADDRESSES]
        return [interface_addresses_args(p) for p in raw]

    def start(self, timeout: float = 5.0) -> RpcCounter:
        ready = threading.Event()

        async def serve() -> None:
            if self.tcp_host is not None:
                self._server = await asyncio.start_server(self._handle, self.tcp_host, 0)
                self.port = self._server.sockets[0].getsockname()[1]
            else:
                self._server = await asyncio.start_unix_server(self._handle, str(self.path))
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="RpcCounter", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("RPC counter did not start")
        return self

    def _seen(self, link: int, message: bytes) -> None:
        """A client → daemon message."""
        if len(message) < 28:
            return
        prog, _vers, proc, kind, serial = struct.unpack_from(">IIiiI", message, 4)
        if prog == REMOTE_PROGRAM and kind in CALL_TYPES:
            with self._lock:
                self.calls[proc] += 1
                if proc == PROC_DOMAIN_INTERFACE_ADDRESSES:
                    self.payloads.append((proc, message[28:]))
                self._pending[(link, serial)] = proc
                self._in_flight[proc] += 1
                self.max_in_flight[proc] = max(self.max_in_flight[proc], self._in_flight[proc])

    def _answered(self, link: int, message: bytes) -> None:
        """A daemon → client message: a reply ends its call's flight."""
        if len(message) < 28:
            return
        prog, _vers, _proc, kind, serial = struct.unpack_from(">IIiiI", message, 4)
        if prog == REMOTE_PROGRAM and kind in (1, 5):  # VIR_NET_REPLY, REPLY_WITH_FDS
            with self._lock:
                proc = self._pending.pop((link, serial), None)
                if proc is not None:
                    self._in_flight[proc] -= 1

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._relay(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.target)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)

        link = id(writer)

        def frames(buf: bytearray, seen: Callable[[int, bytes], None]) -> None:
            while len(buf) >= 4:
                (n,) = struct.unpack_from(">I", buf)
                if len(buf) < n:
                    break
                seen(link, bytes(buf[:n]))
                del buf[:n]

        async def to_daemon() -> None:
            buf = bytearray()
            while data := await reader.read(65536):
                buf += data
                frames(buf, self._seen)  # counted before the daemon can answer
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def to_client() -> None:
            queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

            async def send() -> None:
                buf = bytearray()
                while True:
                    due, data = await queue.get()
                    await asyncio.sleep(max(0.0, due - self._loop.time()))
                    if not data:
                        writer.close()
                        return
                    buf += data
                    frames(buf, self._answered)
                    writer.write(data)
                    await writer.drain()

            sender = asyncio.ensure_future(send())
            try:
                while True:
                    data = await up_reader.read(65536)
                    queue.put_nowait((self._loop.time() + self.reply_delay, data))
                    if not data:
                        break
                await sender
            finally:
                sender.cancel()

        pipes = [asyncio.ensure_future(to_daemon()), asyncio.ensure_future(to_client())]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        except Exception:
            pass
        finally:
            for p in pipes:
                p.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.close()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.transport.abort()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await asyncio.sleep(0)
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        self._thread.join(timeout)
        self._thread = None
        self._loop.close()
        if self.tcp_host is None:
            with contextlib.suppress(OSError):
                self.path.unlink()

    def __enter__(self) -> RpcCounter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
