"""A domain's serial console as an async iterator of text chunks.

``virDomainOpenConsole`` attaches a ``virStream`` to the guest's console. The stream is
non-blocking and event driven: libvirt's event thread says "readable", the host's worker
thread drains it (``recv`` never blocks there), and the chunks reach the asyncio loop
through a queue, so neither the loop nor a host thread ever waits on the guest.

    serial = await SerialConsole.open(session, vm.uuid)
    async for text in serial:          # ends when the console closes (VM stopped, taken over)
        ...
    await serial.aclose()

Read-only by design: the TUI shows the output, it does not type into the guest.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import libvirt

from catkeeper.backend.errors import BackendError, describe

if TYPE_CHECKING:
    from catkeeper.backend.host import HostSession

log = logging.getLogger(__name__)

_EVENTS = (
    libvirt.VIR_STREAM_EVENT_READABLE
    | libvirt.VIR_STREAM_EVENT_ERROR
    | libvirt.VIR_STREAM_EVENT_HANGUP
)
_CHUNK = 65536
_EAGAIN = -2  # what a non-blocking virStream.recv returns when nothing is buffered


class SerialError(BackendError):
    """The console could not be opened or broke; ``str()`` says why, for a person."""


class SerialConsole:
    """An open serial console; iterate for text. ``closed_reason`` says why it ended."""

    def __init__(self, session: HostSession, uuid: str, name: str) -> None:
        self.session = session
        self.uuid = uuid
        self.name = name
        self.closed_reason: str | None = None
        self._stream: Any = None  # libvirt.virStream
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._loop = asyncio.get_running_loop()
        self._reading = False
        self._missed = 0  # events that came while a read was under way: read again after it
        self._closed = False

    @classmethod
    async def open(
        cls, session: HostSession, uuid: str, *, device: str | None = None, force: bool = False
    ) -> SerialConsole:
        """Attach to the domain's console (``device`` None: the first one).

        Without ``force`` a console someone else holds (``virsh console``) is left alone and
        this raises; with it, theirs is disconnected (``VIR_DOMAIN_CONSOLE_FORCE``).
        """
        if session.readonly:
            raise SerialError(f"{session.name}: the serial console needs a read-write connection")
        console = cls(session, uuid, uuid)

        def attach(conn: libvirt.virConnect) -> str:
            dom = conn.lookupByUUIDString(uuid)
            stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
            flags = libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else libvirt.VIR_DOMAIN_CONSOLE_SAFE
            try:
                dom.openConsole(device, stream, flags)
                stream.eventAddCallback(_EVENTS, console._on_event, None)
            except libvirt.libvirtError:
                with contextlib.suppress(libvirt.libvirtError):
                    stream.abort()
                raise
            console._stream = stream
            return str(dom.name())

        try:
            console.name = await session.call(attach, what="opening the serial console")
        except libvirt.libvirtError as exc:
            raise SerialError(f"{session.name}: serial console: {describe(exc)}") from None
        log.info("host %s: serial console of %s open", session.name, console.name)
        return console

    # ---- reading ----------------------------------------------------------------------

    def _on_event(self, stream: Any, events: int, _opaque: Any) -> None:
        # On libvirt's event thread. Mute the stream until the worker has drained it, or a
        # level-triggered "readable" would fire again and again meanwhile.
        with contextlib.suppress(libvirt.libvirtError):
            stream.eventUpdateCallback(0)
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
            self._loop.call_soon_threadsafe(self._schedule_read, events)

    def _schedule_read(self, events: int) -> None:
        if self._closed:
            return
        if self._reading:
            # The callback is muted again until someone reads: dropping this event (say the
            # hang-up after the VM stopped) would leave the console waiting forever.
            self._missed |= events
            return
        self._reading = True
        self._loop.create_task(self._read(events))

    def _drain(self) -> tuple[bytes, bool]:
        """On a host thread: everything buffered now, and whether the stream ended."""
        stream = self._stream
        chunks: list[bytes] = []
        while True:
            data = stream.recv(_CHUNK)
            if data == _EAGAIN:
                stream.eventUpdateCallback(_EVENTS)  # wake us when more arrives
                return b"".join(chunks), False
            if not data:
                return b"".join(chunks), True
            chunks.append(data)

    async def _read(self, events: int) -> None:
        try:
            if self._stream is None:
                return
            broken = events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP)
            if broken and not events & libvirt.VIR_STREAM_EVENT_READABLE:
                self._finish("the console closed (hang-up)")
                return
            data, ended = await self.session.call(
                lambda _conn: self._drain(), what="reading the serial console"
            )
            if data:
                self._queue.put_nowait(self._decoder.decode(data))
            if ended:
                self._finish("the console closed (the VM stopped or someone took it over)")
        except Exception as exc:
            self._finish(describe(exc))
        finally:
            self._reading = False
            missed, self._missed = self._missed, 0
            if missed and self.closed_reason is None:
                self._schedule_read(missed)

    def _finish(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
            tail = self._decoder.decode(b"", final=True)
            if tail:
                self._queue.put_nowait(tail)
            self._queue.put_nowait(None)

    def __aiter__(self) -> SerialConsole:
        return self

    async def __anext__(self) -> str:
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # later readers see the end too
            raise StopAsyncIteration
        return item

    # ---- closing ------------------------------------------------------------------------

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._finish("closed")
        stream, self._stream = self._stream, None
        if stream is None:
            return

        def detach(_conn: libvirt.virConnect) -> None:
            with contextlib.suppress(libvirt.libvirtError):
                stream.eventRemoveCallback()
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()

        with contextlib.suppress(Exception):
            await self.session.call(detach, timeout=5, what="closing the serial console")


async def open_serial(session: HostSession, uuid: str, *, force: bool = False) -> SerialConsole:
    """The TUI's entry point: an open :class:`SerialConsole` for the domain."""
    return await SerialConsole.open(session, uuid, force=force)
