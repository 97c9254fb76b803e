"""Long sessions: what retries and many hosts leave behind (threads, sockets, memory).

catkeeper stays open for days (design.md, "Time and long sessions"): at most one connect in
flight per host, no thread or socket left behind by a retry, a bounded number of threads
however many hosts, and a hung host that delays no other. These tests count the process's
own threads (``/proc/self/task``) and sockets (``/proc/self/fd`` links), and the kernel's
TCP table for connections to a black hole. Timings here are generous bounds, not speed
assertions: only the behaviour is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import os
import random
import subprocess
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from catkeeper.backend.events import FleetEvent, HostChanged
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.host import session as host_session
from catkeeper.backend.timeouts import cancel_and_wait
from catkeeper.backend.worker import HostExecutor, ThreadBudget
from catkeeper.config import Timing
from catkeeper.demo.fleetgen import write_fleet
from catkeeper.model import HostState
from tests.daemons import LibvirtDaemon
from tests.fleet_helpers import fleet_config

LIBVIRT_SOCK = "/run/libvirt/libvirt-sock"


# --------------------------------------------------------------------------- counting


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def socket_count() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            n += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return n


def established_to(port: int) -> int:
    """ESTABLISHED TCP connections on this machine whose remote end is 127.0.0.1:port."""
    found = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        _addr, rport = fields[2].split(":")
        if int(rport, 16) == port and fields[3] == "01":
            found += 1
    return found


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true within {timeout} s")
        await asyncio.sleep(0.02)


def unreachable_counter(fleet: Fleet, host: str) -> list[float]:
    """Times at which ``host`` was reported unreachable (one per failed attempt)."""
    seen: list[float] = []

    def on(event: FleetEvent) -> None:
        if (
            isinstance(event, HostChanged)
            and event.host.name == host
            and event.host.state is HostState.UNREACHABLE
        ):
            seen.append(time.monotonic())

    fleet.subscribe(on)
    return seen


# --------------------------------------------------------------------------- a black hole


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts and never says a word (a hung host), served by
    a child process so that only catkeeper's own sockets count in this one."""
    code = (
        "import socket, sys\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(128)\n"
        "print(s.getsockname()[1], flush=True)\n"
        "held = []\n"
        "while True:\n"
        "    held.append(s.accept())\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait(10)


FAST_RETRY = Timing(
    connect_timeout=0.3, call_timeout=1, refresh_interval=0, backoff_initial=0.1, backoff_max=0.1
)


async def test_black_hole_retries_leave_no_thread_or_socket_behind(black_hole: int) -> None:
    fleet = Fleet(
        fleet_config([("hung", f"qemu+tcp://127.0.0.1:{black_hole}/system")], timing=FAST_RETRY)
    )
    failures = unreachable_counter(fleet, "hung")
    await fleet.start()
    try:
        await until(lambda: len(failures) >= 1, 30, "first failure")
        threads, sockets = thread_count(), socket_count()
        await until(lambda: len(failures) >= 31, 120, "30 more failures")
        # Every retry waited for the one open still stuck in virConnectOpenAuth.
        assert established_to(black_hole) == 1
        assert thread_count() <= threads, "a retry left a thread behind"
        assert socket_count() <= sockets, "a retry left a socket behind"
        session = fleet.session("hung")
        assert session.executor.threads == 1
        assert "timed out after 0.3 s (still waiting for an earlier attempt)" in (
            session.host.error or ""
        )
    finally:
        await fleet.aclose()


# --------------------------------------------------------------------------- many hosts


class _ThreadPeak:
    """The largest thread count of this process, sampled every few milliseconds."""

    def __init__(self) -> None:
        self.peak = thread_count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, thread_count())

    def __enter__(self) -> _ThreadPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.mark.thread_timers
