"""Rename a VM: libvirt's rename where the driver has it, else a redefine under the new name
that keeps the UUID, autostart and metadata.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from catkeeper.backend import audit
from catkeeper.backend.actions import ActionError
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.vm.common import (
    UNSUPPORTED,
    XML_INACTIVE_SECURE,
    Refused,
    check_name,
    name_taken,
    on_host,
    refresh,
    to_xml,
)
from catkeeper.model import VM


def _rename_by_redefine(conn: libvirt.virConnect, dom: libvirt.virDomain, new: str) -> None:
    """Define the same domain (same UUID) under the new name, for drivers with no rename.

    Refused when undefining would drop something a redefine cannot bring back (snapshot
    metadata). On failure the original definition is restored.
    """
    if dom.snapshotNum(0) > 0:
        raise Refused("this driver cannot rename a VM that has snapshots")
    old_xml = dom.XMLDesc(XML_INACTIVE_SECURE)
    root = ET.fromstring(old_xml)
    name = root.find("name")
    assert name is not None
    name.text = new
    autostart = bool(dom.autostart())
    dom.undefine()
    try:
        renamed = conn.defineXML(to_xml(root))
    except libvirt.libvirtError:
        conn.defineXML(old_xml)  # nothing lost: the old definition comes back
        raise
    if autostart:
        renamed.setAutostart(1)


async def rename(fleet: Fleet, vm: VM, new_name: str, *, redefine: bool = False) -> VM:
    """Rename a shut-off VM (its UUID, disks and reservation stay).

    ``redefine`` forces the define-new/undefine-old path that drivers without
    ``virDomainRename`` get anyway.
    """
    attempt = f"rename {vm.ref} to {new_name!r}"
    try:
        new = check_name(new_name, "new name")
    except ValueError as exc:
        raise ActionError(f"{attempt}: {exc}") from None
    session = fleet.writable(vm.host, attempt)

    def do(conn: libvirt.virConnect) -> None:
        dom = conn.lookupByUUIDString(vm.uuid)
        if dom.isActive():
            raise Refused("it is running; shut it down first (libvirt renames only shut-off VMs)")
        if dom.name() == new:
            raise Refused("it already has that name")
        if name_taken(conn, new):
            raise Refused(f"a VM named {new!r} already exists on {vm.host}")
        if not dom.isPersistent():
            raise Refused("it is transient (not defined), so it has no name to keep")
        if not redefine:
            try:
                dom.rename(new, 0)
                return
            except libvirt.libvirtError as exc:
                if exc.get_error_code() not in UNSUPPORTED:
                    raise
        _rename_by_redefine(conn, dom, new)

    try:
        await on_host(session, attempt, do)
    except ActionError:
        await refresh(session, vm.uuid)
        raise
    got = await refresh(session, vm.uuid)
    if got is None:
        raise ActionError(f"{attempt}: the VM vanished after the rename")
    await audit.record(fleet, vm, "rename", f"from {vm.name} to {got.name}", name=got.name)
    return got
