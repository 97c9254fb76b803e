"""Many hosts at once: one ``HostSession`` each, all connecting concurrently.

The hosts share one ``ThreadBudget`` (``timing.shared_workers``): each host's first worker
thread is its own, further ones come from the budget, so the thread count grows by about
one per host, not eight (worker.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from catkeeper.backend.errors import NotFound, ReadOnlyError
from catkeeper.backend.eventloop import ensure_event_loop
from catkeeper.backend.events import FleetEvent, Listener
from catkeeper.backend.host import HostSession
from catkeeper.backend.worker import ThreadBudget
from catkeeper.config import Config
from catkeeper.model import VM, Host

log = logging.getLogger(__name__)


class UnknownHost(ValueError):
    pass


class Fleet:
    def __init__(
        self,
        config: Config,
        *,
        readonly: bool = False,
        only: Sequence[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = clock  # "now" for every decision about this fleet (expiry, ages)
        self.readonly = readonly or config.readonly
        names = [h.name for h in config.hosts]
        unknown = [n for n in (only or ()) if n not in names]
        if unknown:
            raise UnknownHost(
                f"no host named {', '.join(unknown)} in {config.source} (hosts: {', '.join(names)})"
            )
        chosen = [h for h in config.hosts if not only or h.name in only]
        self._listeners: list[Listener] = []
        self.threads = ThreadBudget(config.timing.shared_workers)
        self.sessions: dict[str, HostSession] = {
            h.name: HostSession(
                h,
                config.timing,
                readonly=self.readonly,
                emit=self._emit,
                clock=clock,
                budget=self.threads,
            )
            for h in chosen
        }

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _emit(self, event: FleetEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # one broken listener must not silence the others
                log.exception("fleet listener failed on %r", type(event).__name__)

    async def start(self) -> None:
        """Start connecting every host; returns at once, hosts answer as they come."""
        ensure_event_loop()
        for session in self.sessions.values():
            session.start()

    async def wait_settled(self, timeout: float | None = None) -> bool:
        """Until every host has answered or failed once; False when the timeout came first."""
        waits = [asyncio.ensure_future(s.wait_settled()) for s in self.sessions.values()]
        if not waits:
            return True
        _done, pending = await asyncio.wait(waits, timeout=timeout)
        for task in pending:
            task.cancel()
        return not pending

    async def aclose(self) -> None:
        await asyncio.gather(*(s.aclose() for s in self.sessions.values()))

    def hosts(self) -> list[Host]:
        return [s.host for s in self.sessions.values()]

    def vms(self) -> list[VM]:
        return [vm for s in self.sessions.values() for vm in s.vms.values()]

    def session(self, host: str) -> HostSession:
        try:
            return self.sessions[host]
        except KeyError:
            raise NotFound(f"no host named {host!r}") from None

    def writable(self, host: str, attempt: str) -> HostSession:
        """``host``'s session for a change, or ``ReadOnlyError`` naming ``attempt``.

        Checked here rather than left to libvirt: a read-only connection's refusal reads
        "operation forbidden: read only access prevents …", which names no host and no VM.
        """
        session = self.session(host)
        if session.readonly:
            raise ReadOnlyError(f"{host} is read-only: cannot {attempt}")
        return session

    def find(self, ref: str) -> VM:
        """The VM named by ``HOST/NAME`` (or a bare name or UUID when that is unique)."""
        host, sep, name = ref.partition("/")
        if sep:
            for vm in self.session(host).vms.values():
                if name in (vm.name, vm.uuid):
                    return vm
            raise NotFound(f"no VM named {name!r} on {host}")
        matches = [vm for vm in self.vms() if ref in (vm.name, vm.uuid)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise NotFound(f"no VM named {ref!r}")
        where = ", ".join(vm.ref for vm in matches)
        raise NotFound(f"{ref!r} is ambiguous: {where}; name it as HOST/VM")
