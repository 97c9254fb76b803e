"""Reading the ``until`` people type (``4h``, ``3d``, ``2026-12-01``, ``fri 18:00`` …) and
showing times and ages back to them."""

from __future__ import annotations

import logging
import re
from datetime import date, datetime, timedelta, tzinfo
from datetime import time as dtime

from catkeeper.model import Reservation

log = logging.getLogger(__name__)


class UntilError(ValueError):
    """An ``until`` that cannot be read, or that is not in the future."""


# ---------------------------------------------------------------------------------------
# Reading times people type


_UNITS = {
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "wk", "wks", "week", "weeks"), 7 * 86400),
}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?\s*[a-z]+\s*)+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")
_DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}")
_DATETIME = re.compile(
    r"(\d{4}-\d{1,2}-\d{1,2})[t ](\d{1,2}:\d{2}(?::\d{2})?)(z|[+-]\d{2}:?\d{2})?"
)
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_END_OF_DAY = dtime(23, 59)
FORMS = "90m, 4h, 3d, 2w, 2026-12-01, 2026-12-01T18:00, 18:00, fri, fri 18:00, tomorrow"


def _wall(now: float, tz: tzinfo | None) -> datetime:
    """``now`` as a naive wall-clock time in ``tz`` (None: the local zone)."""
    return datetime.fromtimestamp(now, tz).replace(tzinfo=None)


def _stamp(wall: datetime, tz: tzinfo | None) -> float:
    # Naive local times go through mktime, which knows the zone's DST rules for that date.
    return wall.replace(tzinfo=tz).timestamp() if tz is not None else wall.timestamp()


def _weekday(word: str) -> int | None:
    """0 for mon/monday (any prefix of three letters or more), … 6 for sun; else None."""
    if len(word) < 3:
        return None
    for i, full in enumerate(_WEEKDAYS):
        if full.startswith(word):
            return i
    return None


def _clock(text: str, original: str) -> dtime:
    m = _CLOCK.fullmatch(text)
    if m is None:
        raise UntilError(f"cannot read {original!r} as a time of day (e.g. 18:00)")
    hour, minute = int(m.group(1)), int(m.group(2))
    if hour > 23 or minute > 59:
        raise UntilError(f"{original!r} is not a time of day")
    return dtime(hour, minute)


def _duration(text: str, original: str) -> float:
    total = 0.0
    for number, unit in _DURATION_PART.findall(text):
        if unit not in _UNITS:
            hint = " (months: give a date instead)" if unit.startswith("mo") else ""
            raise UntilError(
                f"unknown unit {unit!r} in {original!r}: use m (minutes), h, d or w{hint}"
            )
        total += float(number) * _UNITS[unit]
    if total <= 0:
        raise UntilError(f"{original!r} is no time at all: give a duration such as 4h")
    return total


def parse_until(text: str, now: float, tz: tzinfo | None = None) -> float:
    """The end of a reservation as typed: a duration from ``now`` or a point in time.

    Durations: ``90m``, ``4h``, ``1.5h``, ``3d``, ``2w``, ``1d12h``, ``+4h``, ``in 3 days``.
    Points in time, in ``tz`` (None: the local zone) unless they name an offset:
    ``2026-12-01`` (the end of that day, 23:59), ``2026-12-01T18:00`` (or a space for the T;
    seconds, ``Z`` and ``+01:00`` allowed), ``18:00`` (the next 18:00), ``fri``/``friday``
    (the end of the next Friday, today included), ``fri 18:00``, ``today``, ``tomorrow``.
    Returns epoch seconds; raises ``UntilError`` with a message for a person when the text
    cannot be read or the time is not in the future.
    """
    original = text.strip()
    s = " ".join(original.lower().split())
    if not s:
        raise UntilError(f"empty: give a duration or a time ({FORMS})")
    wall_now = _wall(now, tz)
    result: float | None = None
    duration_text = s[1:].strip() if s.startswith("+") else s.removeprefix("in ").strip()
    if duration_text and duration_text[0].isdigit() and _DURATION.fullmatch(duration_text):
        return now + _duration(duration_text, original)
    if m := _DATETIME.fullmatch(s):
        iso = f"{m.group(1)}T{m.group(2)}{(m.group(3) or '').upper()}"
        try:
            parsed = datetime.fromisoformat(iso)
        except ValueError:
            raise UntilError(f"{original!r} is not a date and time that exists") from None
        result = parsed.timestamp() if parsed.tzinfo is not None else _stamp(parsed, tz)
    elif _DATE.fullmatch(s):
        try:
            day = date.fromisoformat("-".join(f"{int(p):02d}" for p in s.split("-")))
        except ValueError:
            raise UntilError(f"{original!r} is not a date that exists") from None
        result = _stamp(datetime.combine(day, _END_OF_DAY), tz)
    elif _CLOCK.fullmatch(s):
        at = datetime.combine(wall_now.date(), _clock(s, original))
        if at <= wall_now:
            at += timedelta(days=1)
        result = _stamp(at, tz)
    elif s in ("today", "tonight", "eod"):
        result = _stamp(datetime.combine(wall_now.date(), _END_OF_DAY), tz)
    elif s == "tomorrow":
        result = _stamp(datetime.combine(wall_now.date() + timedelta(days=1), _END_OF_DAY), tz)
    else:
        word, _, rest = s.partition(" ")
        weekday = _weekday(word)
        if weekday is None:
            raise UntilError(f"cannot read {original!r}: use a duration or a time ({FORMS})")
        at_time = _clock(rest, original) if rest else _END_OF_DAY
        ahead = (weekday - wall_now.weekday()) % 7
        at = datetime.combine(wall_now.date() + timedelta(days=ahead), at_time)
        if at <= wall_now:
            at += timedelta(days=7)
        result = _stamp(at, tz)
    if result <= now:
        raise UntilError(f"{format_when(result, tz)} is in the past")
    return result


def format_when(ts: float, tz: tzinfo | None = None) -> str:
    """``2026-11-27 18:00 CET``: a point in time for a person, in ``tz`` (None: local)."""
    when = datetime.fromtimestamp(ts, tz) if tz is not None else datetime.fromtimestamp(ts)
    aware = when.astimezone() if tz is None else when
    return aware.strftime("%Y-%m-%d %H:%M %Z").strip()


def until_text(ts: float, tz: tzinfo | None = None) -> str:
    """An ``until`` as ``parse_until`` reads it back (to prefill a form): 2026-11-27T18:00."""
    when = datetime.fromtimestamp(ts, tz)
    return when.strftime("%Y-%m-%dT%H:%M" if when.second == 0 else "%Y-%m-%dT%H:%M:%S")


def format_age(seconds: float) -> str:
    """``2 min ago``: how long ago something happened."""
    if seconds < 45:
        return "just now"
    if seconds < 90 * 60:
        return f"{max(1, round(seconds / 60))} min ago"
    if seconds < 36 * 3600:
        return f"{round(seconds / 3600)} h ago"
    return f"{round(seconds / 86400)} d ago"


def summary(res: Reservation, now: float, tz: tzinfo | None = None, *, owner: bool = True) -> str:
    """``alice until 2026-11-27 18:00 UTC: "bisecting kernel" (contact alice@x)``."""
    if res.until is None:
        when = "with no end"
    elif res.is_expired(now):
        when = f"expired {format_when(res.until, tz)}"
    else:
        when = f"until {format_when(res.until, tz)}"
    text = f"{res.owner} {when}" if owner else when
    if res.note:
        text += f': "{" ".join(res.note.split())}"'
    if res.contact:
        text += f" (contact {res.contact})"
    return text
