"""Command line: the TUI by default, ``--json`` and the verbs of the command table for scripts.

Exit codes: ``catkeeper.cli.common.Exit`` (README "Exit codes" lists them).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import MutableMapping, Sequence
from typing import TYPE_CHECKING

from catkeeper import __version__
from catkeeper.cli.common import Exit, err
from catkeeper.commands import Face, reaching
from catkeeper.config import Config, ConfigError, current_user, load_config

if TYPE_CHECKING:
    from catkeeper.config.views import View

__all__ = ["build_parser", "current_user", "main"]


def add_verbs(parser: argparse.ArgumentParser) -> None:
    """One sub-command per CLI verb of the command table, in table order.

    Each verb's module (``Command.cli``) adds its options (``add_arguments(parser, command)``)
    and carries it out (``run(args, config)``); its heavy parts are imported inside ``run``,
    so the TUI's start-up stays light. ``command_name`` is the table's name even when an
    alias was typed.
    """
    subparsers = parser.add_subparsers(dest="verb", metavar="COMMAND")
    for command in reaching(Face.CLI):
        module = importlib.import_module(command.cli)
        sub = subparsers.add_parser(
            command.name,
            aliases=list(command.aliases),
            help=command.help,
            description=f"{command.help}. Usage: catkeeper {command.name} {command.cli_synopsis}",
        )
        module.add_arguments(sub, command)
        sub.set_defaults(command_module=module, command_name=command.name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="catkeeper",
        description="A terminal UI for teams that share a pool of libvirt/KVM hosts.",
    )
    parser.add_argument("--version", action="version", version=f"catkeeper {__version__}")
    parser.add_argument("--config", metavar="PATH", help="configuration file (YAML)")
    parser.add_argument(
        "--demo", action="store_true", help="use the embedded demo fleet, ignoring any config"
    )
    parser.add_argument(
        "--readonly", action="store_true", help="open read-only connections; refuse changes"
    )
    parser.add_argument("--json", action="store_true", help="print the fleet as JSON and exit")
    parser.add_argument(
        "--host", action="append", metavar="NAME", help="only this host (repeatable)"
    )
    parser.add_argument(
        "--filter",
        metavar="EXPR",
        help="only VMs matching EXPR, as typed in the TUI's / bar (e.g. 'state:running owner:me')",
    )
    parser.add_argument(
        "--view",
        metavar="NAME",
        help="a saved view (config views: or views.yaml): the TUI opens with it; with --json, "
        "its filter and sort (--filter narrows it further)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="bound the whole --json run (default: the connect timeout plus the call timeout)",
    )
    parser.add_argument(
        "--ips",
        action="store_true",
        help="--json: also ask libvirt for guest addresses (agent, lease, arp); one call per "
        "running VM and source",
    )
    parser.add_argument(
        "--stats",
        action="store_true",
        help="--json: add each VM's current rates (CPU %% of its vCPUs, memory, net, disk); "
        "needs two samples, so the run waits one timing.stats_interval (1 s when 0)",
    )
    parser.add_argument("--log", metavar="FILE", help="log file (default under $XDG_STATE_HOME)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    parser.add_argument(
        "--list-hosts", action="store_true", help=argparse.SUPPRESS
    )  # the host names, one a line, from the configuration (no connection): for completion
    add_verbs(parser)
    return parser


def _fail(message: str, code: int) -> int:
    err(message)
    return code


def _run_json(args: argparse.Namespace, config: Config) -> int:
    from catkeeper.backend.fleet import UnknownHost
    from catkeeper.backend.stale import Staleness
    from catkeeper.cli.headless import collect, dumps
    from catkeeper.filtering import FilterError, parse_filter, tags_of
    from catkeeper.model import VM

    view = None
    if args.view is not None:
        view = _view_or_fail(config, args.view)
        if view is None:
            return Exit.USAGE
    filters = []
    evidence: list[Staleness] = []  # reserved:stale's, gathered once the hosts answered

    def stale(vm: VM, now: float) -> bool:
        return bool(evidence) and evidence[0].stale(vm, now)

    # The view's filter and --filter both apply: every term of each must match.
    for option, text in (("--view", view.filter if view else None), ("--filter", args.filter)):
        if text:
            try:
                me, tags = current_user(config), tags_of(config.hosts)
                filters.append(parse_filter(text, me=me, host_tags=tags, stale=stale))
            except FilterError as exc:
                return _fail(f"{option}: {exc}", Exit.USAGE)
    vm_filter = None
    if filters:
        vm_filter = lambda vm, now: all(f.matches(vm, now) for f in filters)  # noqa: E731
    timeout = args.timeout
    if timeout is None:
        timeout = config.timing.connect_timeout + config.timing.call_timeout
    try:
        doc, code = asyncio.run(
            collect(
                config,
                only=args.host,
                readonly=args.readonly,
                timeout=timeout,
                vm_filter=vm_filter,
                ips=args.ips,
                sort=(view.sort, view.descending) if view and view.sort else None,
                stats=args.stats,
                evidence=evidence if any("stale" in f.text for f in filters) else None,
            )
        )
    except UnknownHost as exc:
        return _fail(str(exc), Exit.USAGE)
    sys.stdout.write(dumps(doc) + "\n")
    sys.stdout.flush()
    return code


def _view_or_fail(config: Config, name: str) -> View | None:
    """The saved view called ``name``, or None after saying which views there are."""
    from catkeeper.config.views import find_view

    view = find_view(config.views, name)
    if view is None:
        known = ", ".join(v.name for v in config.views) or "none"
        _fail(f"--view: no view {name!r} (views: {known})", Exit.USAGE)
    return view


def _check_view_filters(config: Config) -> None:
    """Saved views' filters, in the grammar that lives above the config (ConfigError)."""
    from catkeeper.config.views import check_filters
    from catkeeper.filtering import parse_filter

    # owner:me and tag: are resolved when a view is applied: here only the grammar counts.
    check_filters(config.views, lambda text: parse_filter(text, me="me"))


