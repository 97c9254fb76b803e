"""How model values read on screen: short, fixed-width friendly, the same everywhere."""

from __future__ import annotations

import time
from collections.abc import Callable

from catkeeper.model import VM, Reservation, VmState, best_ip

# Rich colour names per state; the rest of the row takes the theme's colours.
STATE_COLOURS: dict[VmState, str] = {
    VmState.RUNNING: "green",
    VmState.BLOCKED: "magenta",
    VmState.PAUSED: "yellow",
    VmState.SHUTDOWN: "yellow",
    VmState.SHUTOFF: "bright_black",
    VmState.CRASHED: "bold red",
    VmState.PMSUSPENDED: "cyan",
    VmState.NOSTATE: "bright_black",
}

STAGE_LABELS = {"acpi": "acpi", "ctrl-alt-del": "c-a-d", "destroy": "killing"}

Clock = Callable[[], float]
LatencyFormat = Callable[[float | None], str]


def memory(kib: int) -> str:
    """1536 MiB → 1.5G; whole numbers lose their decimals so the column stays narrow."""
    mib = kib / 1024
    if mib < 1024:
        return f"{mib:.0f}M"
    gib = mib / 1024
    return f"{gib:.0f}G" if gib >= 100 or gib == int(gib) else f"{gib:.1f}G"


def duration(seconds: float) -> str:
    """A coarse human duration: 45s, 12m, 5h, 3d, 6w."""
    s = abs(seconds)
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{s // 60:.0f}m"
    if s < 86400 * 2:
        return f"{s // 3600:.0f}h"
    if s < 86400 * 14:
        return f"{s // 86400:.0f}d"
    return f"{s // (86400 * 7):.0f}w"


def until(res: Reservation | None, now: float) -> str:
    if res is None:
        return "-"
    if res.until is None:
        return "open"
    if res.is_expired(now):
        return "expired"
    return duration(res.until - now)


def owner(vm: VM) -> str:
    return vm.reservation.owner if vm.reservation else "-"


def note(vm: VM) -> str:
    if vm.reservation and vm.reservation.note:
        return " ".join(vm.reservation.note.split())
    return ""


def ips(vm: VM) -> str:
    """The IP column: the one best address (IPv4 first); the detail screen lists them all."""
    return best_ip(vm) or "-"


def latency(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms < 10:
        return f"{ms:.1f}ms"
    return f"{ms:.0f}ms"


def clock_time(ts: float) -> str:
    """Local wall-clock time of an epoch, for histories."""
    return time.strftime("%H:%M:%S", time.localtime(ts))


def moment(ts: float, now: float) -> str:
    """A moment's time when it is today (by ``now``, local time), else its date too, so
    "07:45:00" never hides that it was ten days ago (or is a week ahead)."""
    day = time.localtime(ts)[:3]
    if day == time.localtime(now)[:3]:
        return clock_time(ts)
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))
