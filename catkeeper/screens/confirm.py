"""Ask before anything that interrupts a guest; one dialog lists every VM it applies to.

VMs someone else has reserved are named with their holder and note, so nobody stops a
colleague's machine without being told whose it is.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from catkeeper.model import VM
from catkeeper.widgets import format as fmt

_LISTED = 8  # more than this and the dialog says "and N more"


def holder(vm: VM, me: str, now: float) -> str | None:
    """Who else holds an active reservation of ``vm`` (None: nobody, or it is ``me``'s)."""
    res = vm.reservation
    return res.owner if res is not None and res.keeps_from(me, now) else None


def held_question(verb: str, vm: VM, now: float) -> str:
    """ "lab1/web is reserved by alice until Fri 12 Dec 18:00 — start it anyway?" """
    res = vm.reservation
    assert res is not None
    if res.until is None:
        ends = " with no end set"
    else:
        ends = " until " + time.strftime("%a %d %b %H:%M", time.localtime(res.until))
    return f"{vm.ref} is reserved by {res.owner}{ends} — {verb.lower()} it anyway?"


def held_text(vms: Sequence[VM], now: float) -> Text:
    """ "Reserved by someone else" lines: VM, owner, note and how long it is still held."""
    text = Text()
    text.append(
        "Reserved by someone else:\n" if len(vms) > 1 else "Reserved by someone else: ",
        "bold yellow",
    )
    for vm in vms[:_LISTED]:
        res = vm.reservation
        if res is None:
            continue
        if len(vms) > 1:
            text.append(f"  {vm.ref}: ", "bold")
        text.append(res.owner, "bold yellow")
        if res.note:
            text.append(f" ({res.note})")
        ends = fmt.until(res, now)
        text.append(", no end set" if ends == "open" else f", for {ends} more", "dim")
        text.append("\n")
    if len(vms) > _LISTED:
        text.append(f"  … and {len(vms) - _LISTED} more\n", "italic")
    text.rstrip()
    return text


class ConfirmScreen(ModalScreen[bool]):
    """``y`` confirms, ``n``/``esc`` cancels; ``enter`` presses the focused button (Cancel)."""

    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical {
        width: 64; max-width: 100%; height: auto; max-height: 100%;
        border: thick $error; background: $surface; padding: 0 1;
    }
    ConfirmScreen #question { text-style: bold; width: 100%; margin: 0 0 1 0; }
    ConfirmScreen #targets { height: auto; max-height: 10; }
    ConfirmScreen #held { margin: 1 0 0 0; }
    ConfirmScreen Horizontal { height: auto; align-horizontal: right; margin: 1 0 0 0; }
    ConfirmScreen Button { margin: 0 0 0 2; min-width: 10; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(
        self,
        verb: str,
        vms: Sequence[VM],
        *,
        detail: str = "",
        held: Sequence[VM] = (),
        now: float = 0.0,
        question: str | None = None,
        yes_label: str | None = None,
    ) -> None:
        """``held``: the VMs among ``vms`` that someone else has reserved (named, with
        their holder and note); ``question``/``yes_label`` replace "VERB VM?" and "VERB"."""
        super().__init__()
        self.verb = verb
        self.vms = list(vms)
        self.detail = detail
        self.held = list(held)
        self.now = now
        self.question = question
        self.yes_label = yes_label

    def compose(self) -> ComposeResult:
        count = len(self.vms)
        what = self.vms[0].ref if count == 1 else f"{count} VMs"
        with Vertical():
            yield Label(self.question or f"{self.verb} {what}?", id="question")
            if count > 1:
                listing = Text()
                for vm in self.vms[:_LISTED]:
                    listing.append(f"  {vm.ref}", "bold")
                    listing.append(f"  {vm.state.value}\n", "dim")
                if count > _LISTED:
                    listing.append(f"  … and {count - _LISTED} more\n", "italic")
                yield Static(listing, id="targets")
            if self.detail:
                yield Static(self.detail, id="detail")
            if self.held:
                yield Static(held_text(self.held, self.now), id="held")
            yes = self.yes_label or (f"{self.verb} anyway" if self.held else self.verb)
            with Horizontal():
                yield Button("Cancel (n)", id="no", variant="default")
                yield Button(f"{yes} (y)", id="yes", variant="error")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
