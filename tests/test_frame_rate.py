"""The TUI's frame rate: catkeeper asks Textual for more frames a second than its default
(a typed filter's rows then follow the typed text within a few milliseconds, cli/__init__.py),
and a user's own TEXTUAL_FPS wins. Checked in a fresh interpreter, as Textual reads the
variable once, when it is first imported."""

from __future__ import annotations

import os
import subprocess
import sys

from catkeeper.cli import FRAME_RATE, use_frame_rate

PROBE = (
    "import os\n"
    "from catkeeper.cli import use_frame_rate\n"
    "use_frame_rate(os.environ)\n"
    "import textual.constants, textual.screen\n"
    "print(textual.constants.MAX_FPS, round(1 / textual.screen.UPDATE_PERIOD))\n"
)


def _textual_frame_rate(extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TEXTUAL_FPS"} | extra
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_textual_paints_at_catkeepers_rate() -> None:
    assert FRAME_RATE > 60  # more than Textual's own default
    assert _textual_frame_rate({}) == f"{FRAME_RATE} {FRAME_RATE}"


def test_the_users_own_frame_rate_wins() -> None:
    assert _textual_frame_rate({"TEXTUAL_FPS": "30"}) == "30 30"
    env = {"TEXTUAL_FPS": "75"}
    use_frame_rate(env)
    assert env == {"TEXTUAL_FPS": "75"}
