"""The one place that decides whether an action asks first, and what it says.

A command's :class:`~catkeeper.commands.Confirm` rule and its :class:`~catkeeper.commands.Holder`
rule (``Command.asks``) are applied here for every face alike, so ``s``, ``:start`` and the
palette's "Start" all name the colleague whose VM it is before touching it. Bulk runs go
through :func:`run_each`: one worker, one summary notice (n done, m failed, and why).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from catkeeper.backend.errors import describe
from catkeeper.commands import Command
from catkeeper.model import VM
from catkeeper.screens.confirm import ConfirmScreen, held_question, holder
from catkeeper.tui.host import Host

_NAMED = 3  # failures named in a summary; the rest are counted

__all__ = ["confirm", "held_question", "holder", "run_each", "summary"]


def confirm(
    host: Host,
    command: Command,
    vms: Sequence[VM],
    then: Callable[[], None],
    *,
    detail: str = "",
    verb: str | None = None,
) -> None:
    """Run ``then`` now, or after a yes when ``command``'s rules say to ask first."""
    now = host.clock()
    held = [vm for vm in vms if holder(vm, host.me, now)]
    if not command.asks(len(vms), bool(held)):
        then()
        return
    label = verb or command.label.rstrip("…")
    question = held_question(label, vms[0], now) if len(vms) == 1 and held else None
    dialog = ConfirmScreen(label, vms, detail=detail, held=held, now=now, question=question)
    host.show(dialog, lambda yes: then() if yes else None)


def run_each(
    host: Host,
    what: str,
    vms: Sequence[VM],
    work: Callable[[VM], Awaitable[object]],
    *,
    group: str,
) -> None:
    """``work`` on every VM; one VM fails like any worker, several end in one summary."""
    chosen = list(vms)
    if len(chosen) == 1:
        vm = chosen[0]

        async def one() -> None:
            await work(vm)

        host.start(one(), name=f"{what} {vm.ref}", group=group)
        return

    async def each() -> None:
        results = await asyncio.gather(*(work(vm) for vm in chosen), return_exceptions=True)
        failed = [
            (vm, r) for vm, r in zip(chosen, results, strict=True) if isinstance(r, BaseException)
        ]
        host.notify(
            summary(what, len(chosen), failed),
            title=what.capitalize(),
            severity="warning" if failed else "information",
            timeout=10 if failed else None,
        )

    host.start(each(), name=f"{what} {len(chosen)} VMs", group=group)


def summary(what: str, total: int, failed: Sequence[tuple[VM, BaseException]]) -> str:
    text = f"{what}: {total - len(failed)} done, {len(failed)} failed"
    if failed:
        why = "; ".join(f"{vm.ref}: {describe(exc)}" for vm, exc in failed[:_NAMED])
        more = f"; and {len(failed) - _NAMED} more" if len(failed) > _NAMED else ""
        text += f" ({why}{more})"
    return text
