"""The table kept up to date one change at a time shows exactly what sorting and filtering
everything from scratch shows: same rows, same order, same column widths, cursor on its VM.

Random changes (state flips, renames, reservations, IPs, new and removed VMs) under every
sort, both directions, with and without a filter; a second table given the final data in
one go is the reference.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
from textual.app import App, ComposeResult
from textual.geometry import Region

from catkeeper.filtering import parse_filter
from catkeeper.model import VM, IpSighting, Reservation, VmState
from catkeeper.widgets.vm_table import COLUMN_KEYS, VmTable

NOW = 1_000_000.0
STATES = (VmState.RUNNING, VmState.SHUTOFF, VmState.PAUSED)
WORDS = ("web", "db", "ci", "k8s", "Build")


def _vm(rng: random.Random, host: str, n: int) -> VM:
    return VM(
        host=host,
        name=f"{rng.choice(WORDS)}-{n:03d}",
        uuid=f"{host}-{n:04d}",
        state=rng.choice(STATES),
        vcpus=rng.choice((1, 2, 4)),
        memory_kib=rng.choice((1, 2, 4)) * 1024 * 1024,
        max_memory_kib=4 * 1024 * 1024,
        autostart=False,
        persistent=True,
    )


def _change(rng: random.Random, vm: VM) -> VM:
    kind = rng.randrange(6)
    if kind == 0:
        return dataclasses.replace(vm, state=rng.choice(STATES))
    if kind == 1:
        return dataclasses.replace(vm, name=f"{rng.choice(WORDS)}-{rng.randrange(1000):03d}")
    if kind == 2:
        owner = rng.choice(("alice", "bob", "someone-with-a-long-name"))
        until = NOW + rng.choice((-3600, 3600, 86400 * 30))
        note = rng.choice(("", "perf run", "do not touch: benchmark baseline for release"))
        return dataclasses.replace(vm, reservation=Reservation(owner, note, NOW, until))
    if kind == 3:
        return dataclasses.replace(vm, reservation=None)
    if kind == 4:
        ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        return dataclasses.replace(vm, ips=(IpSighting("52:54:00:00:00:01", ip, 24, "lease", NOW),))
    return dataclasses.replace(vm, vcpus=rng.choice((1, 2, 4, 8)), memory_kib=vm.memory_kib * 2)


class _Tables(App[None]):
    def compose(self) -> ComposeResult:
        yield VmTable(clock=lambda: NOW, id="live")
        yield VmTable(clock=lambda: NOW, id="fresh")


def _key(vm: VM) -> str:
    return f"{vm.host}/{vm.uuid}"


@pytest.mark.parametrize("text", ["", "web", "state:running", "owner:alice"])
async def test_changes_one_at_a_time_match_a_fresh_sort(text: str) -> None:
    rng = random.Random(f"rows-{text}")
    vms = {_key(vm): vm for h in ("h1", "h2", "h3") for vm in (_vm(rng, h, n) for n in range(60))}
    app = _Tables()
    async with app.run_test(size=(160, 40)):
        live = app.query_one("#live", VmTable)
        live.apply(dict(vms))
        live.set_filter(parse_filter(text, me="alice"))
        next_n = 1000
        for column in COLUMN_KEYS:
            for reverse in (False, True):
                live.sort_by(column, reverse)
                for _step in range(12):
                    upserts: dict[str, VM] = {}
                    removed: list[str] = []
                    for _ in range(rng.randrange(1, 4)):
                        pick = rng.random()
                        key = rng.choice(sorted(vms))
                        if pick < 0.1 and len(vms) > 20:
                            removed.append(key)
                            del vms[key]
                            upserts.pop(key, None)
                        elif pick < 0.2:
                            vm = _vm(rng, rng.choice(("h1", "h2", "h4")), next_n)
                            next_n += 1
                            vms[_key(vm)] = upserts[_key(vm)] = vm
                        else:
                            vms[key] = upserts[key] = _change(rng, vms[key])
                    if rng.random() < 0.3:
                        live.move_cursor(rng.randrange(max(1, live.row_count)))
                    # A chosen cursor follows its VM; until then it stays on the first row.
                    cursor = live.cursor_key if live._cursor_chosen else None
                    live.apply(upserts, [k for k in removed if k not in upserts])
                    if rng.random() < 0.3:  # a keystroke: filters the rows kept by apply
                        live.set_filter(parse_filter(text, me="alice"))
                    if live._rows is not None:
                        assert [r[0] for r in live._rows] == live._order
                        assert all(r[1] is live._vms[r[0]] for r in live._rows)
                        assert all(r[2] == live._hay[r[0]] for r in live._rows)

                    fresh = app.query_one("#fresh", VmTable)
                    await fresh.remove()
                    fresh = VmTable(clock=lambda: NOW, id="fresh")
                    await app.mount(fresh)
                    fresh.apply(dict(vms))
                    fresh.set_filter(parse_filter(text, me="alice"))
                    fresh.sort_by(column, reverse)

                    assert live.shown_keys == fresh.shown_keys, (column, reverse, text)
                    assert live._content_width == fresh._content_width
                    if cursor in vms and cursor in live.shown_keys:
                        assert live.cursor_key == cursor
        assert live.total_count == len(vms)


async def test_a_row_changed_in_place_is_repainted() -> None:
    """A change that moves no row repaints only that row's line: the line must show it."""
    rng = random.Random("repaint")
    vms = {_key(vm): vm for vm in (_vm(rng, "h1", n) for n in range(80))}
    for key, vm in vms.items():
        vms[key] = dataclasses.replace(vm, state=VmState.RUNNING)
    app = _Tables()
    async with app.run_test(size=(160, 40)) as pilot:
        live = app.query_one("#live", VmTable)
        live.apply(dict(vms))
        live.move_cursor(2)
        await pilot.pause()
        key = live.shown_keys[4]
        live.apply({key: dataclasses.replace(vms[key], state=VmState.PAUSED)})
        assert live.shown_keys[4] == key  # sorted by host: it did not move
        await pilot.pause()
        lines = live.render_lines(Region(0, 0, live.size.width, live.size.height))
        text = ["".join(segment.text for segment in strip) for strip in lines]
        row = text[4 + 1]  # the header is line 0
        assert vms[key].name in row
        assert "paused" in row, row
        assert sum("paused" in line for line in text) == 1