async def test_threads_stay_bounded_as_hosts_grow(tmp_path: Path) -> None:
    hosts, shared = 100, 16
    paths = write_fleet(tmp_path, hosts=hosts, vms_per_host=10, seed=4)
    timing = Timing(
        connect_timeout=30,
        call_timeout=60,
        refresh_interval=0,
        workers_per_host=8,
        shared_workers=shared,
        worker_idle=0.5,
    )
    fleet = Fleet(fleet_config([(p.stem, f"test://{p}") for p in paths], timing=timing))
    # The libvirt event thread and the sampler are made before the baseline is taken.
    from catkeeper.backend.eventloop import ensure_event_loop

    ensure_event_loop()
    with _ThreadPeak() as sampler:
        baseline = thread_count()
        await fleet.start()
        try:
            assert await fleet.wait_settled(120)
            assert all(h.state is HostState.UP for h in fleet.hosts())
            assert len(fleet.vms()) == hosts * 10
            # Each host's own thread plus the shared budget, never 8 per host (800).
            assert sampler.peak - baseline <= hosts + shared
            assert fleet.threads.used <= shared
            # Idle threads end: nothing is asked of the hosts now (no refresh), so none stays.
            await until(lambda: thread_count() <= baseline, 30, "idle worker threads end")
            # And come back when asked.
            session = fleet.session(paths[0].stem)
            assert await session.call(lambda c: c.getHostname())
        finally:
            await fleet.aclose()


@pytest.mark.thread_timers
async def test_a_hung_host_delays_no_other(tmp_path: Path) -> None:
    paths = write_fleet(tmp_path, hosts=2, vms_per_host=5, seed=2)
    timing = Timing(
        connect_timeout=10,
        call_timeout=60,
        refresh_interval=0,
        workers_per_host=4,
        shared_workers=2,
    )
    fleet = Fleet(fleet_config([(p.stem, f"test://{p}") for p in paths], timing=timing))
    await fleet.start()
    release = threading.Event()
    try:
        assert await fleet.wait_settled(30)
        hung, other = (fleet.session(p.stem) for p in paths)
        # The cold load's spare threads give their tokens back once idle.
        await until(lambda: fleet.threads.used == 0, 10, "spare threads end")

        def stuck(_conn: object) -> bool:  # a call that never comes back, like a dead host's
            return release.wait(120)

        calls = [asyncio.ensure_future(hung.call(stuck)) for _ in range(6)]
        # The hung host has every thread it may (its own + the whole shared budget) and
        # queues the rest.
        await until(lambda: hung.executor.threads == 3 and hung.executor.queued == 3, 10, "hung")
        assert fleet.threads.used == 2
        # The other host still answers, on its own thread, at once.
        started = time.monotonic()
        name = await asyncio.wait_for(other.call(lambda c: c.getHostname()), 10)
        assert name and time.monotonic() - started < 10
        vm = next(iter(other.vms.values()))
        assert await asyncio.wait_for(other.refresh_domain(vm.uuid), 10) is not None
        assert other.executor.threads == 1
        release.set()
        assert all(await asyncio.wait_for(asyncio.gather(*calls), 30))
    finally:
        release.set()
        await fleet.aclose()


def _awaits(tasks: list[asyncio.Task[Any]]) -> list[str]:
    """Where each task waits: its chain of coroutines, outermost first."""
    chains = []
    for task in tasks:
        coro: Any = task.get_coro()
        names = []
        while coro is not None and hasattr(coro, "cr_frame"):
            if coro.cr_frame is not None:
                names.append(f"{coro.__qualname__}:{coro.cr_frame.f_lineno}")
            coro = coro.cr_await
        chains.append(" > ".join(names))
    return chains


