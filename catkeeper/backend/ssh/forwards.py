"""Local listeners whose connections are carried elsewhere: VNC tunnels, the libvirt socket.

Every listener binds 127.0.0.1 (TCP) or lives in a private 0700 directory (unix socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from catkeeper.backend.ssh.targets import LOOPBACK

log = logging.getLogger(__name__)


class Tunnel:
    """A listener on 127.0.0.1 whose connections are carried to a target (a VNC server).

    ``local_port`` is the port a viewer connects to; ``connections`` counts the connections
    it has carried. Closing stops the listener, so the port refuses from then on.
    """

    local_host = LOOPBACK

    def __init__(self, target: str) -> None:
        self.target = target
        self.local_port = 0
        self.connections = 0
        self._closed = asyncio.Event()
        self._closer: Callable[[], None] | None = None
        self._on_close: list[Callable[[Tunnel], None]] = []

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def endpoint(self) -> tuple[str, int]:
        return self.local_host, self.local_port

    def _accept(self, orig_host: str, _orig_port: int) -> bool:
        # Bound to 127.0.0.1, so only local processes get here; count them for the tests
        # and the status line.
        self.connections += 1
        log.debug(
            "tunnel %s:%d → %s: connection from %s",
            LOOPBACK,
            self.local_port,
            self.target,
            orig_host,
        )
        return True

    def close(self) -> None:
        if self.closed:
            return
        self._closed.set()
        if self._closer is not None:
            with contextlib.suppress(Exception):
                self._closer()
        for cb in self._on_close:
            cb(self)
        log.info("tunnel %s:%d → %s closed", LOOPBACK, self.local_port, self.target)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Tunnel {LOOPBACK}:{self.local_port} → {self.target} ({state})>"


class LocalSocketRelay(Tunnel):
    """A loopback TCP port relayed to a unix socket on this machine.

    For a local domain whose VNC listens on a unix socket: viewer templates speak
    ``host:port``, so catkeeper offers one, bound to 127.0.0.1.
    """

    def __init__(self, path: str) -> None:
        super().__init__(f"unix:{path}")
        self.path = path
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> LocalSocketRelay:
        self._server = await asyncio.start_server(self._handle, LOOPBACK, 0)
        self.local_port = int(self._server.sockets[0].getsockname()[1])
        self._closer = self._stop
        return self

    def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._pipes:
            task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        self._accept(LOOPBACK, 0)
        try:
            ur, uw = await asyncio.open_unix_connection(self.path)
        except OSError as exc:
            log.info("relay to %s: %s", self.path, exc)
            writer.close()
            self._pipes.discard(task)
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                if dst.can_write_eof():
                    dst.write_eof()

        try:
            await asyncio.gather(pipe(reader, uw), pipe(ur, writer))
        finally:
            for w in (writer, uw):
                w.close()
            self._pipes.discard(task)


@dataclass
class LibvirtForward:
    """A local unix socket, in a private directory, forwarded to the remote libvirt socket."""

    uri: str  # DRIVER+unix:///PATH?socket=<socket_path>
    socket_path: str
    directory: str
    listener: Any  # asyncssh.SSHListener
    remote_socket: str = ""  # the socket on the host it reaches

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.listener.close()
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass(frozen=True)
class RemoteResult:
    """What a command run on the host over ssh produced."""

    exit_status: int | None  # None: killed by a signal or the channel closed early
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
