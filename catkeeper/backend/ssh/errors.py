"""The ssh errors, each worded for a person: ``str()`` is the whole message."""

from __future__ import annotations

from catkeeper.backend.errors import HostUnavailable


class SshError(HostUnavailable):
    """An ssh failure, worded for a person (``str()`` is the whole message)."""


class HostKeyError(SshError):
    """The host's key is unknown or differs from known_hosts; the connection was refused."""


class SshAuthError(SshError):
    """The server refused every key catkeeper may offer."""