async def test_closing_a_busy_session_at_any_moment_returns(tmp_path: Path) -> None:
    """Closed at a random moment while its warm refresh and stats poll run back to back (a
    worker's answer lands every few milliseconds), a session's close returns every time.
    On Python 3.11 a cancel that met a worker's answer in one pass was lost in
    ``asyncio.wait_for`` and the close waited forever: 9 closes in 1000 hung here before
    (backend/timeouts.py); the flaky teardown of the ssh reconnect tests."""
    (path,) = write_fleet(tmp_path, hosts=1, vms_per_host=10, seed=5)
    timing = Timing(
        connect_timeout=10, call_timeout=10, refresh_interval=0.001, stats_interval=0.001
    )
    chance = random.Random(11)
    for cycle in range(400):
        fleet = Fleet(fleet_config([(path.stem, f"test://{path}")], timing=timing))
        await fleet.start()
        assert await fleet.wait_settled(30)
        await asyncio.sleep(chance.random() * 0.05)
        closing = asyncio.ensure_future(fleet.aclose())
        done, _ = await asyncio.wait({closing}, timeout=5)
        if not done:
            hosts = [t for t in asyncio.all_tasks() if t.get_name().startswith("host-")]
            pytest.fail(f"close {cycle + 1} still waits after 5 s; host tasks at {_awaits(hosts)}")
        closing.result()


# --------------------------------------------------------------------------- the executor


@pytest.mark.thread_timers
async def test_idle_threads_hold_no_result_and_end() -> None:
    class Payload:  # stands for a bulk read: 500 domain handles and their stats
        pass

    executor = HostExecutor("t", 4, budget=ThreadBudget(3), idle_timeout=0.5)
    loop = asyncio.get_running_loop()
    try:
        result = await loop.run_in_executor(executor, Payload)
        ref = weakref.ref(result)
        del result

        def released() -> bool:
            gc.collect()
            return ref() is None

        # The thread is idle and alive, waiting for work, and holds nothing.
        await until(released, 5, "an idle worker thread lets go of its last result")
        assert executor.threads == 1
        await until(lambda: executor.threads == 0, 10, "idle thread ends")
    finally:
        executor.shutdown()


async def test_a_failed_call_hands_over_its_error_but_not_its_locals() -> None:
    class Handles:  # stands for a listing's domain handles, each holding its connection
        pass

    executor = HostExecutor("t", 2, budget=ThreadBudget(1))
    loop = asyncio.get_running_loop()
    refs: list[weakref.ref[Handles]] = []

    def listing() -> None:
        handles = Handles()
        refs.append(weakref.ref(handles))
        raise RuntimeError("the host went away mid-call")

    try:
        with pytest.raises(RuntimeError) as caught:
            await loop.run_in_executor(executor, listing)
        # Still holding the error, as an awaiting frame or a failed future does.
        assert "went away" in str(caught.value) and caught.value.__traceback__ is not None
        assert refs[0]() is None  # no collection needed: nothing holds the handles
        lines = "".join(traceback.format_tb(caught.value.__traceback__))
        assert "in listing" in lines and "raise RuntimeError" in lines  # where it failed
    finally:
        executor.shutdown()


async def test_a_failed_call_leaves_the_awaiting_side_no_cycle(tmp_path: Path) -> None:
    """A coroutine that holds a handle (a lease pass's network, a domain) while its call
    fails, and moves on: the handle goes with it, by reference counting alone. The failure's
    traceback keeps the awaiting frames; the awaited future used to stay in one of them and
    hold the failure in turn: a cycle that kept the handle, and so a dropped connection's
    client (an eventfd) open, until a full collection, never if the cycle had been frozen
    (catkeeper/heap.py): +2 eventfds in a 5-minute soak with faults."""
    (path,) = write_fleet(tmp_path, hosts=1, vms_per_host=3, seed=4)
    fleet = Fleet(fleet_config([(path.stem, f"test://{path}")], timing=Timing()))
    await fleet.start()
    try:
        assert await fleet.wait_settled(30)
        session = fleet.session(path.stem)
        refs: list[weakref.ref[Any]] = []
        failures: list[str] = []

        async def attach_bogus_device() -> None:
            dom = await session.call(lambda c: c.listAllDomains()[0])
            refs.append(weakref.ref(dom))
            try:
                await session.call(lambda _c: dom.attachDevice("<bogus/>"))
            except libvirt.libvirtError as exc:
                failures.append(str(exc))

        gc.collect()
        gc.disable()
        try:
            for _ in range(3):
                await attach_bogus_device()
            # The loop's last callback handle still refers to the last call's future until
            # the loop turns once more.
            await asyncio.sleep(0.01)
            alive = [r for r in refs if r() is not None]
        finally:
            gc.enable()
        assert len(failures) == 3  # the test driver has no device attach: a libvirtError
        assert alive == []
    finally:
        await fleet.aclose()


