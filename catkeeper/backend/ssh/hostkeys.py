"""known_hosts checking that no ssh config can switch off, and key-file inspection."""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)


def is_encrypted_key(path: str) -> bool:
    import asyncssh

    try:
        asyncssh.read_private_key(path)
    except asyncssh.KeyEncryptionError:
        return True
    except Exception as exc:  # a missing or unreadable file is reported as such elsewhere
        return "passphrase" in str(exc).lower()
    return False


class HostKeyPolicy:
    """known_hosts checking that cannot be switched off by an ssh config.

    asyncssh asks ``match`` for the keys it may trust; if the server's key is not among
    them it asks ``decide``. Knowing whether the host had entries tells "unknown" (maybe
    accept, if allowed) from "changed" (never).
    """

    def __init__(self, explicit: str | None, accept_unknown: bool) -> None:
        self.explicit = os.path.expanduser(explicit) if explicit else None
        self.accept_unknown = accept_unknown
        self.files: list[str] = []
        self._known: Any = None  # asyncssh.SSHKnownHosts
        self._had_entries = False
        self._verdict: str | None = None  # "unknown" or "changed", after a refusal
        self._accepted: tuple[str, int, Any] | None = None

    def load(self, from_config: object) -> None:
        import asyncssh

        if self.explicit:
            candidates = [self.explicit]
        elif isinstance(from_config, list | tuple) and from_config:
            candidates = [os.path.expanduser(str(p)) for p in from_config]
        else:  # also when the config says "none": checking stays on
            candidates = [os.path.expanduser("~/.ssh/known_hosts"), "/etc/ssh/ssh_known_hosts"]
        self.files = candidates
        readable = [p for p in candidates if os.path.isfile(p) and os.access(p, os.R_OK)]
        self._known = asyncssh.read_known_hosts(readable) if readable else None

    def match(self, host: str, addr: str, port: int | None) -> Any:
        if self._known is None:
            result: tuple[Any, ...] = ([], [], [], [], [], [], [])
        else:
            result = self._known.match(host, addr, port)
        self._had_entries = bool(result[0]) or bool(result[1])
        return result

    def decide(self, host: str, port: int, key: Any) -> bool:
        if self._had_entries:
            self._verdict = "changed"
            return False
        if not self.accept_unknown:
            self._verdict = "unknown"
            return False
        self._accepted = (host, port, key)
        return True

    def record_accepted(self) -> None:
        """Write a key accepted under ``accept_unknown_host_key`` (trust on first use)."""
        if self._accepted is None:
            return
        host, port, key = self._accepted
        path = self.explicit or os.path.expanduser("~/.ssh/known_hosts")
        pattern = host if port in (22, None) else f"[{host}]:{port}"
        kind, blob = key.export_public_key("openssh").decode().split()[:2]
        line = f"{pattern} {kind} {blob}\n"
        try:
            os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write(line)
            log.warning("accepted new ssh host key for %s, recorded in %s", pattern, path)
        except OSError as exc:
            log.warning("accepted new ssh host key for %s; could not record it: %s", pattern, exc)

    def explain(self, name: str, where: str, detail: str) -> str:
        files = ", ".join(self.files) or "known_hosts"
        if self._verdict == "changed":
            return (
                f"{name}: ssh host key of {where} has CHANGED: it does not match {files}. "
                "Refusing to connect (this could be a man-in-the-middle attack); if the "
                "host was reinstalled, remove its old entry and verify the new key"
            )
        if self._verdict == "unknown":
            return (
                f"{name}: ssh host key of {where} is unknown (not in {files}); refusing to "
                "connect. Verify it and add it (ssh-keyscan), or set "
                "ssh.accept_unknown_host_key: true for this host"
            )
        return f"{name}: ssh host key of {where} was refused: {detail}"
