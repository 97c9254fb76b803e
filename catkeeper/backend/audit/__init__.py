"""Who changed this VM, when, and how: an audit trail kept on the host itself.

Every change catkeeper makes to a VM (power actions, reservation writes, XML edits, rename,
create, clone, snapshots) appends ``{when, who, action, detail}`` to a ring of the last 50 entries
in the domain's ``<metadata>``, under catkeeper's own namespace
(``https://catkeeper.dev/xmlns/audit/1``, apart from the reservation element). The host is
the source of truth, so every user's catkeeper, and ``virsh metadata``, see the same
history without a central database; ``when`` comes from the fleet's clock, ``who`` is
``config.current_user``. Each entry also goes, with host and VM, to a local JSON-lines log
(``$XDG_STATE_HOME/catkeeper/audit.jsonl``), which keeps what the ring drops and what
happened to VMs that no longer exist (a delete is recorded there only).

Recording never fails or undoes the action: it runs after it, and a failure (read-only
host, VM gone, host slow) is logged and reported as a warning to the fleet's listeners
(:func:`watch`). On a read-only host nothing is written to the host.

Modules: ``ring`` (the XML and the entry, pure), ``store`` (the writes and reads),
``hooks`` (what each kind of change records). None imports textual or rich.
"""

from __future__ import annotations

from catkeeper.backend.audit.hooks import audited, reservation_written, xml_detail
from catkeeper.backend.audit.ring import (
    LIMIT,
    NAMESPACE,
    PREFIX,
    Entry,
    keeping_ring,
    newest_first,
    when_text,
    without_ring,
)
from catkeeper.backend.audit.store import (
    history_before,
    log_path,
    on_recorded,
    read,
    read_local,
    record,
    watch,
)

__all__ = [
    "LIMIT",
    "NAMESPACE",
    "PREFIX",
    "Entry",
    "audited",
    "history_before",
    "keeping_ring",
    "log_path",
    "newest_first",
    "on_recorded",
    "read",
    "read_local",
    "record",
    "reservation_written",
    "watch",
    "when_text",
    "without_ring",
    "xml_detail",
]
