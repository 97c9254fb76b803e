"""The one-line prompt under the table: ``/`` filters as you type, ``:`` takes a command.

Non-modal (toolong's find bar is the model): the table stays live and visible above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Input, Label

Mode = Literal["filter", "command"]
PROMPTS: dict[Mode, str] = {"filter": "/", "command": ":"}


class BarInput(Input):
    """An Input whose typing repaints itself, not the screen.

    Textual's Input sets its virtual size (text width + 1) on every change, and that
    reactive asks for a layout of the whole screen: at 10k rows each keystroke repainted
    every widget 2-3 times (measured: ~950 strips per key). The bar's size never depends on
    its text (width 1fr, height 1), so the new size is stored without the layout pass; the
    scroll offsets read it directly, so a long filter still scrolls to the cursor.

    The cursor does not blink: blinking repainted twice a second for as long as the bar stays
    open (in the soak, most of what an idle screen repainted), and over ssh each blink is
    bytes on the wire.
    """

    cursor_blink = reactive(False, init=False)

    def _watch_value(self, value: str) -> None:
        self.set_reactive(Input.virtual_size, Size(self.content_width, 1))
        super()._watch_value(value)


class FilterBar(Horizontal):
    DEFAULT_CSS = """
    FilterBar {
        height: 1;
        display: none;
        background: $boost;
    }
    FilterBar.-open { display: block; }
    FilterBar > #prompt { width: 2; padding: 0 0 0 1; color: $text-accent; text-style: bold; }
    FilterBar > Input {
        width: 1fr; height: 1; border: none; padding: 0; background: $boost;
    }
    FilterBar > Input:focus { border: none; background: $boost; }
    FilterBar > #problem { width: auto; max-width: 60%; color: $text-error; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Clear and close", show=False),
    ]

    @dataclass
    class Changed(Message):
        mode: Mode
        text: str

    @dataclass
    class Submitted(Message):
        mode: Mode
        text: str

    @dataclass
    class Closed(Message):
        mode: Mode

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.mode: Mode = "filter"
        self._filter_text = ""  # kept while the bar shows a command
        self._problem = ""  # what the #problem label shows

    def compose(self) -> ComposeResult:
        yield Label("/", id="prompt")
        yield BarInput(
            placeholder="filter: words host: tag: state: owner:me reserved: !negate", id="entry"
        )
        yield Label("", id="problem")

    @property
    def input(self) -> Input:
        return self.query_one("#entry", Input)

    @property
    def is_open(self) -> bool:
        return self.has_class("-open")

    def open(self, mode: Mode, text: str = "") -> None:
        """Show the bar in ``mode`` and focus it; a filter reopens with its current text, a
        command starts with ``text`` (the palette's "Rename VM…" gives ``rename ``)."""
        if self.mode == "filter" and mode == "command":
            self._filter_text = self.input.value
        self.mode = mode
        self.query_one("#prompt", Label).update(PROMPTS[mode])
        entry = self.input
        with entry.prevent(Input.Changed):
            if mode == "command":
                entry.placeholder = (
                    "command: host NAME, filter EXPR, sort COLUMN, rename NAME, clone NAME, quit"
                )
                entry.value = text
            else:
                entry.placeholder = "filter: words host: tag: state: owner:me reserved: !negate"
                entry.value = self._filter_text
        entry.cursor_position = len(entry.value)
        self.set_problem(None)
        self.add_class("-open")
        # At once, not on the next turn as Widget.focus() would: keys that came in the same
        # read as the "/" (typed fast, pasted, batched by ssh) are queued already, and would
        # reach the table's keys ("s" of "state" boots the VM under the cursor).
        self.screen.set_focus(entry)

    def set_filter_text(self, text: str) -> None:
        """Change the remembered filter without posting Changed (the caller applies it)."""
        self._filter_text = text
        if self.mode == "filter":
            with self.input.prevent(Input.Changed):
                self.input.value = text

    def close(self) -> None:
        self.remove_class("-open")
        self.set_problem(None)

    def set_problem(self, text: str | None) -> None:
        # Every keystroke clears the problem: a Label update re-lays the whole screen out
        # (10k rows: a full repaint per key), so only a change is passed on.
        text = text or ""
        if text != self._problem:
            self._problem = text
            self.query_one("#problem", Label).update(text)

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        if self.mode == "filter":
            self._filter_text = event.value
        self.post_message(self.Changed(self.mode, event.value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Submitted(self.mode, event.value))

    def action_close(self) -> None:
        mode = self.mode
        if mode == "filter":
            self._filter_text = ""
            with self.input.prevent(Input.Changed):
                self.input.value = ""
        self.close()
        self.post_message(self.Closed(mode))
