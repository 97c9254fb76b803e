"""The detail screen's "History" section: the last entries of the VM's audit trail, read from
its host when the screen opens and again when the VM changes (the entry for a change lands
right after it). One read of one VM's metadata, on the host's thread, only while the screen
is open: nothing is polled.

Like every widget here it imports only the model (and the format helpers): the entries come
through the ``fetch`` it is given, as anything with ``when``/``who``/``action``/``detail``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from catkeeper.model import VM
from catkeeper.widgets import format as fmt

SHOWN = 10  # entries on the screen; `catkeeper history` prints all the host keeps (50)


class AuditRow(Protocol):
    @property
    def when(self) -> float: ...
    @property
    def who(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def detail(self) -> str: ...


Fetch = Callable[[VM], Awaitable[Sequence[AuditRow]]]
# subscribe(listener) → unsubscribe; listener(host, uuid) after this catkeeper wrote an entry
Subscribe = Callable[[Callable[[str, str], None]], Callable[[], None]]


def history_table(
    rows: Sequence[AuditRow] | None,
    now: float,
    *,
    readonly: bool = False,
    error: str | None = None,
    limit: int = SHOWN,
) -> RenderableType:
    """The section body: ``rows`` newest first (None: still reading)."""
    parts: list[RenderableType] = []
    if readonly:
        parts.append(Text("read-only: changes made here are not written to this history", "yellow"))
    if error is not None:
        parts.append(Text(f"could not read the history: {error}", "red"))
    elif rows is None:
        parts.append(Text("reading the history from the host…", "dim"))
    elif not rows:
        parts.append(Text("no changes recorded on the host", "dim"))
    else:
        table = Table(box=None, padding=(0, 2), show_edge=False, header_style="bold")
        for col in ("WHEN", "WHO", "ACTION", "DETAIL"):
            table.add_column(col, no_wrap=col != "DETAIL", overflow="fold")
        for row in rows[:limit]:
            table.add_row(fmt.moment(row.when, now), row.who, row.action, row.detail or "")
        parts.append(table)
        if len(rows) > limit:
            parts.append(Text(f"… {len(rows) - limit} older: catkeeper history HOST/VM", "dim"))
    return Group(*parts)


class AuditHistory(Static):
    """The "History" section of one VM, kept fresh while its screen is open."""

    # Unscoped, so that the screen's XML view (``DetailScreen.-xml``) can hide it too.
    SCOPED_CSS = False
    DEFAULT_CSS = """
    AuditHistory { height: auto; margin-bottom: 1; }
    .-xml AuditHistory { display: none; }
    """

    def __init__(
        self,
        vm: VM,
        fetch: Fetch,
        *,
        clock: fmt.Clock,
        readonly: Callable[[], bool],
        recorded: Subscribe | None = None,
        scroll_into_view: bool = False,
    ) -> None:
        super().__init__(id="history")
        self.vm = vm
        self._fetch = fetch
        self._clock = clock
        self._readonly = readonly
        self._scroll = scroll_into_view
        self._subscribe = recorded
        self._unsubscribe: Callable[[], None] | None = None
        self.rows: Sequence[AuditRow] | None = None
        self.error: str | None = None

    def on_mount(self) -> None:
        self.show()
        if self._subscribe is not None:
            self._unsubscribe = self._subscribe(self._on_recorded)
        self.reload(self.vm, force=True)

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _on_recorded(self, host: str, uuid: str) -> None:
        if (host, uuid) == (self.vm.host, self.vm.uuid):
            self.reload(self.vm, force=True)

    def reload(self, vm: VM, *, force: bool = False) -> None:
        """Read the history again when the VM changed (its change may have an entry)."""
        if vm == self.vm and not force:
            return
        self.vm = vm
        if not vm.stale:  # an unreachable host cannot answer: keep what is shown
            self.run_worker(self._load(), exclusive=True, group="audit", exit_on_error=False)

    async def _load(self) -> None:
        try:
            rows = await self._fetch(self.vm)
        except Exception as exc:  # shown in the section; the rest of the screen still works
            self.error = str(exc) or type(exc).__name__
        else:
            self.rows, self.error = rows, None
        self.show()
        if self._scroll:
            self._scroll = False
            # After the new rows are laid out: scrolling now used the old geometry, and under
            # load the screen stayed at its top (caught by the snapshot in a full run).
            self.call_after_refresh(self.scroll_visible, animate=False, top=True)

    def show(self) -> None:
        body = history_table(self.rows, self._clock(), readonly=self._readonly(), error=self.error)
        title = Text("History (who changed this VM, newest first)", style="bold underline")
        self.update(Group(title, body))
