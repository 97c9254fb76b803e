"""The console screens: the "no display" connection panel (snapshot) and the serial log."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from textual.app import App
from textual.widgets import Log

from catkeeper.backend.console.plan import (
    HostTransport,
    TransportKind,
    connection_info,
    plan_console,
)
from catkeeper.model import VM, Graphics, VmState
from catkeeper.screens.console_info import ConsoleInfoScreen
from catkeeper.screens.serial import SerialScreen

SIZES = [(100, 30), (80, 24)]
Snap = Callable[..., bool]


def sample_info() -> Any:
    vm = VM(
        host="lab1",
        name="build-07",
        uuid="u",
        state=VmState.RUNNING,
        vcpus=2,
        memory_kib=1,
        max_memory_kib=1,
        autostart=False,
        persistent=True,
        graphics=(Graphics("vnc", port=5907, listen="127.0.0.1", has_password=True),),
    )
    transport = HostTransport(TransportKind.SSH, "lab1.example", "root", 2222)
    plan = plan_console(vm, transport)
    return connection_info(
        vm.ref,
        plan,
        transport,
        ("127.0.0.1", 41234),
        here="jump.example",
        me="ann",
        reason="no display here ($DISPLAY and $WAYLAND_DISPLAY are unset)",
    )


class Host(App[None]):
    def __init__(self, screen: Any) -> None:
        super().__init__()
        self._first = screen

    def on_mount(self) -> None:
        self.push_screen(self._first)


@pytest.mark.parametrize("size", SIZES)
def test_no_display_connection_panel(snap_compare: Snap, size: tuple[int, int]) -> None:
    assert snap_compare(Host(ConsoleInfoScreen(sample_info())), terminal_size=size)


async def test_panel_closes_and_copies() -> None:
    app = Host(ConsoleInfoScreen(sample_info()))
    async with app.run_test() as pilot:
        await pilot.pause()
        assert isinstance(app.screen, ConsoleInfoScreen)
        text = str(app.screen.query_one("#command-0").render())
        assert text == "ssh -N -L 5907:127.0.0.1:5907 -p 2222 root@lab1.example"
        await pilot.press("c")
        assert app.clipboard == text
        await pilot.press("escape")
        assert not isinstance(app.screen, ConsoleInfoScreen)


async def test_serial_screen_shows_the_stream_and_closes_it() -> None:
    closed: list[bool] = []

    class Chunks:
        closed_reason = "the console closed (the VM stopped)"

        def __init__(self) -> None:
            self.items = ["SeaBIOS\r\n", "booting", " kernel\r\nlogin: "]

        def __aiter__(self) -> AsyncIterator[str]:
            return self

        async def __anext__(self) -> str:
            if not self.items:
                raise StopAsyncIteration
            return self.items.pop(0)

    async def close() -> None:
        closed.append(True)

    screen = SerialScreen("lab1/build-07", Chunks(), close=close)
    app = Host(screen)
    async with app.run_test() as pilot:
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        log = screen.query_one(Log)
        assert list(log.lines) == ["SeaBIOS", "booting kernel", "login: "]
        assert screen.ended == "console ended: the console closed (the VM stopped)"
        await pilot.press("escape")
        await pilot.pause()
        assert closed == [True]
        assert app.screen is not screen
