"""Saved views in the config and views.yaml: parsing, errors at file:line, the save round
trip (the config file never touched, views.yaml's comments kept), and ``--json --view``
through the real binary."""

from __future__ import annotations

from pathlib import Path

import pytest

from catkeeper.config import ConfigError, load_config
from catkeeper.config.views import (
    COLUMNS,
    View,
    check_filters,
    find_view,
    save_view,
    views_path,
)
from catkeeper.demo.fleetgen import demo_documents
from catkeeper.filtering import parse_filter
from tests.cli_support import Result, cli_env, run_catkeeper

GOOD_HOST = "hosts:\n  - name: a\n    uri: qemu:///system\n"

CONFIG = """\
# The team's fleet. Keep this comment.
hosts:
  - name: a   # the first host
    uri: qemu:///system

views:
  # What I look at in the morning.
  mine:
    filter: "owner:me state:running"
    sort: -memory
    columns: [name, state, memory]
  bare:
    columns: [host, name]   # just names
# trailing comment
"""


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(path: Path) -> list[View]:
    return list(load_config(str(path), {}).views)


def test_views_in_the_config_are_read(tmp_path: Path) -> None:
    config = write(tmp_path, CONFIG)
    mine, bare = load(config)
    assert mine == View(
        "mine",
        filter="owner:me state:running",
        sort="memory",
        descending=True,
        columns=("name", "state", "memory"),
        source=str(config),
    )
    assert (bare.filter, bare.sort, bare.columns) == ("", None, ("host", "name"))
    assert mine.sort_text == "-memory"


def test_no_views_and_an_empty_views_key(tmp_path: Path) -> None:
    assert load(write(tmp_path, GOOD_HOST)) == []
    assert load(write(tmp_path, GOOD_HOST + "views:\n")) == []


# (id, the views: block, line, key, a fragment of the message)
BAD_VIEWS: list[tuple[str, str, int, str, str]] = [
    (
        "unknown-column",
        "views:\n  v:\n    columns: [name, stat]\n",
        6,
        "views.v.columns[1]",
        "unknown column 'stat' (did you mean 'state'?)",
    ),
    (
        "twice",
        "views:\n  v:\n    columns:\n      - name\n      - name\n",
        8,
        "views.v.columns[1]",
        "listed twice",
    ),
    ("no-columns", "views:\n  v:\n    columns: []\n", 6, "views.v.columns", "is empty"),
    (
        "bad-filter",
        "views:\n  v:\n    sort: name\n    filter: 'colour:red'\n",
        7,
        "views.v.filter",
        "bad filter: unknown filter key 'colour'",
    ),
    (
        "bad-quote",
        "views:\n  v:\n    filter: '\"open'\n",
        6,
        "views.v.filter",
        "bad filter",
    ),
    (
        "bad-sort",
        "views:\n  v:\n    sort: -mem\n",
        6,
        "views.v.sort",
        "unknown column 'mem'",
    ),
    ("unknown-key", "views:\n  v:\n    colums: [name]\n", 6, "views.v.colums", "'columns'?"),
    ("empty-view", "views:\n  v: {}\n", 5, "views.v", "give at least one of"),
    ("bad-name", "views:\n  'my view':\n    sort: name\n", 5, "views.my view", "view name"),
    ("duplicate", "views:\n  v: {sort: name}\n  v: {sort: host}\n", 6, "views.v", "duplicate"),
    ("not-a-mapping", "views: [a, b]\n", 4, "views", "expected a mapping of view names"),
]


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_VIEWS],
)
def test_a_bad_view_names_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str, fragment: str
) -> None:
    config = write(tmp_path, GOOD_HOST + text)
    with pytest.raises(ConfigError) as caught:
        # As the CLI does right after loading (the filter grammar is a layer above).
        check_filters(load_config(str(config), {}).views, lambda t: parse_filter(t, me="me"))
    exc = caught.value
    assert (exc.path, exc.line, exc.key) == (str(config), line, key), str(exc)
    assert fragment in exc.message
    assert str(exc).startswith(f"{config}:{line}: {key}: ")


def test_a_bad_views_yaml_names_its_own_lines(tmp_path: Path) -> None:
    config = write(tmp_path, GOOD_HOST)
    views = write(tmp_path, "# mine\nviews:\n  v:\n    sort: sideways\n", "views.yaml")
    with pytest.raises(ConfigError) as caught:
        load_config(str(config), {})
    assert (caught.value.path, caught.value.line) == (str(views), 4)
    assert "unknown column 'sideways'" in str(caught.value)


