"""What the machine must offer the tests, and what happens when it does not.

On a developer's laptop a missing daemon or tool skips the tests that need it. With
``CATKEEPER_REQUIRE_DAEMONS=1`` (``scripts/test`` sets it when run as root, as CI is) every
such skip is a failure instead: a green run there means every test really ran.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

REQUIRE = "CATKEEPER_REQUIRE_DAEMONS"


def required() -> bool:
    return bool(os.environ.get(REQUIRE))


def unavailable(reason: str) -> NoReturn:
    """Skip for ``reason``, or fail when the environment is required to be complete."""
    if required():
        pytest.fail(f"{reason} ({REQUIRE}=1: the environment must provide it)", pytrace=False)
    pytest.skip(reason)


def require_tools(*tools: str, root: bool = True) -> None:
    """Root (unless ``root=False``) and every tool on PATH, or ``unavailable``."""
    if root and os.geteuid() != 0:
        unavailable("needs root to run real daemons")
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        unavailable(f"not installed: {', '.join(missing)} (scripts/bootstrap test)")