# Frames a second Textual may paint (its default: 60). A typed filter paints twice, the
# typed text and then the rows, and Textual 8.2's frame timer puts the second frame on the
# tick after next: 17-33 ms later at 60, 4-8 ms at 240 (keystroke -> filtered rows at 10k
# VMs in tmux, p50/p95: 35/51 ms at 60, 26/34 at 120, 19/27 at 240). Frames are painted
# only when something changed, so an idle screen costs nothing more.
FRAME_RATE = 240


def use_frame_rate(env: MutableMapping[str, str]) -> None:
    """Paint at ``FRAME_RATE`` unless the user's own ``TEXTUAL_FPS`` says otherwise."""
    env.setdefault("TEXTUAL_FPS", str(FRAME_RATE))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.timeout is not None and args.timeout <= 0:
        parser.error("--timeout must be a positive number of seconds")
    from catkeeper.logsetup import setup_logging

    setup_logging(args.log, args.verbose, os.environ)
    try:
        config = load_config(args.config, os.environ, demo=args.demo)
        _check_view_filters(config)
    except ConfigError as exc:
        return _fail(str(exc), Exit.USAGE)
    if args.list_hosts:
        print("\n".join(h.name for h in config.hosts))
        return 0
    module = getattr(args, "command_module", None)
    if args.view is not None and module is not None:
        return _fail("--view goes with --json or the TUI, not with a command", Exit.USAGE)
    if module is not None:
        code: int = module.run(args, config)
        return code
    if args.json:
        return _run_json(args, config)
    if args.view is not None and _view_or_fail(config, args.view) is None:
        return Exit.USAGE
    use_frame_rate(os.environ)  # before Textual is imported: it reads it once
    from catkeeper.app import run_app

    return run_app(config, readonly=args.readonly, only=args.host, view=args.view)
