"""Saved views: a name for a filter, a sort and the columns shown (``:view NAME``,
``catkeeper --json --view NAME``).

Two places hold them: ``views:`` in the config file, and ``views.yaml`` beside it (for the
demo fleet, which has no file: ``$XDG_CONFIG_HOME/catkeeper/views.yaml``). ``:save-view``
writes only views.yaml: PyYAML cannot write a file back with its comments, and a team's
hand-kept config reflowed by a tool is a config nobody trusts again. views.yaml in turn is
edited a line range at a time (a saved view replaces its own lines or is appended), so
comments there survive too. A name in both files: the config's wins.

Pure: no textual, no rich (the ``--json`` path reads views).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from catkeeper.config.settings import Config, ConfigError
from catkeeper.config.yamlreader import Reader
from catkeeper.model import VM, VmState, best_ip

# The fleet table's columns, by the names ``:sort`` takes (the table's COLUMN_KEYS; a test
# keeps the two equal, so the config can be checked without importing the UI).
COLUMNS = (
    "host",
    "name",
    "state",
    "vcpus",
    "memory",
    "cpu",
    "net",
    "ips",
    "owner",
    "until",
    "note",
)
FILE_NAME = "views.yaml"
_VIEW_KEYS = ("filter", "sort", "columns")
_NAME = re.compile(r"[A-Za-z0-9._-]+")
_PLAIN = re.compile(r"-?[A-Za-z_][A-Za-z0-9._-]*")
_HEADER = (
    "# Views saved by catkeeper's :save-view. Same form as views: in the config file,\n"
    "# whose views win over these when a name is in both. Edit freely: a save rewrites only\n"
    "# the lines of the view it saves.\n"
)


@dataclass(frozen=True)
class View:
    name: str
    filter: str = ""  # the / grammar (catkeeper.filtering); "" shows every VM
    sort: str | None = None  # a column; None: the default order (host, name)
    descending: bool = False
    columns: tuple[str, ...] = ()  # shown, in this order; (): the default set
    source: str = ""  # the file it came from
    filter_line: int | None = field(default=None, compare=False)  # for check_filters

    @property
    def sort_text(self) -> str:
        """As written in the file: ``memory`` or ``-memory``."""
        return f"{'-' if self.descending else ''}{self.sort}" if self.sort else ""


def valid_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


def parse_sort(text: str) -> tuple[str, bool] | str:
    """``(column, descending)`` from ``name``/``-name``, or what is wrong with it."""
    column = text[1:] if text.startswith("-") else text
    if column in COLUMNS:
        return column, text.startswith("-")
    return _unknown(column) + " ('-COLUMN' sorts descending)"


def _unknown(column: str) -> str:
    close = difflib.get_close_matches(column, COLUMNS, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "columns: " + ", ".join(COLUMNS)
    return f"unknown column {column!r} ({hint})"


def parse_views(r: Reader, node: Node, key: str = "views") -> tuple[View, ...]:
    """The ``views:`` mapping (NAME → filter/sort/columns), every error at its line."""
    if isinstance(node, ScalarNode) and r.value(node, key) is None:
        return ()  # ``views:`` with nothing under it yet
    if not isinstance(node, MappingNode):
        r.expected(node, key, "a mapping of view names")
    # Every string key is allowed (the names are the user's); the Reader still refuses
    # duplicates and keys that are not strings.
    names = tuple(str(k.value) for k, _v in node.value if isinstance(k, ScalarNode))
    r.mapping(node, key, names)
    return tuple(_view(r, k, v, f"{key}.{k.value}") for k, v in node.value)


def _view(r: Reader, name_node: Node, node: Node, key: str) -> View:
    name = str(name_node.value)
    if not valid_name(name):
        r.fail(name_node, key, f"view name {name!r}: use only letters, digits, '.', '_', '-'")
    given = r.mapping(node, key, _VIEW_KEYS)
    if not given:
        r.fail(name_node, key, "empty view: give at least one of filter, sort, columns")
    text = ""
    filter_line = None
    if "filter" in given:
        text = r.string(given["filter"], f"{key}.filter")
        filter_line = given["filter"].start_mark.line + 1
    sort: str | None = None
    descending = False
    if "sort" in given:
        parsed = parse_sort(r.string(given["sort"], f"{key}.sort"))
        if isinstance(parsed, str):
            r.fail(given["sort"], f"{key}.sort", parsed)
        sort, descending = parsed
    columns: tuple[str, ...] = ()
    if "columns" in given:
        items = r.sequence(given["columns"], f"{key}.columns")
        if not items:
            r.fail(given["columns"], f"{key}.columns", "is empty; leave it out for every column")
        for i, item in enumerate(items):
            where = f"{key}.columns[{i}]"
            column = r.string(item, where)
            if column not in COLUMNS:
                r.fail(item, where, _unknown(column))
            if column in columns:
                r.fail(item, where, f"column {column!r} listed twice")
            columns += (column,)
    return View(name, text, sort, descending, columns, r.path, filter_line)


def check_filters(views: Iterable[View], parse: Callable[[str], object]) -> None:
    """Raise ConfigError at a view's filter line when ``parse`` refuses it (ValueError).

    ``parse`` is ``catkeeper.filtering.parse_filter``, handed in by the caller because the
    filter grammar sits a layer above the config (it knows VMs); the CLI runs this right
    after loading, so a bad filter stops ``catkeeper`` at start like any config error."""
    for view in views:
        if view.filter:
            try:
                parse(view.filter)
            except ValueError as exc:
                key = f"views.{view.name}.filter"
                raise ConfigError(
                    view.source, view.filter_line, key, f"bad filter: {exc}"
                ) from None


# ---- where views live, and reading them --------------------------------------------------


def views_path(config: Config, env: Mapping[str, str]) -> str:
    """The views.yaml beside the config file, or in catkeeper's XDG config directory."""
    if not config.is_demo:
        return os.path.join(os.path.dirname(os.path.abspath(config.source)), FILE_NAME)
    base = env.get("XDG_CONFIG_HOME")
    if not base or not os.path.isabs(base):
        base = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    return os.path.join(base, "catkeeper", FILE_NAME)


