"""Writing and reading the audit trail: the ring on the host, the JSON-lines log on this
machine, and where warnings go when a write fails.

A write is one short read-modify-write on the host's own worker thread (read the ring,
append, ``setMetadata`` to the live state and/or persistent config, as reservations do) and
one appended line locally. It happens after the change it records and never raises: a
failure is logged and handed to the fleet's warning listeners (the TUI shows a toast, the
CLI a line on stderr) and returned. libvirt has no compare-and-set, so two writers that
append to the same VM's ring in the same instant may lose one of the two entries there
(last writer wins); both still reach each writer's local log. The reservation lock is not
taken for this: the ring is a record, not a claim, and a second round of lock calls per
change would double the cost of every action over a slow link.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import libvirt

from catkeeper.backend.audit import ring
from catkeeper.backend.audit.ring import Entry
from catkeeper.backend.errors import BackendError, describe
from catkeeper.config import current_user
from catkeeper.model import VM

if TYPE_CHECKING:
    from catkeeper.backend.fleet import Fleet

log = logging.getLogger(__name__)

_ELEMENT = libvirt.VIR_DOMAIN_METADATA_ELEMENT
_LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
_CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG
WRITE_TIMEOUT_S = 10.0  # an entry that takes longer is given up: the action is long done

Warn = Callable[[str], None]
Recorded = Callable[[str, str], None]  # (host, uuid) of the VM whose ring just grew
_listeners: weakref.WeakKeyDictionary[Fleet, list[Warn]] = weakref.WeakKeyDictionary()
_recorded: weakref.WeakKeyDictionary[Fleet, list[Recorded]] = weakref.WeakKeyDictionary()


def watch(fleet: Fleet, warn: Warn) -> Callable[[], None]:
    """Call ``warn(message)`` (on the event loop) when an entry for ``fleet`` could not be
    written; returns the function that stops it."""
    listeners = _listeners.setdefault(fleet, [])
    listeners.append(warn)
    return lambda: listeners.remove(warn) if warn in listeners else None


def on_recorded(fleet: Fleet, listener: Recorded) -> Callable[[], None]:
    """Call ``listener(host, uuid)`` after an entry reached a VM's ring on its host (a
    history on screen re-reads it: a snapshot, say, changes nothing else the inventory
    sees). Returns the function that stops it."""
    listeners = _recorded.setdefault(fleet, [])
    listeners.append(listener)
    return lambda: listeners.remove(listener) if listener in listeners else None


def _warn(fleet: Fleet, message: str) -> None:
    log.warning("audit: %s", message)
    for listener in list(_listeners.get(fleet, ())):
        try:
            listener(message)
        except Exception:  # a broken display must not turn a warning into a failure
            log.exception("audit warning listener failed")


def log_path(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/catkeeper/audit.jsonl`` (default ``~/.local/state``), read at call
    time so that a test (or a user) can point it elsewhere."""
    env = os.environ if env is None else env
    state = env.get("XDG_STATE_HOME") or os.path.join(env.get("HOME", "~"), ".local", "state")
    return Path(os.path.expanduser(state)) / "catkeeper" / "audit.jsonl"


def _write_local(host: str, vm: str, uuid: str, e: Entry) -> str | None:
    line = json.dumps({**e.to_json(), "host": host, "vm": vm, "uuid": uuid})
    path = log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # One short O_APPEND write per line: several catkeepers on this machine interleave
        # whole lines, never halves.
        with path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")
    except OSError as exc:
        return f"local audit log {path}: {describe(exc)}"
    return None


