"""One ``virConnectOpenAuth`` in flight, and how it is opened.

``virConnectOpenAuth`` has no timeout of its own, so an attempt outlives the connect
timeout that stopped waiting for it (see connection.py); it closes what it opens if the
session gave it up meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import libvirt

from catkeeper.backend.errors import HostUnavailable
from catkeeper.backend.ssh import LibvirtForward
from catkeeper.config import Timing


def effective_uri(uri: str) -> str:
    """The URI to open: ssh transports get ``no_tty=1`` so ssh never prompts on our terminal."""
    parts = urlsplit(uri)
    if "+ssh" not in parts.scheme:
        return uri
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.setdefault("no_tty", "1")
    return urlunsplit(parts._replace(query=urlencode(query)))


def _refuse_credentials(_creds: list[Any], _data: object) -> int:
    # Any interactive prompt would write onto the TUI's screen: fail instead, and the
    # host shows the authentication error.
    return -1


class Attempt:
    """One ``virConnectOpenAuth`` in flight on a worker thread, outliving connect timeouts.

    ``future`` resolves on the session's loop; ``forward`` is the ssh-forwarded socket the
    attempt dials (kept open while it waits). ``abandon`` makes the attempt's thread close
    the connection the moment the open returns, or closes it now if it already has.
    """

    def __init__(self, forward: LibvirtForward | None) -> None:
        self.forward = forward
        self.future: asyncio.Future[libvirt.virConnect] | None = None
        self._lock = threading.Lock()
        self._abandoned = False
        self._opened: libvirt.virConnect | None = None

    def opened(self, conn: libvirt.virConnect) -> None:
        """Called on the worker thread with the new connection; closes it if abandoned."""
        with self._lock:
            if not self._abandoned:
                self._opened = conn
                return
        close_quietly(conn)
        raise HostUnavailable("connection attempt abandoned")

    def abandon(self) -> libvirt.virConnect | None:
        """Give the attempt up; returns a connection it already made (the caller closes it)."""
        with self._lock:
            self._abandoned = True
            conn, self._opened = self._opened, None
        if self.forward is not None:  # an open still reading from it fails at once
            self.forward.close()
        return conn


def close_quietly(conn: libvirt.virConnect) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()


def open_connection(
    uri: str, attempt: Attempt, *, readonly: bool, timing: Timing
) -> libvirt.virConnect:
    """Open ``uri`` on the calling (worker) thread and hand the connection to ``attempt``."""
    flags = libvirt.VIR_CONNECT_RO if readonly else 0
    auth = [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], _refuse_credentials, None]
    conn = libvirt.openAuth(uri, auth, flags)
    # Local and test drivers have no keepalive; they cannot drop either.
    with contextlib.suppress(libvirt.libvirtError):
        conn.setKeepAlive(timing.keepalive_interval, timing.keepalive_count)
    attempt.opened(conn)  # closes it instead if the session gave the attempt up
    return conn