def read_views_file(path: str) -> tuple[View, ...]:
    """The views in a views.yaml (none when it does not exist); errors name its lines."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return ()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, None, None, f"cannot read: {exc}") from exc
    root = _compose(text, path)
    if root is None:
        return ()
    r = Reader(path)
    top = r.mapping(root, "", ("views",))
    return parse_views(r, top["views"]) if "views" in top else ()


def with_saved_views(config: Config, env: Mapping[str, str]) -> Config:
    """``config`` with the views of its views.yaml added after its own (its own win)."""
    path = views_path(config, env)
    own = {v.name for v in config.views}
    saved = tuple(v for v in read_views_file(path) if v.name not in own)
    return dataclasses.replace(config, views=config.views + saved, views_file=path)


def find_view(views: Iterable[View], name: str) -> View | None:
    return next((v for v in views if v.name == name), None)


# ---- writing views.yaml ----------------------------------------------------------------


def _scalar(text: str) -> str:
    """Plain when YAML reads it back as this string, else a JSON string (which is a YAML
    double-quoted scalar), so quotes, colons and ``yes`` survive the trip."""
    if _PLAIN.fullmatch(text) and yaml.safe_load(text) == text:
        return text
    return json.dumps(text)


def view_lines(view: View, indent: str = "  ") -> list[str]:
    """The YAML lines of one entry."""
    lines = [f"{indent}{_scalar(view.name)}:\n"]
    inner = indent + "  "
    if view.filter:
        lines.append(f"{inner}filter: {_scalar(view.filter)}\n")
    if view.sort:
        lines.append(f"{inner}sort: {_scalar(view.sort_text)}\n")
    if view.columns:
        lines.append(f"{inner}columns: [{', '.join(view.columns)}]\n")
    if len(lines) == 1:  # nothing to say: the default view, said explicitly
        lines.append(f"{inner}sort: host\n")
    return lines


def save_view(path: str, view: View) -> bool:
    """Write ``view`` into the views.yaml at ``path``; True when it replaced one there.

    Only that view's lines change (or new ones are added at the end of ``views:``), and
    the file is replaced in one step, so a crash leaves the old file or the new one."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    saved = read_views_file(path)  # a file that does not parse is the user's to fix
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    root = _compose(text, path)
    replaced = any(v.name == view.name for v in saved)
    found = [(k, v) for k, v in root.value if k.value == "views"] if root is not None else []
    if not found:  # no file, only comments, or ``{}``
        if root is not None:  # ``{}``: its comments stay, the braces go
            lines = [ln for ln in lines if ln.lstrip().startswith("#")]
        lines = lines or [_HEADER]
        lines += ["views:\n", *view_lines(view)]
    else:
        views_key, views = found[0]
        entries = views.value if isinstance(views, MappingNode) else []
        indent = " " * (entries[0][0].start_mark.column if entries else 2)
        old = next(((k, v) for k, v in entries if k.value == view.name), None)
        if not entries or views.flow_style is True:
            # ``views:`` with nothing under it, or ``views: {…}``, which has no lines of its
            # own to add to: written out in block form, entries in their order.
            keep = [view if v.name == view.name else v for v in saved]
            body = [ln for v in keep + ([] if replaced else [view]) for ln in view_lines(v)]
            lines[views_key.start_mark.line : _last_line(views) + 1] = ["views:\n", *body]
        elif old is not None:
            first, last = old[0].start_mark.line, _last_line(old[1])
            lines[first : last + 1] = view_lines(view, indent)
        else:
            at = _last_line(entries[-1][1]) + 1
            lines[at:at] = view_lines(view, indent)
    _write(path, "".join(lines))
    return replaced


