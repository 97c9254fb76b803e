"""Saved views in the TUI: ``:view NAME`` sets the filter, the sort and the columns at once,
``:view`` goes back to the default, ``:save-view NAME`` keeps what is on screen, and the
palette lists one "View: NAME" per view.

Views come from the config (and views.yaml beside it, see ``catkeeper.config.views``);
a save goes to views.yaml, asks before replacing a view there, and refuses a name the
config itself defines (the config's would still win at the next start). Applying a view
only re-filters and re-sorts the table's keys, as typing a filter does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from textual.command import DiscoveryHit, Hit, Hits, Provider

from catkeeper.commands import Command, get
from catkeeper.config.views import View, find_view, save_view, valid_name
from catkeeper.screens.confirm import ConfirmScreen
from catkeeper.screens.messages import RunCommand
from catkeeper.tui.host import Handler, Host
from catkeeper.widgets.vm_table import COLUMN_KEYS


class Views:
    def __init__(self, host: Host) -> None:
        self.host = host
        # The session's views: the config's, then those saved (now or before) to views.yaml.
        self.views: list[View] = list(host.config.views)
        self.pending: str | None = None  # catkeeper --view NAME: applied once on screen

    def apply_pending(self) -> None:
        if self.pending is not None:
            name, self.pending = self.pending, None
            self.view(get("view"), [name])

    def handlers(self) -> dict[str, Handler]:
        return {"view": self.view, "save-view": self.save}

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.views]

    def _known(self) -> str:
        return ", ".join(self.names) if self.views else "none yet; :save-view NAME makes one"

    # ---- applying -------------------------------------------------------------------------

    def view(self, _command: Command, args: Sequence[str]) -> None:
        if not args:
            self.apply(View("default"))
            return
        chosen = find_view(self.views, args[0])
        if chosen is None:
            self.host.notify(f"no view {args[0]!r} (views: {self._known()})", severity="error")
            return
        self.apply(chosen)

    def apply(self, view: View) -> None:
        fleet = self.host.to_fleet_screen()
        table = fleet.table
        # Columns and sort first: the filter's repaint then draws the final picture once.
        table.show_columns(view.columns or None)
        table.sort_by(view.sort or "host", view.descending)
        fleet.apply_filter(view.filter)  # checked when the config was read

    # ---- saving ---------------------------------------------------------------------------

    def current(self, name: str) -> View:
        """What is on screen now, as a view called ``name``."""
        table = self.host.fleet_screen.table
        text = getattr(table.current_filter, "text", "")  # catkeeper.filtering.Filter
        columns = table.visible_columns
        return View(
            name,
            filter=text.strip(),
            sort=table.sort_column,
            descending=table.sort_reverse,
            columns=() if columns == COLUMN_KEYS else columns,
            source=self.host.config.views_file,
        )

    def save(self, _command: Command, args: Sequence[str]) -> None:
        name = args[0] if args else ""
        if not valid_name(name):
            self.host.notify(
                f"view name {name!r}: use only letters, digits, '.', '_', '-'", severity="error"
            )
            return
        existing = find_view(self.views, name)
        path = self.host.config.views_file
        if existing is not None and existing.source != path:
            self.host.notify(
                f"view {name!r} is defined in {existing.source}, which wins over {path}: "
                "change it there, or save under another name",
                severity="error",
                timeout=8,
            )
            return
        view = self.current(name)
        if existing is None:
            self._write(view)
            return
        question = ConfirmScreen(
            "Overwrite",
            [],
            question=f"Replace the saved view {name!r}?",
            detail=f"In {path}: {_describe(existing)}\nNew: {_describe(view)}",
            yes_label="Replace",
        )
        self.host.show(question, lambda yes: self._write(view) if yes else None)

    def _write(self, view: View) -> None:
        path = self.host.config.views_file
        try:
            save_view(path, view)
        except Exception as exc:  # OSError, or a views.yaml the user broke by hand
            self.host.notify(f"view not saved: {exc}", severity="error", timeout=8)
            return
        self.views = [v for v in self.views if v.name != view.name] + [view]
        where = "demo mode: no config file, so " if self.host.config.is_demo else ""
        self.host.notify(f"{where}view {view.name} saved to {path}")


def _describe(view: View) -> str:
    parts = [f"filter {view.filter!r}" if view.filter else "no filter"]
    if view.sort:
        parts.append(f"sort {view.sort_text}")
    if view.columns:
        parts.append("columns " + " ".join(view.columns))
    return ", ".join(parts)


@runtime_checkable
class HasViews(Protocol):
    """What the palette reads from the app (no import of it here)."""

    views: Views


class ViewCommands(Provider):
    """One palette entry per saved view, "View: NAME"."""

    def _entries(self) -> list[tuple[str, str, RunCommand]]:
        app = self.app
        if not isinstance(app, HasViews):
            return []
        return [
            (f"View: {v.name}", _describe(v), RunCommand("view", (v.name,)))
            for v in app.views.views
        ]

    def _post(self, message: RunCommand) -> None:
        self.app.post_message(RunCommand(message.name, message.args))

    async def discover(self) -> Hits:
        for text, help_text, message in self._entries():
            yield DiscoveryHit(text, lambda m=message: self._post(m), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, help_text, message in self._entries():
            score = matcher.match(text)
            if score > 0:
                hit = matcher.highlight(text)
                yield Hit(score, hit, lambda m=message: self._post(m), help=help_text)
