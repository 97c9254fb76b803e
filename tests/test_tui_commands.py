"""Every entry of the command table reaches the TUI from each face it declares.

``test_every_face_reaches_every_entry`` walks the whole table in one app: each key of an
entry, ``:`` with its name and every alias, and a palette search of its label must end in
that entry's handler, with the words typed after it. The handler is the real one wrapped
to note the call (and, so a ``q`` does not end the walk, not run it); what each handler
then does is proven per entry in ``test_tui_commands_effects.py``. Read-only mode hides
and refuses each changing entry on every face; the holder question comes on every face.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from textual.command import CommandList, CommandPalette
from textual.widgets import Input, Static

from catkeeper.app import CatkeeperApp
from catkeeper.backend import actions
from catkeeper.backend.vm import snapshots
from catkeeper.commands import COMMANDS, TUI_FACES, Command, Face, Holder, reaching
from catkeeper.screens.confirm import ConfirmScreen
from catkeeper.screens.delete_confirm import DeleteConfirmScreen
from catkeeper.screens.messages import RunCommand
from catkeeper.screens.palette import FleetCommands
from catkeeper.screens.snapshots import SnapshotsScreen
from catkeeper.tui.dispatch import needs_args
from catkeeper.widgets.filter_bar import FilterBar
from tests.tui_support import fleet_config, key_of, make_app, state_of, until

TUI = [c for c in COMMANDS if c.faces & TUI_FACES]


def _toasts(app: CatkeeperApp) -> list[str]:
    return [n.message for n in app._notifications]


class Calls:
    """Wraps the dispatcher's handlers: every call noted as (name, args), none run but
    ``command-line`` (the ``:`` line itself must open to type the others)."""

    def __init__(self, app: CatkeeperApp) -> None:
        self.seen: list[tuple[str, list[str]]] = []
        for name in list(app.dispatcher.handlers):
            if name != "command-line":
                app.dispatcher.handlers[name] = self._note

    def _note(self, command: Command, args: Sequence[str]) -> None:
        self.seen.append((command.name, list(args)))

    def take(self) -> list[tuple[str, list[str]]]:
        seen, self.seen = self.seen, []
        return seen


async def _home(app: CatkeeperApp, pilot: object, name: str = "build-01") -> None:
    """Back on the fleet screen, the prompt closed, the cursor on ``name``."""
    while app.screen is not app.fleet_screen:
        app.pop_screen()
    app.fleet_screen.bar.close()
    app.fleet_screen.bar.mode = "filter"
    app.fleet_screen.table.focus()
    assert app.fleet_screen.table.move_cursor_to(key_of(app, name))
    await pilot.pause()  # type: ignore[attr-defined]


def _typed(bar: FilterBar) -> str | None:
    return bar.query_one(Input).value if bar.is_open and bar.mode == "command" else None


def _sample_args(command: Command) -> list[str]:
    return ["sample"] if needs_args(command) else []


async def _type_command(pilot: object, text: str) -> None:
    await pilot.press("colon", *text, "enter")  # type: ignore[attr-defined]
    await pilot.pause()  # type: ignore[attr-defined]


async def _palette_hit(app: CatkeeperApp, label: str) -> RunCommand:
    """The message the palette's hit for ``label`` posts (searched as a user types it)."""
    provider = FleetCommands(app.screen, None)
    hits = [hit async for hit in provider.search(label)]
    texts = [str(hit.text) for hit in hits]
    assert label in texts, f"palette search {label!r} lists {texts}"
    return next(m for text, _h, m in provider.entries() if text == label)


async def test_every_face_reaches_every_entry(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(160, 40)) as pilot:
        await app.wait_idle()
        calls = Calls(app)
        checked: dict[Face, int] = {Face.KEY: 0, Face.COLON: 0, Face.PALETTE: 0}
        for command in TUI:
            if Face.KEY in command.faces:
                for key in command.keys:
                    await _home(app, pilot)
                    await pilot.press(key)
                    await pilot.pause()
                    seen = calls.take()
                    if command.name == "palette" and not seen:
                        # Textual's own ctrl+p binding may answer first: same screen.
                        assert isinstance(app.screen, CommandPalette), key
                    elif command.name == "command-line":
                        bar = app.fleet_screen.bar
                        assert bar.is_open and bar.mode == "command", key
                    else:
                        assert seen == [(command.name, [])], f"key {key}: {seen}"
                    checked[Face.KEY] += 1
            if Face.COLON in command.faces:
                for spelling in command.names:
                    await _home(app, pilot)
                    args = _sample_args(command)
                    await _type_command(pilot, " ".join([spelling, *args]))
                    seen = calls.take()
                    assert seen == [(command.name, args)], f":{spelling}: {seen}"
                    checked[Face.COLON] += 1
            if Face.PALETTE in command.faces:
                await _home(app, pilot)
                message = await _palette_hit(app, command.label)
                app.post_message(RunCommand(message.name, message.args))
                bar = app.fleet_screen.bar
                if command.name == "command-line":
                    await until(lambda b=bar: b.is_open and b.mode == "command", what=":")
                elif needs_args(command) and command.name != "filter":
                    # It needs words: the : line opens with the command typed, waiting.
                    want = f"{command.name} "
                    await until(lambda b=bar, w=want: _typed(b) == w, what=f":{want}")
                    assert calls.take() == []
                else:
                    await until(lambda: bool(calls.seen), what=f"palette {command.label}")
                    assert calls.take() == [(command.name, [])], command.label
                checked[Face.PALETTE] += 1
        # Every entry counted: a face the table declares can never be skipped silently.
        assert checked[Face.KEY] == sum(len(c.keys) for c in reaching(Face.KEY))
        assert checked[Face.COLON] == sum(len(c.names) for c in reaching(Face.COLON))
        assert checked[Face.PALETTE] == len(list(reaching(Face.PALETTE)))


