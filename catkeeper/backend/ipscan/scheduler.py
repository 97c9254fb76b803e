"""When to look for guest IPs, and where the answers go.

``IpScanner`` joins the sources to a ``Fleet``: it hangs the book's decorator on every host
session (so every VM the sessions build carries its sightings), runs the background loops
(passive sources on by default, active sweeps off: a sweep sends hundreds of packets and
people should ask for that), and answers on-demand scans (the TUI's ``i``/``I`` keys,
``catkeeper scan``, ``catkeeper --json --ips``): all of them go through one pass per host,
``bulk.host_pass`` (DHCP leases per network, the host's neighbour table in one command, the
guest agent where its channel is connected, per-VM calls only for what is left). An
agent-lifecycle event asks that VM's agent at once. Every host scans in its own task,
bounded by a timeout: a slow or dead host delays nobody else, and nothing here ever blocks
the event loop (libvirt calls run on the host's threads, local sweeps on sweep threads,
remote commands are asyncssh I/O).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import libvirt

from catkeeper.backend.errors import describe
from catkeeper.backend.events import DomainEvent, FleetEvent
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.host import HostSession
from catkeeper.backend.ipscan.book import IpBook, IpConflict
from catkeeper.backend.ipscan.bulk import (
    Call,
    NeighReader,
    PassOutcome,
    host_pass,
    macs_of,
    read_local_neigh,
)
from catkeeper.backend.ipscan.libvirt_source import libvirt_sightings
from catkeeper.backend.ipscan.local_sweep import SweepOptions, sweep_local
from catkeeper.backend.ipscan.remote import remote_sweep
from catkeeper.backend.ipscan.results import AGENT, NEIGH, SourceResult
from catkeeper.backend.ssh import carries_libvirt
from catkeeper.config import HostConfig
from catkeeper.model import VM

if TYPE_CHECKING:
    import asyncssh

log = logging.getLogger(__name__)

LIBVIRT = "libvirt"
SWEEP = "sweep"
DONE = "done"
_LOCAL_NAMES = frozenset({"", "localhost", "127.0.0.1", "::1"})
_REDECORATE_DELAY = 0.3  # coalesce a burst of results into one pass over the VMs


@dataclass(frozen=True)
class ScanProgress:
    host: str
    stage: str  # "libvirt", "sweep" or "done"
    done: int
    total: int
    message: str = ""


@dataclass(frozen=True)
class HostScan:
    """One scan of one host: every source's result, every call made, and a host-level error."""

    host: str
    results: tuple[SourceResult, ...]
    started_at: float
    elapsed_s: float
    error: str | None = None  # not connected, timed out: the results may be partial
    calls: tuple[Call, ...] = ()  # every libvirt call and remote command, with its seconds

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


Progress = Callable[[ScanProgress], None]
SshResolver = Callable[[HostSession], Awaitable["asyncssh.SSHClientConnection | None"]]
LocalSweeper = Callable[[str, Sequence[str] | None, SweepOptions], Awaitable[list[SourceResult]]]


def host_is_local(cfg: HostConfig) -> bool:
    """True when the host is this machine: no ssh settings and no remote name in the URI."""
    if cfg.ssh is not None:
        return False
    return (urlsplit(cfg.uri).hostname or "") in _LOCAL_NAMES


async def default_ssh_for(session: HostSession) -> asyncssh.SSHClientConnection | None:
    """The host's shared asyncssh connection (``session.ssh``, backend/ssh.py), opened on
    first use; None for hosts without ssh settings. Raises SshError when it cannot connect."""
    if session.ssh is None:
        return None
    return await session.ssh.connect()


async def _thread_sweeper(
    host: str, subnets: Sequence[str] | None, options: SweepOptions
) -> list[SourceResult]:
    return await sweep_local(host, subnets, options)


