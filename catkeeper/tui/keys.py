"""The app's key bindings and the help screen's extra sections, generated: every key of
the command table is an app binding running ``command('NAME')``; the keys screens and
widgets add of their own are listed from their BINDINGS."""

from __future__ import annotations

from textual.binding import Binding, BindingType

from catkeeper.commands import Face, Scope, reaching
from catkeeper.screens.detail import DetailScreen
from catkeeper.screens.fleet import FleetScreen
from catkeeper.screens.help import Section
from catkeeper.screens.snapshots import SnapshotsScreen
from catkeeper.tui.dispatch import TYPED_AFTER
from catkeeper.widgets.filter_bar import FilterBar
from catkeeper.widgets.host_strip import HostStrip
from catkeeper.widgets.vm_table import VmTable


def bindings() -> list[BindingType]:
    """One binding per command with keys, from the table (the footer shows the marked)."""
    return [
        Binding(
            ",".join(c.keys),
            c.action,
            c.label.rstrip("…"),
            show=c.footer,
            # Several keys: the footer shows the one that works where it is drawn.
            key_display=c.key_display if len(c.keys) == 1 else None,
            priority=c.name in TYPED_AFTER,
        )
        # Screen keys first, as k9s does: at 80 columns the footer still shows / ? q.
        for c in sorted(reaching(Face.KEY), key=lambda c: c.scope is not Scope.UI)
    ]


# The keys screens and widgets add of their own (the command table's are listed apart).
HELP_SECTIONS: list[Section] = [
    ("Fleet", [*FleetScreen.BINDINGS, *VmTable.BINDINGS]),
    ("Host strip (tab to focus)", HostStrip.BINDINGS),
    ("Filter / command line", FilterBar.BINDINGS),
    ("VM detail", DetailScreen.BINDINGS),
    ("Snapshots (^s)", SnapshotsScreen.BINDINGS),
]
