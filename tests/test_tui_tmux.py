"""End to end: the installed ``catkeeper`` binary in a real terminal (tmux), typed at."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.environment import require_tools, unavailable
from tests.tui_support import fleet_config

BINARY = Path(sys.executable).with_name("catkeeper")


class Tmux:
    """A private tmux server (its own -L socket), so the test never touches anyone else's."""

    def __init__(self) -> None:
        self.socket = f"catkeeper-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def run(self, *args: str) -> str:
        out = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        if out.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "t")

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            shown = self.screen()
            if text in shown:
                return shown
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never appeared; the screen:\n{shown}")
            time.sleep(0.1)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    require_tools("tmux", root=False)
    if not BINARY.exists():
        unavailable(f"no catkeeper entry point at {BINARY} (pip install -e .)")
    server = Tmux()
    yield server
    server.kill()


def test_binary_filters_in_a_real_terminal(tmp_path: Path, tmux: Tmux) -> None:
    config = fleet_config(tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(
        "hosts:\n" + "".join(f"  - name: {h.name}\n    uri: {h.uri}\n" for h in config.hosts)
    )
    env = {
        "HOME": str(tmp_path),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "TERM": "xterm-256color",
    }
    command = shlex.join(
        ["env", *(f"{k}={v}" for k, v in env.items()), str(BINARY), "--config", str(path)]
    )
    tmux.run("new-session", "-d", "-s", "t", "-x", "160", "-y", "50", command)
    tmux.wait_for("cache-01")  # every host answered
    tmux.run("send-keys", "-t", "t", "/")
    tmux.run("send-keys", "-t", "t", "-l", "state:running web")
    tmux.run("send-keys", "-t", "t", "Enter")
    shown = tmux.wait_for("2/7 VMs · /state:running web")  # the status line, after enter
    assert "web-01" in shown and "web-02" in shown
    assert "cache-01" not in shown and "web-03" not in shown and "build-01" not in shown
    assert "Traceback" not in shown
    tmux.run("send-keys", "-t", "t", "q")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        alive = subprocess.run(
            ["tmux", "-L", tmux.socket, "has-session", "-t", "t"], capture_output=True
        )
        if alive.returncode != 0:
            break  # q quit the app, which ended the session
        time.sleep(0.1)
    else:
        raise AssertionError(f"q did not quit; the screen:\n{tmux.screen()}")