def _compose(text: str, path: str) -> Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(path, line, None, f"YAML syntax error: {e.problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(path, None, None, f"YAML: {e}") from None


def _last_line(node: Node) -> int:
    """The last line holding ``node``'s own text (0-based), before any comment that follows:
    a block collection's end mark is where the next entry starts."""
    if isinstance(node, MappingNode | SequenceNode) and node.flow_style is not True:
        children: list[Node] = []
        for item in node.value:
            children.extend(item if isinstance(item, tuple) else (item,))
        if children:
            return max(_last_line(c) for c in children)
    end = node.end_mark
    # A multi-line scalar's end sits at column 0 of the line after it.
    return end.line - 1 if end.column == 0 and end.line > node.start_mark.line else end.line


def _write(path: str, text: str) -> None:
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".views-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        if os.path.exists(path):
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# ---- sorting for --json, as the table sorts ----------------------------------------------

_STATE_ORDER = {s: i for i, s in enumerate(VmState)}
SORT_KEYS: dict[str, Callable[[VM], Any]] = {
    "host": lambda vm: vm.host.lower(),
    "name": lambda vm: vm.name.lower(),
    "state": lambda vm: _STATE_ORDER[vm.state],
    "vcpus": lambda vm: vm.vcpus,
    "memory": lambda vm: vm.memory_kib,
    "ips": lambda vm: best_ip(vm) or "-",
    "owner": lambda vm: vm.reservation.owner.lower() if vm.reservation else "",
    "until": lambda vm: (
        vm.reservation.until
        if vm.reservation and vm.reservation.until is not None
        else float("inf")
    ),
    "note": lambda vm: (
        " ".join(vm.reservation.note.split()).lower()
        if vm.reservation and vm.reservation.note
        else ""
    ),
}


def sort_vms(vms: Iterable[VM], column: str, descending: bool) -> list[VM]:
    """``vms`` in the table's order for this sort: ties stay in host, name order. The live
    rates (cpu, net) are not in the model: by those the order stays host, name."""
    out = sorted(vms, key=lambda vm: (vm.host, vm.name))
    if column in ("cpu", "net"):
        return out
    if column != "host":
        out.sort(key=SORT_KEYS[column], reverse=descending)
    elif descending:
        out.sort(key=lambda vm: vm.host, reverse=True)
    return out