async def test_an_unknown_colon_command_lists_the_table(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(160, 40)) as pilot:
        await app.wait_idle()
        await _type_command(pilot, "frobnicate")
        problem = next(m for m in _toasts(app) if "unknown command" in m)
        for command in reaching(Face.COLON):
            assert f":{command.name}" in problem


async def test_readonly_hides_and_refuses_every_changing_entry(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path, readonly=True))
    async with app.run_test(size=(160, 40)) as pilot:
        await app.wait_idle()
        calls = Calls(app)
        mutating = [c for c in TUI if c.mutating]
        assert {"start", "stop", "reserve", "delete", "rename", "snapshot"} <= {
            c.name for c in mutating
        }
        palette = {text for text, _h, _m in FleetCommands(app.screen, None).entries()}
        for command in mutating:
            await _home(app, pilot)
            assert not app.check_action("command", (command.name,)), command.name
            for key in command.keys if Face.KEY in command.faces else ():
                await pilot.press(key)
                await pilot.pause()
                assert calls.take() == [], f"key {key} ran {command.name}"
            if Face.COLON in command.faces:
                app.clear_notifications()
                await _type_command(pilot, " ".join([command.name, *_sample_args(command)]))
                assert calls.take() == [], command.name
                assert any(m.startswith("read-only mode") for m in _toasts(app)), (
                    command.name,
                    _toasts(app),
                )
            assert command.label not in palette, command.label
        # Looking stays possible.
        assert app.check_action("command", ("console",))
        assert "Open console" in palette


async def test_the_holder_is_named_before_starting_their_vm(tmp_path: Path) -> None:
    """carol holds beta/web-03 (shut off): alice's ``s`` asks first, naming her."""
    app = make_app(fleet_config(tmp_path), me="alice")
    async with app.run_test(size=(160, 40)) as pilot:
        await app.wait_idle()
        await _home(app, pilot, "web-03")
        await pilot.press("s")
        await until(lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        dialog = app.screen
        assert isinstance(dialog, ConfirmScreen)
        assert dialog.question == (
            "beta/web-03 is reserved by carol with no end set — start it anyway?"
        )
        await pilot.press("n")
        await pilot.pause(0.3)
        assert state_of(app, "web-03") == "shutoff"  # declined: nothing happened

        # The same question from : and from the palette.
        await _home(app, pilot, "web-03")
        await _type_command(pilot, "start")
        await until(lambda: isinstance(app.screen, ConfirmScreen), what=":start asks")
        await pilot.press("n")
        await _home(app, pilot, "web-03")
        message = await _palette_hit(app, "Start")
        app.post_message(RunCommand(message.name))
        await until(lambda: isinstance(app.screen, ConfirmScreen), what="the palette asks")
        await pilot.press("y")
        await until(lambda: state_of(app, "web-03") == "running", what="started anyway")


async def test_own_and_free_vms_start_without_a_question(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path), me="carol")
    async with app.run_test(size=(160, 40)) as pilot:
        await app.wait_idle()
        for name in ("web-03", "build-01"):  # carol's own, nobody's
            await _home(app, pilot, name)
            await pilot.press("s")
            await until(lambda n=name: state_of(app, n) == "running", what=f"{name} runs")
            assert app.screen is app.fleet_screen


