"""The detail screen's live-stats plots: CPU, memory, net and disk over the last samples.

One Textual ``Sparkline`` per figure, fed from the same rings as the table's cells (the
``StatsSource`` the screen is handed). Hidden while the VM has no rates at all (shut off,
or a driver without stats), so a page never shows empty graphs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Sparkline, Static

from catkeeper.widgets import format as fmt
from catkeeper.widgets.stats_cells import rate


class Sample(Protocol):
    """One poll of one VM (``catkeeper.backend.stats.Rates`` is one)."""

    @property
    def cpu_pct(self) -> float | None: ...
    @property
    def mem_used_kib(self) -> int | None: ...
    @property
    def net_rx(self) -> float | None: ...
    @property
    def net_tx(self) -> float | None: ...
    @property
    def disk_rd(self) -> float | None: ...
    @property
    def disk_wr(self) -> float | None: ...


class Source(Protocol):
    def series(self, host: str, uuid: str) -> Sequence[Sample]: ...


def _both(a: float | None, b: float | None) -> float | None:
    return None if a is None and b is None else (a or 0.0) + (b or 0.0)


def figures(series: Sequence[Sample]) -> dict[str, tuple[str, list[float]]]:
    """Per plot: the label (the latest value) and the values to draw (gaps left out)."""
    last = series[-1] if series else None

    def values(pick: Callable[[Sample], float | None]) -> list[float]:
        return [float(v) for s in series if (v := pick(s)) is not None]

    def text(v: float | None, show: Callable[[float], str]) -> str:
        return "-" if v is None else show(v)

    cpu = last.cpu_pct if last else None
    mem = last.mem_used_kib if last else None
    rx, tx = (last.net_rx, last.net_tx) if last else (None, None)
    rd, wr = (last.disk_rd, last.disk_wr) if last else (None, None)
    net = "-" if rx is None and tx is None else f"↓{rate(rx or 0)} ↑{rate(tx or 0)}/s"
    disk = "-" if rd is None and wr is None else f"r {rate(rd or 0)} w {rate(wr or 0)}/s"
    return {
        "cpu": (f"CPU   {text(cpu, lambda v: f'{v:.0f}%')}", values(lambda s: s.cpu_pct)),
        "mem": (
            f"MEM   {text(mem, lambda v: fmt.memory(int(v)))}",
            values(lambda s: s.mem_used_kib),
        ),
        "net": (f"NET   {net}", values(lambda s: _both(s.net_rx, s.net_tx))),
        "disk": (f"DISK  {disk}", values(lambda s: _both(s.disk_rd, s.disk_wr))),
    }


class StatsPlots(Vertical):
    DEFAULT_CSS = """
    StatsPlots { height: auto; margin-bottom: 1; }
    StatsPlots > .title { text-style: bold underline; }
    StatsPlots Horizontal { height: 1; }
    StatsPlots Horizontal > Static { width: 26; }
    StatsPlots Sparkline { width: 1fr; max-width: 60; }
    """

    def __init__(self, source: Source | None, host: str, uuid: str, *, id: str | None = None):
        super().__init__(id=id)
        self.source = source
        self.host = host
        self.uuid = uuid

    def compose(self) -> ComposeResult:
        yield Static("Live stats (CPU % of the VM's vCPUs, last samples)", classes="title")
        for key in ("cpu", "mem", "net", "disk"):
            with Horizontal():
                yield Static(id=f"{key}-label")
                yield Sparkline([], id=f"{key}-plot", summary_function=max)

    def on_mount(self) -> None:
        self.update_stats()

    def update_stats(self) -> None:
        series = self.source.series(self.host, self.uuid) if self.source is not None else ()
        shown = any(s.cpu_pct is not None for s in series)
        self.display = shown
        if not shown:
            return
        for key, (label, data) in figures(series).items():
            self.query_one(f"#{key}-label", Static).update(label)
            self.query_one(f"#{key}-plot", Sparkline).data = data
