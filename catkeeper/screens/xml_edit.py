"""Edit a VM's XML in the user's own editor, see the diff, apply — or edit again.

``edit_vm_xml(app, fleet, vm)`` is the whole flow; run it in a worker (it waits for
screens): ``app.run_worker(edit_vm_xml(app, fleet, vm), exclusive=True)``.

1. The definition is written to a private temporary file (mode 0600: it may hold a VNC
   password).
2. The app suspends and ``$VISUAL``/``$EDITOR`` (split like a shell would, run as an argv,
   never through a shell; ``vi`` by default) edits the file.
3. Unchanged: nothing happens. Changed: ``DiffScreen`` shows the unified diff; the user
   applies, edits again or discards.
4. When libvirt (or ``check_edit``) refuses, ``DiffScreen`` shows why above the diff and
   offers to edit again: the user's text is still in the file, nothing is lost.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from rich.syntax import Syntax
from textual.app import App, ComposeResult, SuspendNotSupported
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from catkeeper.backend.errors import BackendError
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.vm import xmledit
from catkeeper.backend.vm.xmledit import editor_argv
from catkeeper.model import VM

Choice = Literal["apply", "edit", "discard"]


class DiffScreen(ModalScreen[Choice]):
    """The diff of an edit, and what to do with it (an error above it, when there is one)."""

    DEFAULT_CSS = """
    DiffScreen { align: center middle; }
    DiffScreen > Vertical {
        width: 100%; height: 100%; border: thick $accent; background: $surface; padding: 0 1;
    }
    DiffScreen #title { text-style: bold; width: 100%; }
    DiffScreen #error { color: $error; width: 100%; margin: 1 0 0 0; }
    DiffScreen VerticalScroll { height: 1fr; margin: 1 0 0 0; }
    DiffScreen Horizontal { height: auto; align-horizontal: right; }
    DiffScreen Button { margin: 0 0 0 2; min-width: 10; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "choose('apply')", "Apply"),
        Binding("e", "choose('edit')", "Edit again"),
        Binding("escape,d", "choose('discard')", "Discard"),
    ]

    def __init__(
        self, ref: str, diff: str, *, error: str | None = None, running: bool = False
    ) -> None:
        super().__init__()
        self.ref = ref
        self.diff = diff
        self.error = error
        self.running = running

    def compose(self) -> ComposeResult:
        with Vertical():
            title = f"Apply these changes to {self.ref}?"
            if self.error is not None:
                title = f"The edit of {self.ref} was not applied"
            elif self.running:
                title += "  (it runs: they take effect at its next boot)"
            yield Label(title, id="title")
            if self.error is not None:
                yield Static(self.error, id="error")
            with VerticalScroll():
                yield Static(
                    Syntax(self.diff, "diff", theme="ansi_dark", word_wrap=True), id="diff"
                )
            with Horizontal():
                yield Button("Discard (d)", id="discard", variant="default")
                yield Button("Edit again (e)", id="edit", variant="primary")
                if self.error is None:
                    yield Button("Apply (a)", id="apply", variant="warning")

    def on_mount(self) -> None:
        self.query_one("#edit", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_choose(event.button.id or "discard")

    def action_choose(self, choice: str) -> None:
        if choice == "apply" and self.error is not None:
            return  # nothing valid to apply: edit again or discard
        self.dismiss(choice if choice in ("apply", "edit") else "discard")  # type: ignore[arg-type]


def _run_in_terminal(app: App[Any], argv: list[str]) -> int:
    try:
        with app.suspend():
            return subprocess.run(argv, check=False).returncode
    except SuspendNotSupported:
        if not app.is_headless:
            raise BackendError("this terminal cannot hand itself to an editor") from None
        # Headless (tests): nothing is on a terminal to hand over.
        return subprocess.run(argv, check=False, stdin=subprocess.DEVNULL).returncode


async def edit_vm_xml(
    app: App[Any],
    fleet: Fleet,
    vm: VM,
    *,
    env: Mapping[str, str] | None = None,
) -> xmledit.Applied | None:
    """The whole edit flow (see the module doc). Returns what was applied, or None.

    Errors that end the flow (cannot read the XML, no editor) are shown with
    ``app.notify`` and end it with None; nothing was changed then.
    """
    try:
        argv = editor_argv(os.environ if env is None else env)
        base = await xmledit.get_xml(fleet, vm)
    except BackendError as exc:
        app.notify(str(exc), title="Edit XML", severity="error")
        return None
    fd, name = tempfile.mkstemp(prefix=f"catkeeper-{vm.name}-", suffix=".xml")
    path = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(base)
        error: str | None = None
        while True:
            if error is None:
                try:
                    code = _run_in_terminal(app, [*argv, str(path)])
                except (OSError, BackendError) as exc:
                    app.notify(f"cannot run {argv[0]}: {exc}", title="Edit XML", severity="error")
                    return None
                if code != 0:
                    app.notify(
                        f"{argv[0]} exited with status {code}; nothing applied",
                        title="Edit XML",
                        severity="warning",
                    )
                    return None
            edited = path.read_text(encoding="utf-8")
            if edited == base:
                app.notify(f"{vm.ref}: no changes", title="Edit XML")
                return None
            diff = xmledit.diff(base, edited, vm.ref)
            choice = await app.push_screen_wait(
                DiffScreen(vm.ref, diff, error=error, running=vm.state.is_active)
            )
            if choice == "discard":
                app.notify(f"{vm.ref}: edit discarded", title="Edit XML")
                return None
            if choice == "edit":
                error = None
                continue
            try:
                applied = await xmledit.apply_xml(fleet, vm, edited, base=base)
            except BackendError as exc:
                error = str(exc)  # shown above the diff; the text stays in the file
                continue
            when = " (at its next boot)" if applied.running else ""
            app.notify(f"{vm.ref}: new definition applied{when}", title="Edit XML")
            return applied
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
