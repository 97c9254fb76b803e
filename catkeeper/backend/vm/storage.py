"""Storage pools and volumes, through libvirt's storage API only.

Everything here works the same on a remote host as on the local one: volumes are created,
filled (``virStorageVolUpload`` streams) and read back (``virStorageVolDownload``) over the
libvirt connection, never with scp or a shell on the host.

The plain functions take a ``virConnect`` and run on a host's worker thread (pass them to
``HostSession.call``). ``upload``/``download`` are coroutines that move data in chunks, one
bounded ``HostSession.call`` per chunk, so a transfer of any size never trips the per-call
timeout and the progress callback sees every chunk.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any
from xml.sax.saxutils import escape

import libvirt

from catkeeper.backend.host import HostSession

log = logging.getLogger(__name__)

# One executor call moves at most this much; one virStreamSend at most _SEND_MAX (the
# remote protocol's legacy payload limit, which every daemon accepts).
CHUNK = 4 * 1024 * 1024
_SEND_MAX = 256 * 1024

ProgressFn = Callable[[int, int], None]  # (bytes done, bytes total)


class StorageError(Exception):
    """A storage request that cannot be met; ``str()`` is fit to show a person."""


@dataclass(frozen=True)
class VolumeInfo:
    pool: str | None  # None: the path is not in any storage pool libvirt knows
    name: str
    path: str
    capacity: int  # bytes the guest sees
    allocation: int  # bytes used on the host
    format: str | None  # qcow2, raw, iso, ...
    backing: str | None = None  # backing file path of a copy-on-write overlay


# ---------------------------------------------------------------------------------------
# Plain helpers (run on a host thread)


def pool_by_name(conn: libvirt.virConnect, name: str) -> libvirt.virStoragePool:
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            names = ", ".join(sorted(conn.listStoragePools() + conn.listDefinedStoragePools()))
            raise StorageError(
                f"no storage pool named {name!r} (pools: {names or 'none'})"
            ) from None
        raise
    if not pool.isActive():
        raise StorageError(f"storage pool {name!r} is not active")
    return pool


def _fmt(elem: ET.Element | None) -> str | None:
    if elem is None:
        return None
    found = elem.find("format")
    return found.get("type") if found is not None else None


def volume_info(vol: libvirt.virStorageVol) -> VolumeInfo:
    root = ET.fromstring(vol.XMLDesc(0))
    backing = root.find("backingStore")
    try:
        pool: str | None = vol.storagePoolLookupByVolume().name()
    except libvirt.libvirtError:
        pool = None
    _type, capacity, allocation = vol.info()
    return VolumeInfo(
        pool=pool,
        name=vol.name(),
        path=vol.path(),
        capacity=int(capacity),
        allocation=int(allocation),
        format=_fmt(root.find("target")),
        backing=(backing.findtext("path") or None) if backing is not None else None,
    )


def lookup_volume(conn: libvirt.virConnect, spec: str) -> libvirt.virStorageVol:
    """A volume named ``/abs/path/on/host`` or ``POOL/VOLUME``.

    A file the host has but no pool lists is not found: catkeeper only touches storage
    libvirt manages (a directory pool over the folder makes such files volumes).
    """
    if spec.startswith("/"):
        try:
            return conn.storageVolLookupByPath(spec)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise
        # A pool may simply not have noticed a file copied in by hand: refresh the pools
        # whose directory holds it, then look again.
        for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
            target = ET.fromstring(pool.XMLDesc(0)).findtext("target/path") or ""
            if target and spec.startswith(target.rstrip("/") + "/"):
                with contextlib.suppress(libvirt.libvirtError):
                    pool.refresh(0)
        try:
            return conn.storageVolLookupByPath(spec)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise StorageError(
                    f"{spec} is not a volume in any active storage pool on the host"
                ) from None
            raise
    pool_name, sep, vol_name = spec.partition("/")
    if not sep or not pool_name or not vol_name:
        raise StorageError(f"{spec!r}: name a volume as /path/on/host or POOL/VOLUME")
    pool = pool_by_name(conn, pool_name)
    try:
        return pool.storageVolLookupByName(vol_name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            with contextlib.suppress(libvirt.libvirtError):
                pool.refresh(0)
                return pool.storageVolLookupByName(vol_name)
            raise StorageError(f"no volume {vol_name!r} in pool {pool_name!r}") from None
        raise


def volume_exists(pool: libvirt.virStoragePool, name: str) -> bool:
    try:
        pool.storageVolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return False
        raise
    return True


def volume_xml(
    name: str,
    capacity: int,
    fmt: str = "qcow2",
    *,
    backing_path: str | None = None,
    backing_format: str | None = None,
) -> str:
    """``<volume>`` XML; with ``backing_path`` a copy-on-write overlay on that file."""
    parts = [
        f"<volume><name>{escape(name)}</name>",
        f"<capacity unit='bytes'>{int(capacity)}</capacity>",
    ]
    if fmt == "qcow2":
        # compat 1.1 (qemu ≥ 1.1): lazy refcounts and zero clusters; libvirt's default
        # is still the 2009 format 0.10.
        parts.append("<allocation unit='bytes'>0</allocation>")
        parts.append("<target><format type='qcow2'/><compat>1.1</compat></target>")
    else:
        parts.append(f"<target><format type='{escape(fmt)}'/></target>")
    if backing_path is not None:
        bfmt = f"<format type='{escape(backing_format)}'/>" if backing_format else ""
        parts.append(f"<backingStore><path>{escape(backing_path)}</path>{bfmt}</backingStore>")
    parts.append("</volume>")
    return "".join(parts)


def create_volume(pool: libvirt.virStoragePool, xml: str) -> libvirt.virStorageVol:
    return pool.createXML(xml, 0)


def delete_volume_by_path(conn: libvirt.virConnect, path: str) -> bool:
    """Delete the volume at ``path``; False when it was already gone."""
    try:
        vol = conn.storageVolLookupByPath(path)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return False
        raise
    vol.delete(0)
    return True


# ---------------------------------------------------------------------------------------
# Streams (coroutines: one bounded call per chunk)


def _send_chunk(stream: libvirt.virStream, data: bytes, _conn: libvirt.virConnect) -> None:
    _send_all(stream, data)


def _send_all(stream: libvirt.virStream, data: bytes) -> None:
    view = memoryview(data)
    while view:
        sent = stream.send(bytes(view[:_SEND_MAX]))
        if sent < 0:  # -2: would block; only non-blocking streams say so
            raise StorageError("the upload stream refused data")
        view = view[sent:]


async def upload(
    session: HostSession,
    path: str,
    source: bytes | IO[bytes],
    size: int,
    *,
    on_progress: ProgressFn | None = None,
    what: str = "uploading",
) -> None:
    """Write ``size`` bytes from ``source`` into the volume at ``path``, from offset 0."""
    reader: IO[bytes] = io.BytesIO(source) if isinstance(source, bytes) else source
    stream: Any = None

    def begin(conn: libvirt.virConnect) -> Any:
        vol = conn.storageVolLookupByPath(path)
        st = conn.newStream(0)
        vol.upload(st, 0, size, 0)
        return st

    stream = await session.call(begin, what=what)
    done = 0
    try:
        if on_progress is not None:
            on_progress(0, size)
        while done < size:
            chunk = reader.read(min(CHUNK, size - done))
            if not chunk:
                raise StorageError(f"{what}: the source ended after {done} of {size} bytes")
            await session.call(functools.partial(_send_chunk, stream, chunk), what=what)
            done += len(chunk)
            if on_progress is not None:
                on_progress(done, size)
        await session.call(lambda _c: stream.finish(), what=what)
    except BaseException:
        # Tell the daemon the transfer is off, or it keeps the volume locked for a while.
        with contextlib.suppress(Exception):
            await session.call(lambda _c: stream.abort(), what=what, timeout=5)
        raise


async def download(
    session: HostSession,
    path: str,
    *,
    limit: int = 64 * 1024 * 1024,
    what: str = "downloading",
) -> bytes:
    """The content of the volume at ``path`` (at most ``limit`` bytes: meant for small
    volumes such as a cloud-init seed)."""

    def begin(conn: libvirt.virConnect) -> tuple[Any, int]:
        vol = conn.storageVolLookupByPath(path)
        _t, capacity, _a = vol.info()
        if capacity > limit:
            raise StorageError(f"{path} holds {capacity} bytes, more than {limit} allowed")
        st = conn.newStream(0)
        vol.download(st, 0, 0, 0)
        return st, int(capacity)

    stream, _capacity = await session.call(begin, what=what)

    def read_chunk(_c: libvirt.virConnect) -> bytes:
        got = bytearray()
        while len(got) < CHUNK:
            data = stream.recv(_SEND_MAX)
            if isinstance(data, int):  # -2: would block (non-blocking streams only)
                continue
            if not data:
                break
            got += data
        return bytes(got)

    out = bytearray()
    try:
        while True:
            chunk = await session.call(read_chunk, what=what)
            out += chunk
            if len(out) > limit:
                raise StorageError(f"{path}: more than {limit} bytes")
            if len(chunk) < CHUNK:
                break
        await session.call(lambda _c: stream.finish(), what=what)
    except BaseException:
        with contextlib.suppress(Exception):
            await session.call(lambda _c: stream.abort(), what=what, timeout=5)
        raise
    return bytes(out)
