"""One libvirt host: its inventory, kept fresh by events and warm refreshes.

The connection (lifecycle, backoff, calls, the ConnGuard that keeps a connection alive
while calls use it) is ``HostConnection`` in connection.py; the worker-thread reads are in
reads.py. This module turns those reads into VMs and events for the listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import libvirt

from catkeeper.backend.errors import describe
from catkeeper.backend.events import DomainEvent, InventoryLoaded, Listener, VmChanged, VmRemoved
from catkeeper.backend.host.connection import HostConnection
from catkeeper.backend.host.reads import (
    FULL_LISTING_EVERY,
    Bulk,
    HostFacts,
    Signature,
    read_bulk,
    read_one,
    read_xml,
)
from catkeeper.backend.inventory import StaticInfo, build_vm, live_figures
from catkeeper.backend.memory import release_freed_memory
from catkeeper.backend.small_index import index_add, index_discard
from catkeeper.backend.stats import HostStats, fold_sampler, start_polling
from catkeeper.backend.timeouts import cancel_and_wait, within
from catkeeper.backend.turns import map_in_turns
from catkeeper.backend.worker import ThreadBudget
from catkeeper.config import HostConfig, Timing
from catkeeper.model import VM, HostState, VmState

log = logging.getLogger(__name__)

# Events that change nothing the inventory shows; they are only passed on.
_PASS_ONLY = {libvirt.VIR_DOMAIN_EVENT_ID_REBOOT}
# How long to gather a burst of events for one domain before re-reading it.
_EVENT_COALESCE_S = 0.05
# Domains per XML-reading call: 50 round trips fit the call timeout up to ~0.5 s each.
_XML_CHUNK = 50
# Seconds after a reconnect before its XML is read again: a daemon back from a restart serves
# every client's reconnect first (read at once, 20 x 500 VMs: 10,000 XML calls for libvirtd
# while it still opened the other hosts, 1.7-2.0 s of our workers' CPU in the next 4 s).
RECHECK_AFTER_S = 5.0


def _read_part(
    domains: list[Any], secure: bool, background: bool, _conn: libvirt.virConnect
) -> dict[str, StaticInfo | BaseException]:
    return read_xml(domains, secure, background=background)


@dataclasses.dataclass
class _Handles:
    """Domain handles to read XML through, as a ``Bulk`` carries them."""

    domains: dict[str, Any]


class HostSession(HostConnection):
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
        super().__init__(cfg, timing, readonly=readonly, emit=emit, clock=clock, budget=budget)
        self._static: dict[str, StaticInfo] = {}
        # The last bulk read's per-domain signatures, applied in full (see Bulk).
        self._signatures: dict[str, Signature] = {}
        self._facts: HostFacts | None = None  # the connection's, read by the cold load
        self._warm_refreshes = 0  # since the cold load: every FULL_LISTING_EVERY-th lists all
        self._pending: set[str] = set()
        self._flush_scheduled = False
        # Adds what other sources know (IP sightings) to every VM this session builds.
        self.decorate: Callable[[VM], VM] | None = None
        # MAC → UUIDs of the VMs that had it when decorated: new IP sightings redecorate
        # those, not every VM of the host (checked on use, so a stale entry costs nothing).
        self._by_mac: dict[str, tuple[str, ...]] = {}  # backend/small_index.py
        self._degraded_reason: str | None = None
        # Domain handles whose XML a reconnect took from before the drop, to read again.
        self._recheck: dict[str, Any] = {}
        self.stats = HostStats(cfg.name)  # live rates per VM (backend/stats)
        self._stats_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        super().start()
        self._stats_task = start_polling(self, self._emit)

    async def aclose(self) -> None:
        if self._stats_task is not None:
            await cancel_and_wait(self._stats_task)
        await super().aclose()

    # ---- inventory ------------------------------------------------------------------------

    async def _read_xml_parallel(
        self, bulk: Bulk | _Handles, uuids: list[str], *, background: bool = False
    ) -> dict[str, StaticInfo]:
        """Domain XML for these UUIDs, a chunk per call (``background``: see read_xml)."""
        if not uuids:
            return {}
        secure = not self.readonly
        domains = [bulk.domains[u] for u in uuids]
        # Through the guard like every call (domain handles talk over the connection), in
        # calls of _XML_CHUNK domains one after another. The guard takes a connection's calls
        # in turn (libvirt's client crashes when a connection dies under two threads, see
        # conn_guard.py), so chunks on several threads would only hold more threads; each
        # chunk still has its own timeout, and a person's action takes its turn in between.
        results: list[dict[str, StaticInfo | BaseException]] = []
        for start in range(0, len(domains), _XML_CHUNK):
            chunk = domains[start : start + _XML_CHUNK]
            read = functools.partial(_read_part, chunk, secure, background)
            results.append(await self.call(read, what="reading domain XML"))
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

    def _vm_from(self, uuid: str, info: StaticInfo, bulk: Bulk, now: float) -> VM:
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
        self._warm_refreshes = 0
        bulk = await self.call(read_bulk, what="listing domains")
        self._facts = bulk.facts
        # Back after a drop, the XML read before it is shown at once (with the fresh states)
        # and read again behind (``_recheck``): the host is up as soon as it answers, not
        # after a round trip per domain (8 s for 500 VMs in the soak, calls taken in turn).
        known = {u: self._static[u] for u in bulk.uuids if u in self._static}
        infos = await self._read_xml_parallel(bulk, [u for u in bulk.uuids if u not in known])
        infos.update(known)
        now = self._clock()
        self._static = infos
        self.vms = await map_in_turns(infos, lambda u, i: self._vm_from(u, i, bulk, now))
        self._emit(InventoryLoaded(self.name, tuple(self.vms.values())))
        self._host_answered(bulk, now)
        self._signatures = self._applied(bulk, (u for u in bulk.uuids if u not in infos))
        self._recheck = {u: bulk.domains.pop(u) for u in known}
        await self._release(bulk.domains)
        bulk.domains = {}

    async def _release(self, handles: dict[str, Any]) -> None:
        def release() -> None:
            # Off the loop: freeing every domain handle (the GIL is dropped and taken back
            # once per handle) and trimming a large heap take milliseconds.
            handles.clear()
            release_freed_memory()

        with contextlib.suppress(Exception):
            await self._submit(release, timeout=self.timing.call_timeout, what="trimming memory")

    async def _recheck_static(self) -> None:
        """Read again the XML a reconnect showed from before the drop; re-read the domains
        whose XML changed meanwhile (edited, say, while this host was out of reach)."""
        handles, self._recheck = self._recheck, {}
        try:
            if self._lost.is_set():
                return  # lost while it waited: the handles go (their connection with them)
            fresh = await self._read_xml_parallel(_Handles(handles), list(handles), background=True)
            for uuid, info in fresh.items():
                if uuid in self.vms and self._static.get(uuid) != info:
                    await self.refresh_domain(uuid)
        except Exception as exc:  # the watch below notices a lost connection
            log.info("host %s: reading domains again after a reconnect: %s", self.name, exc)
        finally:
            await self._release(handles)

    @staticmethod
    def _applied(bulk: Bulk, unread: Iterable[str]) -> dict[str, Signature]:
        """The signatures to compare the next refresh with: a domain whose XML could not be
        read is left out, so that the next refresh tries it again."""
        signatures = bulk.signatures
        for uuid in unread:
            signatures.pop(uuid, None)
        return signatures

    async def _warm_refresh(self) -> None:
        self._degraded_reason = None
        sample = fold_sampler(self)  # the stats ride on this call (same interval)
        signatures, facts = self._signatures, self._facts
        self._warm_refreshes += 1
        running_only = self._warm_refreshes % FULL_LISTING_EVERY != 0
        bulk = await self.call(
            lambda c: read_bulk(c, signatures, sample, facts, running_only=running_only),
            what="refreshing",
        )
        now = self._clock()
        # Only what the worker saw change: with nothing changed, no per-VM work here.
        new = [u for u in bulk.changed if u not in self._static]
        read = await self._read_xml_parallel(bulk, new)
        self._static.update(read)
        # Only a full listing tells what is gone: a running-only one carries the shut-off
        # domains listed before but not those an event or an action brought in since.
        gone = self.vms.keys() - bulk.signatures.keys() if bulk.full else set()
        for uuid in gone:
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

    def _host_answered(self, bulk: Bulk, now: float) -> None:
        reason = self._degraded_reason
        self._set_host(
            state=HostState.DEGRADED if reason else HostState.UP,
            error=reason,
            error_since=(self.host.error_since or now) if reason else None,
            last_ok_at=now,
            latency_ms=bulk.latency_ms,
            capacity=bulk.capacity,
            vm_count=len(self.vms),
            hypervisor=bulk.facts.hypervisor,
            libvirt_version=bulk.facts.libvirt_version,
        )

    async def _watch(self) -> None:
        """Keep the inventory fresh until the connection is lost."""
        interval = self.timing.refresh_interval
        failures = 0
        if self._recheck:
            with contextlib.suppress(TimeoutError):
                await within(self._lost.wait(), RECHECK_AFTER_S)
            await self._recheck_static()
        while True:
            with contextlib.suppress(TimeoutError):
                await within(self._lost.wait(), interval if interval > 0 else None)
            if self._lost.is_set():
                await self._go_unreachable(self._lost_reason)
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
                    await self._go_unreachable(describe(exc))
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
        got = await self.call(lambda c: read_one(c, uuid, secure), what="reading a domain")
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
        for nic in vm.nics:
            index_add(self._by_mac, nic.mac, vm.uuid)
        return self.decorate(vm) if self.decorate is not None else vm

    def redecorate_macs(self, macs: Iterable[str]) -> None:
        """``redecorate`` for the VMs with a NIC of one of these MACs only: per changed
        address, not per VM (every scan walked all 10,000 VMs on the loop)."""
        if len(self._by_mac) > 4 * len(self.vms) + 64:
            # MACs of VMs long gone (churn defines new ones): start again from what is here.
            # Here, not while VMs are built: a cold load builds them before self.vms has them.
            self._by_mac = {}
            for known in self.vms.values():
                for nic in known.nics:
                    index_add(self._by_mac, nic.mac, known.uuid)
        for mac in macs:
            for uuid in self._by_mac.get(mac, ()):
                vm = self.vms.get(uuid)
                if vm is None or all(nic.mac != mac for nic in vm.nics):
                    index_discard(self._by_mac, mac, uuid)  # gone, or its NIC changed since
                    continue
                new = self._decorated(vm)
                if new != vm:
                    self.vms[uuid] = new
                    self._emit(VmChanged(new))

    def redecorate(self) -> None:
        """Apply ``decorate`` again to every VM (when the scanner attaches); emit changes."""
        for uuid, vm in list(self.vms.items()):
            new = self._decorated(vm)
            if new != vm:
                self.vms[uuid] = new
                self._emit(VmChanged(new))
