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
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import libvirt

from catkeeper.backend.events import DomainEvent, FleetEvent, VmRemoved
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.ipscan.book import IpBook, IpConflict
from catkeeper.backend.ipscan.bulk import Call, macs_of
from catkeeper.backend.ipscan.host_sources import (
    HostSources,
    LocalSweeper,
    SshResolver,
    default_ssh_for,
    host_is_local,
)
from catkeeper.backend.ipscan.libvirt_source import libvirt_sightings
from catkeeper.backend.ipscan.local_sweep import SweepOptions
from catkeeper.backend.ipscan.results import AGENT, SourceResult
from catkeeper.backend.ipscan.scan_report import (
    DONE,
    LIBVIRT,
    SWEEP,
    HostScan,
    Progress,
    ScanProgress,
)
from catkeeper.backend.ipscan.sweep_process import SweepProcess
from catkeeper.backend.timeouts import cancel_and_wait, within
from catkeeper.model import VM

log = logging.getLogger(__name__)

_REDECORATE_DELAY = 0.3  # coalesce a burst of results into one pass over the VMs


class IpScanner(HostSources):
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
        local_sweeper: LocalSweeper | None = None,
        progress: Progress | None = None,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        """``libvirt_interval``/``sweep_interval``: seconds between background scans per
        host, 0 for never. ``subnets`` overrides every host's configured subnets.
        ``libvirt_concurrency``: per-VM calls in flight per host; None: the config's
        ``ipscan.per_vm_calls``, whose 0 means the host's worker threads less one.
        ``local_sweeper``: None sweeps from this machine in a child process (scapy stays
        out of this one, see sweep_process.py)."""
        self._sweeps = SweepProcess()
        super().__init__(
            fleet,
            sweep_options=sweep_options,
            host_timeout=host_timeout,
            libvirt_concurrency=libvirt_concurrency,
            subnets=subnets,
            ssh_for=ssh_for,
            local_sweeper=local_sweeper or self._sweeps.sweep,
            progress=progress,
            share_local_sweeps_s=sweep_interval / 2,
            share_local_neigh_s=libvirt_interval / 2,
            mono=mono,
        )
        self.book = book if book is not None else IpBook()
        self.libvirt_interval = libvirt_interval
        self.sweep_interval = sweep_interval
        self.last: dict[str, HostScan] = {}  # host → its latest scan, for display
        self._tasks: list[asyncio.Task[None]] = []
        self._event_tasks: set[asyncio.Task[list[SourceResult]]] = set()
        self._unsubscribe: Callable[[], None] | None = None
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
        await cancel_and_wait(*tasks)
        self._tasks.clear()
        self._event_tasks.clear()
        if self._redecorate_handle is not None:
            self._redecorate_handle.cancel()
            self._redecorate_handle = None
        await self._sweeps.aclose()

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
        """A guest agent that (re)connects is asked for its addresses at once; a VM that
        left its host takes its per-VM answers with it."""
        if isinstance(event, VmRemoved):
            self.book.forget_vm(event.host, event.uuid)
            return
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
            found = await within(
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
            session.redecorate_macs(dirty)

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
                jobs.append(
                    self._passive_part(
                        session, take, progress, errors, calls, known=known, reuse=not recheck
                    )
                )
            if sweep:
                jobs.append(self._sweep_part(session, take, progress, calls, reuse=not recheck))
            await asyncio.gather(*jobs)

        try:
            await within(run(), self.host_timeout)
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
        return self.book.seen_since(mac, self.fleet.clock() - self.book.max_age / 2)

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
            await within(
                self._passive_part(session, take, progress, errors, calls, targets=[vm]),
                self.host_timeout,
            )
            self._report(progress, ScanProgress(vm.host, LIBVIRT, 1, 1, vm.name))
            got_address = any(s.mac in mine for r in collected for s in r.sightings)
            if sweep or (sweep is None and not got_address and vm.state.is_active):
                await within(self._sweep_part(session, take, progress, calls), self.host_timeout)
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


__all__ = [
    "DONE",
    "LIBVIRT",
    "SWEEP",
    "HostScan",
    "IpScanner",
    "LocalSweeper",
    "Progress",
    "ScanProgress",
    "SshResolver",
    "default_ssh_for",
    "host_is_local",
]
