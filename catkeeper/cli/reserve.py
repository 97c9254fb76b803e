"""``catkeeper reserve``, ``release`` and ``reservations``: reservations from a shell or CI job.

    catkeeper reserve HOST/VM --note TEXT [--until 3d] [--owner NAME] [--contact X]
                              [--take-over] [--json]
    catkeeper release HOST/VM [--force] [--owner NAME] [--json]
    catkeeper reservations [--filter TEXT] [--stale] [--json]

``HOST/VM`` may be a bare VM name (or UUID) when it is unique across the hosts. ``--until``
takes a duration (``90m``, ``4h``, ``3d``, ``2w``) or a time (``2026-12-01`` meaning the end
of that day, ``2026-12-01T18:00``, ``18:00``, ``fri``), local time unless an offset is given;
without it the reservation has no end. ``--owner`` acts as that owner (default: ``owner:`` in
the configuration, else the login name), so a CI job that reserves with ``--owner ci`` can
extend and release as ``ci`` too. ``--filter`` takes the TUI's ``/`` filter language
(``owner:me``, ``reserved:expired``, ``host:lab1`` …). ``--stale`` keeps the reservations whose
VM looks unused for ``stale.stale_after`` (backend/stale.py: disk write times of shut-off VMs,
two CPU samples of running ones) and shows that evidence; nothing is released.

Output: one line per result for people; with ``--json`` one JSON document on stdout (the
reservation's fields plus ``host``, ``vm``, ``expired``; ``reserve`` and ``release`` add
``action`` and ``previous``). Errors go to stderr; with ``--json`` an object with ``error``,
``exit_code`` and, for conflicts, ``holder`` goes to stdout as well.

Exit codes (``catkeeper.cli.common.Exit``): 0 done (releasing a VM that is not reserved is
done, too: nothing to do); 1 libvirt failed the write; 2 usage or configuration (bad --until,
unknown host, bad --filter, empty owner); 3 unreachable (``reservations``: any host); 4 no
such VM (or a bare name several hosts have); 5 conflict, nothing written: someone else holds
it (use --take-over or --force), it changed while we wrote, or another catkeeper kept it
locked, and the current holder is printed; 6 read-only.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from catkeeper.cli.common import (
    CliError,
    Exit,
    code_of,
    find_vm,
    hosts_named,
    json_flag,
    open_fleet,
    unreachable,
)
from catkeeper.config import Config
from catkeeper.model import VM, Reservation

if TYPE_CHECKING:  # the backend (libvirt) is imported when a command runs, not at start-up
    from catkeeper.backend.reservations import Change
    from catkeeper.backend.stale import Staleness
    from catkeeper.commands import Command


def add_arguments(p: argparse.ArgumentParser, command: Command) -> None:
    """The options of ``reserve``, ``release`` or ``reservations``.

    ``--json`` and ``--filter`` default to "not given", so the main parser's own options of
    those names keep their values whichever side of the verb they are typed.
    """
    if command.name == "reserve":
        p.add_argument("ref", metavar="TARGET", help="the VM, as HOST/VM or a unique name")
        p.add_argument("--note", required=True, metavar="TEXT", help="what you use it for")
        p.add_argument(
            "--until",
            metavar="WHEN",
            help="end: 90m, 4h, 3d, 2w, 2026-12-01, 2026-12-01T18:00, fri (default: no end)",
        )
        p.add_argument("--owner", metavar="NAME", help="reserve as NAME (default: you)")
        p.add_argument("--contact", metavar="X", help="how to reach the owner (mail, chat)")
        p.add_argument(
            "--take-over",
            action="store_true",
            help="claim it even though someone else holds it",
        )
    elif command.name == "release":
        p.add_argument("ref", metavar="TARGET", help="the VM, as HOST/VM or a unique name")
        p.add_argument("--force", action="store_true", help="release it even if it is not yours")
        p.add_argument("--owner", metavar="NAME", help="release as NAME (default: you)")
    else:
        p.add_argument("--mine", action="store_true", help="only yours (owner:me)")
        p.add_argument(
            "--expired", action="store_true", help="only expired ones (reserved:expired)"
        )
        p.add_argument(
            "--stale",
            action="store_true",
            help="only those unused for stale.stale_after (reserved:stale), with the evidence; "
            "running VMs are sampled twice, one timing.stats_interval apart",
        )
        p.add_argument(
            "--filter",
            metavar="TEXT",
            default=argparse.SUPPRESS,
            help="only VMs matching TEXT, as typed in the TUI's / bar (e.g. owner:me)",
        )
    json_flag(p, "print JSON")


def run(args: argparse.Namespace, config: Config, *, clock: Callable[[], float] = time.time) -> int:
    """Run the verb ``args.command_name``; returns the exit code.

    ``clock`` is "now" for every decision: parsing ``--until``, expiry, the fleet's ages.
    """
    as_json = bool(getattr(args, "json", False))
    try:
        return asyncio.run(_COMMANDS[args.command_name](args, config, clock))
    except CliError as exc:
        print(f"catkeeper: {exc.message}", file=sys.stderr)
        if exc.holder is not None and not as_json:
            for line in _holder_lines(exc.holder, clock()):
                print(f"  {line}", file=sys.stderr)
        if as_json:
            doc: dict[str, Any] = {"error": exc.message, "exit_code": int(exc.code)}
            if exc.code == Exit.HELD:
                doc["holder"] = _res_json(exc.holder, clock()) if exc.holder else None
            _print_json(doc)
        return int(exc.code)


# ---------------------------------------------------------------------------------------


def _print_json(doc: object) -> None:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    sys.stdout.flush()


def _res_json(res: Reservation, now: float) -> dict[str, Any]:
    return {**dataclasses.asdict(res), "expired": res.is_expired(now)}


def _vm_json(host: str, vm: str, res: Reservation | None, now: float) -> dict[str, Any]:
    doc: dict[str, Any] = {"host": host, "vm": vm}
    if res is not None:
        doc.update(_res_json(res, now))
    return doc


def _holder_lines(res: Reservation, now: float) -> list[str]:
    from catkeeper.backend.reservations import format_when

    lines = [f"owner: {res.owner}"]
    if res.note:
        lines.append(f"note:  {res.note}")
    if res.until is None:
        lines.append("until: no end")
    else:
        state = " (expired)" if res.is_expired(now) else ""
        lines.append(f"until: {format_when(res.until)}{state}")
    if res.contact:
        lines.append(f"contact: {res.contact}")
    return lines


def _owner(args: argparse.Namespace, config: Config) -> str:
    """Who the command acts as: ``--owner``, else the configured owner or login name."""
    from catkeeper.config import current_user

    if args.owner is None:
        return current_user(config)
    if not args.owner.strip():
        raise CliError(Exit.USAGE, "--owner: a reservation needs an owner")
    return str(args.owner).strip()


async def _write(op: Callable[[], Awaitable[Change]], held_hint: str) -> Change:
    """Run a backend write, turning its errors into exit codes."""
    from catkeeper.backend.errors import BackendError
    from catkeeper.backend.reservations import InvalidReservation, ReservationConflict

    try:
        change = await op()
    except ReservationConflict as exc:
        message = str(exc)
        if exc.reason == "held" and held_hint:
            message += f" ({held_hint})"
        raise CliError(Exit.HELD, message, exc.holder) from None
    except InvalidReservation as exc:
        raise CliError(Exit.USAGE, str(exc)) from None
    except BackendError as exc:
        raise CliError(code_of(exc), str(exc)) from None
    return change


def _change_json(change: Change, now: float) -> dict[str, Any]:
    doc = _vm_json(change.host, change.vm, change.after, now)
    doc["action"] = change.action
    doc["previous"] = _res_json(change.before, now) if change.before is not None else None
    return doc


async def _reserve(args: argparse.Namespace, config: Config, clock: Callable[[], float]) -> int:
    from catkeeper.backend import reservations
    from catkeeper.backend.reservations import UntilError, summary

    now = clock()
    until = None
    if args.until is not None:
        try:
            until = reservations.parse_until(args.until, now)
        except UntilError as exc:
            raise CliError(Exit.USAGE, f"--until: {exc}") from None
    me = _owner(args, config)
    async with open_fleet(args, config, only=hosts_named([args.ref], args), clock=clock) as fleet:
        vm = find_vm(fleet, args.ref)
        change = await _write(
            lambda: reservations.reserve(
                fleet,
                vm,
                note=args.note,
                until=until,
                contact=args.contact,
                owner=me,
                take_over=args.take_over,
                me=me,
            ),
            "--take-over" if not args.take_over else "",
        )
    now = clock()
    if getattr(args, "json", False):
        _print_json(_change_json(change, now))
        return Exit.OK
    after = change.after
    assert after is not None
    verb = {
        "reserved": "reserved",
        "updated": "updated the reservation of",
        "took-over": "took over",
    }.get(change.action, change.action)
    line = f"{verb} {change.ref}: {summary(after, now)}"
    if change.action == "took-over" and change.before is not None:
        line += f" (was {summary(change.before, now)})"
    print(line)
    return Exit.OK


async def _release(args: argparse.Namespace, config: Config, clock: Callable[[], float]) -> int:
    from catkeeper.backend import reservations
    from catkeeper.backend.reservations import summary

    me = _owner(args, config)
    async with open_fleet(args, config, only=hosts_named([args.ref], args), clock=clock) as fleet:
        vm = find_vm(fleet, args.ref)
        change = await _write(
            lambda: reservations.release(fleet, vm, force=args.force, me=me),
            "--force" if not args.force else "",
        )
    now = clock()
    if getattr(args, "json", False):
        _print_json(_change_json(change, now))
    elif change.before is None:
        print(f"{change.ref} was not reserved; nothing to do")
    else:
        print(f"released {change.ref} (was {summary(change.before, now)})")
    return Exit.OK


async def _list(args: argparse.Namespace, config: Config, clock: Callable[[], float]) -> int:
    from catkeeper.backend.stale import evidence_json, gather_evidence
    from catkeeper.config import current_user

    terms = [getattr(args, "filter", None)]
    terms += ["owner:me" if args.mine else None, "reserved:expired" if args.expired else None]
    terms += ["reserved:stale" if args.stale else None]
    text = " ".join(t for t in terms if t) or None  # the grammar ANDs its terms
    me = current_user(config)
    staleness: Staleness | None = None  # the evidence, gathered once the hosts answered
    matches: Callable[[VM, float], bool] = lambda _vm, _now: True  # noqa: E731
    if text is not None:
        from catkeeper.filtering import FilterError, parse_filter, tags_of

        try:
            chosen = parse_filter(
                text,
                me=me,
                host_tags=tags_of(config.hosts),
                stale=lambda vm, now: staleness is not None and staleness.stale(vm, now),
            )
        except FilterError as exc:
            raise CliError(Exit.USAGE, f"--filter: {exc}") from None
        matches = chosen.matches
    async with open_fleet(args, config, only=getattr(args, "host", None), clock=clock) as fleet:
        if text is not None and "stale" in text:  # --stale, or reserved:stale in --filter
            staleness = await gather_evidence(fleet, config.stale, clock)
        now = clock()
        vms = sorted(
            (vm for vm in fleet.vms() if vm.reservation is not None and matches(vm, now)),
            key=lambda v: (v.host, v.name),
        )
        down = unreachable(fleet)
    if getattr(args, "json", False):
        docs = [_vm_json(vm.host, vm.name, vm.reservation, now) for vm in vms]
        if staleness is not None:
            for doc, vm in zip(docs, vms, strict=True):
                doc["last_used"] = evidence_json(staleness.evidence(vm, now))
        _print_json(docs)
    elif staleness is not None:
        _print_stale(vms, staleness, now)
    else:
        _print_table(vms, now)
    if down:
        print(f"catkeeper: unreachable, not listed: {down}", file=sys.stderr)
        return Exit.UNREACHABLE
    return Exit.OK


def _print_table(vms: list[VM], now: float) -> None:
    from catkeeper.backend.reservations import format_when

    if not vms:
        print("no reserved VMs")
        return
    rows = [("VM", "OWNER", "UNTIL", "NOTE")]
    for vm in vms:
        res = vm.reservation
        assert res is not None
        if res.until is None:
            until = "no end"
        else:
            until = format_when(res.until) + (" EXPIRED" if res.is_expired(now) else "")
        rows.append((vm.ref, res.owner, until, " ".join(res.note.split())))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)]
        print("  ".join([*cells, row[3]]).rstrip())


def _print_stale(vms: list[VM], staleness: Staleness, now: float) -> None:
    from catkeeper.backend.reservations import format_when

    if not vms:
        print("no stale reservations")
        return
    for vm in vms:
        assert vm.reservation is not None
        line = staleness.evidence(vm, now).text(format_when)
        print(f"{vm.ref}  {vm.reservation.owner}  {line}")


_COMMANDS = {"reserve": _reserve, "release": _release, "reservations": _list}