def test_save_round_trip_leaves_the_config_and_comments_alone(tmp_path: Path) -> None:
    config = write(tmp_path, CONFIG)
    before = config.read_bytes()
    path = load_config(str(config), {}).views_file
    assert path == str(tmp_path / "views.yaml")

    first = View("ops", filter='host:a "two words"', sort="until", columns=("name", "until"))
    assert save_view(path, first) is False
    assert config.read_bytes() == before  # the config file is never written
    saved = Path(path).read_text()
    assert saved.startswith("# Views saved by catkeeper")
    [ops] = [v for v in load(config) if v.name == "ops"]
    assert (ops.filter, ops.sort, ops.descending, ops.columns) == (
        'host:a "two words"',
        "until",
        False,
        ("name", "until"),
    )
    assert ops.source == path

    # A person adds comments and a view by hand; the next saves keep every line of theirs.
    hand = saved + "  # kept: a note about ops\n  hand: {sort: name}   # by hand\n# the end\n"
    Path(path).write_text(hand)
    second = View("late", sort="state", descending=True)
    assert save_view(path, second) is False
    after_add = Path(path).read_text()
    added = after_add.splitlines()
    kept = hand.splitlines()
    # Byte for byte, except the lines of the new view (inserted after the last entry).
    new_lines = ["  late:", "    sort: -state"]
    at = kept.index("  hand: {sort: name}   # by hand") + 1
    assert added == kept[:at] + new_lines + kept[at:]

    # Replacing a view rewrites its lines only: the comment under it stays.
    third = View("ops", filter="state:running")
    assert save_view(path, third) is True
    replaced = Path(path).read_text().splitlines()
    assert "  # kept: a note about ops" in replaced
    assert "# the end" in replaced
    assert replaced.count("  ops:") == 1
    names = [v.name for v in load(config)]
    assert names == ["mine", "bare", "ops", "hand", "late"]
    ops = find_view(load(config), "ops")  # type: ignore[assignment]
    assert ops is not None and (ops.filter, ops.sort, ops.columns) == ("state:running", None, ())
    assert config.read_bytes() == before


def test_the_config_wins_over_views_yaml(tmp_path: Path) -> None:
    config = write(tmp_path, CONFIG)
    write(tmp_path, "views:\n  mine:\n    sort: name\n  other:\n    sort: host\n", "views.yaml")
    views = load(config)
    assert [v.name for v in views] == ["mine", "bare", "other"]
    assert views[0].sort == "memory" and views[0].source == str(config)


