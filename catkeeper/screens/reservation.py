"""The reservation form: reserve a VM, edit one's own reservation, or take one over.

Usage (from the app; this screen never talks to libvirt)::

    def done(request: ReservationRequest | None) -> None:
        if request is not None:  # None: cancelled, nothing to do
            self.run_worker(reservations.apply(fleet, vm, request, me=me))

    self.push_screen(ReservationScreen(vm, me=me, clock=clock), done)

``vm`` is the row the user acted on: its reservation prefills the form, and the backend
checks that it is still the current one when it writes (a ``ReservationConflict`` names
whoever changed it). After such a conflict the app may reopen the form with
``draft=request`` so the user keeps what they typed.

The form validates before it dismisses: the owner must not be empty, ``until`` must read
(``parse_until``) and lie in the future, and changing a reservation someone else holds needs
the "take over" box ticked. Errors show under their field; ``enter`` in any field (or
``ctrl+s``) submits, ``escape`` cancels.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import tzinfo
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Static

from catkeeper.backend.reservations import (
    FORMS,
    ReservationRequest,
    UntilError,
    format_when,
    parse_until,
    summary,
    until_text,
)
from catkeeper.model import VM, Reservation
from catkeeper.widgets import format as fmt


class ReservationScreen(ModalScreen[ReservationRequest | None]):
    """Dismisses with a validated ``ReservationRequest``, or None when cancelled."""

    DEFAULT_CSS = """
    ReservationScreen { align: center middle; }
    ReservationScreen > Vertical {
        width: 76; max-width: 100%; height: auto; max-height: 100%;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    ReservationScreen #title { text-style: bold; width: 100%; }
    ReservationScreen #holder { width: 100%; margin: 1 0 0 0; }
    ReservationScreen #holder.other { color: $warning; }
    ReservationScreen .row { height: 1; margin: 1 0 0 0; }
    ReservationScreen .row > Label { width: 9; }
    ReservationScreen .row > Input { width: 1fr; background: $boost; }
    ReservationScreen .hint { color: $text-muted; padding: 0 0 0 9; }
    ReservationScreen .error { color: $error; padding: 0 0 0 9; display: none; }
    ReservationScreen .error.shown { display: block; }
    ReservationScreen #take-over { margin: 1 0 0 8; border: none; padding: 0; }
    ReservationScreen #buttons { height: auto; align-horizontal: right; margin: 1 0 0 0; }
    ReservationScreen Button { margin: 0 0 0 2; min-width: 10; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "submit", "Save", priority=True),
    ]

    def __init__(
        self,
        vm: VM,
        *,
        me: str,
        clock: Callable[[], float] = time.time,
        tz: tzinfo | None = None,
        draft: ReservationRequest | None = None,
    ) -> None:
        super().__init__()
        self.vm = vm
        self.me = me
        self.clock = clock
        self.tz = tz  # None: local time, as everywhere else on screen
        self.draft = draft
        now = clock()
        res = vm.reservation
        self.current: Reservation | None = res
        self.active = res is not None and not res.is_expired(now)
        # Changing an active reservation someone else holds is a take-over.
        self.held_by_other = res is not None and self.active and res.owner != me
        self.editing_own = res is not None and self.active and res.owner == me

    # ---- layout ----------------------------------------------------------------------

    def _initial(self) -> tuple[str, str, str, str]:
        """Owner, note, until, contact to start from."""
        if self.draft is not None:
            d = self.draft
            until = until_text(d.until, self.tz) if d.until is not None else ""
            return d.owner, d.note, until, d.contact or ""
        res = self.current
        if res is not None and res.owner == self.me:
            # One's own, active or expired: keep note and contact; a past end is no default.
            until = until_text(res.until, self.tz) if res.until and self.active else ""
            return self.me, res.note, until, res.contact or ""
        return self.me, "", "", ""

    def compose(self) -> ComposeResult:
        owner, note, until, contact = self._initial()
        if self.editing_own:
            title, verb = f"Edit your reservation of {self.vm.ref}", "Save"
        elif self.held_by_other:
            title, verb = f"Take over {self.vm.ref}", "Take over"
        else:
            title, verb = f"Reserve {self.vm.ref}", "Reserve"
        with Vertical():
            yield Label(title, id="title")
            holder = self._holder_text()
            if holder:
                yield Static(holder, id="holder", classes="other" if self.held_by_other else "")
            yield from self._field("Owner", "owner", owner, "who holds it")
            yield from self._field("Note", "note", note, "what it is for, e.g. bisecting kernel")
            yield from self._field("Until", "until", until, "e.g. 3d or fri 18:00")
            yield Static(self._until_hint(until), id="until-hint", classes="hint")
            yield from self._field("Contact", "contact", contact, "optional: mail, chat handle")
            if self.held_by_other:
                assert self.current is not None
                yield Checkbox(
                    f"Take over {self.current.owner}'s reservation",
                    value=self.draft.take_over if self.draft else False,
                    id="take-over",
                    compact=True,
                )
                yield Static("", id="take-over-error", classes="error")
            with Horizontal(id="buttons"):
                yield Button("Cancel (esc)", id="cancel", compact=True)
                yield Button(f"{verb} (enter)", id="submit", variant="primary", compact=True)

    def _field(self, label: str, name: str, value: str, placeholder: str) -> ComposeResult:
        with Horizontal(classes="row"):
            yield Label(label)
            yield Input(value, placeholder=placeholder, id=name, compact=True)
        yield Static("", id=f"{name}-error", classes="error")

    def on_mount(self) -> None:
        self.query_one("#note", Input).focus()

    def _holder_text(self) -> str:
        res = self.current
        if res is None:
            return ""
        now = self.clock()
        text = summary(res, now, self.tz)
        if self.editing_own:
            if res.since is None:
                return f"Yours (revision {res.revision})"
            return f"Yours, reserved {fmt.duration(now - res.since)} ago (revision {res.revision})"
        if not self.active:
            return f"Expired reservation: {text}. You may claim it."
        return f"Reserved by {text}"

    def _until_hint(self, text: str) -> str:
        if not text.strip():
            return "empty: no end. Or 90m, 4h, 2w, 2026-12-01, 2026-12-01T18:00, fri"
        now = self.clock()
        try:
            until = parse_until(text, now, self.tz)
        except UntilError:
            return FORMS
        return f"→ {format_when(until, self.tz)} (in {fmt.duration(until - now)})"

    # ---- behaviour -------------------------------------------------------------------

    def _set_error(self, name: str, message: str) -> None:
        error = self.query_one(f"#{name}-error", Static)
        error.update(message)
        error.set_class(bool(message), "shown")
        if name == "until":  # the error says more than the hint; show one of them
            self.query_one("#until-hint", Static).display = not message

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        name = event.input.id or ""
        self._set_error(name, "")
        if name == "until":
            self.query_one("#until-hint", Static).update(self._until_hint(event.value))

    @on(Checkbox.Changed, "#take-over")
    def _ticked(self, _event: Checkbox.Changed) -> None:
        self._set_error("take-over", "")

    @on(Input.Submitted)
    def _entered(self, _event: Input.Submitted) -> None:
        self.action_submit()

    @on(Button.Pressed, "#submit")
    def _submit_pressed(self) -> None:
        self.action_submit()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def validate(self) -> ReservationRequest | dict[str, str]:
        """The request the form holds now, or the error message per field."""
        errors: dict[str, str] = {}
        owner = self.query_one("#owner", Input).value.strip()
        note = " ".join(self.query_one("#note", Input).value.split())
        until_raw = self.query_one("#until", Input).value
        contact = self.query_one("#contact", Input).value.strip()
        if not owner:
            errors["owner"] = "the owner must not be empty"
        until: float | None = None
        if until_raw.strip():
            try:
                until = parse_until(until_raw, self.clock(), self.tz)
            except UntilError as exc:
                errors["until"] = str(exc)
        take_over = False
        if self.held_by_other:
            take_over = self.query_one("#take-over", Checkbox).value
            if not take_over:
                assert self.current is not None
                errors["take-over"] = (
                    f"{self.current.owner} holds this VM: tick the box to take it over"
                )
        if errors:
            return errors
        return ReservationRequest(
            owner=owner, note=note, until=until, contact=contact or None, take_over=take_over
        )

    def action_submit(self) -> None:
        result = self.validate()
        if isinstance(result, ReservationRequest):
            self.dismiss(result)
            return
        for name in ("owner", "note", "until", "contact", "take-over"):
            if name != "take-over" or self.held_by_other:
                self._set_error(name, result.get(name, ""))
        first = next(iter(result))
        target = self.query_one("#take-over" if first == "take-over" else f"#{first}")
        target.focus()
