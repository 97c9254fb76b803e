"""A connection is closed only when no call on another thread still uses it (real libvirt).

The bug this guards against: a host's connection was closed on one worker thread while an
IP scan's ``listAllNetworks`` ran on another, and catkeeper died of SIGSEGV (soak, flapping
hosts). Here a call holds the connection open across a close request, uses it again after
the request, and the close happens when that call ends; a call after the close request is
refused cleanly.

It was not the whole story: the soak kept dying, in libvirt's client itself (see
conn_guard.py: a socket watch left on the connection with a dead thread's stack as its data,
dispatched by the next thread waiting on that connection once keepalive killed it). The
daemon tests below replay that against the real libvirtd, in a child process each (the bug
kills its process): two calls in flight on a connection when keepalive ends it, through a
relay that holds the daemon's replies. Made directly they kill the child; through ConnGuard,
which takes calls on a connection in turn, they fail cleanly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import libvirt
import pytest

from catkeeper.backend.conn_guard import ConnGuard
from catkeeper.backend.errors import HostUnavailable
from catkeeper.demo.fleetgen import write_fleet
from tests.daemons import LibvirtDaemon
from tests.libvirt_wire import RpcCounter

ROOT = Path(__file__).resolve().parent.parent


def _open(tmp_path: Path) -> libvirt.virConnect:
    [node] = write_fleet(tmp_path, 1, 5)
    return libvirt.open(f"test://{node}")


def test_close_waits_for_the_call_in_flight_and_then_happens(tmp_path: Path) -> None:
    conn = _open(tmp_path)
    guard = ConnGuard(conn, "lab1")
    inside, release = threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def long_call(c: libvirt.virConnect) -> int:
        seen["before"] = len(c.listAllDomains())
        inside.set()
        assert release.wait(30)
        return len(c.listAllDomains())  # after close was asked for: must still work

    worker = threading.Thread(target=lambda: seen.setdefault("after", guard.run(long_call)))
    worker.start()
    assert inside.wait(30)
    closed = threading.Event()
    assert guard.close(lambda: (conn.close(), closed.set())) is False  # deferred
    assert not closed.is_set()
    with pytest.raises(HostUnavailable, match="lab1: the connection was closed"):
        guard.run(lambda c: c.listAllDomains())
    release.set()
    worker.join(30)
    assert seen == {"before": 5, "after": 5}
    assert closed.is_set()
    assert guard.users == 0
    with pytest.raises(libvirt.libvirtError):
        conn.getURI()  # closed for real


def test_close_with_nothing_running_is_immediate_and_only_once(tmp_path: Path) -> None:
    conn = _open(tmp_path)
    guard = ConnGuard(conn, "lab1")
    assert guard.run(lambda c: len(c.listAllDomains())) == 5
    closes: list[int] = []
    assert guard.close(lambda: (closes.append(1), conn.close())) is True
    assert guard.close(lambda: closes.append(2)) is False
    assert closes == [1]


def test_a_failing_call_still_lets_the_deferred_close_run(tmp_path: Path) -> None:
    conn = _open(tmp_path)
    guard = ConnGuard(conn, "lab1")
    inside, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def failing(c: libvirt.virConnect) -> None:
        inside.set()
        assert release.wait(30)
        c.lookupByName("no-such-vm")

    def run() -> None:
        try:
            guard.run(failing)
        except libvirt.libvirtError as exc:
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    assert inside.wait(30)
    closed = threading.Event()
    guard.close(lambda: (conn.close(), closed.set()))
    release.set()
    worker.join(30)
    assert len(errors) == 1 and errors[0].get_error_code() == libvirt.VIR_ERR_NO_DOMAIN
    assert closed.is_set()


# The child: a connection through a relay that holds every reply HOLD s once the calls start;
# keepalive 1 s x 1 ends it after ~2 s with A's call and B's both in flight. A then hangs in
# another open (its stack now holds other frames, as the soak's reconnecting thread did);
# the held replies make the dead socket readable while B still waits on it.
_CHILD = """
import contextlib, os, sys, threading, time
from pathlib import Path
import libvirt
from catkeeper.backend.conn_guard import ConnGuard
from catkeeper.backend.eventloop import ensure_event_loop
from tests.libvirt_wire import RpcCounter

mode, work = sys.argv[1], Path(sys.argv[2])
HOLD = 6.0
ensure_event_loop()
slow = RpcCounter(work / "slow.sock").start()
hung = RpcCounter(work / "hung.sock", reply_delay=600).start()
conn = libvirt.open(slow.uri)
conn.setKeepAlive(1, 1)
guard = ConnGuard(conn, "slow")
call = guard.run if mode == "guard" else (lambda fn: fn(conn))
slow.reply_delay = HOLD
a_failed = threading.Event()
said = {}

def a():
    try:
        call(lambda c: c.getInfo())
    except libvirt.libvirtError as exc:
        said["a"] = str(exc)
    a_failed.set()
    with contextlib.suppress(libvirt.libvirtError):
        libvirt.open(hung.uri)

def b():
    try:
        call(lambda c: c.getLibVersion())
    except Exception as exc:
        said["b"] = str(exc)

threading.Thread(target=a, daemon=True).start()
time.sleep(0.3)
tb = threading.Thread(target=b, daemon=True)
tb.start()
assert a_failed.wait(HOLD), "keepalive never ended the connection"
tb.join(HOLD + 30)
print("survived:", said, flush=True)
os._exit(0)
"""


def _replay(mode: str, work: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "G_DEBUG": "fatal-criticals"}
    # fatal-criticals: the stale watch does not always reach unmapped memory; GLib notices a
    # quit on a loop without references first, and that must end the child too.
    return subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(work)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_two_calls_on_a_connection_keepalive_kills_do_not_kill_the_process(
    libvirtd: LibvirtDaemon, tmp_path: Path
) -> None:
    raw_dir, guarded_dir = tmp_path / "raw", tmp_path / "guard"
    raw_dir.mkdir()
    guarded_dir.mkdir()
    raw = _replay("raw", raw_dir)
    if raw.returncode == 0:
        pytest.skip(f"this libvirt survives two calls on a dying connection: {raw.stdout}")
    assert raw.returncode < 0, raw.stderr[-2000:]  # killed by a signal: the libvirt bug
    guarded = _replay("guard", guarded_dir)
    assert guarded.returncode == 0, (guarded.returncode, guarded.stderr[-2000:])
    assert "keepalive" in guarded.stdout  # A: the connection died under it
    assert "client socket is closed" in guarded.stdout  # B: refused, no stale watch


def test_calls_on_one_connection_take_turns_on_the_wire(
    libvirtd: LibvirtDaemon, tmp_path: Path
) -> None:
    """Three threads at once: made directly they overlap on the wire (so the relay can see
    overlap), through the guard one is in flight at a time."""
    with RpcCounter(tmp_path / "r.sock", reply_delay=0.3) as rpc:
        conn = libvirt.open(rpc.uri)
        try:
            guard = ConnGuard(conn, "lab1")

            def three(call: Callable[[Callable[[libvirt.virConnect], object]], object]) -> int:
                rpc.reset()
                start = threading.Barrier(3)

                def one() -> None:
                    start.wait(30)
                    call(lambda c: c.getInfo())

                threads = [threading.Thread(target=one) for _ in range(3)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(60)
                return max(rpc.max_in_flight.values())

            assert three(lambda fn: fn(conn)) >= 2
            assert three(guard.run) == 1
        finally:
            conn.close()
