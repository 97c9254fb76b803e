"""The filter grammar, shared by the TUI's / bar and ``catkeeper --json --filter``."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from catkeeper.cli import main
from catkeeper.config import HostConfig
from catkeeper.filtering import FilterError, haystack, parse_filter, tags_of
from catkeeper.model import VM, Host, IpSighting, Nic, Reservation, VmState
from tests.fleet_helpers import plain_vm
from tests.tui_support import FROZEN_NOW, fleet_config, make_app, names

NOW = FROZEN_NOW


def vm(
    name: str,
    *,
    host: str = "lab1",
    state: VmState = VmState.RUNNING,
    owner: str | None = None,
    note: str = "",
    until: float | None = None,
    mac: str = "52:54:00:00:00:01",
    ip: str | None = None,
) -> VM:
    res = Reservation(owner=owner, note=note, until=until) if owner else None
    ips = (IpSighting(mac, ip, 24, "lease", NOW),) if ip else ()
    return dataclasses.replace(
        plain_vm(host, name, state, uuid=f"uuid-{host}-{name}"),
        nics=(Nic(mac=mac, type="network", source="default"),),
        reservation=res,
        ips=ips,
    )


FLEET = [
    vm("web-01", owner="alice", note="Bisecting kernel", until=NOW + 3600, ip="10.0.0.5"),
    vm("web-02", host="lab2", state=VmState.SHUTOFF, mac="52:54:00:ab:cd:ef"),
    vm("db-01", state=VmState.PAUSED, owner="bob", note="load test", until=NOW - 60),
    vm("build-01", host="lab2", state=VmState.SHUTOFF, owner="Alice"),
    vm("gpu-01", host="gpu4", state=VmState.CRASHED),
]


def pick(text: str, me: str = "alice") -> list[str]:
    f = parse_filter(text, me=me)
    return [v.name for v in FLEET if f.matches(v, NOW)]


def test_empty_filter_matches_everything() -> None:
    assert pick("") == [v.name for v in FLEET]
    assert pick("   ") == [v.name for v in FLEET]
    assert parse_filter("", me="x").is_empty


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("web", ["web-01", "web-02"]),
        ("WEB", ["web-01", "web-02"]),  # case-insensitive
        ("web 01", ["web-01"]),  # every word must match
        ("lab2", ["web-02", "build-01"]),  # host
        ("bisecting", ["web-01"]),  # note
        ("bob", ["db-01"]),  # owner
        ("10.0.0", ["web-01"]),  # IP
        ("ab:cd:ef", ["web-02"]),  # MAC (colons do not make it a key)
        ('"load test"', ["db-01"]),  # quotes keep the space
        ("nothing-like-this", []),
    ],
)
def test_free_words(text: str, expected: list[str]) -> None:
    assert pick(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host:lab2", ["web-02", "build-01"]),
        ("host:LAB2", ["web-02", "build-01"]),
        ("host:lab", []),  # exact, not a substring
        ("host:lab*", ["web-01", "web-02", "db-01", "build-01"]),
        ("host:lab1,gpu4", ["web-01", "db-01", "gpu-01"]),
        ("state:running", ["web-01"]),
        ("state:shut", ["web-02", "build-01"]),
        ("state:shutoff", ["web-02", "build-01"]),
        ("state:paused", ["db-01"]),
        ("state:pau", ["db-01"]),  # an unambiguous prefix
        ("state:crashed", ["gpu-01"]),
        ("state:running,paused", ["web-01", "db-01"]),
        ("state:active", ["web-01", "db-01"]),
        ("state:inactive", ["web-02", "build-01", "gpu-01"]),
        ("owner:bob", ["db-01"]),
        ("owner:alice", ["web-01", "build-01"]),  # owner names are case-insensitive
        ("reserved:yes", ["web-01", "build-01"]),  # expired ones are not reserved
        ("reserved:no", ["web-02", "gpu-01"]),
        ("reserved:expired", ["db-01"]),
    ],
)
def test_keys(text: str, expected: list[str]) -> None:
    assert pick(text) == expected


def test_owner_me_is_the_current_user() -> None:
    assert pick("owner:me", me="bob") == ["db-01"]
    assert pick("owner:me", me="alice") == ["web-01", "build-01"]
    assert pick("owner:me", me="nobody") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("!web", ["db-01", "build-01", "gpu-01"]),
        ("!state:shutoff", ["web-01", "db-01", "gpu-01"]),
        ("!host:lab1 !host:lab2", ["gpu-01"]),
        ("!owner:me", ["web-02", "db-01", "gpu-01"]),
        ("!reserved:no state:shutoff", ["build-01"]),
        ("web !01", ["web-02"]),
    ],
)
def test_negation(text: str, expected: list[str]) -> None:
    assert pick(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("state:bogus", "unknown state 'bogus'"),
        ("state:p", "ambiguous state 'p'"),
        ("reserved:maybe", "reserved:maybe"),
        ("colour:red", "unknown filter key 'colour'"),
        ("host:", "host: needs a value"),
        ("!", "'!' must come right before a term"),
        ('"unbalanced', "bad filter"),
    ],
)
def test_bad_terms_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(FilterError, match=message.replace("(", r"\(")):
        parse_filter(text, me="alice")


@pytest.mark.parametrize(
    "text",
    ["", "web", "!web", "state:running", "owner:me !reserved:expired", "lab web !01", "host:lab*"],
)
def test_select_agrees_with_matches(text: str) -> None:
    f = parse_filter(text, me="alice")
    rows = [(i, v, haystack(v)) for i, v in enumerate(FLEET)]
    assert f.select(rows, NOW) == [i for i, v in enumerate(FLEET) if f.matches(v, NOW)]


# Tags are the hosts': lab1 has a GPU and is in Berlin, gpu4 too, lab2 has none.
TAGS = {"lab1": ("gpu", "Berlin"), "lab2": (), "gpu4": ("gpu", "nvidia-a100")}


def tagged(text: str, me: str = "alice") -> list[str]:
    f = parse_filter(text, me=me, host_tags=TAGS)
    return [v.name for v in FLEET if f.matches(v, NOW)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tag:gpu", ["web-01", "db-01", "gpu-01"]),
        ("tag:GPU", ["web-01", "db-01", "gpu-01"]),  # tags are case-insensitive
        ("tag:berlin", ["web-01", "db-01"]),
        ("tag:nvidia-*", ["gpu-01"]),  # a glob, as host:
        ("tag:berlin,nvidia-a100", ["web-01", "db-01", "gpu-01"]),  # either
        ("tag:gp", []),  # exact, not a substring
        ("!tag:gpu", ["web-02", "build-01"]),
        ("tag:gpu state:running", ["web-01"]),
        ("berlin", ["web-01", "db-01"]),  # a free word matches the host's tags
        ("a100", ["gpu-01"]),  # ... any part of one
        ("!berlin", ["web-02", "build-01", "gpu-01"]),
        ("web berlin", ["web-01"]),
    ],
)
def test_host_tags(text: str, expected: list[str]) -> None:
    assert tagged(text) == expected


def test_without_host_tags_no_vm_has_tags() -> None:
    assert pick("tag:gpu") == []
    assert pick("berlin") == []
    assert pick("!tag:gpu") == [v.name for v in FLEET]


def test_tags_do_not_join_fields() -> None:
    # "\x00" separates the VM's own fields from its host's tags: no match across the seam.
    f = parse_filter("gpu-01gpu", me="alice", host_tags=TAGS)
    assert [v.name for v in FLEET if f.matches(v, NOW)] == []


def test_tags_of_reads_config_and_model_hosts() -> None:
    configured = [HostConfig(name="lab1", uri="test:///nowhere.xml", tags=("gpu",))]
    assert tags_of(configured) == {"lab1": ("gpu",)}
    assert tags_of([Host("lab2", "x"), Host("lab3", "y", tags=("a", "b"))]) == {
        "lab2": (),
        "lab3": ("a", "b"),
    }


def test_tag_needs_a_value() -> None:
    with pytest.raises(FilterError, match="tag: needs a value"):
        parse_filter("tag:", me="alice", host_tags=TAGS)
    with pytest.raises(FilterError, match="tag: needs a tag"):
        parse_filter("tag:,", me="alice", host_tags=TAGS)


@pytest.mark.parametrize(
    "text", ["tag:gpu", "!tag:gpu", "berlin", "!berlin", "web berlin !state:paused", "tag:nv*"]
)
def test_select_agrees_with_matches_with_tags(text: str) -> None:
    f = parse_filter(text, me="alice", host_tags=TAGS)
    rows = [(i, v, haystack(v)) for i, v in enumerate(FLEET)]
    picked = [i for i, v in enumerate(FLEET) if f.matches(v, NOW)]
    assert f.select(rows, NOW) == picked
    assert picked  # or the comparison proves nothing


def test_json_filter_uses_the_same_grammar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = fleet_config(tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(
        "hosts:\n"
        + "".join(f"  - name: {h.name}\n    uri: {h.uri}\n" for h in config.hosts)
        + "owner: alice\n"
    )
    assert main(["--config", str(path), "--json", "--filter", "owner:me !state:shutoff"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert sorted(v["name"] for v in doc["vms"]) == ["ci-runner", "web-01"]
    assert len(doc["hosts"]) == 2  # hosts are not filtered

    assert main(["--config", str(path), "--json", "--filter", "state:bogus"]) == 2
    assert "unknown state 'bogus'" in capsys.readouterr().err


def test_filtering_imports_no_ui() -> None:
    code = (
        "import sys, catkeeper.filtering, catkeeper.cli\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('textual', 'rich')]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_the_tui_filter_bar_matches_host_tags(tmp_path: Path) -> None:
    """The real app and its ``/`` bar: beta is tagged, alpha is not."""
    config = fleet_config(tmp_path)
    alpha, beta = config.hosts
    config = dataclasses.replace(
        config, hosts=(alpha, dataclasses.replace(beta, tags=("rack7", "gpu")))
    )
    app = make_app(config)
    beta_vms = ["cache-01", "ci-runner", "web-03"]
    cases = {
        "tag:rack7": beta_vms,
        "tag:GPU": beta_vms,
        "rack7": beta_vms,  # a free word matches the host's tags
        "!tag:gpu": ["build-01", "db-01", "web-01", "web-02"],
        "tag:gpu state:running": ["cache-01", "ci-runner"],
        "tag:nothing": [],
    }
    async with app.run_test(size=(120, 30)) as pilot:
        await app.wait_idle()
        for text, expected in cases.items():
            await pilot.press("slash")
            app.fleet_screen.bar.input.value = ""
            await pilot.press(*text)
            assert names(app) == expected, text
            await pilot.press("escape")
