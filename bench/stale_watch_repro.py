"""Reproduce libvirt's client-side SIGSEGV that killed catkeeper in bench/soak.py.

libvirt's RPC client (``virNetClientIOEventLoop``, libvirt 9.0 as shipped by Debian 12, and
the same code upstream since the GLib rewrite) waits for its socket with a GSource whose
callback data is a struct on the waiting thread's *stack*. The source is destroyed only
when it fires; when the wait ends another way (``g_main_loop_quit`` from another thread: a
keepalive timeout, a close) the source stays attached to the connection's private
GMainContext. If the call then fails (the dead connection) and the client hands "the buck"
to the next thread waiting on the same connection, that thread's wait dispatches the stale
source as soon as the socket turns readable, and it writes to and reads from a stack frame
the first thread left long ago: ``g_main_loop_quit(garbage)`` → SIGSEGV.

It takes two threads with calls in flight on one connection when that connection dies, which
catkeeper did all the time (parallel XML reads, IP scans and refreshes on a host's threads).

Here, in a child process per trial: connection through a relay with keepalive 1 s x 1; the
relay black-holes; thread A calls (and holds the buck), thread B calls (and waits for it);
keepalive declares the connection dead, A fails, B inherits the buck and waits; A then
blocks in another ``openAuth`` (its stack now holds other frames, as in the soak's core);
the relay lets the held bytes through, the socket turns readable, B dispatches A's source.

``--mode raw`` makes the calls directly (libvirt's behaviour: expect signal 11);
``--mode guard`` makes them through catkeeper's ``ConnGuard`` (one call at a time per
connection: B waits outside libvirt, then fails cleanly). Needs root (libvirtd).

    PYTHONPATH=. .venv/bin/python bench/stale_watch_repro.py --mode raw --trials 5
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import libvirt

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from soak_relay import RelayLoop, UnixRelay

from catkeeper.backend.conn_guard import ConnGuard
from catkeeper.backend.eventloop import ensure_event_loop
from catkeeper.demo.fleetgen import write_fleet
from tests.daemons import LIBVIRT_SOCKET, ensure_libvirtd


def trial(mode: str, work: Path) -> str:
    """One trial in this process; returns what happened (a crash never returns)."""
    ensure_event_loop()
    [node] = write_fleet(work, 1, 5)
    relays = RelayLoop()
    first = UnixRelay(relays, str(work / "r1.sock"), str(LIBVIRT_SOCKET)).start()
    second = UnixRelay(relays, str(work / "r2.sock"), str(LIBVIRT_SOCKET)).start()
    conn = libvirt.open(f"test+unix://{node}?socket={first.path}")
    conn.setKeepAlive(1, 1)
    guard = ConnGuard(conn, "repro")
    call: Any = guard.run if mode == "guard" else (lambda fn: fn(conn))
    call(lambda c: c.listAllDomains())
    first.blackhole = True
    second.blackhole = True  # A's second open hangs in it, like the soak's reconnects
    out: dict[str, str] = {}
    a_failed = threading.Event()

    def thread_a() -> None:
        try:
            call(lambda c: c.getInfo())
            out["a"] = "answered"
        except libvirt.libvirtError as exc:
            out["a"] = f"failed: {exc}"
        a_failed.set()
        with contextlib.suppress(libvirt.libvirtError):
            libvirt.open(f"test+unix://{node}?socket={second.path}")

    def thread_b() -> None:
        try:
            call(lambda c: c.getLibVersion())
            out["b"] = "answered"
        except Exception as exc:
            out["b"] = f"failed: {exc}"

    a = threading.Thread(target=thread_a, daemon=True)
    a.start()
    time.sleep(0.3)
    b = threading.Thread(target=thread_b, daemon=True)
    b.start()
    if not a_failed.wait(20):
        return "A never failed (keepalive did not fire?)"
    time.sleep(1.0)  # A is inside the second openAuth now; B waits on the dead connection
    first.blackhole = False  # the held bytes flow: the socket turns readable
    b.join(20)
    return f"survived: A {out.get('a')}; B {out.get('b', 'still waiting')}"


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--mode", choices=("raw", "guard"), default="raw")
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    o = p.parse_args()
    if o.child is not None:
        print(trial(o.mode, o.child), flush=True)
        return 0
    daemon = ensure_libvirtd()
    crashes = 0
    try:
        for i in range(o.trials):
            with tempfile.TemporaryDirectory(prefix="ckrepro-") as tmp:
                r = subprocess.run(
                    [sys.executable, __file__, "--mode", o.mode, "--child", tmp],
                    # The stale source does not always reach unmapped memory: GLib notices
                    # a quit on a loop with no references first. Make that fatal too.
                    env={**os.environ, "G_DEBUG": "fatal-criticals"},
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
            crashes += r.returncode < 0
            what = f"killed by {signal.Signals(-r.returncode).name}" if r.returncode < 0 else "ok"
            said = r.stdout.strip() or r.stderr.strip()[-200:]
            print(f"trial {i + 1}: {what}: {said}", flush=True)
    finally:
        daemon.stop()
    print(f"{o.mode}: {crashes} of {o.trials} trials died")
    return 0


if __name__ == "__main__":
    sys.exit(main())
