"""The table's live-stats cells: CPU % and NET, each a figure and a sparkline of the ring.

Kept out of vm_columns.py (which draws every row) so the stats add one lookup per *visible*
row and nothing per VM elsewhere. The table is handed a ``StatsSource`` (the backend's
rings, seen through this protocol), so widgets still import only the model.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

from catkeeper.model import VM
from catkeeper.widgets import format as fmt

BARS = "▁▂▃▄▅▆▇█"
SPARK = 6  # samples drawn in a cell
CPU_WIDTH = 4 + SPARK  # "100%" then the sparkline
NET_WIDTH = 5 + SPARK  # "1.2M " then the sparkline


class Sample(Protocol):
    """One poll of one VM (``catkeeper.backend.stats.Rates`` is one)."""

    @property
    def cpu_pct(self) -> float | None: ...

    @property
    def net(self) -> float | None: ...


class StatsSource(Protocol):
    def series(self, host: str, uuid: str) -> Sequence[Sample]:
        """The VM's recent samples, oldest first."""
        ...

    def latest(self, host: str, uuid: str) -> Sample | None:
        """The VM's newest sample (cheaper than the series: sorting asks it of every VM)."""
        ...

    def reporting(self) -> bool:
        """Whether any host reports rates (no columns for a fleet that cannot fill them)."""
        ...

    def stale(self, vm: VM, now: float) -> bool:
        """Whether the VM is reserved but unused for too long (stale-reservation evidence)."""
        ...


def sparkline(values: Sequence[float | None], top: float | None = None, width: int = SPARK) -> str:
    """The last ``width`` values as block characters scaled to ``top`` (default: their
    maximum); a gap (None) is a space, and a short history is padded on the left."""
    values = list(values)[-width:]
    known = [v for v in values if v is not None]
    scale = top if top is not None else max(known, default=0.0)
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        elif scale <= 0:
            out.append(BARS[0])
        else:
            # The epsilon: a value on a step's edge (50 % of 7 steps) must not flicker
            # between two bars with the last bit of float rounding.
            step = int(v / scale * (len(BARS) - 1) + 0.5 + 1e-6)
            out.append(BARS[max(0, min(len(BARS) - 1, step))])
    return "".join(out).rjust(width)


def rate(bytes_per_s: float) -> str:
    """Bytes per second in four cells at most: 0, 512, 12K, 1.5M, 980M, 2.1G."""
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if bytes_per_s >= size:
            n = bytes_per_s / size
            return f"{n:.1f}{unit}" if n < 10 else f"{n:.0f}{unit}"
    return f"{bytes_per_s:.0f}"


def cpu_cell(series: Sequence[Sample]) -> str:
    cpu = [s.cpu_pct for s in series]
    if not cpu or cpu[-1] is None:
        return "-"
    return f"{cpu[-1]:3.0f}%" + sparkline(cpu, top=100.0)


def net_cell(series: Sequence[Sample]) -> str:
    net = [s.net for s in series]
    if not net or net[-1] is None:
        return "-"
    return f"{rate(net[-1]):>4} " + sparkline(net)


STALE_MARK = "⌛"


def shows_any(hosts: Collection[str], keys: Sequence[str], vms: Mapping[str, VM]) -> bool:
    """Whether any of these (visible) rows is a VM of one of ``hosts``: a poll of a host
    whose rows are scrolled away repaints nothing."""
    return any(vms[k].host in hosts for k in keys if k in vms)


def stale_mark(source: StatsSource | None, vm: VM, now: float) -> str:
    """The RESERVED BY cell: the holder, after a marker when the reservation looks unused
    (first, so a narrow column cuts the name, not the marker)."""
    owner = fmt.owner(vm)
    if source is not None and vm.reservation is not None and source.stale(vm, now):
        return STALE_MARK + owner
    return owner


def cells(source: StatsSource | None, vm: VM) -> tuple[str, str]:
    """(CPU, NET) for one row; "-" where nothing is known."""
    if source is None or not vm.state.is_active:
        return "-", "-"
    series = source.series(vm.host, vm.uuid)
    return cpu_cell(series), net_cell(series)


def current_cpu(source: StatsSource | None, vm: VM) -> float:
    """The CPU column's sort key: the latest CPU %, unknown last."""
    last = source.latest(vm.host, vm.uuid) if source is not None else None
    cpu = last.cpu_pct if last is not None else None
    return cpu if cpu is not None else -1.0


def current_net(source: StatsSource | None, vm: VM) -> float:
    last = source.latest(vm.host, vm.uuid) if source is not None else None
    net = last.net if last is not None else None
    return net if net is not None else -1.0


# The one table's source, for the CPU and NET columns' sort keys (a ``Column`` sorts by
# the VM alone). Set by ``VmTableDrawing.use_stats``.
_sorting: list[StatsSource | None] = [None]


def use(source: StatsSource | None) -> None:
    _sorting[0] = source


def sort_cpu(vm: VM) -> float:
    return current_cpu(_sorting[0], vm)


def sort_net(vm: VM) -> float:
    return current_net(_sorting[0], vm)


def widths(shown: bool) -> dict[str, int]:
    """The stats columns' widths: none until some host reports rates. NET first: a narrow
    terminal gives it up before CPU."""
    return {"net": NET_WIDTH, "cpu": CPU_WIDTH} if shown else {}
