"""libvirt's event loop: libvirt's own C implementation, run on one thread for the process.

libvirt accepts one event implementation per process, bound for good, while the TUI, the
headless run and the tests each bring their own asyncio loop. So the loop runs on its own
daemon thread (``virEventRunDefaultImpl`` in a loop, as virsh and virt-manager do) and
handlers hop to their caller's loop with ``call_soon_threadsafe``.

Why the C loop and not libvirtaio: every remote call a worker thread makes switches the
connection's socket watch off and on again, and libvirtaio turns each switch into Python on
both threads (a cross-thread call, a wake-up, asyncio's reader bookkeeping): ~4 per call,
100 to 160 µs of the event thread's CPU per call against a real libvirtd, and more of the
caller's. The C loop does the same in C without the GIL (30 to 50 µs; ``bench/run events``),
and Python runs on this thread only for an actual event (a domain event, a close, a
console's data).
"""

from __future__ import annotations

import logging
import threading
import time

import libvirt

log = logging.getLogger(__name__)

_lock = threading.Lock()
_started = False
_RETRY_S = 0.1  # after a failed iteration, so a persistent failure cannot spin


def silence_libvirt_stderr() -> None:
    """libvirt prints every error to stderr by default, which would scribble on the TUI."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def _run() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except libvirt.libvirtError as exc:
            log.warning("libvirt's event loop: %s", exc)
            time.sleep(_RETRY_S)


def ensure_event_loop() -> None:
    """Start the libvirt event thread once; call before opening any connection."""
    global _started
    with _lock:
        if _started:
            return
        silence_libvirt_stderr()
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run, name="libvirt-events", daemon=True).start()
        _started = True
