"""What every VM-changing operation shares: names, host calls that fail as ``ActionError``,
re-reading a domain, catkeeper's own metadata, undefining with all extra state, removing
volumes a failed operation made.

Like ``actions``, every libvirt call runs on the VM's host threads through ``HostSession``
and is bounded by a timeout; errors are ``ActionError``s whose text starts with what was
attempted and the VM (``"clone lab1/db01 as db02: …"``).
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from typing import TypeVar

import libvirt

from catkeeper.backend.actions import ActionError
from catkeeper.backend.errors import HostUnavailable, describe, error_code
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


def deleter(path: str) -> Callable[[libvirt.virConnect], bool]:
    return lambda conn: storage.delete_volume_by_path(conn, path)


async def remove_volumes(session: HostSession, paths: Sequence[str]) -> str:
    """Delete volumes made by a failed operation; returns a note of what happened."""
    notes = []
    for path in reversed(paths):
        try:
            await session.call(deleter(path), what=f"removing {path}")
            notes.append(path)
        except Exception as exc:
            notes.append(f"{path} (NOT removed: {describe(exc)})")
    return ", ".join(notes) if notes else "none"


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
