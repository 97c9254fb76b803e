"""One creation in progress: what it reports, what it made, and how to take it back.

Each step that makes something registers how to undo it on the ``Run``; when a later step
fails, ``rollback`` removes everything made so far, newest first, and says what it removed
(and what it could not).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import IO, TypeVar

import libvirt

from catkeeper.backend.actions import ActionError
from catkeeper.backend.errors import describe
from catkeeper.backend.host import HostSession
from catkeeper.backend.vm import storage
from catkeeper.backend.vm.common import on_host
from catkeeper.backend.vm.create.spec import CreateSpec
from catkeeper.model import VM

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class CreateProgress:
    step: str
    message: str
    done: int | None = None  # bytes (uploads, downloads)
    total: int | None = None


class CreateError(ActionError):
    """A creation failed; everything it had made was removed (``str()`` says what)."""

    def __init__(self, message: str, *, step: str, code: int | None = None) -> None:
        super().__init__(message, code=code)
        self.step = step


@dataclass(frozen=True)
class Created:
    ref: str
    uuid: str
    vm: VM | None
    volumes: tuple[str, ...]  # volumes made for it (paths on the host)
    install_pending: bool = False  # a network install runs: see netinstall.InstallWatcher


@dataclass
class Run:
    session: HostSession
    spec: CreateSpec
    say: Callable[[CreateProgress], None]
    attempt: str
    undo: list[tuple[str, Callable[[], Awaitable[object]]]] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    step: str = "check the input"
    pool: str = ""  # where new volumes go: settled by the preflight

    def progress(self, message: str, done: int | None = None, total: int | None = None) -> None:
        try:
            self.say(CreateProgress(self.step, message, done, total))
        except Exception:  # a broken progress display must not leave half a VM behind
            log.exception("create progress callback failed")

    def begin(self, step: str, message: str | None = None) -> None:
        self.step = step
        self.progress(message or step)

    async def call(self, fn: Callable[[libvirt.virConnect], T], timeout: float | None = None) -> T:
        return await on_host(self.session, f"{self.attempt}: {self.step}", fn, timeout=timeout)

    async def new_volume(self, xml: str) -> str:
        pool_name = self.pool

        def make(conn: libvirt.virConnect) -> str:
            return str(storage.create_volume(storage.pool_by_name(conn, pool_name), xml).path())

        path = await self.call(make)
        self.made(path)
        return path

    def made(self, path: str) -> None:
        """``path`` is a new volume of this VM: removed again if a later step fails."""
        self.volumes.append(path)
        self.undo.append((f"volume {path}", lambda: self.session.call(
            lambda c: storage.delete_volume_by_path(c, path), what=f"removing {path}"
        )))  # fmt: skip

    async def upload(self, path: str, source: bytes | IO[bytes], size: int) -> None:
        await storage.upload(
            self.session,
            path,
            source,
            size,
            on_progress=lambda done, total: self.progress(self.step, done, total),
            what=f"{self.attempt}: {self.step}",
        )

    async def rollback(self) -> list[str]:
        notes = []
        for what, fn in reversed(self.undo):
            try:
                await fn()
                notes.append(what)
            except Exception as exc:
                notes.append(f"{what} (NOT removed: {describe(exc)})")
        self.undo.clear()
        return notes
