"""Rename, clone and delete VMs, and the helpers every VM-changing operation shares.

Each operation checks all it can before it changes anything (names, states, volume names),
so a wrong input loses nothing, and an operation that fails halfway removes what it had
made. Everything goes through the libvirt connection (storage pools and volumes for
disks), so it works on remote hosts exactly as on the local one.

Modules: ``common`` (shared helpers), ``disks`` (a VM's disks as volumes), ``rename``,
``clone``, ``delete``. This module re-exports what callers use, under one name.
"""

from __future__ import annotations

from catkeeper.backend.vm.clone import CloneMode, clone, clone_xml
from catkeeper.backend.vm.common import (
    CATKEEPER_NS_PREFIX,
    UNSUPPORTED,
    XML_INACTIVE_SECURE,
    Refused,
    check_name,
    drop_catkeeper_metadata,
    name_taken,
    on_host,
    refresh,
    to_xml,
    undefine_all,
)
from catkeeper.backend.vm.delete import DeleteResult, delete
from catkeeper.backend.vm.disks import DiskVolume, disks
from catkeeper.backend.vm.rename import rename

__all__ = [
    "CATKEEPER_NS_PREFIX",
    "UNSUPPORTED",
    "XML_INACTIVE_SECURE",
    "CloneMode",
    "DeleteResult",
    "DiskVolume",
    "Refused",
    "check_name",
    "clone",
    "clone_xml",
    "delete",
    "disks",
    "drop_catkeeper_metadata",
    "name_taken",
    "on_host",
    "refresh",
    "rename",
    "to_xml",
    "undefine_all",
]
