"""Rename, clone and delete VMs; the helpers every VM-changing operation shares.

Like ``actions``, every libvirt call runs on the VM's host threads through ``HostSession``
and is bounded by a timeout; errors are ``ActionError``s whose text starts with what was
attempted and the VM (``"clone lab1/db01 as db02: …"``). Each operation checks all it can
before it changes anything (names, states, volume names), so a wrong input loses nothing,
and an operation that fails halfway removes what it had made.

Everything goes through the libvirt connection (storage pools and volumes for disks), so it
works on remote hosts exactly as on the local one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import libvirt

from catkeeper.backend.actions import ActionError
from catkeeper.backend.errors import HostUnavailable, describe, error_code
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.host import HostSession
from catkeeper.backend.vm import storage
from catkeeper.model import VM

log = logging.getLogger(__name__)
T = TypeVar("T")

# catkeeper's own per-VM state (reservations, pending installs) lives in <metadata> under
# namespaces below this prefix; none of it belongs to a copy of the VM.
CATKEEPER_NS_PREFIX = "https://catkeeper.dev/xmlns/"
# New names: what works as a libvirt name, a file name and (for cloud-init) a hostname.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# libvirt error codes meaning "this driver cannot do that (with these flags)".
UNSUPPORTED = frozenset(
    {
        libvirt.VIR_ERR_NO_SUPPORT,
        libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
        libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
        libvirt.VIR_ERR_INVALID_ARG,  # "unsupported flags (0x…)"
    }
)
XML_INACTIVE_SECURE = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE

# A full copy of a disk may take long: its call gets this much time plus a second per
# _COPY_RATE bytes (a slow host disk), instead of the usual per-call timeout.
_COPY_RATE = 50 * 1024 * 1024


class Refused(Exception):
    """Raised on a host thread when a check fails; becomes an ``ActionError`` upstream."""


# ---------------------------------------------------------------------------------------
# Shared helpers


def check_name(name: str, what: str = "name") -> str:
    """``name`` stripped, or ``ValueError`` saying what a name may hold."""
    name = name.strip()
    if not _NAME_RE.match(name):
        raise ValueError(
            f"{what} {name!r} is not valid: use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


async def on_host(
    session: HostSession,
    attempt: str,
    fn: Callable[[libvirt.virConnect], T],
    *,
    timeout: float | None = None,
) -> T:
    """``fn(conn)`` on the host's threads; failures become ``ActionError("attempt: why")``."""
    try:
        return await session.call(fn, timeout=timeout, what=attempt)
    except libvirt.libvirtError as exc:
        raise ActionError(f"{attempt}: {describe(exc)}", code=error_code(exc)) from exc
    except (Refused, storage.StorageError, ValueError) as exc:
        raise ActionError(f"{attempt}: {exc}") from exc
    except HostUnavailable as exc:
        raise HostUnavailable(f"{attempt}: {exc}") from exc


async def refresh(session: HostSession, uuid: str) -> VM | None:
    """Re-read a domain after a change (the change happened: failures are only logged)."""
    try:
        return await session.refresh_domain(uuid)
    except Exception as exc:
        log.info("re-reading %s on %s: %s", uuid, session.name, describe(exc))
        return None


def name_taken(conn: libvirt.virConnect, name: str) -> bool:
    try:
        conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise
    return True


def drop_catkeeper_metadata(root: ET.Element) -> None:
    """Remove every element of catkeeper's namespaces from ``<metadata>`` (in place)."""
    metadata = root.find("metadata")
    if metadata is None:
        return
    for child in list(metadata):
        if child.tag.startswith("{" + CATKEEPER_NS_PREFIX):
            metadata.remove(child)
    if len(metadata) == 0:
        root.remove(metadata)


def to_xml(root: ET.Element) -> str:
    return ET.tostring(root, encoding="unicode")


# ---------------------------------------------------------------------------------------
# Disks ↔ volumes


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


def _disk_source_path(conn: libvirt.virConnect, disk: ET.Element) -> str | None:
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


