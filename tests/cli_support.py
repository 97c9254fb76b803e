"""Run the installed ``catkeeper`` script as a user types it: its own process, the global
options before the verb (``catkeeper --config c.yaml reserve lab1/vm --note x``).

The script is the console entry point pip installed next to this Python
(``.venv/bin/catkeeper`` → ``catkeeper.cli:main``), so a verb that is not wired into
``catkeeper.cli`` fails here as it would for a user. ``PYTHONPATH`` points at this checkout,
so the code under test is this tree's even when the install is not editable; the working
directory is the test's tmp dir, never the repository.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
# Not resolved: .venv/bin/python is a symlink, and the script sits next to the link.
CATKEEPER = Path(sys.executable).with_name("catkeeper")


def catkeeper_argv(*argv: str) -> list[str]:
    if not CATKEEPER.is_file():
        pytest.fail(f"{CATKEEPER} is not installed: pip install -e . into this venv")
    return [str(CATKEEPER), *argv]


def cli_env(
    state: Path,
    *,
    user: str | None = None,
    display: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment for one run: logs under ``state``, UTC, no display unless given."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(
        PYTHONPATH=str(REPO),
        XDG_STATE_HOME=str(state),
        TZ="UTC",
    )
    env.pop("CATKEEPER_CONFIG", None)
    if user is not None:
        env["USER"] = env["LOGNAME"] = user  # getpass.getuser() reads them: who "me" is
    if display is not None:
        env["DISPLAY"] = display
    env.update(extra or {})
    return env


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run_catkeeper(
    *argv: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 180,
    stdin: str | None = None,
) -> Result:
    """``catkeeper ARGV…`` to the end; its exit code, stdout and stderr.

    ``stdin`` None: no terminal and nothing to read (the verbs that would ask must be told
    ``--yes``). The timeout is generous: it only stops a hung run.
    """
    proc = subprocess.run(
        catkeeper_argv(*argv),
        capture_output=True,
        text=True,
        input=stdin if stdin is not None else "",
        env=dict(env) if env is not None else cli_env(cwd / "state"),
        timeout=timeout,
        cwd=cwd,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


async def start_catkeeper(
    *argv: str, cwd: Path, env: Mapping[str, str] | None = None
) -> asyncio.subprocess.Process:
    """``catkeeper ARGV…`` started, with pipes for stdout and stderr (verbs that hold on)."""
    return await asyncio.create_subprocess_exec(
        *catkeeper_argv(*argv),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env) if env is not None else cli_env(cwd / "state"),
        cwd=str(cwd),
    )


async def end(proc: asyncio.subprocess.Process) -> None:
    """Kill a started catkeeper that is still running (a failed test's leftover)."""
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


def write_config(path: Path, hosts: Mapping[str, str], *, extra: str = "") -> Path:
    """A YAML config at ``path``: host name → libvirt URI, then ``extra`` top-level YAML."""
    lines = ["hosts:"]
    for name, uri in hosts.items():
        lines += [f"  - name: {name}", f"    uri: {uri}"]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def imported_top_levels(stderr: str) -> set[str]:
    """Top-level packages a run imported, from its ``PYTHONPROFILEIMPORTTIME=1`` stderr."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "imported package":
                names.add(name.split(".")[0])
    return names
