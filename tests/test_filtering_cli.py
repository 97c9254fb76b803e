"""Host tags through the real ``catkeeper`` binary: ``--json --filter`` and
``reservations --filter`` take ``tag:NAME`` and match tags as free words, as the TUI's ``/``.

The fleet is the demo fleet's node files (with their reservations) in a tmp dir, opened by
the test driver; the config gives some hosts tags. Run as a user types it (tests/cli_support).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from catkeeper.demo.fleetgen import DEMO_FLEET, DEMO_RESERVATIONS, demo_documents
from tests.cli_support import Result, cli_env, run_catkeeper

# lab1 and gpu4 are in Berlin, gpu4 has GPUs, build3 is in Tokyo, lab2 has no tags. "tokyo"
# and "berlin" are in no VM's name, note or owner, so a free word can only match a tag.
TAGS: dict[str, tuple[str, ...]] = {
    "lab1": ("berlin",),
    "lab2": (),
    "build3": ("tokyo-dc",),
    "gpu4": ("berlin", "gpu"),
}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    lines = ["hosts:"]
    for name, text in demo_documents().items():
        node = tmp_path / name
        node.write_text(text)
        host = name.removesuffix(".xml")
        lines += [f"  - name: {host}", f"    uri: test://{node}"]
        if TAGS[host]:
            lines.append(f"    tags: [{', '.join(TAGS[host])}]")
    path = tmp_path / "config.yaml"
    path.write_text("\n".join(lines) + "\nowner: alice\n")
    return path


def cli(config: Path, *argv: str) -> Result:
    return run_catkeeper(
        "--config", str(config), *argv, cwd=config.parent, env=cli_env(config.parent / "state")
    )


def hosts_of_json(r: Result) -> dict[str, int]:
    """Host → how many VMs ``--json`` listed for it."""
    assert r.code == 0, r.err
    counts: dict[str, int] = {}
    for vm in r.json()["vms"]:
        counts[vm["host"]] = counts.get(vm["host"], 0) + 1
    return counts


def test_the_fixture_has_no_vm_named_like_a_tag(config: Path) -> None:
    # Otherwise the free-word tests below would pass without tags.
    r = cli(config, "--json")
    assert r.code == 0, r.err
    for vm in r.json()["vms"]:
        text = str(vm).lower()
        assert "berlin" not in text and "tokyo" not in text


@pytest.mark.parametrize(
    ("expr", "hosts"),
    [
        ("tag:berlin", {"lab1", "gpu4"}),
        ("tag:GPU", {"gpu4"}),
        ("tag:tokyo-*", {"build3"}),
        ("tag:gpu,tokyo-dc", {"gpu4", "build3"}),
        ("!tag:berlin", {"lab2", "build3"}),
        ("berlin", {"lab1", "gpu4"}),  # a free word matches the host's tags
        ("tokyo", {"build3"}),
        ("tag:nowhere", set()),
    ],
)
def test_json_filter_matches_host_tags(config: Path, expr: str, hosts: set[str]) -> None:
    counts = hosts_of_json(cli(config, "--json", "--filter", expr))
    assert set(counts) == hosts
    for host in hosts:  # every VM of a tagged host, not some
        assert counts[host] == next(h.vms for h in DEMO_FLEET if h.name == host), host


def test_json_filter_tag_with_other_terms(config: Path) -> None:
    r = cli(config, "--json", "--filter", "tag:berlin state:running")
    assert r.code == 0, r.err
    vms = r.json()["vms"]
    assert vms and {v["host"] for v in vms} <= {"lab1", "gpu4"}
    assert all(v["state"] == "running" for v in vms)


def test_reservations_filter_matches_host_tags(config: Path) -> None:
    r = cli(config, "reservations", "--json", "--filter", "tag:berlin")
    assert r.code == 0, r.err
    got = {(d["host"], d["vm"]) for d in r.json()}
    assert got == {key for key in DEMO_RESERVATIONS if key[0] in ("lab1", "gpu4")}

    r = cli(config, "reservations", "--json", "--filter", "tokyo")
    assert r.code == 0, r.err
    got = {(d["host"], d["vm"]) for d in r.json()}
    assert got == {key for key in DEMO_RESERVATIONS if key[0] == "build3"}


def test_bad_tag_term_is_a_usage_error(config: Path) -> None:
    r = cli(config, "--json", "--filter", "tag:")
    assert r.code == 2
    assert "tag: needs a value" in r.err