def test_demo_views_live_under_xdg_config_home(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home")}
    demo = load_config(None, env, demo=True)
    assert demo.views_file == str(tmp_path / "xdg" / "catkeeper" / "views.yaml")
    assert views_path(demo, {"HOME": "/h"}) == "/h/.config/catkeeper/views.yaml"
    save_view(demo.views_file, View("d", sort="name"))
    assert [v.name for v in load_config(None, env, demo=True).views] == ["d"]


def test_columns_are_the_tables() -> None:
    from catkeeper.widgets.vm_table import COLUMN_KEYS

    assert COLUMN_KEYS == COLUMNS


# ---- catkeeper --json --view, through the real binary --------------------------------------


@pytest.fixture
def fleet_file(tmp_path: Path) -> Path:
    lines = ["# a comment", "hosts:"]
    for name, text in demo_documents().items():
        node = tmp_path / name
        node.write_text(text)
        lines += [f"  - name: {name.removesuffix('.xml')}", f"    uri: test://{node}"]
    lines += [
        "owner: alice",
        "views:",
        "  big-running:",
        "    filter: state:running",
        "    sort: -memory",
        "  byname:",
        "    sort: name",
    ]
    return write(tmp_path, "\n".join(lines) + "\n")


def cli(config: Path, *argv: str) -> Result:
    env = cli_env(config.parent / "state")
    return run_catkeeper("--config", str(config), *argv, cwd=config.parent, env=env)


def test_json_view_filters_and_sorts(fleet_file: Path) -> None:
    everything = cli(fleet_file, "--json")
    assert everything.code == 0, everything.err
    every = everything.json()["vms"]
    running = [vm for vm in every if vm["state"] == "running"]
    assert 1 < len(running) < len(every)

    r = cli(fleet_file, "--json", "--view", "big-running")
    assert r.code == 0, r.err
    vms = r.json()["vms"]
    assert sorted(vm["name"] for vm in vms) == sorted(vm["name"] for vm in running)
    memory = [vm["memory_kib"] for vm in vms]
    assert memory == sorted(memory, reverse=True)
    assert memory != sorted(memory) or len(set(memory)) == 1

    # --filter narrows the view further (both must match).
    host = running[0]["host"]
    narrowed = cli(fleet_file, "--json", "--view", "big-running", "--filter", f"host:{host}")
    assert narrowed.code == 0, narrowed.err
    got = [vm["name"] for vm in narrowed.json()["vms"]]
    assert got == [vm["name"] for vm in vms if vm["host"] == host]

    byname = cli(fleet_file, "--json", "--view", "byname")
    names = [vm["name"].lower() for vm in byname.json()["vms"]]
    assert names == sorted(names) and len(names) == len(every)


def test_json_unknown_view_is_a_usage_error(fleet_file: Path) -> None:
    r = cli(fleet_file, "--json", "--view", "nope")
    assert r.code == 2
    assert "no view 'nope' (views: big-running, byname)" in r.err
    assert r.out == ""


def test_a_bad_view_filter_stops_the_binary_at_its_line(fleet_file: Path) -> None:
    views = fleet_file.parent / "views.yaml"
    views.write_text("views:\n  broken:\n    sort: name\n    filter: 'colour:red'\n")
    r = cli(fleet_file, "--json")
    assert r.code == 2
    assert f"{views}:4: views.broken.filter: bad filter: unknown filter key 'colour'" in r.err
    assert r.out == ""


def test_json_view_from_views_yaml(fleet_file: Path) -> None:
    save_view(str(fleet_file.parent / "views.yaml"), View("shut", filter="state:shutoff"))
    r = cli(fleet_file, "--json", "--view", "shut")
    assert r.code == 0, r.err
    states = {vm["state"] for vm in r.json()["vms"]}
    assert states == {"shutoff"}


def _uncomment(block: str) -> str:
    return "\n".join(line.removeprefix("# ") for line in block.splitlines()) + "\n"


def test_the_documented_examples_parse(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parent.parent
    readme = (repo / "README.md").read_text().split("### Saved views", 1)[1]
    block = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    example = (repo / "config.example.yaml").read_text().split("# views:\n", 1)[1]
    example = example.split("\n\n", 1)[0]
    commented = _uncomment("# views:\n" + example)
    for text in (block, commented):
        views = load(write(tmp_path, GOOD_HOST + text))
        assert [v.name for v in views] == ["mine", "gpu-idle"]
        assert views[0].sort_text == "-until"
        assert views[0].columns == ("name", "state", "ips", "until")


def test_view_outside_json_is_checked_before_anything_starts(fleet_file: Path) -> None:
    # The TUI would open with the view; an unknown one stops it before it takes the screen.
    r = cli(fleet_file, "--view", "nope")
    assert r.code == 2
    assert "no view 'nope' (views: big-running, byname)" in r.err
    verb = cli(fleet_file, "--view", "byname", "reservations")
    assert verb.code == 2
    assert "--view goes with --json or the TUI" in verb.err


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param("", None, id="no-file"),
        pytest.param("# only a comment\n", "# only a comment\nviews:\n", id="comments"),
        pytest.param("# c\nviews:\n", "# c\nviews:\n", id="empty-views"),
        pytest.param("# c\n{}\n", "# c\nviews:\n", id="empty-mapping"),
        pytest.param(
            "# c\nviews: {a: {sort: name}, b: {filter: x}}  # flow\n# end\n",
            "# c\nviews:\n  a:\n    sort: name\n  b:\n    filter: x\n",
            id="flow",
        ),
    ],
)
def test_save_into_any_shape_of_views_yaml(tmp_path: Path, before: str, after: str | None) -> None:
    path = tmp_path / "views.yaml"
    if before:
        path.write_text(before)
    save_view(str(path), View("new", sort="state"))
    text = path.read_text()
    if after is not None:
        assert text.startswith(after), text
    assert text.endswith("  new:\n    sort: state\n" + ("# end\n" if "# end" in before else ""))
    views = {v.name: v for v in load(write(tmp_path, GOOD_HOST))}
    assert views["new"].sort == "state"
    if "flow" in before:
        assert (views["a"].sort, views["b"].filter) == ("name", "x")
        save_view(str(path), View("a", sort="host"))  # replaced in place, order kept
        assert [v.name for v in load(write(tmp_path, GOOD_HOST))] == ["a", "b", "new"]
