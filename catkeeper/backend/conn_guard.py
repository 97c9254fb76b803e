"""Keep a libvirt connection alive while calls on other threads still use it.

``virConnectClose`` frees the connection when its last reference goes, and a libvirt call
running on another thread holds no reference of its own (``virDomain`` objects do; the
connection methods do not). Closing while such a call is under way is a use-after-free:
measured in ``bench/soak.py`` at 20 hosts x 500 VMs, catkeeper died of SIGSEGV inside
``listAllNetworks`` (the IP scan's lease pass) while a flapping host's connection was being
dropped on another worker thread, in 3 of 21 soak runs.

So every call on a connection goes through :meth:`ConnGuard.run`, and :meth:`ConnGuard.close`
closes at once when nothing runs, or leaves the close to the last call still running. A call
that would start after the close was asked for fails with ``HostUnavailable`` instead of
touching freed memory. A call hung on a black-holed host keeps the connection (and its
socket) until libvirt gives up on it, which is what keepalive is for.

**One call at a time per connection.** That close was not the whole story: the soak kept
dying (in ``getInfo``, ``listAllNetworks``: ``g_main_loop_quit`` under
``virNetClientIOEventLoop``). libvirt's RPC client (9.0 here, the same code upstream) waits
for its socket with a GSource whose callback data lives on the waiting thread's stack, and
destroys it only if it fired. When the wait is ended from outside instead (keepalive
declaring the connection dead, a close) the call fails with the source still attached, and
the next thread waiting on the same connection inherits the socket, dispatches that source
once the socket turns readable and writes through a stack frame the first thread has long
left. It takes a second thread inside libvirt on the same connection when it dies, which
catkeeper's parallel reads, scans and refreshes made routine on a failing host. With the
calls taken in turn here, no second thread ever waits inside libvirt for a connection: the
next one waits below, and finds the connection closed instead of a stale source.
``bench/stale_watch_repro.py`` shows it (raw calls die, calls through this class do not).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from catkeeper.backend.errors import HostUnavailable

T = TypeVar("T")


class ConnGuard:
    def __init__(self, conn: Any, name: str) -> None:
        self.conn = conn
        self._name = name
        self._lock = threading.Lock()
        self._users = 0
        self._closer: Callable[[], None] | None = None
        self._closing = False
        # Held for the whole call (see the module docstring: libvirt's client is not safe
        # with two threads in calls on one connection when it dies). Re-entrant, so a call
        # that makes another through the same guard on its own thread cannot deadlock.
        self._turn = threading.RLock()

    def run(self, fn: Callable[[Any], T]) -> T:
        """``fn(conn)`` on the calling thread, unless the connection is closing."""
        with self._lock:
            if self._closing:
                raise HostUnavailable(f"{self._name}: the connection was closed")
            self._users += 1
        try:
            with self._turn:
                if self._closing:
                    # Waited for its turn while the connection was given up (a hung host):
                    # fail now instead of one more call on a dying connection.
                    raise HostUnavailable(f"{self._name}: the connection was closed")
                return fn(self.conn)
        finally:
            with self._lock:
                self._users -= 1
                closer = self._closer if self._users == 0 else None
                self._closer = None if closer is not None else self._closer
            if closer is not None:
                closer()

    def close(self, closer: Callable[[], None]) -> bool:
        """Run ``closer`` now if no call uses the connection (True), else after the last one.

        Only the first close counts; later ones are ignored.
        """
        with self._lock:
            if self._closing:
                return False
            self._closing = True
            if self._users:
                self._closer = closer
                return False
        closer()
        return True

    @property
    def users(self) -> int:
        with self._lock:
            return self._users
