"""A connection is closed only when no call on another thread still uses it (real libvirt).

The bug this guards against: a host's connection was closed on one worker thread while an
IP scan's ``listAllNetworks`` ran on another, and catkeeper died of SIGSEGV (soak, flapping
hosts). Here a call holds the connection open across a close request, uses it again after
the request, and the close happens when that call ends; a call after the close request is
refused cleanly.
"""

from __future__ import annotations

import threading
from pathlib import Path

import libvirt
import pytest

from catkeeper.backend.conn_guard import ConnGuard
from catkeeper.backend.errors import HostUnavailable
from catkeeper.demo.fleetgen import write_fleet


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
