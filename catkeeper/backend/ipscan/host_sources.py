"""Where one host's guest IPs can be found: the passive pass (libvirt's sources and the
host's neighbour table, read over its ssh connection or here for this machine) and the
active sweep (over ssh on the host, or from here for a local host).

``HostSources`` holds how to reach each source and runs one part of a scan for one host;
``IpScanner`` (scheduler) decides when, and where the answers go. A sweep already under
way for the same target is joined instead of sent twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from catkeeper.backend.errors import describe
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.host import HostSession
from catkeeper.backend.ipscan.bulk import (
    Call,
    NeighReader,
    PassOutcome,
    host_pass,
    read_local_neigh,
)
from catkeeper.backend.ipscan.local_sweep import SweepOptions, sweep_local
from catkeeper.backend.ipscan.remote import remote_sweep
from catkeeper.backend.ipscan.results import NEIGH, SourceResult
from catkeeper.backend.ipscan.scan_report import LIBVIRT, SWEEP, Progress, ScanProgress
from catkeeper.backend.ssh import carries_libvirt
from catkeeper.config import HostConfig
from catkeeper.model import VM

if TYPE_CHECKING:
    import asyncssh

log = logging.getLogger(__name__)

_LOCAL_NAMES = frozenset({"", "localhost", "127.0.0.1", "::1"})


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


async def thread_sweeper(
    host: str, subnets: Sequence[str] | None, options: SweepOptions
) -> list[SourceResult]:
    return await sweep_local(host, subnets, options)


class HostSources:
    """How to reach each host's IP sources, and one part of a scan for one host."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        sweep_options: SweepOptions | None = None,
        host_timeout: float = 30.0,
        libvirt_concurrency: int | None = None,
        subnets: Sequence[str] | None = None,
        ssh_for: SshResolver = default_ssh_for,
        local_sweeper: LocalSweeper = thread_sweeper,
        progress: Progress | None = None,
        share_local_sweeps_s: float = 0.0,
        share_local_neigh_s: float = 0.0,
        local_neigh: Callable[..., Awaitable[list[SourceResult]]] = read_local_neigh,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fleet = fleet
        self._mono = mono  # how long ago a shared sweep ended
        # Background passes of several local hosts (test:///…, qemu:///system) over the same
        # subnets take a sweep of this machine that ended this recently instead of sending
        # their own: one machine, one view (the soak's 16 local hosts swept one /24 16 times
        # every interval).
        self.share_local_sweeps_s = share_local_sweeps_s
        # Likewise their passes read this machine's one neighbour table once, not each
        # (16 ``ip neigh`` processes a minute in the soak).
        self.share_local_neigh_s = share_local_neigh_s
        self.local_neigh = local_neigh
        self._recent: dict[tuple[str, ...], tuple[float, list[SourceResult]]] = {}
        # Sightings carry the fleet's clock, so their ages agree with the book's and the UI's.
        self.sweep_options = dataclasses.replace(sweep_options or SweepOptions(), clock=fleet.clock)
        self.host_timeout = host_timeout
        self.libvirt_concurrency = libvirt_concurrency
        self.subnets = tuple(subnets) if subnets is not None else None
        self.ssh_for = ssh_for
        self.local_sweeper = local_sweeper
        self.progress = progress
        # Neighbour-table reads started before their host's pass (prefetch_neigh).
        self._neigh_early: dict[str, asyncio.Future[list[SourceResult]]] = {}
        self._inflight: dict[tuple[str, ...], asyncio.Future[list[SourceResult]]] = {}

    def _report(self, progress: Progress | None, event: ScanProgress) -> None:
        for fn in (progress, self.progress):
            if fn is not None:
                try:
                    fn(event)
                except Exception:  # a broken progress display must not stop the scan
                    log.exception("ip scan progress callback failed")

    def concurrency_for(self, session: HostSession) -> int:
        """Per-VM calls in flight on one host: a worker thread stays free for a person."""
        if self.libvirt_concurrency:
            return max(1, self.libvirt_concurrency)
        configured = self.fleet.config.ipscan.per_vm_calls
        return configured or max(1, session.timing.workers_per_host - 1)

    def neigh_reader(self, session: HostSession, *, reuse: bool = True) -> NeighReader | None:
        """How to read the host's neighbour table in one go, or None.

        Over the host's shared ssh connection when it has one configured (or one is open
        already); for a ``qemu+ssh://`` host whose only ssh is libvirt's own, a second
        connection (another authentication, maybe a key touch) just for this is not worth
        it: per-VM ``arp`` instead. This machine's table for a local host (``reuse``: a read
        another local host's pass made lately will do); nothing for the test driver, whose
        guests are fiction.
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
            return partial(self._local_neigh, session.name, reuse=reuse)
        return None

    async def _local_neigh(self, host: str, *, reuse: bool) -> list[SourceResult]:
        key = ("local-neigh",)
        recent = self._recent.get(key)
        if reuse and recent is not None and self._mono() - recent[0] < self.share_local_neigh_s:
            results = recent[1]
        else:
            results = await self._shared(
                key, lambda: self.local_neigh(host, clock=self.fleet.clock)
            )
            if any(r.ok for r in results):  # a failed read is not passed on
                self._recent[key] = (self._mono(), results)
        return [r if r.host == host else dataclasses.replace(r, host=host) for r in results]

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
        reuse: bool = False,
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
            neigh=(lambda: early) if early is not None else self.neigh_reader(session, reuse=reuse),
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
        *,
        reuse: bool = False,
    ) -> None:
        subnets = self.subnets_for(session)
        self._report(progress, ScanProgress(session.name, SWEEP, 0, 1, ", ".join(subnets)))
        t0 = time.perf_counter()
        results = await self._shared(
            ("host", session.name), lambda: self._sweep_where(session, subnets, reuse=reuse)
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
        self, session: HostSession, subnets: Sequence[str], *, reuse: bool = False
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
            key = ("local", *subnets)
            recent = self._recent.get(key)
            if (
                reuse
                and recent is not None
                and self._mono() - recent[0] < self.share_local_sweeps_s
            ):
                results = recent[1]
            else:
                results = await self._shared(
                    key,
                    lambda: self.local_sweeper(session.name, subnets or None, self.sweep_options),
                )
                if any(r.ok for r in results):  # a failed sweep is not passed on
                    self._recent[key] = (self._mono(), results)
            return [dataclasses.replace(r, host=session.name) for r in results]
        return failed("no ssh connection to this host (give it ssh settings in the config)")
