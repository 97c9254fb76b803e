"""The audit ring as it is kept in a domain's ``<metadata>``: the last ``LIMIT`` changes
catkeeper made to the VM, oldest first, in catkeeper's own namespace (apart from the
reservation element, so that neither write can clobber the other)::

    <catkeeper-audit:audit xmlns:catkeeper-audit="https://catkeeper.dev/xmlns/audit/1">
      <catkeeper-audit:entry when="2026-12-03T08:00:00Z" who="alice" action="start"/>
      <catkeeper-audit:entry when="2026-12-03T08:05:12Z" who="bob" action="reserve">
        bisecting kernel, until 2026-12-05 18:00</catkeeper-audit:entry>
    </catkeeper-audit:audit>

``virsh metadata DOMAIN https://catkeeper.dev/xmlns/audit/1`` prints it (without the
prefix, as ``virDomainGetMetadata`` returns it). Times are whole seconds, UTC, in the same
form as the reservation's. Pure: no libvirt here, so the format is tested on its own.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from catkeeper.backend.metadata_time import format_time, local_name, parse_time

NAMESPACE = "https://catkeeper.dev/xmlns/audit/1"
# Not "catkeeper": ET.register_namespace keeps one URI per prefix, and the reservation's
# namespace already has that one.
PREFIX = "catkeeper-audit"
LIMIT = 50  # entries kept per VM: a screenful of history, a few KB of XML
_DETAIL_MAX = 300  # characters of detail kept: the ring must stay small in every domain XML
ET.register_namespace(PREFIX, NAMESPACE)


@dataclass(frozen=True)
class Entry:
    """One change: when (Unix time, from the clock the caller was given), who, what."""

    when: float
    who: str
    action: str
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"when": self.when, "who": self.who, "action": self.action, "detail": self.detail}


def entry(when: float, who: str, action: str, detail: str = "") -> Entry:
    """An entry as stored: whole seconds, one line of detail, bounded in length."""
    text = " ".join(detail.split())
    if len(text) > _DETAIL_MAX:
        text = text[: _DETAIL_MAX - 1] + "…"
    return Entry(when=float(int(when)), who=who, action=action, detail=text)


def from_element(elem: ET.Element) -> list[Entry]:
    """Entries of an ``audit`` element, oldest first; unreadable entries are skipped."""
    out = []
    for child in elem:
        if local_name(child.tag) != "entry":
            continue
        when = parse_time(child.get("when"))
        action = child.get("action")
        if when is None or not action:
            continue  # hand-edited into nonsense: leave it out rather than fail the view
        out.append(Entry(when, child.get("who", ""), action, (child.text or "").strip()))
    return out


def from_string(xml: str) -> list[Entry] | None:
    """What ``virDomainGetMetadata(ELEMENT, NAMESPACE)`` returns; None when unreadable."""
    try:
        elem = ET.fromstring(xml)
    except ET.ParseError:
        return None
    return from_element(elem) if local_name(elem.tag) == "audit" else None


def from_metadata(metadata: ET.Element) -> list[Entry]:
    """The ring inside a domain XML's ``<metadata>`` element (empty when there is none)."""
    elem = metadata.find(f"{{{NAMESPACE}}}audit")
    return from_element(elem) if elem is not None else []


def to_string(entries: Sequence[Entry]) -> str:
    """The unqualified element ``virDomainSetMetadata(…, PREFIX, NAMESPACE, …)`` takes."""
    root = ET.Element("audit")
    for e in entries:
        attrs = {"when": format_time(e.when), "who": e.who, "action": e.action}
        ET.SubElement(root, "entry", attrs).text = e.detail or None
    return ET.tostring(root, encoding="unicode")


def appended(ring: Iterable[Entry], new: Entry, limit: int = LIMIT) -> list[Entry]:
    """``ring`` with ``new`` at the end, the oldest dropped beyond ``limit``."""
    out = [*ring, new]
    return out[-limit:] if limit > 0 else []


def newest_first(entries: Iterable[Entry]) -> list[Entry]:
    # Stable on equal times: the later one in the ring was written later.
    indexed = list(enumerate(entries))
    indexed.sort(key=lambda pair: (pair[1].when, pair[0]), reverse=True)
    return [e for _, e in indexed]


def when_text(ts: float, now: float) -> str:
    """Local time; the date too when it is not today (by ``now``), so that "03:12" never
    hides that it was last week."""
    day = time.localtime(ts)[:3]
    if day == time.localtime(now)[:3]:
        return time.strftime("%H:%M:%S", time.localtime(ts))
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


# The ring as libvirt writes it into a domain's XML (any prefix, our namespace).
_RING = re.compile(
    r"<(?P<p>[\w.-]+):audit xmlns:(?P=p)=(?P<q>['\"])" + re.escape(NAMESPACE) + r"(?P=q)>"
    r".*?</(?P=p):audit>",
    re.S,
)


def ring_of(xml: str) -> str | None:
    """The ring's element in a domain's XML, as written there; None without one."""
    found = _RING.search(xml)
    return found.group(0) if found else None


def without_ring(xml: str) -> str:
    """A domain's XML with the ring taken out (and a ``<metadata>`` it leaves empty): what
    an XML edit compares, so that a change recorded meanwhile (anyone starting the VM) does
    not refuse the edit."""
    return _EMPTY_METADATA.sub("", _RING.sub("", xml))


_EMPTY_METADATA = re.compile(r"\n?[ \t]*<metadata>\s*</metadata>")


def keeping_ring(edited: str, base: str, current: str) -> str:
    """``edited`` (made from ``base``) with the ring the host has now, so that defining it
    does not drop entries recorded while the user was editing; unchanged when the user
    edited the ring itself."""
    old, new = ring_of(base), ring_of(current)
    if new is None or old == new:
        return edited
    if old is not None:
        return edited.replace(old, new) if edited.count(old) == 1 else edited
    if ring_of(edited) is not None:  # the user wrote one: theirs stands
        return edited
    if "<metadata>" in edited:
        return edited.replace("<metadata>", f"<metadata>\n    {new}", 1)
    if "<metadata/>" in edited:
        return edited.replace("<metadata/>", f"<metadata>\n    {new}\n  </metadata>", 1)
    head, end, tail = edited.rpartition("</domain>")
    if not end:
        return edited
    return f"{head}  <metadata>\n    {new}\n  </metadata>\n{end}{tail}"
