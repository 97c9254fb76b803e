"""Times and tags as catkeeper's elements in a domain's ``<metadata>`` hold them: whole
seconds in UTC (``2026-12-03T08:00:00Z``), read back leniently. One home for the
reservation element and the audit ring, which must agree and must not import each other
(reservation writes record audit entries)."""

from __future__ import annotations

from datetime import UTC, datetime


def format_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> float | None:
    """A time written by ``format_time`` (or any ISO 8601 form); None when absent or bad."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def local_name(tag: str) -> str:
    """An ElementTree tag without its ``{namespace}``."""
    return tag.rpartition("}")[2]
