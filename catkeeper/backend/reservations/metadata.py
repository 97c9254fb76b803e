"""The reservation element kept in a domain's ``<metadata>``, in catkeeper's own namespace.

In the domain XML it reads::

    <catkeeper:reservation xmlns:catkeeper="https://catkeeper.dev/xmlns/reservation/1"
                           revision="3">
      <catkeeper:owner>alice</catkeeper:owner>
      <catkeeper:note>bisecting kernel</catkeeper:note>
      <catkeeper:since>2026-11-23T09:00:00Z</catkeeper:since>
      <catkeeper:until>2026-11-27T18:00:00Z</catkeeper:until>
      <catkeeper:contact>alice@example.com</catkeeper:contact>
      <catkeeper:changed by="alice" action="reserved">2026-11-23T09:00:00Z</catkeeper:changed>
    </catkeeper:reservation>

``revision`` counts every write, so a writer can tell whether the reservation changed since
it looked. ``changed`` says who wrote last, when and what (reserved, updated, took-over,
released), for conflict messages. A *released* reservation keeps the element with its
revision and ``changed`` but no ``owner``: the counter never goes back, and the next writer
can say who released it. An element without an owner means "not reserved".

Read it with ``virsh metadata DOMAIN https://catkeeper.dev/xmlns/reservation/1``, which prints
the element without the prefix (that is also what ``virDomainGetMetadata`` returns). The
element handed to ``virDomainSetMetadata`` must be unqualified too: libvirt adds the
namespace under the key it is given, and refuses an element that declares one already.

Writers also leave short-lived lock elements while they write (see ``reservations``), each in
its own namespace ``https://catkeeper.dev/xmlns/lock/1/<token>``::

    <catkeeper-lock:lock xmlns:catkeeper-lock="https://catkeeper.dev/xmlns/lock/1/9f3c…"
                         by="alice" client="jumpbox:4711" at="2026-11-23T09:00:00Z"/>
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from catkeeper.backend.metadata_time import format_time, local_name, parse_time
from catkeeper.model import Reservation

NAMESPACE = "https://catkeeper.dev/xmlns/reservation/1"
PREFIX = "catkeeper"
LOCK_NAMESPACE_PREFIX = "https://catkeeper.dev/xmlns/lock/1/"
LOCK_PREFIX = "catkeeper-lock"
_TAG = f"{{{NAMESPACE}}}reservation"
# So that serialised elements read catkeeper:owner rather than ns0:owner.
ET.register_namespace(PREFIX, NAMESPACE)

ACTIONS = ("reserved", "updated", "took-over", "released")


@dataclass(frozen=True)
class Record:
    """Everything the element holds. ``reservation`` None: not reserved (released)."""

    revision: int
    reservation: Reservation | None
    changed_by: str | None = None
    changed_at: float | None = None
    action: str | None = None  # one of ACTIONS, when written by catkeeper


@dataclass(frozen=True)
class LockSlot:
    token: str
    by: str
    client: str
    at: float | None


def _child(elem: ET.Element, name: str) -> ET.Element | None:
    # getMetadata hands back unqualified elements, the domain XML qualified ones: accept both.
    for child in elem:
        if local_name(child.tag) == name:
            return child
    return None


def _text(elem: ET.Element, name: str) -> str | None:
    child = _child(elem, name)
    return child.text if child is not None else None


def record_from_element(elem: ET.Element) -> Record:
    try:
        revision = max(0, int(elem.get("revision", "0")))
    except ValueError:
        revision = 0
    owner = (_text(elem, "owner") or "").strip()
    reservation = None
    if owner:
        reservation = Reservation(
            owner=owner,
            note=_text(elem, "note") or "",
            since=parse_time(_text(elem, "since")),
            until=parse_time(_text(elem, "until")),
            contact=_text(elem, "contact") or None,
            revision=revision,
        )
    changed = _child(elem, "changed")
    return Record(
        revision=revision,
        reservation=reservation,
        changed_by=(changed.get("by") or None) if changed is not None else None,
        changed_at=parse_time(changed.text) if changed is not None else None,
        action=(changed.get("action") or None) if changed is not None else None,
    )


def from_element(elem: ET.Element) -> Reservation | None:
    return record_from_element(elem).reservation


def from_metadata(metadata: ET.Element) -> Reservation | None:
    """The reservation inside a domain XML's ``<metadata>`` element, if any."""
    elem = metadata.find(_TAG)
    return from_element(elem) if elem is not None else None


def record_from_string(xml: str) -> Record | None:
    """Parse what ``virDomainGetMetadata(ELEMENT, NAMESPACE)`` returns; None if unreadable."""
    try:
        elem = ET.fromstring(xml)
    except ET.ParseError:
        return None
    return record_from_element(elem) if local_name(elem.tag) == "reservation" else None


def from_string(xml: str) -> Reservation | None:
    record = record_from_string(xml)
    return record.reservation if record is not None else None


def record_to_string(record: Record) -> str:
    """The unqualified element for ``virDomainSetMetadata(…, PREFIX, NAMESPACE, …)``."""
    elem = ET.Element("reservation", {"revision": str(record.revision)})
    res = record.reservation
    if res is not None:
        fields: list[tuple[str, str | None]] = [
            ("owner", res.owner),
            ("note", res.note),
            ("since", format_time(res.since) if res.since is not None else None),
            ("until", format_time(res.until) if res.until is not None else None),
            ("contact", res.contact),
        ]
        for name, value in fields:
            if value is not None:
                ET.SubElement(elem, name).text = value
    if record.changed_at is not None or record.changed_by:
        attrs = {}
        if record.changed_by:
            attrs["by"] = record.changed_by
        if record.action:
            attrs["action"] = record.action
        changed = ET.SubElement(elem, "changed", attrs)
        if record.changed_at is not None:
            changed.text = format_time(record.changed_at)
    return ET.tostring(elem, encoding="unicode")


def to_string(res: Reservation) -> str:
    """A bare reservation as the element ``virDomainSetMetadata`` takes."""
    return record_to_string(Record(revision=res.revision, reservation=res))


def normalised(record: Record) -> Record:
    """The record as it reads back after a write (times kept to whole seconds)."""
    back = record_from_string(record_to_string(record))
    assert back is not None
    return back


def with_revision(res: Reservation, revision: int) -> Reservation:
    return dataclasses.replace(res, revision=revision)


# ---- lock slots --------------------------------------------------------------------------


def lock_uri(token: str) -> str:
    return LOCK_NAMESPACE_PREFIX + token


def lock_to_string(slot: LockSlot) -> str:
    attrs = {"by": slot.by, "client": slot.client}
    if slot.at is not None:
        attrs["at"] = format_time(slot.at)
    return ET.tostring(ET.Element("lock", attrs), encoding="unicode")


def lock_slots(domain_xml: str) -> list[LockSlot]:
    """Every writer's lock element in a domain XML."""
    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError:
        return []
    metadata = root.find("metadata")
    if metadata is None:
        return []
    slots = []
    for elem in metadata:
        uri, _, name = elem.tag[1:].partition("}") if elem.tag.startswith("{") else ("", "", "")
        if name == "lock" and uri.startswith(LOCK_NAMESPACE_PREFIX):
            slots.append(
                LockSlot(
                    token=uri[len(LOCK_NAMESPACE_PREFIX) :],
                    by=elem.get("by", ""),
                    client=elem.get("client", ""),
                    at=parse_time(elem.get("at")),
                )
            )
    return slots
