"""The reservation element kept in a domain's ``<metadata>``, in catkeeper's own namespace.

    <catkeeper:reservation xmlns:catkeeper="https://catkeeper.dev/xmlns/reservation/1"
                           revision="3">
      <catkeeper:owner>alice</catkeeper:owner>
      <catkeeper:note>bisecting kernel</catkeeper:note>
      <catkeeper:since>2026-11-23T09:00:00Z</catkeeper:since>
      <catkeeper:until>2026-11-27T18:00:00Z</catkeeper:until>
      <catkeeper:contact>alice@example.com</catkeeper:contact>
    </catkeeper:reservation>

Read it with ``virsh metadata DOMAIN https://catkeeper.dev/xmlns/reservation/1``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from catkeeper.model import Reservation

NAMESPACE = "https://catkeeper.dev/xmlns/reservation/1"
PREFIX = "catkeeper"
_TAG = f"{{{NAMESPACE}}}reservation"
# So that serialised elements read catkeeper:owner rather than ns0:owner.
ET.register_namespace(PREFIX, NAMESPACE)


def _q(name: str) -> str:
    return f"{{{NAMESPACE}}}{name}"


def format_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def from_element(elem: ET.Element) -> Reservation | None:
    owner = (elem.findtext(_q("owner")) or "").strip()
    if not owner:
        return None
    try:
        revision = int(elem.get("revision", "0"))
    except ValueError:
        revision = 0
    return Reservation(
        owner=owner,
        note=elem.findtext(_q("note")) or "",
        since=parse_time(elem.findtext(_q("since"))),
        until=parse_time(elem.findtext(_q("until"))),
        contact=elem.findtext(_q("contact")) or None,
        revision=revision,
    )


def from_metadata(metadata: ET.Element) -> Reservation | None:
    """The reservation inside a domain XML's ``<metadata>`` element, if any."""
    elem = metadata.find(_TAG)
    return from_element(elem) if elem is not None else None


def from_string(xml: str) -> Reservation | None:
    """Parse what ``virDomainGetMetadata(ELEMENT, NAMESPACE)`` returns."""
    try:
        elem = ET.fromstring(xml)
    except ET.ParseError:
        return None
    return from_element(elem) if elem.tag == _TAG else None


def to_string(res: Reservation) -> str:
    """The element for ``virDomainSetMetadata``, which adds the namespace prefix itself."""
    elem = ET.Element(_TAG, {"revision": str(res.revision)})
    fields: list[tuple[str, str | None]] = [
        ("owner", res.owner),
        ("note", res.note),
        ("since", format_time(res.since) if res.since is not None else None),
        ("until", format_time(res.until) if res.until is not None else None),
        ("contact", res.contact),
    ]
    for name, value in fields:
        if value is not None:
            ET.SubElement(elem, _q(name)).text = value
    return ET.tostring(elem, encoding="unicode")
