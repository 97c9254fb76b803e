"""The soak's verdict on recoveries (bench/soak_judge.py): the figure issue 11's goal is read
from, so its rules are pinned here on recorded-style histories."""

from __future__ import annotations

import math

from bench.soak_judge import FaultEvent, backoff_bound, recoveries
from catkeeper.config import Timing

TIMING = Timing(backoff_initial=1.0, backoff_max=64.0)


def start(t: float, host: str, detail: str = "") -> FaultEvent:
    return FaultEvent(t, host, "fault-start", detail)


def end(t: float, host: str) -> FaultEvent:
    return FaultEvent(t, host, "fault-end")


def test_the_bound_is_twice_the_backoff_pending_at_the_faults_end() -> None:
    # After a drop: 0.25, 0.5, 1, 2, ... 32 (sum 63.75 >= 50): 32 pending.
    assert backoff_bound(50.0, TIMING) == 32.0
    assert backoff_bound(1.0, TIMING) == 1.0
    assert backoff_bound(10_000.0, TIMING) == 64.0
    (r,) = recoveries(
        [start(10, "a"), end(60, "a")],
        {"a": [(0, "up"), (10.5, "unreachable"), (70, "up")]},
        {"a": "refused"},
        TIMING,
        last_t=300,
    )
    assert (r.bound, r.after, r.late) == (64.0, 10.0, False)


def test_a_host_back_after_its_bound_is_late_and_one_never_back_is_too() -> None:
    late, never = recoveries(
        [start(10, "a"), start(10, "b"), end(60, "a"), end(60, "b")],
        {
            "a": [(0, "up"), (10.5, "unreachable"), (130, "up")],
            "b": [(0, "up"), (10.5, "unreachable")],
        },
        {"a": "refused", "b": "refused"},
        TIMING,
        last_t=300,
    )
    assert (late.host, late.after, late.late) == ("a", 70.0, True)
    assert never.after == math.inf and never.late and "not up by the end" in never.note


def test_a_recovery_another_fault_cuts_short_is_not_judged() -> None:
    # The soak's h04: refused 31-81 s (due back by 145), the daemon restarted at 112 and its
    # own next window began at 131, before it was back.
    events = [
        start(31, "h04"),
        end(81, "h04"),
        start(112, "*", "libvirtd restart"),
        end(112.3, "*"),
        start(131, "h04"),
        end(181, "h04"),
    ]
    states: dict[str, list[tuple[float, str]]] = {
        "h04": [(0, "up"), (31.5, "unreachable"), (192, "up")],
        "h01": [(0, "up")],
    }
    rec = recoveries(events, states, {"h04": "refused", "h01": "healthy"}, TIMING, last_t=300)
    by = {(r.host, r.ended_at): r for r in rec}
    first = by["h04", 81]
    assert first.after is None and "cut short 31.0 s in by libvirtd restart" in first.note
    # Down since its own fault when the restart began: that fault's verdict covers it.
    assert by["h04", 112.3].after is None and "not up when it began" in by["h04", 112.3].note
    second = by["h04", 181]
    assert second.after == 11.0 and not second.late
    # A host the restart never took down is not a recovery at all.
    assert by["h01", 112.3].after is None and "never left" in by["h01", 112.3].note


def test_a_restart_judges_every_host_of_the_daemon_and_nothing_else_on_screen() -> None:
    events = [start(100, "*", "libvirtd restart"), end(100.5, "*")]
    states: dict[str, list[tuple[float, str]]] = {
        "a": [(0, "up"), (100.1, "unreachable"), (102.0, "up")],  # 1.5 s: in time (bound 2)
        "churn": [(0, "up"), (100.1, "unreachable"), (103.0, "up")],  # 2.5 s: late
        "NAME": [(0, "unreachable")],  # a word the strip's parser took for a host
    }
    kinds = {"a": "healthy", "churn": "churn"}
    rec = recoveries(events, states, kinds, TIMING, last_t=300)
    assert [(r.host, r.kind, r.bound, r.after, r.late) for r in rec] == [
        ("a", "libvirtd-restart", 2.0, 1.5, False),
        ("churn", "libvirtd-restart", 2.0, 2.5, True),
    ]


def test_a_later_fault_after_the_host_is_back_changes_nothing() -> None:
    events = [start(10, "a"), end(40, "a"), start(100, "a"), end(130, "a")]
    states = {"a": [(0, "up"), (10.2, "unreachable"), (45, "up"), (100.2, "unreachable")]}
    first, second = recoveries(events, states, {"a": "flap"}, TIMING, last_t=300)
    assert (first.after, first.note) == (5.0, "")
    assert second.after == math.inf  # never back up: late, whatever came before


def test_a_host_back_in_time_is_in_time_even_if_another_fault_came_in_between() -> None:
    # The 30-minute soak's h13: its flap ended at 662 s (due back by 694), the daemon
    # restarted at 672 while it was still down, and it was up at 678.4.
    events = [start(632, "h13"), end(662, "h13"), start(672, "*", "libvirtd restart")]
    events.append(end(672.5, "*"))
    states = {"h13": [(0.0, "up"), (632.2, "unreachable"), (678.4, "up")]}
    flap, restart = recoveries(events, states, {"h13": "flap"}, TIMING, last_t=900)
    assert flap.after is not None and round(flap.after, 1) == 16.4 and not flap.late
    assert restart.after is None and "not up when it began" in restart.note


def test_a_restarts_bound_adds_the_daemons_own_reopen_time_and_only_a_restarts() -> None:
    events = [start(10, "a"), end(11, "a"), start(100, "*", "libvirtd restart"), end(100.5, "*")]
    states = {"a": [(0, "up"), (10.1, "unreachable"), (11.5, "up"), (100.1, "unreachable")]}
    states["a"].append((103.0, "up"))  # 2.5 s after the daemon answered
    own, restart = recoveries(events, states, {"a": "refused"}, TIMING, 300, reopen_s=1.2)
    assert (own.bound, own.after) == (2.0, 0.5)
    assert (restart.bound, restart.after, restart.late) == (3.2, 2.5, False)
    (bare,) = [
        r for r in recoveries(events, states, {"a": "refused"}, TIMING, 300) if r.ended_at == 100.5
    ]
    assert bare.late