async def test_failed_connects_leave_no_cycle(tmp_path: Path) -> None:
    """A host that cannot be opened, retried: each failure is freed by reference counting,
    not left to the collector (which may have frozen it: catkeeper/heap.py)."""
    missing = tmp_path / "gone.xml"
    fleet = Fleet(fleet_config([("gone", f"test://{missing}")], timing=FAST_RETRY))
    downs = unreachable_counter(fleet, "gone")
    gc.collect()
    gc.disable()
    try:
        await fleet.start()
        await until(lambda: len(downs) >= 4, 30, "four failed connects")
        await fleet.aclose()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        failures = [o for o in gc.garbage if isinstance(o, libvirt.libvirtError)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert failures == []


@pytest.mark.thread_timers
async def test_the_most_recently_idle_thread_works_so_spares_end() -> None:
    executor = HostExecutor("t", 4, budget=ThreadBudget(3), idle_timeout=0.6)
    loop = asyncio.get_running_loop()
    gate = threading.Event()
    try:
        burst = [loop.run_in_executor(executor, gate.wait, 30) for _ in range(4)]
        await until(lambda: executor.threads == 4, 10, "four threads")
        gate.set()
        await asyncio.gather(*burst)
        # A steady trickle of calls, closer together than idle_timeout: one thread serves
        # them, the three spares end.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            await loop.run_in_executor(executor, time.sleep, 0.001)
            await asyncio.sleep(0.1)
        assert executor.threads == 1
    finally:
        executor.shutdown()


# --------------------------------------------------------------------------- late answers


class _HeldUnixRelay:
    """127.0.0.1:PORT relayed to a unix socket (the real libvirtd's), held until released:
    a host whose first answer is late. Counts what it accepted and what is still open."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.port = 0
        self.accepted = 0
        self.open = 0
        self._loop = asyncio.new_event_loop()
        self._flowing = asyncio.Event()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._refusing = False

    def start(self) -> _HeldUnixRelay:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def _serve(self) -> asyncio.Server:
        return await asyncio.start_server(self._handle, "127.0.0.1", 0)

    def release(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.set)

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        if self._refusing:
            cw.close()
            return
        self.accepted += 1
        self.open += 1
        self._writers.add(cw)
        try:
            await self._flowing.wait()
            ur, uw = await asyncio.open_unix_connection(self.path)

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                with contextlib.suppress(OSError):
                    while data := await src.read(65536):
                        dst.write(data)
                        await dst.drain()
                dst.close()

            await asyncio.gather(pipe(cr, uw), pipe(ur, cw))
        finally:
            self.open -= 1
            self._writers.discard(cw)
            cw.close()

    def refuse(self, on: bool) -> None:
        """While on, every new connection is closed at once, as by a daemon that is down."""
        self._refusing = on

    def cut(self) -> None:
        """Drop every relayed connection, as a crashed link would; new ones still get through."""

        def abort() -> None:
            for writer in list(self._writers):
                writer.transport.abort()

        self._loop.call_soon_threadsafe(abort)

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            # Ended here, on a running loop: a handler left pending ran its clean-up when
            # the collector found it after the loop was gone ("Event loop is closed").
            await cancel_and_wait(*(asyncio.all_tasks() - {asyncio.current_task()}))

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()


@pytest.fixture
def held_relay(libvirtd: LibvirtDaemon) -> Iterator[_HeldUnixRelay]:
    relay = _HeldUnixRelay(LIBVIRT_SOCK).start()
    yield relay
    relay.release()
    relay.stop()


async def test_a_connect_that_answers_late_is_used_not_repeated(
    held_relay: _HeldUnixRelay, tmp_path: Path
) -> None:
    (node,) = write_fleet(tmp_path, hosts=1, vms_per_host=7, seed=9)
    uri = f"test+tcp://127.0.0.1:{held_relay.port}{node}"
    fleet = Fleet(fleet_config([("late", uri)], timing=FAST_RETRY))
    failures = unreachable_counter(fleet, "late")
    await fleet.start()
    try:
        await until(lambda: len(failures) >= 5, 60, "five timed-out waits")
        assert held_relay.accepted == 1  # every retry waited for the first attempt
        held_relay.release()
        session = fleet.session("late")
        await until(lambda: session.host.state is HostState.UP, 30, "the late answer is used")
        assert len(session.vms) == 7 and not any(vm.stale for vm in session.vms.values())
        assert held_relay.accepted == 1 and held_relay.open == 1
    finally:
        await fleet.aclose()


async def test_an_abandoned_attempt_is_closed_when_it_returns(
    held_relay: _HeldUnixRelay, tmp_path: Path
) -> None:
    (node,) = write_fleet(tmp_path, hosts=1, vms_per_host=3, seed=9)
    uri = f"test+tcp://127.0.0.1:{held_relay.port}{node}"
    fleet = Fleet(fleet_config([("late", uri)], timing=FAST_RETRY))
    failures = unreachable_counter(fleet, "late")
    await fleet.start()
    session = fleet.session("late")
    await until(lambda: len(failures) >= 1, 30, "first failure")
    await fleet.aclose()  # gives the stuck attempt up
    assert held_relay.open == 1 and session.executor.threads == 1
    held_relay.release()  # now the open returns, on its thread, into a closed session
    await until(lambda: held_relay.open == 0, 30, "the late connection is closed")
    await until(lambda: session.executor.threads == 0, 30, "its thread ends")
    assert held_relay.accepted == 1


def _relayed_host(
    relay: _HeldUnixRelay,
    tmp_path: Path,
    vms: int,
    *,
    backoff_initial: float,
    backoff_max: float = Timing.backoff_max,
) -> tuple[Path, Fleet, list[float]]:
    """One host "lab" of ``vms`` VMs reached through ``relay`` (released), not started yet;
    with the times it is reported unreachable."""
    (node,) = write_fleet(tmp_path, hosts=1, vms_per_host=vms, seed=9)
    relay.release()
    uri = f"test+tcp://127.0.0.1:{relay.port}{node}"
    fast = Timing(
        connect_timeout=5,
        call_timeout=5,
        refresh_interval=0,
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
        backoff_jitter=0,  # the gaps are measured
    )
    fleet = Fleet(fleet_config([("lab", uri)], timing=fast))
    return node, fleet, unreachable_counter(fleet, "lab")


async def test_a_reconnect_shows_the_host_at_once_and_reads_its_domains_again_later(
    held_relay: _HeldUnixRelay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Back after a drop, the host is up with the domain XML from before the drop and the
    XML is read again behind it: a change made meanwhile (a new driver instance from an
    edited node file here, an XML edit by someone else on a real host) still shows. Read
    again RECHECK_AFTER_S later, not at once, when a restarted daemon serves every client's
    reconnect."""
    monkeypatch.setattr(host_session, "RECHECK_AFTER_S", 1.5)
    node, fleet, failures = _relayed_host(held_relay, tmp_path, 7, backoff_initial=0.1)
    await fleet.start()
    try:
        session = fleet.session("lab")
        await until(lambda: session.host.state is HostState.UP, 30, "first load")
        uuid, vm = next(iter(session.vms.items()))
        assert vm.title != "edited while away"
        text = node.read_text()
        name_tag = f"<name>{vm.name}</name>"
        assert text.count(name_tag) == 1
        node.write_text(text.replace(name_tag, f"{name_tag}<title>edited while away</title>"))

        held_relay.cut()
        await until(lambda: bool(failures), 30, "the drop is noticed")
        await until(lambda: session.host.state is HostState.UP, 30, "back up")
        back = time.monotonic()
        assert len(session.vms) == 7
        await until(
            lambda: session.vms[uuid].title == "edited while away", 30, "the XML read again"
        )
        assert time.monotonic() - back > 1.0  # 1.5 s after the load; 'back' polled late
        assert not any(v.stale for v in session.vms.values())
        assert held_relay.open == 1  # the dropped connection is gone, one in use
    finally:
        await fleet.aclose()


async def test_lost_again_while_the_re_read_waits_lets_the_dropped_connection_go(
    held_relay: _HeldUnixRelay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host lost again while its reconnect's re-read waits (RECHECK_AFTER_S) lets go of the
    domain handles kept for it, and with them of the dropped connection (a libvirt client,
    an eventfd), at once: not at its next reconnect, which may be hours away."""
    monkeypatch.setattr(host_session, "RECHECK_AFTER_S", 60.0)
    _, fleet, failures = _relayed_host(held_relay, tmp_path, 7, backoff_initial=0.1)
    await fleet.start()
    try:
        session = fleet.session("lab")
        await until(lambda: session.host.state is HostState.UP, 30, "first load")
        held_relay.cut()
        await until(lambda: bool(failures), 30, "the drop is noticed")
        await until(lambda: session.host.state is HostState.UP, 30, "back up, re-read waiting")
        dropped = weakref.ref(await session.call(lambda conn: conn, what="the connection"))
        seen = len(failures)
        held_relay.refuse(True)
        held_relay.cut()
        await until(lambda: len(failures) > seen, 30, "the second drop is noticed")
        gc.collect()  # what is left is held on purpose, not by a cycle
        await until(lambda: dropped() is None, 10, "the dropped connection is freed")
    finally:
        held_relay.refuse(False)
        await fleet.aclose()


async def test_a_host_that_dropped_is_retried_at_once_then_sooner_than_a_new_one(
    held_relay: _HeldUnixRelay, tmp_path: Path
) -> None:
    """A drop of a host that was up is most often its daemon restarting: retried at once,
    then after a quarter of backoff_initial, doubling (0.5, 1, 2 s for 2 s here), where a
    host never reached waits backoff_initial first (test_backend_fleet.py's backoff test)."""
    _node, fleet, failures = _relayed_host(
        held_relay, tmp_path, 3, backoff_initial=2, backoff_max=8
    )
    await fleet.start()
    try:
        session = fleet.session("lab")
        await until(lambda: session.host.state is HostState.UP, 30, "first load")
        held_relay.refuse(True)
        held_relay.cut()
        await until(lambda: len(failures) >= 5, 30, "the drop and four failed retries")
        # failures[0]: the drop; [1]: the retry at once; then 0.5, 1, 2 s apart.
        gaps = [round(b - a, 2) for a, b in itertools.pairwise(failures[:5])]
        assert gaps[0] < 0.4, gaps
        assert 0.4 < gaps[1] < 0.9, gaps
        assert 0.9 < gaps[2] < 1.4, gaps
        assert 1.9 < gaps[3] < 2.4, gaps
        held_relay.refuse(False)
        await until(lambda: session.host.state is HostState.UP, 30, "back up")
        assert len(session.vms) == 3 and not any(vm.stale for vm in session.vms.values())
    finally:
        await fleet.aclose()
