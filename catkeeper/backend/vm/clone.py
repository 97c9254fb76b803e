"""Clone a VM: a new name and UUID, new MACs, and each disk copied (or overlaid) as a new
volume. Everything is checked before anything is made, and a clone that fails halfway
removes the volumes it had made.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import libvirt

from catkeeper.backend import audit
from catkeeper.backend.actions import ActionError
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.host import HostSession
from catkeeper.backend.timeouts import cancel_and_wait
from catkeeper.backend.vm import storage
from catkeeper.backend.vm.common import (
    XML_INACTIVE_SECURE,
    Refused,
    check_name,
    drop_catkeeper_metadata,
    name_taken,
    on_host,
    refresh,
    remove_volumes,
    to_xml,
)
from catkeeper.backend.vm.disks import disk_source_path
from catkeeper.model import VM

# A full copy of a disk may take long: its call gets this much time plus a second per
# _COPY_RATE bytes (a slow host disk), instead of the usual per-call timeout.
_COPY_RATE = 50 * 1024 * 1024


CloneMode = Literal["copy", "overlay"]


@dataclass(frozen=True)
class _DiskPlan:
    target: str
    source_path: str
    pool: str
    new_name: str
    capacity: int
    format: str


@dataclass(frozen=True)
class _ClonePlan:
    xml: str  # the source's inactive XML (secure)
    disks: tuple[_DiskPlan, ...]


def _volume_suffix(fmt: str) -> str:
    return {"qcow2": ".qcow2", "raw": ".img", "iso": ".iso"}.get(fmt, "")


def _plan_clone(conn: libvirt.virConnect, uuid: str, new: str, pool_name: str | None) -> _ClonePlan:
    dom = conn.lookupByUUIDString(uuid)
    if dom.isActive():
        raise Refused("it is running; shut it down first so its disks are consistent")
    if name_taken(conn, new):
        raise Refused(f"a VM named {new!r} already exists")
    xml = dom.XMLDesc(XML_INACTIVE_SECURE)
    root = ET.fromstring(xml)
    plans: list[_DiskPlan] = []
    for disk in root.iterfind("devices/disk"):
        target_elem = disk.find("target")
        target = target_elem.get("dev", "?") if target_elem is not None else "?"
        shared = disk.find("readonly") is not None or disk.find("shareable") is not None
        if disk.get("device", "disk") != "disk" or shared:
            continue  # install media and shared disks are used by the clone as they are
        path = disk_source_path(conn, disk)
        if path is None:
            if disk.find("source") is None:
                continue  # an empty drive
            raise Refused(f"disk {target} is not a file or volume catkeeper can copy")
        try:
            src = storage.volume_info(conn.storageVolLookupByPath(path))
        except libvirt.libvirtError:
            raise Refused(
                f"disk {target} ({path}) is not a volume in a storage pool; "
                "only pool volumes can be cloned"
            ) from None
        dest_pool = pool_name or src.pool
        if dest_pool is None:
            raise Refused(f"disk {target} ({path}) belongs to no storage pool")
        fmt = src.format or "raw"
        plans.append(
            _DiskPlan(
                target=target,
                source_path=path,
                pool=dest_pool,
                new_name=f"{new}-{target}{_volume_suffix(fmt)}",
                capacity=src.capacity,
                format=fmt,
            )
        )
    for plan in plans:
        if storage.volume_exists(storage.pool_by_name(conn, plan.pool), plan.new_name):
            raise Refused(f"volume {plan.new_name!r} already exists in pool {plan.pool!r}")
    return _ClonePlan(xml=xml, disks=tuple(plans))


def clone_xml(xml: str, new_name: str, new_paths: dict[str, str]) -> str:
    """The domain XML of a clone: new name, no UUID and no MACs (libvirt makes new ones),
    disks ``target → new path``, and none of catkeeper's metadata (a reservation or a
    pending install is about the original, not the copy)."""
    root = ET.fromstring(xml)
    name = root.find("name")
    if name is None:
        name = ET.SubElement(root, "name")
    name.text = new_name
    uuid = root.find("uuid")
    if uuid is not None:
        root.remove(uuid)
    devices = root.find("devices")
    if devices is not None:
        for iface in devices.iterfind("interface"):
            mac = iface.find("mac")
            if mac is not None:
                iface.remove(mac)
            # A fixed host-side device name (vnetN) would clash with the original's.
            target = iface.find("target")
            if target is not None:
                iface.remove(target)
        for graphics in devices.iterfind("graphics"):
            # A fixed console port would clash when both run: let libvirt pick one.
            if graphics.get("autoport") == "no" and graphics.get("port") not in (None, "-1"):
                graphics.set("autoport", "yes")
                graphics.attrib.pop("port", None)
        for disk in devices.iterfind("disk"):
            target = disk.find("target")
            dev = target.get("dev") if target is not None else None
            if dev not in new_paths:
                continue
            disk.set("type", "file")
            source = disk.find("source")
            if source is None:
                source = ET.SubElement(disk, "source")
            # Drop anything naming the original's storage (volume/pool, backing chain).
            for key in list(source.attrib):
                del source.attrib[key]
            for child in list(source):
                source.remove(child)
            source.set("file", new_paths[dev])
            backing = disk.find("backingStore")
            if backing is not None:
                disk.remove(backing)
    os_elem = root.find("os")
    if os_elem is not None:
        nvram = os_elem.find("nvram")
        if nvram is not None:
            # Sharing the original's UEFI variable store would let one VM change the
            # other's; libvirt creates a fresh one from the template for a path-less nvram.
            nvram.text = None
    drop_catkeeper_metadata(root)
    return to_xml(root)


def _copy_timeout(session: HostSession, size: int) -> float:
    return session.timing.call_timeout + size / _COPY_RATE


async def clone(
    fleet: Fleet,
    vm: VM,
    new_name: str,
    *,
    mode: CloneMode = "copy",
    pool: str | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> VM:
    """A new VM like ``vm``: new name, UUID and MACs, its own disks, no reservation.

    ``mode="copy"`` copies each disk volume in full (``createXMLFrom``); ``"overlay"``
    makes qcow2 overlays backed by the original's volumes (fast, but the original's disks
    must then never change). Install media and read-only disks are shared. New volumes go
    to ``pool`` (default: each source volume's own pool).
    """
    attempt = f"clone {vm.ref} as {new_name!r}"
    try:
        new = check_name(new_name, "new name")
    except ValueError as exc:
        raise ActionError(f"{attempt}: {exc}") from None
    session = fleet.writable(vm.host, attempt)
    say = on_progress or (lambda _m: None)

    plan = await on_host(session, attempt, lambda c: _plan_clone(c, vm.uuid, new, pool))
    made: list[str] = []
    new_paths: dict[str, str] = {}
    try:
        for disk in plan.disks:
            say(f"{'copying' if mode == 'copy' else 'overlaying'} disk {disk.target}")
            path = await _clone_volume(session, attempt, disk, mode, say)
            made.append(path)
            new_paths[disk.target] = path
        say("defining the VM")
        xml = clone_xml(plan.xml, new, new_paths)
        uuid = await on_host(session, attempt, lambda c: str(c.defineXML(xml).UUIDString()))
    except BaseException as exc:
        removed = await remove_volumes(session, made)
        if isinstance(exc, ActionError) and made:
            raise ActionError(f"{exc}; removed the new volumes again: {removed}") from exc
        raise
    got = await refresh(session, uuid)
    if got is None:
        raise ActionError(f"{attempt}: the new VM vanished right after it was defined")
    await audit.record(fleet, got, "clone", f"cloned from {vm.ref} ({mode})")
    return got


async def _clone_volume(
    session: HostSession, attempt: str, disk: _DiskPlan, mode: CloneMode, say: Callable[[str], None]
) -> str:
    if mode == "overlay":
        xml = storage.volume_xml(
            disk.new_name, disk.capacity, "qcow2",
            backing_path=disk.source_path, backing_format=disk.format,
        )  # fmt: skip

        def overlay(conn: libvirt.virConnect) -> str:
            pool = storage.pool_by_name(conn, disk.pool)
            return str(storage.create_volume(pool, xml).path())

        return await on_host(session, f"{attempt}: disk {disk.target}", overlay)

    xml = storage.volume_xml(disk.new_name, disk.capacity, disk.format)

    def copy_volume(conn: libvirt.virConnect) -> str:
        pool = storage.pool_by_name(conn, disk.pool)
        src = conn.storageVolLookupByPath(disk.source_path)
        return str(pool.createXMLFrom(xml, src, 0).path())

    # createXMLFrom reports no progress: watch the new volume grow from another thread.
    watcher = asyncio.create_task(_watch_copy(session, disk, say))
    try:
        return await on_host(
            session,
            f"{attempt}: copying disk {disk.target}",
            copy_volume,
            timeout=_copy_timeout(session, disk.capacity),
        )
    finally:
        await cancel_and_wait(watcher)


async def _watch_copy(session: HostSession, disk: _DiskPlan, say: Callable[[str], None]) -> None:
    def allocation(conn: libvirt.virConnect) -> int:
        pool = conn.storagePoolLookupByName(disk.pool)
        return int(pool.storageVolLookupByName(disk.new_name).info()[2])

    started = time.monotonic()
    while True:
        await asyncio.sleep(1.0)
        with contextlib.suppress(Exception):
            done = await session.call(allocation, what="watching a copy", timeout=5)
            mib = done / 1048576
            say(f"copying disk {disk.target}: {mib:.0f} MiB ({time.monotonic() - started:.0f} s)")
