"""Local sweeps in one long-lived child process instead of on catkeeper's own threads.

scapy is most of a sweep's cost and none of it needs to live in the TUI's process:
importing it adds ~45 MB of resident memory for good (measured: 57 → 115 MB for
``import catkeeper.app, scapy.all``; ~43 MB for the few modules we use), and its packet
loops are pure Python that takes the GIL from the event loop while a sweep runs. One child
imports it once and runs every local sweep (several side by side, each on its own thread)
until it has been idle for a while; catkeeper keeps only the answers.

Lines of JSON both ways. A request carries the fleet's clock reading, so the sightings'
times come from the clock catkeeper was given (time is an input), not the child's own.
A child that dies fails the sweeps in flight with a result that says so; the next sweep
starts a new one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from catkeeper.backend.ipscan.local_sweep import SweepOptions
from catkeeper.backend.ipscan.results import SWEEP_ARP, SourceResult
from catkeeper.backend.timeouts import within

log = logging.getLogger(__name__)

IDLE_TIMEOUT = 300.0  # seconds without a sweep before the child is let go
_LINE_LIMIT = 16 * 1024 * 1024  # one result line for a /22 of answers fits easily


@dataclass
class _Pending:
    future: asyncio.Future[list[SourceResult]]
    progress: Callable[[SourceResult], None] | None = field(default=None)


def _failed(host: str, subnets: Sequence[str] | None, error: str) -> list[SourceResult]:
    return [SourceResult(host, SWEEP_ARP, s, error=error) for s in (subnets or ["*"])]


class SweepProcess:
    """The parent's end: ``sweep`` has the shape ``IpScanner``'s local sweeper takes."""

    def __init__(
        self,
        *,
        argv: Sequence[str] | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self._argv = list(argv or (sys.executable, "-m", __name__))
        self._idle_timeout = idle_timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self._idle: asyncio.TimerHandle | None = None
        self._starting = asyncio.Lock()
        self.started = 0  # children started so far (tests, the soak)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    async def sweep(
        self,
        host: str,
        subnets: Sequence[str] | None,
        options: SweepOptions,
        *,
        timeout: float = 30.0,
        progress: Callable[[SourceResult], None] | None = None,
    ) -> list[SourceResult]:
        try:
            proc = await self._child()
        except OSError as exc:
            return _failed(host, subnets, f"cannot start the sweep process: {exc}")
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        ident = next(self._ids)
        future: asyncio.Future[list[SourceResult]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = _Pending(future, progress)
        request = {
            "id": ident,
            "host": host,
            "subnets": list(subnets) if subnets else None,
            "now": options.clock(),  # the fleet's clock: sightings are timed by it
            "options": {
                "arp": options.arp,
                "icmp": options.icmp,
                "timeout": options.timeout,
                "wait": options.wait,
                "privileged": options.privileged,
                "max_addresses": options.max_addresses,
            },
        }
        try:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(request).encode() + b"\n")
            await proc.stdin.drain()
            return await within(asyncio.shield(future), timeout)
        except TimeoutError:
            return _failed(host, subnets, f"sweep timed out after {timeout:g} s")
        except (OSError, RuntimeError) as exc:  # the child went away while we wrote
            return _failed(host, subnets, f"sweep process failed: {exc}")
        finally:
            self._pending.pop(ident, None)
            if not self._pending:
                self._idle = asyncio.get_running_loop().call_later(self._idle_timeout, self._let_go)

    async def _child(self) -> asyncio.subprocess.Process:
        async with self._starting:
            if self._proc is not None and self._proc.returncode is None:
                return self._proc
            self._proc = await asyncio.create_subprocess_exec(
                *self._argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                limit=_LINE_LIMIT,
            )
            self.started += 1
            self._reader = asyncio.get_running_loop().create_task(self._read(self._proc))
            return self._proc

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        try:
            while line := await proc.stdout.readline():
                self._take(json.loads(line))
        except (ValueError, OSError) as exc:
            log.warning("sweep process: unreadable answer: %s", exc)
        finally:
            code = await proc.wait()
            for pending in list(self._pending.values()):
                if not pending.future.done():
                    error = f"sweep process ended (exit {code})"
                    pending.future.set_result([SourceResult("?", SWEEP_ARP, "*", error=error)])

    def _take(self, doc: dict[str, Any]) -> None:
        pending = self._pending.get(int(doc["id"]))
        if pending is None:  # timed out here already; the late answer is dropped
            return
        if "progress" in doc:
            if pending.progress is not None:
                pending.progress(SourceResult.from_json(doc["progress"]))
        elif not pending.future.done():
            pending.future.set_result([SourceResult.from_json(r) for r in doc["results"]])

    def _let_go(self) -> None:
        self._idle = None
        proc = self._proc
        if proc is not None and not self._pending and proc.stdin is not None:
            proc.stdin.close()  # the child ends at the end of its input

    async def aclose(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await within(proc.wait(), 5)
        except TimeoutError:
            proc.kill()  # our own child, by its handle
            await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader


# ---- the child's end ---------------------------------------------------------------------


def _serve_one(doc: dict[str, Any], write: Callable[[dict[str, Any]], None]) -> None:
    from catkeeper.backend.ipscan.local_sweep import sweep

    ident, base, received = doc["id"], float(doc["now"]), time.monotonic()
    options = SweepOptions(
        **doc["options"],
        # The parent's clock, carried forward by this process's monotonic one.
        clock=lambda: base + (time.monotonic() - received),
    )
    try:
        results = sweep(
            doc["host"],
            doc["subnets"],
            options,
            lambda r: write({"id": ident, "progress": r.to_json()}),
        )
    except Exception as exc:  # one bad sweep must not end the others
        results = _failed(doc["host"], doc["subnets"], f"sweep failed: {exc}")
    write({"id": ident, "results": [r.to_json() for r in results]})


def main() -> int:
    logging.getLogger("scapy").setLevel(logging.ERROR)
    lock = threading.Lock()

    def write(doc: dict[str, Any]) -> None:
        line = json.dumps(doc) + "\n"
        with lock:
            sys.stdout.write(line)
            sys.stdout.flush()

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        for line in sys.stdin:
            if line.strip():
                pool.submit(_serve_one, json.loads(line), write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
