"""The TUI at fleet scale: 10,000 VMs on 20 test-driver hosts, driven headless with Pilot.

Prints: launch → first row and → full table, time per filter keystroke (target < 30 ms at
10k rows), cursor movement and paging, and the process's memory (target < 150 MB RSS).
For the design choice of a Line API table over ``DataTable``, it also times what a
``DataTable`` would pay to rebuild 10k rows (what a naive filter keystroke costs).
Not a test: nothing here passes or fails.

    python bench/tui_bench.py                  # 20 hosts x 500 VMs
    python bench/tui_bench.py --hosts 5 --vms 200
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

from catkeeper.app import CatkeeperApp
from catkeeper.config import Config, HostConfig
from catkeeper.demo.fleetgen import write_fleet
from catkeeper.filtering import parse_filter
from catkeeper.model import VmState


def _rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process, in MB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    kb = lambda name: int(fields[name].split()[0]) / 1024  # noqa: E731
    return kb("VmRSS"), kb("VmHWM")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _stats(label: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    print(
        f"  {label:<34} median {_ms(statistics.median(samples)):>9}   "
        f"p95 {_ms(p95):>9}   max {_ms(max(samples)):>9}   (n={len(samples)})"
    )


async def _run(config: Config, total: int, size: tuple[int, int]) -> None:
    started = time.perf_counter()
    app = CatkeeperApp(config)
    first_row = full = None
    async with app.run_test(size=size) as pilot:
        table = app.fleet_screen.table
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            count = table.total_count
            if count and first_row is None:
                first_row = time.perf_counter() - started
            if count >= total:
                full = time.perf_counter() - started
                break
            await asyncio.sleep(0.005)
        await app.wait_idle(60)
        await pilot.pause()
        print(f"\n{total} VMs on {len(config.hosts)} hosts, terminal {size[0]}x{size[1]}")
        print(f"  launch → first row                 {_ms(first_row or float('nan'))}")
        print(f"  launch → full table                {_ms(full or float('nan'))}")
        rss, peak = _rss_mb()
        print(f"  memory after load                  RSS {rss:.0f} MB (peak {peak:.0f} MB)")

        # Keystrokes in the filter bar, end to end: key event → parse → filter 10k → repaint.
        await pilot.press("slash")
        per_key: list[float] = []
        for text in ("ubuntu k8s", "state:running !fedora", "host:host07 debian"):
            app.fleet_screen.bar.input.value = ""
            await pilot.pause()
            for ch in text:
                t0 = time.perf_counter()
                await pilot.press(ch if ch != " " else "space")
                per_key.append(time.perf_counter() - t0)
            print(f"    {text!r:<28} → {table.row_count} rows")
        _stats("filter keystroke (pilot, end to end)", per_key)

        # The same work without Pilot's own overhead: parse + narrow 10k rows.
        compute: list[float] = []
        for text in ("u", "ub", "ubu", "ubuntu", "ubuntu k", "ubuntu k8s", "!state:shutoff"):
            t0 = time.perf_counter()
            table.set_filter(parse_filter(text, me="bench"))
            compute.append(time.perf_counter() - t0)
        _stats("filter: parse + narrow (no paint)", compute)
        await pilot.press("escape")

        moves: list[float] = []
        for key in ["down"] * 20 + ["pagedown"] * 10 + ["end", "home"]:
            t0 = time.perf_counter()
            await pilot.press(key)
            moves.append(time.perf_counter() - t0)
        _stats("cursor key (pilot, end to end)", moves)

        # What one change from a host costs the loop (a VM paused by someone else): the
        # store's apply + the table's, with and without a filter, sorted by host and by state.
        for text, column in (("", "host"), ("ubuntu", "host"), ("state:running", "state")):
            table.set_filter(parse_filter(text, me="bench"))
            table.sort_by(column, reverse=False)
            updates: list[float] = []
            for key in table.shown_keys[:: max(1, table.row_count // 40)][:40]:
                vm = table.vm(key)
                assert vm is not None
                flipped = VmState.PAUSED if vm.state is VmState.RUNNING else VmState.RUNNING
                t0 = time.perf_counter()
                table.apply({key: dataclasses.replace(vm, state=flipped)})
                updates.append(time.perf_counter() - t0)
            _stats(f"one VM changed (filter {text!r}, sort {column})", updates)
        table.set_filter(parse_filter("", me="bench"))

        # A host drops, then comes back: its 500 rows marked stale, then fresh again.
        host = next(iter(config.hosts)).name
        keys = [k for k in table.shown_keys if k.startswith(f"{host}/")]
        flips: list[float] = []
        for stale in (True, False, True, False):
            batch = {}
            for key in keys:
                vm = table.vm(key)
                assert vm is not None
                batch[key] = dataclasses.replace(vm, stale=stale)
            t0 = time.perf_counter()
            table.apply(batch)
            flips.append(time.perf_counter() - t0)
        _stats(f"a host's {len(keys)} rows marked stale / fresh", flips)

        sorts: list[float] = []
        for column in ("name", "state", "memory", "host"):
            t0 = time.perf_counter()
            table.sort_by(column)
            sorts.append(time.perf_counter() - t0)
        _stats("sort 10k rows", sorts)
        rss, peak = _rss_mb()
        print(f"  memory at the end                  RSS {rss:.0f} MB (peak {peak:.0f} MB)")
        await app.close_fleet()


async def _pilot_baseline() -> None:
    """What Pilot itself costs per key press, on an app that does nothing."""
    from textual.app import App, ComposeResult
    from textual.widgets import Static

    class Idle(App[None]):
        def compose(self) -> ComposeResult:
            yield Static("idle")

    async with Idle().run_test(size=(200, 60)) as pilot:
        samples = []
        for _ in range(30):
            t0 = time.perf_counter()
            await pilot.press("down")
            samples.append(time.perf_counter() - t0)
    print("\nBaseline: Pilot on an idle app (subtract from the end-to-end figures)")
    _stats("key press", samples)


async def _datatable_rebuild(total: int) -> None:
    """What a DataTable pays to show a filtered set by clearing and re-adding rows."""
    from textual.app import App, ComposeResult
    from textual.widgets import DataTable

    class Probe(App[None]):
        def compose(self) -> ComposeResult:
            yield DataTable()

    rows = [
        (f"host{i % 20:02}", f"vm-{i:05}", "running", "2", "4G", "-", "-", "-", "")
        for i in range(total)
    ]
    app = Probe()
    async with app.run_test(size=(200, 60)) as pilot:
        table = app.query_one(DataTable)
        table.add_columns("HOST", "NAME", "STATE", "CPU", "MEM", "IP", "BY", "UNTIL", "NOTE")
        samples = []
        for _ in range(3):
            t0 = time.perf_counter()
            table.clear()
            table.add_rows(rows)
            await pilot.pause()
            samples.append(time.perf_counter() - t0)
        print("\nPeer: Textual DataTable, the same row count")
        _stats("clear + add_rows + paint", samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--vms", type=int, default=500, help="VMs per host")
    parser.add_argument("--size", default="200x60", help="terminal WIDTHxHEIGHT")
    parser.add_argument("--no-peer", action="store_true", help="skip the DataTable comparison")
    args = parser.parse_args(argv)
    width, height = (int(n) for n in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="catkeeper-tui-bench-") as tmp:
        t0 = time.perf_counter()
        paths = write_fleet(Path(tmp), args.hosts, args.vms)
        print(f"wrote {len(paths)} node files in {_ms(time.perf_counter() - t0)}")
        hosts = tuple(HostConfig(p.stem, f"test://{p}") for p in paths)
        config = Config(hosts=hosts, source="<bench>")
        asyncio.run(_run(config, args.hosts * args.vms, (width, height)))
    asyncio.run(_pilot_baseline())
    if not args.no_peer:
        asyncio.run(_datatable_rebuild(args.hosts * args.vms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