def _disks_of(conn: libvirt.virConnect, dom: libvirt.virDomain) -> list[DiskVolume]:
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    found: list[DiskVolume] = []
    for disk in root.iterfind("devices/disk"):
        target = disk.find("target")
        path = _disk_source_path(conn, disk)
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
        lambda c: _disks_of(c, c.lookupByUUIDString(vm.uuid)),
    )


# ---------------------------------------------------------------------------------------
# Rename


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
    return got


# ---------------------------------------------------------------------------------------
# Clone

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
        path = _disk_source_path(conn, disk)
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
        removed = await _remove_volumes(session, made)
        if isinstance(exc, ActionError) and made:
            raise ActionError(f"{exc}; removed the new volumes again: {removed}") from exc
        raise
    got = await refresh(session, uuid)
    if got is None:
        raise ActionError(f"{attempt}: the new VM vanished right after it was defined")
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
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


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


def _deleter(path: str) -> Callable[[libvirt.virConnect], bool]:
    return lambda conn: storage.delete_volume_by_path(conn, path)


async def _remove_volumes(session: HostSession, paths: Sequence[str]) -> str:
    """Delete volumes made by a failed operation; returns a note of what happened."""
    notes = []
    for path in reversed(paths):
        try:
            await session.call(_deleter(path), what=f"removing {path}")
            notes.append(path)
        except Exception as exc:
            notes.append(f"{path} (NOT removed: {describe(exc)})")
    return ", ".join(notes) if notes else "none"


# ---------------------------------------------------------------------------------------
# Delete

_UNDEFINE_ALL = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
)
# Tried in order while the driver says a flag is unsupported: drivers older than
# checkpoints, then drivers without NVRAM, then the bare minimum.
_UNDEFINE_FALLBACKS = (
    _UNDEFINE_ALL,
    _UNDEFINE_ALL & ~libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA,
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA,
    0,
)


@dataclass(frozen=True)
class DeleteResult:
    ref: str
    removed_volumes: tuple[str, ...]


def undefine_all(dom: libvirt.virDomain) -> None:
    """Undefine with every "and its extra state" flag the driver supports."""
    last: libvirt.libvirtError | None = None
    for flags in _UNDEFINE_FALLBACKS:
        try:
            dom.undefineFlags(flags)
            return
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in UNSUPPORTED:
                raise
            last = exc
    assert last is not None
    raise last


async def delete(
    fleet: Fleet,
    vm: VM,
    *,
    volumes: Sequence[str] = (),
    force_off: bool = False,
) -> DeleteResult:
    """Undefine the VM (with its snapshots' metadata, managed save and NVRAM) and delete
    exactly the storage volumes at ``volumes`` (paths as ``disks()`` lists them).

    A path that is not one of the VM's own volume-backed disks is refused before anything
    changes. A running VM is refused unless ``force_off``, which pulls its plug first.
    """
    attempt = f"delete {vm.ref}"
    session = fleet.writable(vm.host, attempt)
    wanted = list(dict.fromkeys(volumes))

    def check_and_undefine(conn: libvirt.virConnect) -> None:
        dom = conn.lookupByUUIDString(vm.uuid)
        own = {d.path for d in _disks_of(conn, dom) if d.deletable}
        strangers = [p for p in wanted if p not in own]
        if strangers:
            raise Refused(
                "not a storage volume of this VM, so not deleting anything: " + ", ".join(strangers)
            )
        if dom.isActive():
            if not force_off:
                raise Refused("it is running; stop it first (or force it off)")
            dom.destroy()
        if dom.isPersistent():
            undefine_all(dom)

    try:
        await on_host(session, attempt, check_and_undefine)
    except ActionError:
        await refresh(session, vm.uuid)
        raise
    await refresh(session, vm.uuid)
    removed: list[str] = []
    failed: list[str] = []
    for path in wanted:
        try:
            gone = await on_host(
                session,
                f"{attempt}: volume {path}",
                _deleter(path),
            )
            if gone:
                removed.append(path)
        except Exception as exc:
            failed.append(describe(exc))
    if failed:
        raise ActionError(
            f"{attempt}: the VM is gone, but {len(failed)} volume(s) remain: " + "; ".join(failed)
        )
    return DeleteResult(ref=vm.ref, removed_volumes=tuple(removed))
