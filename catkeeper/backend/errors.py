"""Backend errors with messages fit to show a person as they are."""

from __future__ import annotations

import libvirt


class BackendError(Exception):
    """Something a user should read: ``str()`` is the whole message."""


class HostUnavailable(BackendError):
    pass


class CallTimeout(BackendError):
    pass


class NotFound(BackendError):
    pass


class ReadOnlyError(BackendError):
    """The host (or the whole fleet) is read-only; nothing was sent to libvirt."""


def error_code(exc: BaseException) -> int | None:
    """libvirt's error code of ``exc`` (None: not a libvirt error, or it gave none)."""
    if isinstance(exc, libvirt.libvirtError):
        code = exc.get_error_code()
        return int(code) if code is not None else None
    return None


def describe(exc: BaseException) -> str:
    """One line for a person, without libvirt's ``libvirt:`` noise or a traceback."""
    if isinstance(exc, libvirt.libvirtError):
        msg = exc.get_error_message() or str(exc)
        return " ".join(msg.split())
    if isinstance(exc, BackendError):
        return str(exc)
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