def read_local(env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Every entry of the local log, oldest first (lines that do not parse are skipped)."""
    try:
        text = log_path(env).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            out.append(doc)
    return out


# ---- on the host's thread ------------------------------------------------------------------


def read_ring(dom: Any, flags: int = 0) -> list[Entry]:
    """The ring of one copy (0: the live state while running, else the config)."""
    try:
        xml = dom.metadata(_ELEMENT, ring.NAMESPACE, flags)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            return []
        raise
    return ring.from_string(xml) or []


def history_before(dom: Any) -> list[Entry] | None:
    """The ring before a change that puts back older metadata (a snapshot revert restores
    the definition the snapshot saved, ring included); None when it cannot be read, which
    must not stop the change itself."""
    try:
        return read_ring(dom, 0)
    except libvirt.libvirtError as exc:
        log.info("reading the audit ring before a revert: %s", describe(exc))
        return None


def append_on_host(
    dom: Any, new: Entry, limit: int = ring.LIMIT, history: list[Entry] | None = None
) -> None:
    """Append ``new`` to the ring of every copy the domain has (live, config), in one call;
    to ``history`` instead of the stored ring when given."""
    flags = 0
    if dom.isActive():
        flags |= _LIVE
    if dom.isPersistent():
        flags |= _CONFIG
    base = read_ring(dom, 0) if history is None else history
    entries = ring.appended(base, new, limit)
    dom.setMetadata(_ELEMENT, ring.to_string(entries), ring.PREFIX, ring.NAMESPACE, flags)


# ---- on the event loop -----------------------------------------------------------------------


async def record(
    fleet: Fleet,
    vm: VM,
    action: str,
    detail: str = "",
    *,
    uuid: str | None = None,
    name: str | None = None,
    on_host: bool = True,
    who: str | None = None,
    history: list[Entry] | None = None,
) -> str | None:
    """Record that ``action`` was done to ``vm`` (``uuid``/``name``: the VM it is now, e.g.
    a clone or a renamed VM). ``on_host`` False: the local log only (the domain is gone).
    ``who`` defaults to ``config.current_user`` (a reservation write passes its ``me``);
    ``history``: the ring to append to, when the change put back an older one.


    Never raises (but for cancellation): returns the warning, or None when all was written.
    """
    uuid = uuid or vm.uuid
    name = name or vm.name
    try:
        new = ring.entry(fleet.clock(), who or current_user(fleet.config), action, detail)
    except Exception as exc:  # pragma: no cover - a broken clock or config
        _warn(fleet, f"{action} {vm.host}/{name}: not recorded: {describe(exc)}")
        return None
    problems = []
    local = _write_local(vm.host, name, uuid, new)
    if local:
        problems.append(local)
    if on_host:
        problem = await _write_host(fleet, vm.host, uuid, new, history)
        if problem:
            problems.append(problem)
        else:
            for listener in list(_recorded.get(fleet, ())):
                try:
                    listener(vm.host, uuid)
                except Exception:
                    log.exception("audit record listener failed")
    if not problems:
        return None
    message = f"{action} {vm.host}/{name} was done, but not recorded in full: " + "; ".join(
        problems
    )
    _warn(fleet, message)
    return message


async def _write_host(
    fleet: Fleet, host: str, uuid: str, new: Entry, history: list[Entry] | None
) -> str | None:
    try:
        session = fleet.session(host)
    except BackendError as exc:
        return str(exc)
    if session.readonly:
        return f"{host} is read-only: the history on the host is not written"
    timeout = min(session.timing.call_timeout, WRITE_TIMEOUT_S)
    try:
        await session.call_domain(
            uuid,
            lambda dom: append_on_host(dom, new, history=history),
            timeout=timeout,
            what="writing the audit entry",
        )
    except asyncio.CancelledError:
        raise
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return "the VM no longer exists on the host (kept in the local log)"
        return f"the host's history: {describe(exc)}"
    except Exception as exc:
        return f"the host's history: {describe(exc)}"
    return None


async def read(fleet: Fleet, vm: VM) -> list[Entry]:
    """The VM's ring as the host has it now, newest first (a read-only connection is
    enough). Raises ``BackendError`` when the host cannot be asked."""
    session = fleet.session(vm.host)
    try:
        entries = await session.call_domain(
            vm.uuid, read_ring, what=f"reading the history of {vm.ref}"
        )
    except libvirt.libvirtError as exc:
        raise BackendError(f"history of {vm.ref}: {describe(exc)}") from exc
    return ring.newest_first(entries)
