"""A VM's disks as the storage volumes behind them: which are its own to delete, which other
domains (or overlays) use the same file.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass

import libvirt

from catkeeper.backend.fleet import Fleet
from catkeeper.backend.vm import storage
from catkeeper.backend.vm.common import on_host
from catkeeper.model import VM


@dataclass(frozen=True)
class DiskVolume:
    """One disk of a VM as delete/clone see it."""

    target: str  # vda, sda, ...
    device: str  # disk, cdrom, ...
    path: str | None  # source path on the host; None: no medium / network disk
    pool: str | None  # storage pool holding it; None: not a libvirt volume
    volume: str | None  # volume name in that pool
    capacity: int | None
    format: str | None
    readonly: bool
    used_by: tuple[str, ...] = ()  # other domains (or overlays) that use this file
    # Ticked by default in the delete dialog: a writable disk volume nothing else uses.
    suggested: bool = False

    @property
    def deletable(self) -> bool:
        return self.path is not None and self.pool is not None


def disk_source_path(conn: libvirt.virConnect, disk: ET.Element) -> str | None:
    source = disk.find("source")
    if source is None:
        return None
    kind = disk.get("type", "file")
    if kind == "file":
        return source.get("file")
    if kind == "block":
        return source.get("dev")
    if kind == "volume" and source.get("pool") and source.get("volume"):
        try:
            pool = conn.storagePoolLookupByName(source.get("pool", ""))
            return str(pool.storageVolLookupByName(source.get("volume", "")).path())
        except libvirt.libvirtError:
            return None
    return None


def _paths_used_elsewhere(
    conn: libvirt.virConnect, skip_uuid: str, pools: Iterable[str]
) -> dict[str, list[str]]:
    """path → who else uses it: other domains' disks, and overlays backed by it."""
    users: dict[str, list[str]] = {}
    for dom in conn.listAllDomains(0):
        if dom.UUIDString() == skip_uuid:
            continue
        try:
            root = ET.fromstring(dom.XMLDesc(0))
        except libvirt.libvirtError:
            continue
        for disk in root.iterfind("devices/disk"):
            for elem in [disk, *disk.iter("backingStore")]:
                src = elem.find("source")
                if src is not None and (path := src.get("file") or src.get("dev")):
                    users.setdefault(path, []).append(f"VM {dom.name()}")
    for name in set(pools):
        with contextlib.suppress(libvirt.libvirtError):
            for vol in conn.storagePoolLookupByName(name).listAllVolumes(0):
                with contextlib.suppress(libvirt.libvirtError):
                    backing = ET.fromstring(vol.XMLDesc(0)).findtext("backingStore/path")
                    if backing:
                        users.setdefault(backing, []).append(f"overlay {vol.name()}")
    return users


def disks_of(conn: libvirt.virConnect, dom: libvirt.virDomain) -> list[DiskVolume]:
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    found: list[DiskVolume] = []
    for disk in root.iterfind("devices/disk"):
        target = disk.find("target")
        path = disk_source_path(conn, disk)
        vol_info: storage.VolumeInfo | None = None
        if path is not None:
            with contextlib.suppress(libvirt.libvirtError):
                vol_info = storage.volume_info(conn.storageVolLookupByPath(path))
        found.append(
            DiskVolume(
                target=target.get("dev", "?") if target is not None else "?",
                device=disk.get("device", "disk"),
                path=path,
                pool=vol_info.pool if vol_info else None,
                volume=vol_info.name if vol_info else None,
                capacity=vol_info.capacity if vol_info else None,
                format=vol_info.format if vol_info else None,
                readonly=disk.find("readonly") is not None or disk.find("shareable") is not None,
            )
        )
    users = _paths_used_elsewhere(conn, dom.UUIDString(), [d.pool for d in found if d.pool])
    out = []
    for d in found:
        used = tuple(users.get(d.path, ())) if d.path else ()
        suggested = d.deletable and d.device == "disk" and not d.readonly and not used
        out.append(DiskVolume(**{**d.__dict__, "used_by": used, "suggested": suggested}))
    return out


async def disks(fleet: Fleet, vm: VM) -> list[DiskVolume]:
    """The VM's disks with the storage volumes behind them, as delete offers them."""
    session = fleet.session(vm.host)
    return await on_host(
        session,
        f"list the storage of {vm.ref}",
        lambda c: disks_of(c, c.lookupByUUIDString(vm.uuid)),
    )
