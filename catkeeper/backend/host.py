"""One libvirt host: its connection, its worker threads, its inventory, its health.

All blocking libvirt calls run on the host's own threads (``HostExecutor``, see worker.py)
and are bounded by a timeout; a host that fails goes ``unreachable`` with the error and is
retried with exponential backoff, its VMs kept visible but marked stale. Results reach
listeners as ``events`` on the asyncio loop that started the session.

At most one connection attempt per host is ever outstanding. ``virConnectOpenAuth`` has no
timeout of its own: against a host that accepts and never answers it blocks until the peer
goes away, which may be never. The connect timeout only stops *waiting*; the attempt stays
(``_Attempt``) and the next retry waits for that same attempt again, and takes its
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
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import libvirt

from catkeeper.backend.conn_guard import ConnGuard
from catkeeper.backend.errors import CallTimeout, HostUnavailable, describe
from catkeeper.backend.events import (
    DomainEvent,
    HostChanged,
    InventoryLoaded,
    Listener,
    VmChanged,
    VmRemoved,
)
from catkeeper.backend.inventory import StaticInfo, build_vm, live_figures, parse_domain_xml
from catkeeper.backend.memory import release_freed_memory
from catkeeper.backend.ssh import LibvirtForward, SshTransport, carries_libvirt
from catkeeper.backend.worker import HostExecutor, ThreadBudget
from catkeeper.config import HostConfig, Timing
from catkeeper.model import VM, Capacity, Host, HostState, VmState

log = logging.getLogger(__name__)
T = TypeVar("T")

_STATS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_VCPU
    | libvirt.VIR_DOMAIN_STATS_BALLOON
)
_DOMAIN_EVENTS = (
    libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
    libvirt.VIR_DOMAIN_EVENT_ID_REBOOT,
    libvirt.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE,
    libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED,
    libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
    libvirt.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE,
)
# Events that change nothing the inventory shows; they are only passed on.
_PASS_ONLY = {libvirt.VIR_DOMAIN_EVENT_ID_REBOOT}
# How long to gather a burst of events for one domain before re-reading it.
_EVENT_COALESCE_S = 0.05


# libvirt's state codes, looked up once rather than through the enum per VM per refresh.
_STATES = tuple(VmState.from_libvirt(code) for code in range(len(VmState)))
# What a warm refresh compares per domain: (state code, autostart, persistent, live vCPUs,
# live balloon). Equal signatures mean the row cannot have changed.
_Signature = tuple[int, bool, bool, Any, Any]


def _state(code: int) -> VmState:
    return _STATES[code] if 0 <= code < len(_STATES) else VmState.NOSTATE


@dataclass
class _Bulk:
    """One round of the bulk calls: everything but the per-domain XML.

    ``changed`` lists the domains whose signature differs from the ``previous`` one the
    read was given (new domains included), worked out on the worker thread so that a warm
    refresh in which nothing changed costs the event loop no per-VM work. ``domains`` holds
    the handles of the changed ones only: the others are freed on the worker thread, where
    the read made them (freeing 500 handles on the loop after every refresh of a 500-VM
    host cost the loop ~1 % of a core at 20 such hosts).
    """

    uuids: list[str]
    states: dict[str, VmState]
    stats: dict[str, dict[str, Any]]
    autostart: set[str]
    persistent: set[str]
    capacity: Capacity
    latency_ms: float
    hypervisor: str
    libvirt_version: str
    domains: dict[str, Any] = field(repr=False, default_factory=dict)
    signatures: dict[str, _Signature] = field(repr=False, default_factory=dict)
    changed: list[str] = field(default_factory=list)


def effective_uri(uri: str) -> str:
    """The URI to open: ssh transports get ``no_tty=1`` so ssh never prompts on our terminal."""
    parts = urlsplit(uri)
    if "+ssh" not in parts.scheme:
        return uri
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.setdefault("no_tty", "1")
    return urlunsplit(parts._replace(query=urlencode(query)))


def _refuse_credentials(_creds: list[Any], _data: object) -> int:
    # Any interactive prompt would write onto the TUI's screen: fail instead, and the
    # host shows the authentication error.
    return -1


def _version_text(v: int) -> str:
    return f"{v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"


def _read_bulk(conn: libvirt.virConnect, previous: dict[str, _Signature] | None = None) -> _Bulk:
    """The bulk calls: one stats call lists every domain (active or not) with its handle.

    Autostart and transient domains are the short lists (persistent = all but transient),
    so a refresh makes one domain handle per VM, not three (6.3 → 2.6 ms of CPU per
    500-VM host).
    """
    started = time.perf_counter()
    info = conn.getInfo()
    latency = (time.perf_counter() - started) * 1000
    try:
        free: int | None = conn.getFreeMemory() // 1024
    except libvirt.libvirtError:
        free = None
    autostart = {
        d.UUIDString() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART)
    }
    transient = {
        d.UUIDString() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_TRANSIENT)
    }
    stats: dict[str, dict[str, Any]] = {}
    states: dict[str, VmState] = {}
    by_uuid: dict[str, Any] = {}
    signatures: dict[str, _Signature] = {}
    changed: list[str] = []
    old = previous or {}
    for dom, record in conn.getAllDomainStats(_STATS, 0):
        uuid = dom.UUIDString()
        stats[uuid] = record
        code = int(record.get("state.state", 0))
        states[uuid] = _state(code)
        signature = (
            code,
            uuid in autostart,
            uuid not in transient,
            record.get("vcpu.current"),
            record.get("balloon.current"),
        )
        signatures[uuid] = signature
        if old.get(uuid) != signature:
            changed.append(uuid)
            by_uuid[uuid] = dom
    return _Bulk(
        uuids=list(signatures),
        states=states,
        stats=stats,
        autostart=autostart,
        persistent=signatures.keys() - transient,
        capacity=Capacity(cpus=int(info[2]), memory_kib=int(info[1]) * 1024, free_memory_kib=free),
        latency_ms=round(latency, 2),
        hypervisor=conn.getType(),
        libvirt_version=_version_text(conn.getLibVersion()),
        domains=by_uuid,
        signatures=signatures,
        changed=changed,
    )


def _read_xml(domains: Iterable[Any], secure: bool) -> dict[str, StaticInfo | BaseException]:
    """Domain XML → parsed static info, one entry per domain (errors are data)."""
    flags = libvirt.VIR_DOMAIN_XML_SECURE if secure else 0
    out: dict[str, StaticInfo | BaseException] = {}
    for dom in domains:
        uuid = dom.UUIDString()
        try:
            # The secure XML only tells whether a VNC password exists; parse_domain_xml
            # keeps nothing of the password itself.
            out[uuid] = parse_domain_xml(dom.XMLDesc(flags), secure=secure)
        except libvirt.libvirtError as exc:
            out[uuid] = exc
    return out


class _Attempt:
    """One ``virConnectOpenAuth`` in flight on a worker thread, outliving connect timeouts.

    ``future`` resolves on the session's loop; ``forward`` is the ssh-forwarded socket the
    attempt dials (kept open while it waits). ``abandon`` makes the attempt's thread close
    the connection the moment the open returns, or closes it now if it already has.
    """

    def __init__(self, forward: LibvirtForward | None) -> None:
        self.forward = forward
        self.future: asyncio.Future[libvirt.virConnect] | None = None
        self._lock = threading.Lock()
        self._abandoned = False
        self._opened: libvirt.virConnect | None = None

    def opened(self, conn: libvirt.virConnect) -> None:
        """Called on the worker thread with the new connection; closes it if abandoned."""
        with self._lock:
            if not self._abandoned:
                self._opened = conn
                return
        _close_quietly(conn)
        raise HostUnavailable("connection attempt abandoned")

    def abandon(self) -> libvirt.virConnect | None:
        """Give the attempt up; returns a connection it already made (the caller closes it)."""
        with self._lock:
            self._abandoned = True
            conn, self._opened = self._opened, None
        if self.forward is not None:  # an open still reading from it fails at once
            self.forward.close()
        return conn


def _close_quietly(conn: libvirt.virConnect) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()


def _read_one(conn: libvirt.virConnect, uuid: str, secure: bool) -> tuple[Any, ...] | None:
    """Everything about one domain, or None when it no longer exists."""
    try:
        dom = conn.lookupByUUIDString(uuid)
        info = parse_domain_xml(
            dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE if secure else 0), secure=secure
        )
        state = VmState.from_libvirt(dom.state()[0])
        return info, state, bool(dom.autostart()), bool(dom.isPersistent())
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


class HostSession:
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
        self._static: dict[str, StaticInfo] = {}
        # The last bulk read's per-domain signatures, applied in full (see _Bulk).
        self._signatures: dict[str, _Signature] = {}
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
        self._attempt: _Attempt | None = None  # the connection attempt still in flight
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._settled = asyncio.Event()
        self._lost = asyncio.Event()
        self._generation = 0
        self._pending: set[str] = set()
        self._flush_scheduled = False
        self._callback_ids: list[int] = []
        self._lost_reason = "connection lost"
        # Adds what other sources know (IP sightings) to every VM this session builds.
        self.decorate: Callable[[VM], VM] | None = None
        self._degraded_reason: str | None = None
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
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            leftover = attempt.abandon()
            if leftover is not None:
                with contextlib.suppress(RuntimeError):
                    self._executor.submit(_close_quietly, leftover)
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
                self._go_unreachable(describe(exc))
                self._settled.set()
                await self._back_off(delay)
                delay = min(delay * 2, self.timing.backoff_max)
                continue
            delay = self.timing.backoff_initial
            self._settled.set()
            await self._watch()
            await self._drop_connection(wait=0)

    async def _back_off(self, delay: float) -> None:
        """Sleep ``delay`` before the next attempt, or less if the one in flight answers."""
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
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise CallTimeout(f"{self.name}: {what} timed out after {timeout:g} s") from None

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

    def _open(self, uri: str, attempt: _Attempt) -> libvirt.virConnect:
        flags = libvirt.VIR_CONNECT_RO if self.readonly else 0
        auth = [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], _refuse_credentials, None]
        conn = libvirt.openAuth(uri, auth, flags)
        # Local and test drivers have no keepalive; they cannot drop either.
        with contextlib.suppress(libvirt.libvirtError):
            conn.setKeepAlive(self.timing.keepalive_interval, self.timing.keepalive_count)
        attempt.opened(conn)  # closes it instead if the session gave the attempt up
        return conn

    async def _start_attempt(self) -> _Attempt:
        """A new connection attempt on a worker thread (after the ssh forward, if any)."""
        forward = None
        if self.ssh is not None and carries_libvirt(self.cfg):
            # Open (or reuse) the host's ssh connection on this loop and forward a local
            # socket to the remote libvirt socket; the libvirt open stays on the worker.
            forward = await asyncio.wait_for(
                self.ssh.forward_libvirt(readonly=self.readonly), self.timing.connect_timeout + 2
            )
        uri = forward.uri if forward is not None else effective_uri(self.cfg.uri)
        attempt = _Attempt(forward)
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
            # shield: timing out stops the waiting, not the attempt; the next retry waits
            # for this same attempt instead of opening another socket on another thread.
            conn = await asyncio.wait_for(asyncio.shield(attempt.future), timeout)
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
                await asyncio.wait_for(future, wait)

    # ---- inventory ------------------------------------------------------------------------

    async def _read_xml_parallel(self, bulk: _Bulk, uuids: list[str]) -> dict[str, StaticInfo]:
        """Domain XML for these UUIDs, spread over the host's threads."""
        if not uuids:
            return {}
        threads = max(1, self.timing.workers_per_host)
        chunks = [uuids[i::threads] for i in range(threads) if uuids[i::threads]]
        secure = not self.readonly
        results = await asyncio.gather(
            *(
                self._submit(
                    _read_xml,
                    [bulk.domains[u] for u in chunk],
                    secure,
                    timeout=self.timing.call_timeout,
                    what="reading domain XML",
                )
                for chunk in chunks
            )
        )
        infos: dict[str, StaticInfo] = {}
        failures: list[str] = []
        for part in results:
            for uuid, value in part.items():
                if isinstance(value, StaticInfo):
                    infos[uuid] = value
                elif not (
                    isinstance(value, libvirt.libvirtError)
                    and value.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN
                ):
                    failures.append(f"{uuid}: {describe(value)}")
        if failures:
            self._degraded_reason = f"{len(failures)} domain(s) unreadable: {failures[0]}"
        return infos

    def _vm_from(self, uuid: str, info: StaticInfo, bulk: _Bulk, now: float) -> VM:
        return self._decorated(
            build_vm(
                self.name,
                info,
                state=bulk.states.get(uuid, VmState.NOSTATE),
                autostart=uuid in bulk.autostart,
                persistent=uuid in bulk.persistent,
                stats=bulk.stats.get(uuid),
                now=now,
            )
        )

    async def _cold_load(self) -> None:
        self._degraded_reason = None
        self._signatures = {}
        bulk = await self.call(_read_bulk, what="listing domains")
        infos = await self._read_xml_parallel(bulk, bulk.uuids)
        now = self._clock()
        self._static = infos
        self.vms = {u: self._vm_from(u, i, bulk, now) for u, i in infos.items()}
        self._emit(InventoryLoaded(self.name, tuple(self.vms.values())))
        self._host_answered(bulk, now)
        self._signatures = self._applied(bulk, (u for u in bulk.uuids if u not in infos))
        handles, bulk.domains = bulk.domains, {}

        def release() -> None:
            # Off the loop: freeing every domain handle (the GIL is dropped and taken back
            # once per handle) and trimming a large heap take milliseconds.
            handles.clear()
            release_freed_memory()

        with contextlib.suppress(Exception):
            await self._submit(release, timeout=self.timing.call_timeout, what="trimming memory")

    @staticmethod
    def _applied(bulk: _Bulk, unread: Iterable[str]) -> dict[str, _Signature]:
        """The signatures to compare the next refresh with: a domain whose XML could not be
        read is left out, so that the next refresh tries it again."""
        signatures = bulk.signatures
        for uuid in unread:
            signatures.pop(uuid, None)
        return signatures

    async def _warm_refresh(self) -> None:
        self._degraded_reason = None
        bulk = await self.call(lambda c: _read_bulk(c, self._signatures), what="refreshing")
        now = self._clock()
        # Only what the worker saw change: with nothing changed, no per-VM work here.
        new = [u for u in bulk.changed if u not in self._static]
        read = await self._read_xml_parallel(bulk, new)
        self._static.update(read)
        for uuid in self.vms.keys() - bulk.signatures.keys():
            del self.vms[uuid]
            self._static.pop(uuid, None)
            self._emit(VmRemoved(self.name, uuid))
        for uuid in bulk.changed:
            info = self._static.get(uuid)
            if info is None:
                continue
            old = self.vms.get(uuid)
            # Most refreshes change nothing: compare the few live figures before building
            # anything, so 10,000 VMs cost the event loop milliseconds, not half a second.
            state = bulk.states.get(uuid, VmState.NOSTATE)
            if (
                old is not None
                and not old.stale
                and old.state == state
                and old.autostart == (uuid in bulk.autostart)
                and old.persistent == (uuid in bulk.persistent)
                and (old.vcpus, old.memory_kib) == live_figures(info, state, bulk.stats.get(uuid))
            ):
                continue
            vm = self._vm_from(uuid, info, bulk, now)
            if old != vm:  # updated_at does not take part in equality
                self.vms[uuid] = vm
                self._emit(VmChanged(vm))
        self._host_answered(bulk, now)
        self._signatures = self._applied(bulk, (u for u in new if u not in read))

    def _host_answered(self, bulk: _Bulk, now: float) -> None:
        reason = self._degraded_reason
        self._set_host(
            state=HostState.DEGRADED if reason else HostState.UP,
            error=reason,
            error_since=(self.host.error_since or now) if reason else None,
            last_ok_at=now,
            latency_ms=bulk.latency_ms,
            capacity=bulk.capacity,
            vm_count=len(self.vms),
            hypervisor=bulk.hypervisor,
            libvirt_version=bulk.libvirt_version,
        )

    async def _watch(self) -> None:
        """Keep the inventory fresh until the connection is lost."""
        interval = self.timing.refresh_interval
        failures = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), interval if interval > 0 else None)
            if self._lost.is_set():
                self._go_unreachable(self._lost_reason)
                return
            try:
                await self._warm_refresh()
                failures = 0
            except Exception as exc:
                failures += 1
                self._set_host(
                    state=HostState.DEGRADED,
                    error=describe(exc),
                    error_since=self.host.error_since or self._clock(),
                )
                if failures >= 2:  # two bounded calls in a row failed: start afresh
                    self._go_unreachable(describe(exc))
                    return

    # ---- events --------------------------------------------------------------------------

    def _on_domain_event(
        self, generation: int, uuid: str, event_id: int, args: tuple[Any, ...]
    ) -> None:
        if generation != self._generation:
            return
        self._emit(DomainEvent(self.name, uuid, event_id, args))
        if event_id in _PASS_ONLY:
            return
        self._pending.add(uuid)
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_later(_EVENT_COALESCE_S, self._start_flush)

    def _start_flush(self) -> None:
        self._flush_scheduled = False
        uuids, self._pending = self._pending, set()
        if self._loop is not None and uuids:
            self._loop.create_task(self._refresh_domains(uuids))

    async def _refresh_domains(self, uuids: Iterable[str]) -> None:
        for uuid in uuids:
            try:
                await self.refresh_domain(uuid)
            except Exception as exc:
                log.info(
                    "host %s: refreshing %s after an event: %s", self.name, uuid, describe(exc)
                )

    async def refresh_domain(self, uuid: str) -> VM | None:
        """Re-read one domain now; returns its new state, None when it is gone."""
        secure = not self.readonly
        got = await self.call(lambda c: _read_one(c, uuid, secure), what="reading a domain")
        if got is None:
            if self.vms.pop(uuid, None) is not None:
                self._static.pop(uuid, None)
                self._emit(VmRemoved(self.name, uuid))
                self._set_host(vm_count=len(self.vms))
            return None
        info, state, autostart, persistent = got
        self._static[uuid] = info
        old = self.vms.get(uuid)
        vm = build_vm(
            self.name,
            info,
            state=state,
            autostart=autostart,
            persistent=persistent,
            stats=None,
            now=self._clock(),
        )
        vm = self._decorated(vm)
        if old is not None and old.state == state and state.is_active:
            # Per-domain reads carry no stats; keep the live figures the last bulk call saw.
            vm = dataclasses.replace(vm, vcpus=old.vcpus, memory_kib=old.memory_kib)
        self.vms[uuid] = vm
        if old is None:
            self._set_host(vm_count=len(self.vms))
        if old != vm:
            self._emit(VmChanged(vm))
        return vm

    # ---- decoration ----------------------------------------------------------------------

    def _decorated(self, vm: VM) -> VM:
        return self.decorate(vm) if self.decorate is not None else vm

    def redecorate(self, where: Callable[[VM], bool] | None = None) -> None:
        """Apply ``decorate`` again to every VM (or those ``where`` picks), after new IP
        sightings, say; emit changes."""
        for uuid, vm in list(self.vms.items()):
            if where is not None and not where(vm):
                continue
            new = self._decorated(vm)
            if new != vm:
                self.vms[uuid] = new
                self._emit(VmChanged(new))

    # ---- host state --------------------------------------------------------------------

    def _set_host(self, **changes: Any) -> None:
        self.host = dataclasses.replace(self.host, **changes)
        self._emit(HostChanged(self.host))

    def _go_unreachable(self, error: str) -> None:
        now = self._clock()
        if self.vms and not all(vm.stale for vm in self.vms.values()):
            self.vms = {u: dataclasses.replace(vm, stale=True) for u, vm in self.vms.items()}
            self._emit(InventoryLoaded(self.name, tuple(self.vms.values())))
        self._set_host(
            state=HostState.UNREACHABLE,
            error=error,
            error_since=(self.host.error_since or now) if self.host.error == error else now,
        )