class IpScanner:
    def __init__(
        self,
        fleet: Fleet,
        book: IpBook | None = None,
        *,
        libvirt_interval: float = 60.0,
        sweep_interval: float = 0.0,
        sweep_options: SweepOptions | None = None,
        host_timeout: float = 30.0,
        libvirt_concurrency: int | None = None,
        subnets: Sequence[str] | None = None,
        ssh_for: SshResolver = default_ssh_for,
        local_sweeper: LocalSweeper = _thread_sweeper,
        progress: Progress | None = None,
    ) -> None:
        """``libvirt_interval``/``sweep_interval``: seconds between background scans per
        host, 0 for never. ``subnets`` overrides every host's configured subnets.
        ``libvirt_concurrency``: per-VM calls in flight per host; None: the config's
        ``ipscan.per_vm_calls``, whose 0 means the host's worker threads less one."""
        self.fleet = fleet
        self.book = book if book is not None else IpBook()
        self.libvirt_interval = libvirt_interval
        self.sweep_interval = sweep_interval
        # Sightings carry the fleet's clock, so their ages agree with the book's and the UI's.
        self.sweep_options = dataclasses.replace(sweep_options or SweepOptions(), clock=fleet.clock)
        self.host_timeout = host_timeout
        self.libvirt_concurrency = libvirt_concurrency
        self.subnets = tuple(subnets) if subnets is not None else None
        self.ssh_for = ssh_for
        self.local_sweeper = local_sweeper
        self.progress = progress
        self.last: dict[str, HostScan] = {}  # host → its latest scan, for display
        self._tasks: list[asyncio.Task[None]] = []
        self._event_tasks: set[asyncio.Task[list[SourceResult]]] = set()
        # Neighbour-table reads started before their host's pass (prefetch_neigh).
        self._neigh_early: dict[str, asyncio.Future[list[SourceResult]]] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self._inflight: dict[tuple[str, ...], asyncio.Future[list[SourceResult]]] = {}
        self._redecorate_handle: asyncio.TimerHandle | None = None
        self._attached = False

    # ---- wiring ------------------------------------------------------------------------

    def attach(self) -> None:
        """Hang the book on every session; VMs built from now on (and now) carry their IPs."""
        decorate = self.book.decorator()
        for session in self.fleet.sessions.values():
            session.decorate = decorate
            session.redecorate()
        self._attached = True

    def start(self) -> None:
        """Attach, start the background loops (per host, per kind, where enabled) and
        listen for agent-lifecycle events."""
        if not self._attached:
            self.attach()
        loop = asyncio.get_running_loop()
        if self._unsubscribe is None:
            self._unsubscribe = self.fleet.subscribe(self.on_fleet_event)
        for name in self.fleet.sessions:
            if self.libvirt_interval > 0:
                self._tasks.append(
                    loop.create_task(
                        self._every(name, self.libvirt_interval, LIBVIRT), name=f"ips-lv-{name}"
                    )
                )
            if self.sweep_interval > 0:
                self._tasks.append(
                    loop.create_task(
                        self._every(name, self.sweep_interval, SWEEP), name=f"ips-sw-{name}"
                    )
                )

    async def aclose(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        tasks: list[asyncio.Future[Any]] = [
            *self._tasks,
            *self._event_tasks,
            *self._neigh_early.values(),
        ]
        self._neigh_early.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._event_tasks.clear()
        if self._redecorate_handle is not None:
            self._redecorate_handle.cancel()
            self._redecorate_handle = None

    async def _every(self, host: str, interval: float, kind: str) -> None:
        session = self.fleet.session(host)
        if kind == LIBVIRT:
            self.prefetch_neigh(host)  # the first pass's table read overlaps the cold load
        await session.wait_settled()
        while True:
            try:
                # Background passes ask per VM only where the book knows no address yet.
                await self.scan_host(
                    host, libvirt=kind == LIBVIRT, sweep=kind == SWEEP, recheck=False
                )
                if self.book.prune():
                    self._redecorate_now()
            except Exception:  # a background loop must outlive any one bad scan
                log.exception("ip scan of %s (%s) failed", host, kind)
            await asyncio.sleep(interval)

    # ---- agent-lifecycle events ----------------------------------------------------------

    def on_fleet_event(self, event: FleetEvent) -> None:
        """A guest agent that (re)connects is asked for its addresses at once."""
        if not (
            isinstance(event, DomainEvent)
            and event.event_id == libvirt.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE
            and event.args
            and event.args[0] == libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_CONNECTED
        ):
            return
        task = asyncio.get_running_loop().create_task(
            self.ask_agent(event.host, event.uuid), name=f"ips-agent-{event.uuid}"
        )
        self._event_tasks.add(task)
        task.add_done_callback(self._event_tasks.discard)

    async def ask_agent(self, host: str, uuid: str) -> list[SourceResult]:
        """The guest agent of one VM, now (one call); its answer goes to the book."""
        session = self.fleet.sessions.get(host)
        vm = session.vms.get(uuid) if session is not None else None
        if session is None or vm is None or not session.connected or not vm.state.is_active:
            return []
        try:
            found = await asyncio.wait_for(
                libvirt_sightings(
                    session,
                    vm,
                    sources=(AGENT,),
                    timeout=session.timing.call_timeout,
                    clock=self.fleet.clock,
                ),
                self.host_timeout,
            )
        except TimeoutError:
            return []
        self._take(found)
        return found

    # ---- results → book → rows -------------------------------------------------------

    def _taker(self, collected: list[SourceResult]) -> Callable[[Sequence[SourceResult]], None]:
        """Results go to the scan's report and, at once, to the book."""

        def take(results: Sequence[SourceResult]) -> None:
            collected.extend(results)
            self._take(results)

        return take

    def _take(self, results: Sequence[SourceResult]) -> None:
        changed = False
        for r in results:
            changed |= self.book.apply(r)
        if changed:
            self._redecorate_soon()

    def _redecorate_soon(self) -> None:
        if self._redecorate_handle is None:
            loop = asyncio.get_running_loop()
            self._redecorate_handle = loop.call_later(_REDECORATE_DELAY, self._redecorate_now)

    def _redecorate_now(self) -> None:
        if self._redecorate_handle is not None:
            self._redecorate_handle.cancel()
            self._redecorate_handle = None
        # Any host's sweep may see any host's guests (shared segments), so every session is
        # asked, but only about the VMs with a NIC whose addresses changed.
        dirty = self.book.take_dirty()
        if not dirty:
            return
        for session in self.fleet.sessions.values():
            session.redecorate(lambda vm: any(nic.mac in dirty for nic in vm.nics))

    def _report(self, progress: Progress | None, event: ScanProgress) -> None:
        for fn in (progress, self.progress):
            if fn is not None:
                try:
                    fn(event)
                except Exception:  # a broken progress display must not stop the scan
                    log.exception("ip scan progress callback failed")

    # ---- scanning ----------------------------------------------------------------------

    async def scan(
        self,
        hosts: Sequence[str] | None = None,
        *,
        libvirt: bool = True,
        sweep: bool = True,
        progress: Progress | None = None,
    ) -> list[HostScan]:
        """Scan these hosts (default: all) concurrently; total time ≈ the slowest host's."""
        names = list(hosts) if hosts is not None else list(self.fleet.sessions)
        return list(
            await asyncio.gather(
                *(self.scan_host(n, libvirt=libvirt, sweep=sweep, progress=progress) for n in names)
            )
        )

    async def scan_host(
        self,
        host: str,
        *,
        libvirt: bool = True,
        sweep: bool = True,
        progress: Progress | None = None,
        recheck: bool = True,
    ) -> HostScan:
        """Every enabled source for one host, bounded by ``host_timeout``; never raises for
        a host's failure (that is ``HostScan.error``).

        ``libvirt``: the passive pass (libvirt's sources and the host's neighbour table);
        ``sweep``: an active sweep of the host's subnets. ``recheck`` False (the background
        loop): VMs whose address the book already knows get no per-VM call.
        """
        session = self.fleet.session(host)
        started, t0 = self.fleet.clock(), time.perf_counter()
        collected: list[SourceResult] = []
        calls: list[Call] = []
        errors: list[str] = []
        take = self._taker(collected)

        async def run() -> None:
            jobs = []
            if libvirt:
                known = None if recheck else self._known
                jobs.append(self._passive_part(session, take, progress, errors, calls, known=known))
            if sweep:
                jobs.append(self._sweep_part(session, take, progress, calls))
            await asyncio.gather(*jobs)

        try:
            await asyncio.wait_for(run(), self.host_timeout)
        except TimeoutError:
            errors.append(f"scan timed out after {self.host_timeout:g} s")
        self._redecorate_now()
        scan = HostScan(
            host=host,
            results=tuple(collected),
            started_at=started,
            elapsed_s=round(time.perf_counter() - t0, 3),
            error="; ".join(errors) or None,
            calls=tuple(calls),
        )
        self.last[host] = scan
        found = sum(len(r.sightings) for r in collected)
        self._report(progress, ScanProgress(host, DONE, 1, 1, f"{found} sightings"))
        return scan

    def _known(self, mac: str) -> bool:
        """The book has an address for this MAC young enough not to ask for it per VM (half
        of ``max_age``: it is asked again before it would be forgotten)."""
        limit = self.fleet.clock() - self.book.max_age / 2
        return any(s.seen_at >= limit for s in self.book.sightings_for(mac))

    def concurrency_for(self, session: HostSession) -> int:
        """Per-VM calls in flight on one host: a worker thread stays free for a person."""
        if self.libvirt_concurrency:
            return max(1, self.libvirt_concurrency)
        configured = self.fleet.config.ipscan.per_vm_calls
        return configured or max(1, session.timing.workers_per_host - 1)

    def neigh_reader(self, session: HostSession) -> NeighReader | None:
        """How to read the host's neighbour table in one go, or None.

        Over the host's shared ssh connection when it has one configured (or one is open
        already); for a ``qemu+ssh://`` host whose only ssh is libvirt's own, a second
        connection (another authentication, maybe a key touch) just for this is not worth
        it: per-VM ``arp`` instead. This machine's table for a local host; nothing for the
        test driver, whose guests are fiction.
        """
        cfg = session.cfg
        if session.ssh is not None:
            if cfg.ssh is None and not carries_libvirt(cfg) and not session.ssh.connected:
                return None
            clock = self.fleet.clock
            timeout = max(5.0, min(session.timing.call_timeout, self.host_timeout - 1))

            async def remote() -> list[SourceResult]:
                started = clock()
                try:
                    conn = await self.ssh_for(session)
                except Exception as exc:  # SshError: host key, authentication, refused, ...
                    why = f"no ssh connection: {describe(exc)}"
                    return [SourceResult(session.name, NEIGH, "*", error=why, started_at=started)]
                if conn is None:
                    why = "no ssh connection to this host"
                    return [SourceResult(session.name, NEIGH, "*", error=why, started_at=started)]
                return await remote_sweep(conn, session.name, [], timeout=timeout, clock=clock)

            return remote
        if host_is_local(cfg) and urlsplit(cfg.uri).scheme != "test":
            return partial(read_local_neigh, session.name, clock=self.fleet.clock)
        return None

    def prefetch_neigh(self, host: str) -> None:
        """Start reading the host's neighbour table now; its next pass uses that answer.

        The read needs no inventory, only the ssh connection (shared with libvirt's
        forward, so it waits for the same connect): started before the host's cold load,
        its round trips and the remote shell's start-up overlap the load instead of
        following it.
        """
        if host in self._neigh_early:
            return
        reader = self.neigh_reader(self.fleet.session(host))
        if reader is not None:
            self._neigh_early[host] = asyncio.ensure_future(reader())

    async def _passive_part(
        self,
        session: HostSession,
        take: Callable[[Sequence[SourceResult]], None],
        progress: Progress | None,
        errors: list[str],
        calls: list[Call],
        *,
        targets: Sequence[VM] | None = None,
        known: Callable[[str], bool] | None = None,
    ) -> PassOutcome | None:
        if not session.connected:
            errors.append(f"libvirt sources skipped: {session.name} is {session.host.state.value}")
            return None

        def step(done: int, total: int) -> None:
            self._report(progress, ScanProgress(session.name, LIBVIRT, done, total))

        early = self._neigh_early.pop(session.name, None)
        outcome = await host_pass(
            session,
            take=take,
            targets=targets,
            known=known,
            neigh=(lambda: early) if early is not None else self.neigh_reader(session),
            concurrency=self.concurrency_for(session),
            timeout=session.timing.call_timeout,
            progress=step,
            clock=self.fleet.clock,
        )
        calls.extend(outcome.calls)
        return outcome

    def subnets_for(self, session: HostSession) -> tuple[str, ...]:
        return self.subnets if self.subnets is not None else session.cfg.subnets

    async def _sweep_part(
        self,
        session: HostSession,
        take: Callable[[Sequence[SourceResult]], None],
        progress: Progress | None,
        calls: list[Call],
    ) -> None:
        subnets = self.subnets_for(session)
        self._report(progress, ScanProgress(session.name, SWEEP, 0, 1, ", ".join(subnets)))
        t0 = time.perf_counter()
        results = await self._shared(
            ("host", session.name), lambda: self._sweep_where(session, subnets)
        )
        # One sweep is one command (remote) or one burst of packets (here), whatever the
        # number of subnets it reports on.
        source = results[0].source if results else NEIGH
        calls.append(
            Call(
                source,
                ", ".join(subnets) or "*",
                round(time.perf_counter() - t0, 4),
                any(r.ok for r in results),
            )
        )
        take(results)
        self._report(progress, ScanProgress(session.name, SWEEP, 1, 1))

    async def _shared(
        self, key: tuple[str, ...], start: Callable[[], Awaitable[list[SourceResult]]]
    ) -> list[SourceResult]:
        """Join a sweep already under way for the same target instead of sending twice."""
        running = self._inflight.get(key)
        if running is None:
            running = asyncio.ensure_future(start())
            self._inflight[key] = running
            running.add_done_callback(lambda _f: self._inflight.pop(key, None))
        # shield: one caller timing out must not cancel the sweep the others wait for.
        return await asyncio.shield(running)

    async def _sweep_where(
        self, session: HostSession, subnets: Sequence[str]
    ) -> list[SourceResult]:
        """Over the host's ssh connection when it has one, else here when it is this
        machine; a remote host without a connection gets an error result."""
        started = self.fleet.clock()

        def failed(why: str) -> list[SourceResult]:
            return [
                SourceResult(session.name, NEIGH, s, error=why, started_at=started)
                for s in (subnets or ["*"])
            ]

        try:
            conn = await self.ssh_for(session)
        except Exception as exc:  # SshError: host key, authentication, refused, ...
            # Never fall back to sweeping from here: this machine's view is not the host's.
            return failed(f"no ssh connection: {describe(exc)}")
        if conn is not None:
            return await remote_sweep(
                conn,
                session.name,
                subnets,
                wait=self.sweep_options.wait,
                timeout=max(5.0, self.host_timeout - 1),
                max_addresses=self.sweep_options.max_addresses,
                clock=self.fleet.clock,
            )
        if (
            host_is_local(session.cfg)
            and not subnets
            and urlsplit(session.cfg.uri).scheme == "test"
        ):
            # A test-driver host's guests are fiction: sweeping this machine's real
            # networks for them (the demo fleet!) would only send packets for nothing.
            note = "test-driver host without subnets: nothing to sweep"
            return [SourceResult(session.name, NEIGH, "*", note=note, started_at=started)]
        if host_is_local(session.cfg):
            # Several local hosts (test:///…, qemu:///system) share one sweep of this machine.
            results = await self._shared(
                ("local", *subnets),
                lambda: self.local_sweeper(session.name, subnets or None, self.sweep_options),
            )
            return [dataclasses.replace(r, host=session.name) for r in results]
        return failed("no ssh connection to this host (give it ssh settings in the config)")

    async def scan_vm(
        self, vm: VM | str, *, sweep: bool | None = None, progress: Progress | None = None
    ) -> HostScan:
        """On demand for one VM (the TUI's ``i``): its host's bulk sources (they cost the
        same for one VM as for all, and everything they find goes to the book), its agent if
        connected, per-VM calls if those found nothing for it; then a sweep of its host's
        subnets when ``sweep`` is True, or None and still no address. The returned results
        hold only this VM's sightings."""
        if isinstance(vm, str):
            vm = self.fleet.find(vm)
        session = self.fleet.session(vm.host)
        mine = set(macs_of(vm))
        started, t0 = self.fleet.clock(), time.perf_counter()
        collected: list[SourceResult] = []
        calls: list[Call] = []
        errors: list[str] = []
        take = self._taker(collected)
        try:
            self._report(progress, ScanProgress(vm.host, LIBVIRT, 0, 1, vm.name))
            await asyncio.wait_for(
                self._passive_part(session, take, progress, errors, calls, targets=[vm]),
                self.host_timeout,
            )
            self._report(progress, ScanProgress(vm.host, LIBVIRT, 1, 1, vm.name))
            got_address = any(s.mac in mine for r in collected for s in r.sightings)
            if sweep or (sweep is None and not got_address and vm.state.is_active):
                await asyncio.wait_for(
                    self._sweep_part(session, take, progress, calls), self.host_timeout
                )
        except TimeoutError:
            errors.append(f"scan timed out after {self.host_timeout:g} s")
        self._redecorate_now()
        scan = HostScan(
            host=vm.host,
            results=tuple(
                dataclasses.replace(r, sightings=tuple(s for s in r.sightings if s.mac in mine))
                for r in collected
            ),
            started_at=started,
            elapsed_s=round(time.perf_counter() - t0, 3),
            error="; ".join(errors) or None,
            calls=tuple(calls),
        )
        self._report(progress, ScanProgress(vm.host, DONE, 1, 1, vm.name))
        return scan

    def vm(self, ref: str) -> VM:
        """The VM as its session holds it now, IPs included."""
        return self.fleet.find(ref)

    def conflicts(self) -> list[IpConflict]:
        return self.book.conflicts(self.fleet.vms())
