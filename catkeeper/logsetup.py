"""Logging to a file, never to the terminal the TUI draws on."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

_SECRET = re.compile(r"""(passwd|password|passphrase)(\s*[=:]\s*)(['"]?)[^'"\s>]+\3""", re.I)


class _Redact(logging.Filter):
    """Belt and braces: no password reaches the log even if a message quotes XML."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = _SECRET.sub(r"\1\2\3***\3", message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def default_log_path(env: Mapping[str, str]) -> Path:
    state = env.get("XDG_STATE_HOME") or os.path.join(env.get("HOME", "~"), ".local", "state")
    return Path(os.path.expanduser(state)) / "catkeeper" / "catkeeper.log"


def setup_logging(path: str | None, verbosity: int, env: Mapping[str, str]) -> Path | None:
    """Log to ``path`` (default under $XDG_STATE_HOME); ``-v`` info, ``-vv`` debug."""
    target = Path(path) if path else default_log_path(env)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbosity, 2)]
    root = logging.getLogger()
    root.setLevel(level)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(target, encoding="utf-8")
    except OSError:
        # An unwritable log location must not stop the tool; drop the records instead.
        root.addHandler(logging.NullHandler())
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_Redact())
    root.addHandler(handler)
    return target