async def test_held_question_names_the_end_of_the_reservation(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path), me="bob")
    async with app.run_test(size=(160, 40)) as pilot:
        await app.wait_idle()
        await _home(app, pilot, "web-01")  # alice's until 2027-02-01, running
        await pilot.press("b")
        await until(lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        dialog = app.screen
        assert isinstance(dialog, ConfirmScreen)
        until_ = app.store.vms[key_of(app, "web-01")].reservation.until  # type: ignore[union-attr]
        assert until_ is not None
        ends = time.strftime("%a %d %b %H:%M", time.localtime(until_))  # the user's zone
        assert dialog.question == (
            f"alpha/web-01 is reserved by alice until {ends} — reboot it anyway?"
        )


# Every entry whose table rule is Holder.ASK, on a VM someone else holds (dave looks):
# the state each needs, and the VM of that state someone else holds in tui_support's fleet.
_HELD_FOR = {"shutoff": "web-03", "running": "web-01", "paused": "web-01"}
_NEEDS = {"start": "shutoff", "resume": "paused", "rename": "shutoff", "clone": "shutoff"}


@pytest.mark.parametrize(
    "command", [c for c in TUI if c.holder is Holder.ASK], ids=lambda c: c.name
)
async def test_every_holder_rule_entry_names_the_holder(
    command: Command, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VISUAL", "true")
    app = make_app(fleet_config(tmp_path), me="dave")
    async with app.run_test(size=(160, 40)) as pilot:
        await app.wait_idle()
        state = _NEEDS.get(command.name, "running")
        name = _HELD_FOR[state]
        if state == "paused":
            await actions.suspend(app.fleet, app.store.vms[key_of(app, name)])
            await until(lambda: state_of(app, name) == "paused", what="paused first")
        await _home(app, pilot, name)
        if Face.KEY in command.faces:
            await pilot.press(command.keys[0])
        else:
            await _type_command(pilot, " ".join([command.name, *_sample_args(command)]))
        if command.name == "delete":  # its own dialog, with the volumes to choose
            await until(lambda: isinstance(app.screen, DeleteConfirmScreen), what="dialog")
            reserved = str(app.screen.query_one("#reserved", Static).content)
            assert reserved.startswith("Reserved by alice"), reserved
            return
        await until(lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        dialog = app.screen
        assert isinstance(dialog, ConfirmScreen)
        assert dialog.question is not None
        holder = "carol" if name == "web-03" else "alice"
        assert f"is reserved by {holder}" in dialog.question, dialog.question
        await pilot.press("n")
        await pilot.pause()
        assert state_of(app, name) == state  # declined: left as it was


async def test_snapshot_revert_names_the_holder(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path), me="dave")
    async with app.run_test(size=(160, 40)) as pilot:
        await app.wait_idle()
        vm = app.store.vms[key_of(app, "web-01")]  # alice's
        await snapshots.create_snapshot(app.fleet, vm, "before")
        await _home(app, pilot, "web-01")
        await pilot.press("ctrl+s")
        await until(lambda: isinstance(app.screen, SnapshotsScreen), what="the snapshots")
        screen = app.screen
        assert isinstance(screen, SnapshotsScreen)
        await until(lambda: bool(screen.items), what="the snapshot listed")
        await pilot.press("r")
        await until(lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        dialog = app.screen
        assert isinstance(dialog, ConfirmScreen)
        assert dialog.question is not None
        assert dialog.question.startswith("alpha/web-01 is reserved by alice until ")
        assert dialog.question.endswith("revert it anyway?")


async def test_keys_do_not_reach_behind_a_dialog(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path), me="alice")
    async with app.run_test(size=(160, 40)) as pilot:
        await app.wait_idle()
        await _home(app, pilot, "web-01")  # alice's own: R asks "release your …?"
        await pilot.press("R")
        await until(lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        dialog = app.screen
        for key in ("slash", "colon", "s", "p", "ctrl+k"):
            assert not app.check_action("command", (_by_key(key),)), key
            await pilot.press(key)
            await pilot.pause()
            assert app.screen is dialog, key
        assert state_of(app, "web-01") == "running"
        await pilot.press("n")


def _by_key(key: str) -> str:
    return next(c.name for c in reaching(Face.KEY) if key in c.keys)


async def test_the_palette_lists_and_runs_table_entries(tmp_path: Path) -> None:
    """Through the real palette: ctrl+p, a few letters, enter."""
    app = make_app(fleet_config(tmp_path), me="alice")
    async with app.run_test(size=(160, 40)) as pilot:
        await app.wait_idle()
        await _home(app, pilot, "web-02")
        await pilot.press("ctrl+p", *"pause")
        await until(lambda: isinstance(app.screen, CommandPalette), what="the palette")
        commands = app.screen.query_one(CommandList)
        await until(lambda: _prompts(commands)[:1] == ["Pause"], what="Pause listed first")
        assert "Let a paused VM run again" not in " ".join(_prompts(commands))
        await pilot.press("enter")
        await until(lambda: state_of(app, "web-02") == "paused", what="paused")


def _prompts(commands: CommandList) -> list[str]:
    out = []
    for index in range(commands.option_count):
        prompt = commands.get_option_at_index(index).prompt
        out.append(getattr(prompt, "plain", str(prompt)).split("\n")[0])
    return out
