"""A VM's serial console output, live, in a Log.

Takes any async iterator of text (``backend.serial.SerialConsole`` in the app, a list in
tests) and an optional ``close`` coroutine function run when the screen goes away.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Label, Log

_MAX_LINES = 5000  # a chatty guest must not grow memory without bound


class SerialScreen(Screen[None]):
    DEFAULT_CSS = """
    SerialScreen #title { background: $accent; color: $text; width: 100%; padding: 0 1; }
    SerialScreen Log { height: 1fr; }
    SerialScreen #status { color: $text-muted; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Back"),
        Binding("ctrl+l", "clear", "Clear"),
    ]

    def __init__(
        self,
        title: str,
        chunks: AsyncIterator[str],
        *,
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__()
        self.title_text = title
        self.chunks = chunks
        self.close_source = close
        self.ended: str | None = None

    def compose(self) -> ComposeResult:
        yield Label(f"Serial console: {self.title_text} (read-only)", id="title")
        yield Log(max_lines=_MAX_LINES, auto_scroll=True, id="log")
        yield Label("connected", id="status")
        yield Footer()

    def on_mount(self) -> None:
        self._pump()

    @work(exclusive=True, group="serial")
    async def _pump(self) -> None:
        log = self.query_one(Log)
        try:
            async for text in self.chunks:
                # Guests send \r\n; Log wants \n, and a bare \r would leave stray glyphs.
                log.write(text.replace("\r\n", "\n").replace("\r", ""))
        except Exception as exc:  # shown, not raised: the stream's end is not an app error
            self._set_status(f"console error: {exc}")
            return
        reason = getattr(self.chunks, "closed_reason", None)
        self._set_status(f"console ended: {reason}" if reason else "console ended")

    def _set_status(self, text: str) -> None:
        self.ended = text
        self.query_one("#status", Label).update(text)

    def action_clear(self) -> None:
        self.query_one(Log).clear()

    async def action_close(self) -> None:
        self.workers.cancel_group(self, "serial")
        if self.close_source is not None:
            await self.close_source()
        self.dismiss(None)
