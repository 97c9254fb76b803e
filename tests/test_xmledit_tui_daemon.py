"""The edit-XML flow in the TUI against a real libvirtd, with a real editor process (a
small script run as $VISUAL): a refused edit shows libvirt's message and lets the user edit
again without losing the text; the fixed edit applies."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from textual.app import App

from catkeeper.backend.fleet import Fleet
from catkeeper.backend.vm.xmledit import Applied, editor_argv
from catkeeper.model import VM
from catkeeper.screens.xml_edit import DiffScreen, edit_vm_xml
from tests.tui_support import until
from tests.vmops_support import (
    Lab,
    fleet_fixture,  # noqa: F401 - the fleet fixture
    inactive_xml,
    lab_fixture,  # noqa: F401 - the lab fixture
    vm_of,
)

pytestmark = pytest.mark.daemon

# Run 1 makes an edit libvirt's schema refuses; run 2 finds the user's text still there
# and fixes it. Each run appends to a log so the test can count them.
EDITOR = """
import sys, pathlib
path = pathlib.Path(sys.argv[-1])
log = pathlib.Path(sys.argv[1])
runs = log.read_text().count("run") if log.exists() else 0
log.write_text(log.read_text() + "run\\n" if log.exists() else "run\\n")
text = path.read_text()
if runs == 0:
    text = text.replace("<vcpu placement='static'>1</vcpu>", "<vcpu>one</vcpu>")
else:
    assert "<vcpu>one</vcpu>" in text, "the user's edit was lost"
    text = text.replace("<vcpu>one</vcpu>", "<vcpu placement='static'>2</vcpu>")
path.write_text(text)
"""


class Harness(App[None]):
    def __init__(self, fleet: Fleet, vm: VM, env: dict[str, str]) -> None:
        super().__init__()
        self.fleet, self.vm, self.env = fleet, vm, env
        self.outcome: Any = "running"

    def on_mount(self) -> None:
        self.run_worker(self._flow())

    async def _flow(self) -> None:
        self.outcome = await edit_vm_xml(self, self.fleet, self.vm, env=self.env)


def test_editor_argv_splits_like_a_shell_and_defaults_to_vi() -> None:
    assert editor_argv({"VISUAL": "code -w", "EDITOR": "nano"}) == ["code", "-w"]
    assert editor_argv({"EDITOR": "'/opt/my editor/bin/ed' -s"}) == ["/opt/my editor/bin/ed", "-s"]
    assert editor_argv({}) == ["vi"]


async def test_refused_edit_can_be_edited_again_then_applies(
    fleet: Fleet, lab: Lab, tmp_path: Path
) -> None:
    dom = lab.domain()
    vm = await vm_of(fleet, dom)
    before = inactive_xml(dom)
    script, log = tmp_path / "editor.py", tmp_path / "runs.log"
    script.write_text(EDITOR)
    app = Harness(fleet, vm, {"VISUAL": f"{sys.executable} {script} {log}"})
    async with app.run_test(size=(120, 40)) as pilot:
        await until(lambda: isinstance(app.screen, DiffScreen), what="the diff")
        assert "+  <vcpu>one</vcpu>" in app.screen.diff  # type: ignore[attr-defined]
        await pilot.press("a")
        await until(
            lambda: isinstance(app.screen, DiffScreen) and app.screen.error is not None,
            what="the refusal",
        )
        error = app.screen.error  # type: ignore[attr-defined]
        assert "failed to validate against schema" in error
        assert inactive_xml(dom) == before  # refused: nothing changed
        await pilot.press("a")  # applying a refused edit again is not offered
        await pilot.pause()
        assert isinstance(app.screen, DiffScreen) and app.screen.error == error
        await pilot.press("e")
        await until(
            lambda: isinstance(app.screen, DiffScreen) and app.screen.error is None,
            what="the second diff",
        )
        assert "+  <vcpu placement='static'>2</vcpu>" in app.screen.diff
        await pilot.press("a")
        await until(lambda: app.outcome != "running", what="the flow to end")
    assert isinstance(app.outcome, Applied)
    assert log.read_text().count("run") == 2
    assert dom.info()[3] == 2
    # The temporary copy (it may hold a VNC password) is gone.
    assert not list(Path(tempfile.gettempdir()).glob(f"catkeeper-{vm.name}-*.xml"))
