"""Edit a VM's definition as XML, with nothing lost when the edit is wrong.

The flow the TUI (and anyone else) follows:

1. ``get_xml`` reads the persistent (inactive) definition, including secrets such as a VNC
   password: redefining from the ordinary XML would silently drop them.
2. The user edits it. ``check_edit`` catches what we can say better than libvirt: XML that
   is not well-formed (with the line), a changed name or UUID (rename is its own
   operation, a new UUID would be another VM), a changed reservation (it has its own
   compare-and-set). A UUID the user deleted is put back.
3. ``diff`` shows what will change; the user confirms.
4. ``apply_xml`` defines it with ``VIR_DOMAIN_DEFINE_VALIDATE`` (libvirt checks it against
   its schema), but only if the definition is still the one the user started from
   (someone else may have changed it meanwhile). When libvirt refuses, its message is
   returned in the error and the definition is verified to be unchanged (and restored if
   it somehow is not).
"""

from __future__ import annotations

import difflib
import shlex
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass

import libvirt

from catkeeper.backend import audit
from catkeeper.backend.actions import ActionError
from catkeeper.backend.errors import BackendError
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.reservations.metadata import from_metadata
from catkeeper.backend.vm.common import (
    UNSUPPORTED,
    XML_INACTIVE_SECURE,
    Refused,
    on_host,
    refresh,
)
from catkeeper.model import VM


class XmlEditError(ActionError):
    """The edit was not applied; ``str()`` says why (libvirt's message when it refused)."""


@dataclass(frozen=True)
class Applied:
    before: str  # the definition before, as libvirt printed it
    after: str  # the definition now, as libvirt printed it (with its defaults filled in)
    running: bool  # the VM runs: the new definition takes effect at its next boot

    @property
    def changed(self) -> bool:
        return self.before != self.after


async def get_xml(fleet: Fleet, vm: VM) -> str:
    """The persistent definition (with secrets: a writable connection is required)."""
    attempt = f"read the XML of {vm.ref}"
    session = fleet.writable(vm.host, attempt)

    def read(conn: libvirt.virConnect) -> str:
        dom = conn.lookupByUUIDString(vm.uuid)
        if not dom.isPersistent():
            raise Refused("it is transient: it has no definition to edit")
        return str(dom.XMLDesc(XML_INACTIVE_SECURE))

    return await on_host(session, attempt, read)


def diff(old: str, new: str, label: str = "domain.xml") -> str:
    """A unified diff of two XML texts ("" when they are equal)."""
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=f"{label} (defined)",
        tofile=f"{label} (edited)",
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def _parse(text: str, which: str) -> ET.Element:
    try:
        return ET.fromstring(text)
    except ET.ParseError as exc:
        line, column = exc.position
        raise XmlEditError(
            f"the {which} XML is not well-formed at line {line}, column {column + 1}: "
            f"{str(exc).split(':')[0]}"
        ) from None


def check_edit(original: str, edited: str) -> str:
    """The XML to define for ``edited``, or ``XmlEditError`` when the edit may not be applied.

    Only a UUID the user removed is changed (put back); everything else is left to libvirt.
    """
    old = _parse(original, "original")
    new = _parse(edited, "edited")
    if new.tag != "domain":
        raise XmlEditError(f"the root element must be <domain>, not <{new.tag}>")
    old_name, new_name = (old.findtext("name") or "").strip(), (new.findtext("name") or "").strip()
    if new_name != old_name:
        raise XmlEditError(
            f"the name changed ({old_name!r} → {new_name!r}): use rename for that; "
            "the editor keeps the name"
        )
    old_uuid = (old.findtext("uuid") or "").strip().lower()
    new_uuid = (new.findtext("uuid") or "").strip().lower()
    if new_uuid and new_uuid != old_uuid:
        raise XmlEditError(
            f"the UUID changed ({old_uuid} → {new_uuid}): a new UUID would make another VM "
            "(use clone for that)"
        )
    if _reservation(old) != _reservation(new):
        raise XmlEditError(
            "the catkeeper reservation in <metadata> changed: use the reservation form, "
            "which checks that nobody else changed it meanwhile"
        )
    if not new_uuid:
        # Without a UUID libvirt would still match the domain by name, but say nothing
        # about it: put the original back explicitly.
        elem = ET.Element("uuid")
        elem.text = old_uuid
        elem.tail = "\n  "
        name_index = next((i for i, c in enumerate(new) if c.tag == "name"), 0)
        new.insert(name_index + 1, elem)
        return ET.tostring(new, encoding="unicode")
    return edited


def _reservation(root: ET.Element) -> object:
    metadata = root.find("metadata")
    return from_metadata(metadata) if metadata is not None else None


def _define_validated(conn: libvirt.virConnect, xml: str) -> None:
    try:
        conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() not in UNSUPPORTED or "flags" not in (
            exc.get_error_message() or ""
        ):
            raise
        # A daemon older than 7.7 has no VALIDATE flag; its parser still checks.
        conn.defineXML(xml)


async def apply_xml(fleet: Fleet, vm: VM, edited: str, *, base: str) -> Applied:
    """Define ``edited`` as the VM's new definition, if it still is ``base``.

    ``base`` is the XML the user started editing (from ``get_xml``). Raises
    ``XmlEditError`` (and changes nothing) when the edit is refused by ``check_edit``,
    when the definition changed since ``base`` was read, or when libvirt refuses it.
    """
    attempt = f"apply the edited XML of {vm.ref}"
    xml = check_edit(base, edited)
    session = fleet.writable(vm.host, attempt)

    def apply(conn: libvirt.virConnect) -> Applied:
        dom = conn.lookupByUUIDString(vm.uuid)
        before = str(dom.XMLDesc(XML_INACTIVE_SECURE))
        to_define = xml
        if before != base:
            # Entries added to the audit ring meanwhile (someone started it, say) are no
            # reason to refuse; they are kept. Any other change is.
            if audit.without_ring(before) != audit.without_ring(base):
                raise Refused(
                    "its definition changed since you opened it (someone else edited it?): "
                    "open it again to edit the new definition"
                )
            to_define = audit.keeping_ring(xml, base, before)
        try:
            _define_validated(conn, to_define)
        except libvirt.libvirtError:
            now = str(dom.XMLDesc(XML_INACTIVE_SECURE))
            if now != before:  # never seen; costs one call to be sure nothing was lost
                conn.defineXML(before)
            raise
        after = str(dom.XMLDesc(XML_INACTIVE_SECURE))
        return Applied(before=before, after=after, running=bool(dom.isActive()))

    try:
        result = await on_host(session, attempt, apply)
    except ActionError as exc:
        raise XmlEditError(str(exc), code=exc.code) from exc
    await refresh(session, vm.uuid)
    if result.changed:
        detail = audit.xml_detail(result.before, result.after, result.running)
        await audit.record(fleet, vm, "edit-xml", detail)
    return result


def editor_argv(env: Mapping[str, str]) -> list[str]:
    """``$VISUAL``, else ``$EDITOR``, else ``vi``, split into an argv (``"code -w"`` works).

    Split like a shell would, but run as an argv: an editor setting never goes through a
    shell, whatever the VM's XML or the user's environment holds.
    """
    for name in ("VISUAL", "EDITOR"):
        value = env.get(name, "").strip()
        if value:
            try:
                argv = shlex.split(value)
            except ValueError as exc:
                raise BackendError(
                    f"${name} {value!r} cannot be split into a command: {exc}"
                ) from None
            if argv:
                return argv
    return ["vi"]
