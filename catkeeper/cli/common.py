"""What every CLI verb shares: the exit codes, opening the fleet, naming targets, the holder rule.

One home on purpose: before it, five verb modules each carried "open the fleet, wait until
settled, close" and their own ``EXIT_*`` numbers, and they disagreed (a missing VM was 1 for
``snapshot``, 4 for ``reserve``; a bare VM name worked for ``reserve`` and not for ``delete``).

Exit codes (README "Exit codes" documents the same table; ``Exit`` is the one source):

    0  done
    1  failed: libvirt refused or the action did not finish (the message says which VM)
    2  usage or configuration error: bad option, unknown host, bad --filter
    3  a host is unreachable or did not answer in time
    4  no such VM, or a bare name that several hosts have (the candidates are listed)
    5  someone else holds the VM's reservation: nothing was done (pass --yes or
       --confirm-name NAME); for ``reserve``/``release`` also "changed while we wrote"
    6  read-only: the fleet or host is configured read-only, or libvirt denied the write
    130 interrupted (Ctrl-C): what had not finished was cancelled and left as it was

Imports neither textual nor rich; the backend (libvirt) only inside the functions that
connect, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from catkeeper.backend.timeouts import within
from catkeeper.config import Config, current_user
from catkeeper.model import VM, HostState, Reservation

if TYPE_CHECKING:
    from catkeeper.backend.fleet import Fleet
    from catkeeper.commands import Command

Clock = Callable[[], float]


class Exit(enum.IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    UNREACHABLE = 3
    NOT_FOUND = 4
    HELD = 5
    READONLY = 6
    INTERRUPTED = 130


class CliError(Exception):
    """Ends a verb with ``code``; ``message`` goes to stderr (``holder``: into --json)."""

    def __init__(self, code: Exit, message: str, holder: Reservation | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.holder = holder


def err(message: str) -> None:
    print(f"catkeeper: {message}", file=sys.stderr, flush=True)


def code_of(exc: BaseException) -> Exit:
    """The exit code for a backend error: read-only, not found, unreachable, else failed."""
    from catkeeper.backend.errors import CallTimeout, HostUnavailable, NotFound, ReadOnlyError

    if isinstance(exc, ReadOnlyError):  # includes WriteDenied: libvirt said no
        return Exit.READONLY
    if isinstance(exc, NotFound):
        return Exit.NOT_FOUND
    if isinstance(exc, HostUnavailable | CallTimeout):
        return Exit.UNREACHABLE
    return Exit.FAILED


@contextlib.contextmanager
def backend_errors() -> Iterator[None]:
    """Inside: a ``BackendError`` becomes a ``CliError`` with its exit code and message."""
    from catkeeper.backend.errors import BackendError

    try:
        yield
    except BackendError as exc:
        raise CliError(code_of(exc), str(exc)) from None


def finish(main: Coroutine[Any, Any, int]) -> int:
    """``asyncio.run(main)``; a ``CliError`` is printed and becomes its exit code."""
    try:
        return asyncio.run(main)
    except CliError as exc:
        err(exc.message)
        return int(exc.code)
    except KeyboardInterrupt:
        err("interrupted")
        return int(Exit.INTERRUPTED)


# ---- the fleet -----------------------------------------------------------------------------


def settle_timeout(args: argparse.Namespace, config: Config) -> float:
    """How long a verb waits for its hosts: ``--wait-host``/``--timeout``, else connect+call."""
    for name in ("wait_host", "timeout"):
        given = getattr(args, name, None)
        if given is not None:
            return float(given)
    return config.timing.connect_timeout + config.timing.call_timeout


@contextlib.asynccontextmanager
async def running(
    fleet: Fleet, *, wait: float | None, prepare: Callable[[Fleet], object] | None = None
) -> AsyncIterator[Fleet]:
    """``fleet`` started, settled for up to ``wait`` s (None: the caller waits), closed after.

    ``prepare(fleet)`` runs before the hosts connect (a listener that must see every event).
    """
    if prepare is not None:
        prepare(fleet)
    from catkeeper.backend import audit

    audit.watch(fleet, lambda message: err(f"warning: {message}"))  # e.g. history not written
    await fleet.start()
    try:
        if wait is not None:
            await fleet.wait_settled(wait)
        yield fleet
    finally:
        # Bounded: a hung host's close must not hold up the answer.
        with contextlib.suppress(TimeoutError):
            await within(fleet.aclose(), 2)


@contextlib.asynccontextmanager
async def open_fleet(
    args: argparse.Namespace,
    config: Config,
    *,
    only: Sequence[str] | None = None,
    clock: Clock = time.time,
    wait: float | None = None,
    prepare: Callable[[Fleet], object] | None = None,
) -> AsyncIterator[Fleet]:
    """The fleet a verb works on (``--readonly`` honoured), settled, closed on the way out.

    ``wait`` defaults to :func:`settle_timeout`. An unknown host is a usage error (exit 2).
    """
    from catkeeper.backend.fleet import Fleet, UnknownHost

    try:
        fleet = Fleet(
            config, readonly=bool(getattr(args, "readonly", False)), only=only, clock=clock
        )
    except UnknownHost as exc:
        raise CliError(Exit.USAGE, str(exc)) from None
    settle = settle_timeout(args, config) if wait is None else wait
    async with running(fleet, wait=settle, prepare=prepare) as opened:
        yield opened


def unreachable(fleet: Fleet, hosts: Iterable[str] | None = None) -> str | None:
    """The hosts that did not answer, with why ("lab2 (connection refused)"), or None."""
    names = list(fleet.sessions) if hosts is None else list(hosts)
    down = [
        f"{s.name} ({s.host.error or 'no answer'})"
        for n in names
        if n in fleet.sessions
        and (s := fleet.sessions[n]).host.state in (HostState.UNREACHABLE, HostState.CONNECTING)
    ]
    return ", ".join(down) if down else None


# ---- targets -------------------------------------------------------------------------------


def hosts_named(refs: Sequence[str], args: argparse.Namespace) -> list[str] | None:
    """The hosts to connect for ``refs``: only those named when every ref is ``HOST/VM``
    (and no --filter asks the whole fleet); else every host (or the global ``--host``)."""
    chosen: list[str] | None = getattr(args, "host", None)
    if refs and all("/" in r for r in refs) and getattr(args, "filter", None) is None:
        named = sorted({r.partition("/")[0] for r in refs})
        return [h for h in named if not chosen or h in chosen] or named
    return chosen


def find_vm(fleet: Fleet, ref: str) -> VM:
    """The VM ``ref`` names: ``HOST/VM``, or a bare name (or UUID) unique in the fleet.

    Not found is exit 4, or 3 when a host that might have it did not answer; an ambiguous
    bare name is exit 4 listing the candidates.
    """
    from catkeeper.backend.errors import NotFound

    host, sep, name = ref.partition("/")
    if sep and (not host or not name):
        raise CliError(Exit.USAGE, f"{ref!r}: name it as HOST/VM or a bare VM name")
    if sep and host not in fleet.sessions:
        raise CliError(Exit.USAGE, f"no host named {host!r} (hosts: {', '.join(fleet.sessions)})")
    try:
        return fleet.find(ref)
    except NotFound as exc:
        down = unreachable(fleet, [host] if sep else None)
        if down:
            raise CliError(Exit.UNREACHABLE, f"{exc}; unreachable: {down}") from None
        raise CliError(Exit.NOT_FOUND, str(exc)) from None


def select(fleet: Fleet, refs: Sequence[str], filter_text: str | None, me: str) -> list[VM]:
    """Every VM the command line names: each ref, then every VM matching ``--filter``.

    In the order given, each VM once. ``--filter`` alone matching nothing is exit 4.
    """
    chosen: dict[tuple[str, str], VM] = {}
    for ref in refs:
        vm = find_vm(fleet, ref)
        chosen.setdefault((vm.host, vm.uuid), vm)
    if filter_text is not None:
        from catkeeper.filtering import FilterError, parse_filter, tags_of

        try:
            wanted = parse_filter(filter_text, me=me, host_tags=tags_of(fleet.config.hosts))
        except FilterError as exc:
            raise CliError(Exit.USAGE, f"--filter: {exc}") from None
        now = fleet.clock()
        matching = sorted(
            (vm for vm in fleet.vms() if wanted.matches(vm, now)), key=lambda v: (v.host, v.name)
        )
        if not matching and not refs:
            down = unreachable(fleet)
            why = f" (unreachable: {down})" if down else ""
            raise CliError(Exit.NOT_FOUND, f"no VM matches --filter {filter_text!r}{why}")
        for vm in matching:
            chosen.setdefault((vm.host, vm.uuid), vm)
    return list(chosen.values())


def add_target_arguments(parser: argparse.ArgumentParser, *, many: bool) -> None:
    """``TARGET…`` (or one ``TARGET``) and, for many, ``--filter EXPR``."""
    help_text = "HOST/VM, or a VM name unique in the fleet"
    if many:
        parser.add_argument("targets", nargs="*", metavar="TARGET", help=help_text)
        parser.add_argument(
            "--filter",
            metavar="EXPR",
            default=argparse.SUPPRESS,  # keeps a global --filter typed before the verb
            help="also every VM matching EXPR, as typed in the TUI's / bar "
            "(e.g. 'host:lab1 state:running')",
        )
    else:
        parser.add_argument("target", metavar="TARGET", help=help_text)


# ---- the holder rule -----------------------------------------------------------------------


def add_holder_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--yes",
        action="store_true",
        help="act even on VMs someone else has reserved",
    )
    parser.add_argument(
        "--confirm-name",
        action="append",
        default=[],
        metavar="NAME",
        help="act on this VM even though someone else has reserved it (repeatable)",
    )


def held_by_other(vm: VM, me: str, now: float) -> Reservation | None:
    """The reservation of ``vm`` when someone other than ``me`` holds it now, else None."""
    res = vm.reservation
    return res if res is not None and res.keeps_from(me, now) else None


def holder_text(vm: VM, res: Reservation) -> str:
    from catkeeper.backend.reservations import format_when

    until = " (no end)" if res.until is None else f" until {format_when(res.until)}"
    note = f", {res.note!r}" if res.note else ""
    return f"{vm.ref} is reserved by {res.owner}{until}{note}"


def check_holders(
    command: Command,
    vms: Sequence[VM],
    args: argparse.Namespace,
    config: Config,
    now: float,
    *,
    yes_suffices: bool = True,
) -> None:
    """Refuse (exit 5, nothing done) when someone else holds a target and the user did not
    say so: ``--yes`` covers all (unless ``yes_suffices`` is False, as for ``delete``, where
    only typing the name will do), ``--confirm-name NAME`` that VM."""
    from catkeeper.commands import Holder

    if command.holder is not Holder.ASK:
        return
    me = current_user(config)
    named = set(getattr(args, "confirm_name", None) or ())
    yes = bool(getattr(args, "yes", False)) and yes_suffices
    refused = []
    for vm in vms:
        res = held_by_other(vm, me, now)
        if res is None or yes or vm.name in named or vm.ref in named:
            continue
        refused.append((vm, res))
    if not refused:
        return
    lines = [holder_text(vm, res) for vm, res in refused]
    how = "pass " + " ".join(f"--confirm-name {vm.name}" for vm, _ in refused)
    if yes_suffices:
        how += " (or --yes for all)"
    message = "; ".join(lines) + f": not done; {how} to {command.name} anyway"
    raise CliError(Exit.HELD, message, refused[0][1])


# ---- asking and printing -----------------------------------------------------------------


def ask(question: str) -> str | None:
    """A line from the terminal, or None when there is no terminal to ask on."""
    if not sys.stdin.isatty():
        return None
    try:
        return input(question)
    except EOFError:
        return None


def confirm(args: argparse.Namespace, what: str, question: str) -> bool:
    """``--yes``, else a y/N from the terminal; no terminal is a usage error."""
    if getattr(args, "yes", False):
        return True
    answer = ask(f"{question} [y/N] ")
    if answer is None:
        raise CliError(Exit.USAGE, f"{what}: not confirmed (no terminal to ask on; pass --yes)")
    return answer.strip().lower() in ("y", "yes")


def json_flag(parser: argparse.ArgumentParser, text: str = "print the result as JSON") -> None:
    # SUPPRESS: no default here, or it would undo a global --json given before the verb.
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=text)


def wait_host_flag(parser: argparse.ArgumentParser) -> None:
    """``--wait-host SECONDS``, read by :func:`settle_timeout`."""
    parser.add_argument(
        "--wait-host",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long to wait for the hosts to connect (default: connect + call timeout)",
    )


def wants_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def jsonable(obj: Any) -> Any:
    """Model objects (also inside dicts and lists) as plain JSON types."""
    from catkeeper.model import to_jsonable

    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    return to_jsonable(obj)


def emit(args: argparse.Namespace, doc: Any, text: str) -> None:
    """The result on stdout: ``doc`` as JSON with ``--json``, else ``text`` (if any)."""
    if wants_json(args):
        sys.stdout.write(json.dumps(jsonable(doc), indent=2) + "\n")
    elif text:
        sys.stdout.write(text + "\n")
    sys.stdout.flush()
