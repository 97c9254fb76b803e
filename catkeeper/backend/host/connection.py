"""One libvirt host's connection: its lifecycle, backoff, worker threads and calls.

All blocking libvirt calls run on the host's own threads (``HostExecutor``, see worker.py)
and are bounded by a timeout; a host that fails goes ``unreachable`` with the error and is
retried with exponential backoff, its VMs kept visible but marked stale. Results reach
listeners as ``events`` on the asyncio loop that started the session.

At most one connection attempt per host is ever outstanding. ``virConnectOpenAuth`` has no
timeout of its own: against a host that accepts and never answers it blocks until the peer
goes away, which may be never. The connect timeout only stops *waiting*; the attempt stays
(``Attempt``) and the next retry waits for that same attempt again, and takes its
connection if it finally answers, instead of opening another socket on another thread.
Before, every retry left one thread and one socket behind (30 retries: +30 threads, +30
sockets; ~60 an hour per such host at the default backoff). An attempt the session gives
up for good (``aclose``) is closed by its own thread as soon as the open returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import libvirt

from catkeeper.backend.conn_guard import ConnGuard
from catkeeper.backend.errors import CallTimeout, HostUnavailable, describe
from catkeeper.backend.events import HostChanged, InventoryLoaded, Listener
from catkeeper.backend.host.attempt import Attempt, close_quietly, effective_uri, open_connection
from catkeeper.backend.ssh import LibvirtForward, SshTransport, carries_libvirt
from catkeeper.backend.timeouts import cancel_and_wait, within
from catkeeper.backend.turns import map_in_turns
from catkeeper.backend.worker import HostExecutor, ThreadBudget
from catkeeper.config import HostConfig, Timing
from catkeeper.model import VM, Host, HostState

log = logging.getLogger(__name__)
T = TypeVar("T")
# After a drop of a host that was up, the backoff starts at backoff_initial / this.
DROP_RETRY_DIVISOR = 4

_DOMAIN_EVENTS = (
    libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
    libvirt.VIR_DOMAIN_EVENT_ID_REBOOT,
    libvirt.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE,
    libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED,
    libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
    libvirt.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE,
)


def _marked_stale(_uuid: str, vm: VM) -> VM:
    return dataclasses.replace(vm, stale=True)


class HostConnection:
    """The connection half of a host session (session.py adds the inventory on top).

    ``_run`` connects, hands over to ``_cold_load`` and ``_watch`` (the inventory's), and
    retries with backoff when either fails.
    """

    def __init__(
        self,
        cfg: HostConfig,
        timing: Timing,
        *,
        readonly: bool,
        emit: Listener,
        clock: Callable[[], float] = time.time,
        budget: ThreadBudget | None = None,
    ) -> None:
        self.cfg = cfg
        self.timing = timing
        self.readonly = readonly or cfg.readonly
        self._emit = emit
        self._clock = clock
        self.host = Host(name=cfg.name, uri=cfg.uri, readonly=self.readonly, tags=cfg.tags)
        self.vms: dict[str, VM] = {}
        self._conn: libvirt.virConnect | None = None
        self._guard: ConnGuard | None = None  # every call on _conn goes through it
        # One executor for the session's whole life: threads stuck in a dead connection's
        # calls count against this host's cap instead of piling up in a fresh pool each
        # reconnect.
        self._executor = HostExecutor(
            cfg.name,
            timing.workers_per_host,
            budget=budget if budget is not None else ThreadBudget(timing.shared_workers),
            idle_timeout=timing.worker_idle,
        )
        self._attempt: Attempt | None = None  # the connection attempt still in flight
        self.chance = random.Random()  # draws the backoff's jitter; a test seeds its own
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._settled = asyncio.Event()
        self._lost = asyncio.Event()
        self._generation = 0
        self._callback_ids: list[int] = []
        self._lost_reason = "connection lost"
        # ssh hosts: the one asyncssh connection this host's libvirt forward, VNC tunnels
        # and remote commands share (backend/ssh.py); None without ssh. It connects lazily,
        # on this session's loop. When it carries libvirt, _connect forwards a private
        # local socket to the remote daemon and _open uses that instead of cfg.uri.
        self.ssh: SshTransport | None = SshTransport.for_host(cfg, timing)
        self._libvirt_forward: LibvirtForward | None = None

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def executor(self) -> HostExecutor:
        """This host's worker threads (for tests and figures)."""
        return self._executor

    # ---- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name=f"host-{self.name}")

    async def wait_settled(self) -> None:
        """Until the first connection attempt has ended, either way."""
        await self._settled.wait()

    async def aclose(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            leftover = attempt.abandon()
            if leftover is not None:
                with contextlib.suppress(RuntimeError):
                    self._executor.submit(close_quietly, leftover)
        await self._drop_connection(wait=0.5)
        # Queued calls (the close above) still run; then the threads end.
        self._executor.shutdown()
        if self.ssh is not None:  # also ends this host's tunnels
            await self.ssh.aclose()

    async def _run(self) -> None:
        delay = self.timing.backoff_initial
        while True:
            try:
                await self._connect()
                await self._cold_load()
            except Exception as exc:  # every failure is the host's state, never a crash
                log.info("host %s: %s", self.name, describe(exc))
                await self._drop_connection(wait=0)
                await self._go_unreachable(describe(exc))
                self._settled.set()
                await self._back_off(delay)
                delay = min(delay * 2, self.timing.backoff_max)
                continue
            self._settled.set()
            await self._watch()
            await self._drop_connection(wait=0)
            # A host that was up and dropped is most often its daemon restarting, back
            # within a second: retried at once, then sooner than a host never reached (a
            # quarter of backoff_initial, doubling), so a restart costs one reconnect, not a
            # full first backoff on top (ssh hosts came back 2.5-3 s after a 0.5 s restart).
            delay = self.timing.backoff_initial / DROP_RETRY_DIVISOR

    async def _back_off(self, delay: float) -> None:
        """Sleep before the next attempt: ``delay`` cut at random by up to ``backoff_jitter``
        of it, or less if the attempt in flight answers. Exact delays can lock in step with
        a host that flaps: at 60 s against a 30 s down / 30 s up flap every retry fell in a
        down half (two soak hosts stayed down 2.5 minutes); and they bunch a fleet's
        retries after a shared outage."""
        delay *= 1 - self.timing.backoff_jitter * self.chance.random()
        attempt = self._attempt
        if attempt is not None and attempt.future is not None and not attempt.future.done():
            await asyncio.wait([attempt.future], timeout=delay)
        else:
            await asyncio.sleep(delay)

    # ---- calls -----------------------------------------------------------------------

    async def _submit(self, fn: Callable[..., T], *args: Any, timeout: float, what: str) -> T:
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._executor, fn, *args)
        except RuntimeError:  # shut down: the session is closing
            raise HostUnavailable(f"{self.name} is closed") from None
        try:
            return await within(future, timeout)
        except TimeoutError:
            raise CallTimeout(f"{self.name}: {what} timed out after {timeout:g} s") from None
        finally:
            del future  # see within(): its failure's traceback keeps this frame, too

    async def call(
        self,
        fn: Callable[[libvirt.virConnect], T],
        *,
        timeout: float | None = None,
        what: str = "libvirt call",
    ) -> T:
        """Run ``fn(connection)`` on this host's threads, bounded by the call timeout."""
        guard = self._guard
        if guard is None:
            state = self.host.state.value
            reason = f": {self.host.error}" if self.host.error else ""
            raise HostUnavailable(f"{self.name} is {state}{reason}")
        return await self._submit(
            guard.run, fn, timeout=timeout or self.timing.call_timeout, what=what
        )

    async def call_domain(
        self,
        uuid: str,
        fn: Callable[[libvirt.virDomain], T],
        *,
        timeout: float | None = None,
        what: str = "libvirt call",
    ) -> T:
        """Run ``fn(domain)`` for the domain with this UUID on this host's threads."""
        return await self.call(
            lambda conn: fn(conn.lookupByUUIDString(uuid)), timeout=timeout, what=what
        )

    # ---- connection --------------------------------------------------------------------

    def _open(self, uri: str, attempt: Attempt) -> libvirt.virConnect:
        return open_connection(uri, attempt, readonly=self.readonly, timing=self.timing)

    async def _start_attempt(self) -> Attempt:
        """A new connection attempt on a worker thread (after the ssh forward, if any)."""
        forward = None
        if self.ssh is not None and carries_libvirt(self.cfg):
            # Open (or reuse) the host's ssh connection on this loop and forward a local
            # socket to the remote libvirt socket; the libvirt open stays on the worker.
            forward = await within(
                self.ssh.forward_libvirt(uri=self.cfg.uri, readonly=self.readonly),
                self.timing.connect_timeout + 2,
            )
        uri = forward.uri if forward is not None else effective_uri(self.cfg.uri)
        attempt = Attempt(forward)
        try:
            attempt.future = asyncio.get_running_loop().run_in_executor(
                self._executor, self._open, uri, attempt
            )
        except RuntimeError:  # shut down: the session is closing
            attempt.abandon()
            raise HostUnavailable(f"{self.name} is closed") from None
        # An attempt given up on may fail with nobody awaiting it: not worth a warning.
        attempt.future.add_done_callback(lambda f: f.cancelled() or f.exception())
        return attempt

    async def _connect(self) -> None:
        self._generation += 1
        generation = self._generation
        self._lost = asyncio.Event()
        if self.host.state is not HostState.CONNECTING:
            self._set_host(state=HostState.CONNECTING)
        attempt = self._attempt
        earlier = attempt is not None
        if attempt is None:
            attempt = self._attempt = await self._start_attempt()
        assert attempt.future is not None
        timeout = self.timing.connect_timeout
        try:
            # shield: a timeout stops the waiting, not the attempt, which the next retry reuses.
            conn = await within(asyncio.shield(attempt.future), timeout)
        except TimeoutError:
            still = " (still waiting for an earlier attempt)" if earlier else ""
            raise CallTimeout(
                f"{self.name}: connecting timed out after {timeout:g} s{still}"
            ) from None
        except BaseException:
            if attempt.future.done():  # it failed: the next retry starts afresh
                self._attempt = None
                if attempt.forward is not None:
                    attempt.forward.close()
            del attempt  # its future holds the failure, whose traceback holds this frame
            raise
        self._attempt = None
        self._libvirt_forward = attempt.forward
        self._conn = conn
        guard = self._guard = ConnGuard(conn, self.name)
        await self._submit(
            guard.run,
            lambda c: self._register_callbacks(c, generation),
            timeout=self.timing.call_timeout,
            what="registering for events",
        )

    def _register_callbacks(self, conn: libvirt.virConnect, generation: int) -> None:
        loop = self._loop
        assert loop is not None

        def post(fn: Callable[..., None], *args: Any) -> None:
            # Runs on the libvirt event thread; the session's loop may be gone already.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn, *args)

        def on_close(_conn: Any, reason: int, _opaque: Any) -> None:
            post(self._on_closed, generation, reason)

        # Drivers without a transport have no close callback; they never drop either.
        with contextlib.suppress(libvirt.libvirtError):
            conn.registerCloseCallback(on_close, None)
        ids = []
        for event_id in _DOMAIN_EVENTS:

            def on_event(_conn: Any, dom: Any, *rest: Any, _eid: int = event_id) -> None:
                post(self._on_domain_event, generation, dom.UUIDString(), _eid, tuple(rest[:-1]))

            try:
                ids.append(conn.domainEventRegisterAny(None, event_id, on_event, None))
            except libvirt.libvirtError:
                log.debug("host %s: no event %d", self.name, event_id)
        self._callback_ids = ids

    def _on_closed(self, generation: int, reason: int) -> None:
        if generation != self._generation:
            return
        reasons = {
            libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "connection error",
            libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "connection closed by the remote end",
            libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timed out",
            libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "connection closed",
        }
        text = reasons.get(reason, f"connection closed ({reason})")
        log.info("host %s: %s", self.name, text)
        self._lost_reason = text
        self._lost.set()

    async def _drop_connection(self, *, wait: float) -> None:
        conn, guard, ids = self._conn, self._guard, self._callback_ids
        self._conn, self._guard, self._callback_ids = None, None, []
        self._generation += 1  # callbacks of the old connection are ignored from now on
        forward, self._libvirt_forward = self._libvirt_forward, None
        if forward is not None:
            forward.close()
        # The ssh connection itself stays: a libvirt-level failure (remote daemon restarting)
        # must not cut off VNC tunnels or cost a new authentication (a hardware-key touch)
        # per retry. A dead ssh connection is noticed by asyncssh's keepalive and reopened.
        if conn is None or guard is None:
            return

        def close_now() -> None:
            for cid in ids:
                with contextlib.suppress(libvirt.libvirtError):
                    conn.domainEventDeregisterAny(cid)
            with contextlib.suppress(libvirt.libvirtError):
                conn.unregisterCloseCallback()
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()

        def close() -> None:
            # Calls still running on other threads use the connection: the last one closes.
            guard.close(close_now)

        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, close)
        except RuntimeError:  # shut down already: nothing can run the close any more
            return
        if wait > 0:
            with contextlib.suppress(TimeoutError, Exception):
                await within(future, wait)

    # ---- what the inventory provides ------------------------------------------------------

    async def _cold_load(self) -> None:
        raise NotImplementedError

    async def _watch(self) -> None:
        raise NotImplementedError

    def _on_domain_event(
        self, generation: int, uuid: str, event_id: int, args: tuple[Any, ...]
    ) -> None:
        raise NotImplementedError

    # ---- host state --------------------------------------------------------------------

    def _set_host(self, **changes: Any) -> None:
        self.host = dataclasses.replace(self.host, **changes)
        self._emit(HostChanged(self.host))

    async def _go_unreachable(self, error: str) -> None:
        now = self._clock()
        if self.vms and not all(vm.stale for vm in self.vms.values()):
            self.vms = await map_in_turns(self.vms, _marked_stale)
            self._emit(InventoryLoaded(self.name, tuple(self.vms.values())))
        self._set_host(
            state=HostState.UNREACHABLE,
            error=error,
            error_since=(self.host.error_since or now) if self.host.error == error else now,
        )
