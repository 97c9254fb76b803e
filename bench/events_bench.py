"""libvirt's event loop: CPU per remote call, the C loop (catkeeper's) against libvirtaio.

Not a test.

Every remote call a worker thread makes switches its connection's socket watch off and on,
which reaches the event implementation: libvirt's own loop does that in C, libvirtaio in
Python on the event thread (plus a cross-thread hop from the caller). This measures, against
a real ``libvirtd`` serving a 500-VM test-driver node file over its unix socket, the CPU time
per call of the calling thread and of the event thread, for the calls of a warm refresh.
Each implementation runs in a process of its own (libvirt takes one per process, for good).

    bench/run events                  # or: .venv/bin/python bench/events_bench.py [--calls N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CALLS = ("getFreeMemory", "listAllDomains(AUTOSTART)", "getAllDomainStats(ACTIVE)")
PAUSE_S = 0.005  # between calls, so the event thread settles as between real refreshes


def thread_cpu(tid: int) -> float:
    fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_libvirtaio() -> None:
    """catkeeper's setup before 543e0b5: libvirtaio on its own thread's asyncio loop, and a
    proxy that forwards the loop calls libvirt makes from other threads (``virConnectOpen``
    and every call's watch switches run on the caller's thread) to the loop's own thread."""
    import asyncio

    import libvirtaio  # type: ignore[import-untyped]

    class LoopProxy:
        def __init__(self, loop: asyncio.AbstractEventLoop, tid: int) -> None:
            self._loop, self._tid = loop, tid

        def _call(self, fn: Callable[..., Any], *args: Any) -> None:
            if threading.get_ident() == self._tid:
                fn(*args)
            else:
                self._loop.call_soon_threadsafe(fn, *args)

        def add_reader(self, fd: int, cb: Callable[..., Any], *args: Any) -> None:
            self._call(self._loop.add_reader, fd, cb, *args)

        def remove_reader(self, fd: int) -> None:
            self._call(self._loop.remove_reader, fd)

        def add_writer(self, fd: int, cb: Callable[..., Any], *args: Any) -> None:
            self._call(self._loop.add_writer, fd, cb, *args)

        def remove_writer(self, fd: int) -> None:
            self._call(self._loop.remove_writer, fd)

        def create_task(self, coro: Any, **_: Any) -> Any:
            if threading.get_ident() == self._tid:
                return self._loop.create_task(coro)
            return asyncio.run_coroutine_threadsafe(coro, self._loop)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._loop, name)

    ready = threading.Event()

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        impl = libvirtaio.virEventAsyncIOImpl(loop=loop)
        impl.loop = LoopProxy(loop, threading.get_ident())
        impl.register()
        loop.call_soon(ready.set)
        loop.run_forever()

    threading.Thread(target=run, name="libvirt-events", daemon=True).start()
    if not ready.wait(10):
        raise RuntimeError("libvirtaio's thread did not start")


def start_loop(kind: str) -> int:
    """Register ``kind``'s implementation and start its thread; the thread's native id."""
    import libvirt

    if kind == "c":
        from catkeeper.backend.eventloop import ensure_event_loop

        ensure_event_loop()
    else:
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        _start_libvirtaio()
    (events,) = [t for t in threading.enumerate() if t.name == "libvirt-events"]
    assert events.native_id is not None
    return events.native_id


def measure(kind: str, uri: str, n: int) -> dict[str, Any]:
    """In this process: per call, the caller's and the event thread's CPU (µs)."""
    import libvirt

    events_tid = start_loop(kind)
    conn = libvirt.open(uri)
    conn.setKeepAlive(5, 3)
    conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lambda *_a: None, None)
    groups = libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_VCPU
    calls: dict[str, Callable[[], object]] = {
        CALLS[0]: conn.getFreeMemory,
        CALLS[1]: lambda: conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART),
        CALLS[2]: lambda: conn.getAllDomainStats(
            groups, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE
        ),
    }
    out: dict[str, Any] = {}
    for name, call in calls.items():
        call()
        e0, c0 = thread_cpu(events_tid), time.thread_time()
        for _ in range(n):
            with contextlib.suppress(libvirt.libvirtError):  # no free memory: still a call
                call()
            time.sleep(PAUSE_S)
        out[name] = {
            "caller_us": 1e6 * (time.thread_time() - c0) / n,
            "events_us": 1e6 * (thread_cpu(events_tid) - e0) / n,
        }
    conn.close()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--calls", type=int, default=1000, help="calls of each kind (default 1000)")
    p.add_argument("--rounds", type=int, default=3, help="runs of each loop, medians (default 3)")
    p.add_argument("--child", nargs=2, metavar=("KIND", "URI"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(measure(a.child[0], a.child[1], a.calls)))
        return 0
    if os.geteuid() != 0:
        print("events bench: needs root (it starts libvirtd)", file=sys.stderr)
        return 2
    from catkeeper.demo.nodes import write_fleet
    from tests.daemons import LIBVIRT_SOCKET, ensure_libvirtd

    daemon = ensure_libvirtd()
    try:
        with tempfile.TemporaryDirectory(prefix="events-bench-") as tmp:
            (node,) = write_fleet(Path(tmp), 1, 500, seed=1)
            uri = f"test+unix://{node}?socket={LIBVIRT_SOCKET}"
            runs: dict[str, list[dict[str, Any]]] = {"c": [], "aio": []}
            for _ in range(a.rounds):  # alternated, so a busy moment hits both alike
                for kind in runs:
                    done = subprocess.run(
                        [sys.executable, __file__, "--calls", str(a.calls), "--child", kind, uri],
                        capture_output=True, text=True, check=True,
                        env={**os.environ, "PYTHONPATH": str(ROOT)},
                    )  # fmt: skip
                    runs[kind].append(json.loads(done.stdout.strip().splitlines()[-1]))
            got = {
                kind: {
                    name: {
                        key: statistics.median(r[name][key] for r in results)
                        for key in ("caller_us", "events_us")
                    }
                    for name in CALLS
                }
                for kind, results in runs.items()
            }
    finally:
        daemon.stop()
    print(
        f"CPU per remote call, µs (median of {a.rounds} runs of {a.calls} calls each), "
        "500-VM test host through libvirtd"
    )
    print(f"{'call':28} {'C loop: caller':>15} {'events':>7} {'libvirtaio: caller':>19} "
          f"{'events':>7} {'total ratio':>12}")  # fmt: skip
    for name in CALLS:
        c, aio = got["c"][name], got["aio"][name]
        total_c = c["caller_us"] + c["events_us"]
        total_aio = aio["caller_us"] + aio["events_us"]
        print(
            f"{name:28} {c['caller_us']:15.0f} {c['events_us']:7.0f} {aio['caller_us']:19.0f} "
            f"{aio['events_us']:7.0f} {total_aio / total_c:11.2f}x"
        )
    print("(ratio: libvirtaio's caller + event thread CPU over the C loop's; catkeeper: C loop)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
