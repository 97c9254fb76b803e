"""VM snapshots: list, create (with a description), revert, delete.

These are libvirt's own snapshots: internal qcow2 snapshots (disk, plus memory when the VM
runs) that the host keeps next to the data, so they work on remote hosts unchanged. A VM
whose disks are not all qcow2 cannot take them; libvirt's message then says which disk.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import escape

import libvirt

from catkeeper.backend import audit
from catkeeper.backend.actions import ActionError
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.host import HostSession
from catkeeper.backend.vm.common import Refused, on_host, refresh
from catkeeper.model import VM

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
# Saving or loading guest memory runs at disk speed: give a live snapshot this long on top
# of the call timeout per byte of guest memory.
_MEMORY_RATE = 100 * 1024 * 1024


@dataclass(frozen=True)
class Snapshot:
    name: str
    description: str
    created: float | None  # Unix time
    state: str  # the VM's state when it was taken: running, shutoff, ...
    memory: bool  # holds guest memory too: reverting resumes the VM where it was
    current: bool  # the snapshot the VM was last reverted to or that was last taken
    parent: str | None


def _snapshot(snap: libvirt.virDomainSnapshot, current: str | None) -> Snapshot:
    root = ET.fromstring(snap.getXMLDesc(0))
    created = root.findtext("creationTime")
    memory = root.find("memory")
    return Snapshot(
        name=snap.getName(),
        description=root.findtext("description") or "",
        created=float(created) if created else None,
        state=root.findtext("state") or "?",
        memory=memory is not None and memory.get("snapshot", "no") != "no",
        current=snap.getName() == current,
        parent=root.findtext("parent/name"),
    )


def _current_name(dom: libvirt.virDomain) -> str | None:
    try:
        if dom.hasCurrentSnapshot(0):
            return str(dom.snapshotCurrent(0).getName())
    except libvirt.libvirtError:
        pass
    return None


def _list(conn: libvirt.virConnect, uuid: str) -> list[Snapshot]:
    dom = conn.lookupByUUIDString(uuid)
    current = _current_name(dom)
    snaps = [_snapshot(s, current) for s in dom.listAllSnapshots(0)]
    return sorted(snaps, key=lambda s: (s.created or 0.0, s.name))


def _slow_timeout(session: HostSession, vm: VM) -> float:
    return session.timing.call_timeout + vm.max_memory_kib * 1024 / _MEMORY_RATE


def default_name(now: float | None = None) -> str:
    return time.strftime("snap-%Y%m%d-%H%M%S", time.localtime(now))


async def list_snapshots(fleet: Fleet, vm: VM) -> list[Snapshot]:
    """Oldest first."""
    session = fleet.session(vm.host)
    return await on_host(session, f"list the snapshots of {vm.ref}", lambda c: _list(c, vm.uuid))


async def create_snapshot(fleet: Fleet, vm: VM, name: str = "", description: str = "") -> Snapshot:
    """Take a snapshot (of memory too when the VM runs). An empty name gets a dated one."""
    name = name.strip() or default_name()
    attempt = f"snapshot {vm.ref} as {name!r}"
    if not _NAME_RE.match(name):
        raise ActionError(
            f"{attempt}: a snapshot name is 1-100 letters, digits, '.', '_', ':' or '-'"
        )
    session = fleet.writable(vm.host, attempt)
    xml = (
        f"<domainsnapshot><name>{escape(name)}</name>"
        f"<description>{escape(description)}</description></domainsnapshot>"
    )

    def take(conn: libvirt.virConnect) -> Snapshot:
        dom = conn.lookupByUUIDString(vm.uuid)
        if name in dom.snapshotListNames(0):
            raise Refused("it already has a snapshot of that name")
        # ATOMIC: a failure leaves no half-made snapshot on any disk.
        snap = dom.snapshotCreateXML(xml, libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
        return _snapshot(snap, _current_name(dom))

    created = await on_host(session, attempt, take, timeout=_slow_timeout(session, vm))
    await refresh(session, vm.uuid)
    await audit.record(fleet, vm, "snapshot-create", name)
    return created


async def revert_snapshot(fleet: Fleet, vm: VM, name: str) -> None:
    """Put the VM back to the snapshot: its disks, and its memory and run state when the
    snapshot holds them (a snapshot of a shut-off VM leaves it shut off). What the VM
    did since is lost: callers ask first."""
    attempt = f"revert {vm.ref} to snapshot {name!r}"
    session = fleet.writable(vm.host, attempt)

    def revert(conn: libvirt.virConnect) -> list[audit.Entry] | None:
        dom = conn.lookupByUUIDString(vm.uuid)
        history = audit.history_before(dom)  # the snapshot's metadata holds an older ring
        dom.revertToSnapshot(dom.snapshotLookupByName(name, 0), 0)
        return history

    try:
        history = await on_host(session, attempt, revert, timeout=_slow_timeout(session, vm))
    finally:
        await refresh(session, vm.uuid)
    await audit.record(fleet, vm, "snapshot-revert", name, history=history)


async def delete_snapshot(fleet: Fleet, vm: VM, name: str) -> None:
    """Delete one snapshot; its children stay (they are re-parented by libvirt)."""
    attempt = f"delete snapshot {name!r} of {vm.ref}"
    session = fleet.writable(vm.host, attempt)

    def remove(conn: libvirt.virConnect) -> None:
        dom = conn.lookupByUUIDString(vm.uuid)
        dom.snapshotLookupByName(name, 0).delete(0)

    await on_host(session, attempt, remove, timeout=_slow_timeout(session, vm))
    await audit.record(fleet, vm, "snapshot-delete", name)
