"""The soak's verdict on recoveries: did each host come back within 2x its pending backoff?

Pure functions of what the soak recorded (fault events, the host strip's states over time),
kept apart from the harness so that tests can check the judgement itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from catkeeper.backend.host.connection import DROP_RETRY_DIVISOR
from catkeeper.config import Timing

EVERY_HOST = "*"  # a fault event of the shared daemon (a libvirtd restart)


@dataclass(frozen=True)
class FaultEvent:
    t: float  # seconds since launch
    host: str  # a host's name, or EVERY_HOST
    what: str  # "fault-start" / "fault-end" (others are ignored here)
    detail: str = ""


@dataclass(frozen=True)
class Recovery:
    host: str
    kind: str
    ended_at: float  # the fault's end, seconds since launch
    bound: float  # 2 x the backoff pending at that end (+ reopen_s for a daemon restart)
    after: float | None  # seconds from the end to 'up' on screen; inf: never; None: not judged
    note: str = ""

    @property
    def late(self) -> bool:
        return self.after is not None and self.after > self.bound


def backoff_bound(fault_s: float, timing: Timing) -> float:
    """Upper bound of the reconnect delay pending when a fault of ``fault_s`` ends.

    Every fault here starts on a host that was up: catkeeper retries it at once, then sleeps
    from backoff_initial / DROP_RETRY_DIVISOR, doubling up to backoff_max, between failed
    attempts; the attempts themselves take time too, so by the fault's end at most as many
    delays have passed as fit in its length: the pending one is no longer than the first
    whose running sum reaches ``fault_s``.
    """
    delay, total = timing.backoff_initial / DROP_RETRY_DIVISOR, 0.0
    while True:
        total += delay
        if total >= fault_s or delay >= timing.backoff_max:
            return min(delay, timing.backoff_max)
        delay = min(delay * 2, timing.backoff_max)


def recoveries(
    events: Sequence[FaultEvent],
    states: Mapping[str, Sequence[tuple[float, str]]],
    kinds: Mapping[str, str],
    timing: Timing,
    last_t: float,
    reopen_s: float = 0.0,
) -> list[Recovery]:
    """One verdict per host and fault end. ``states``: each host's (time, state) changes as
    the screen showed them; ``kinds``: every host the daemon serves, with its fault kind (a
    daemon restart's hosts are all of them).
    ``reopen_s``: how long the daemon itself takes to open every host's connection again at
    once, added to a daemon restart's bound (the test driver parses a host's whole node file
    as its connection opens: 0.12 s for 500 VMs alone, 1.0-1.6 s each for 20 at once on 2
    cores; a real ``qemu:///system`` daemon has no such cost, and no retry schedule can
    beat it).

    Not judged (``after`` None): a host that never left 'up'; a daemon restart's host that
    was down already when it began (its own fault's backoff runs, judged at that fault's
    end); and a late recovery another fault cut short, by taking the host down again before
    it was due back: how long it would have taken is not known, and its backoff grew
    meanwhile. A host back in time is judged in time, whatever came in between.
    """
    out: list[Recovery] = []
    hits: dict[str, list[tuple[float, str]]] = {}  # fault starts that can take a host down
    for e in events:
        if e.what == "fault-start":
            hits.setdefault(e.host, []).append((e.t, e.detail or e.host))
    starts: dict[str, float] = {}
    faulty: set[str] = set()  # hosts inside their own fault window
    for e in events:
        if e.what == "fault-start":
            starts[e.host] = e.t
            faulty.add(e.host)
        if e.what != "fault-end":
            continue
        faulty.discard(e.host)
        shared = e.host == EVERY_HOST
        hosts = list(kinds) if shared else [e.host]
        began = starts.get(e.host, e.t)
        bound = 2 * backoff_bound(max(1.0, e.t - began), timing) + (reopen_s if shared else 0)
        for host in hosts:
            if shared and host in faulty:
                continue  # still in its own fault: judged when that one ends
            kind = "libvirtd-restart" if shared else kinds.get(host, "?")
            after, note = _judge(
                states.get(host, []),
                sorted(hits.get(host, []) + hits.get(EVERY_HOST, [])),
                began=began,
                ended=e.t,
                bound=bound,
                shared=shared,
                last_t=last_t,
            )
            out.append(Recovery(host, kind, e.t, bound, after, note))
    return out


def _judge(
    hist: Sequence[tuple[float, str]],
    hits: Sequence[tuple[float, str]],
    *,
    began: float,
    ended: float,
    bound: float,
    shared: bool,
    last_t: float,
) -> tuple[float | None, str]:
    """(seconds from the fault's end to 'up', or inf, or None if not judged; a note)."""
    before = [st for ts, st in hist if ts <= began]
    if shared and before and before[-1] != "up":
        return None, "not up when it began: not judged"
    downs = [ts for ts, st in hist if st != "up" and began - 1 <= ts <= ended + bound + 30]
    if before and before[-1] != "up":
        downs.insert(0, began)
    if not downs:
        return None, "never left 'up' on screen"
    up_at = next((ts for ts, st in hist if st == "up" and ts > downs[0]), None)
    if up_at is not None and up_at - ended <= bound:
        return max(0.0, up_at - ended), ""  # in time, whatever came in between
    cut = next(((t, what) for t, what in hits if ended < t < ended + bound), None)
    if cut is not None:
        return None, f"cut short {cut[0] - ended:.1f} s in by {cut[1]}: not judged"
    if up_at is None:
        return math.inf, f"not up by the end ({last_t - ended:.0f} s later)"
    return max(0.0, up_at - ended), ""
