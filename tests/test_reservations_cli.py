"""``catkeeper reserve | release | reservations`` as a user runs them: the installed
``catkeeper`` script in its own process, the global options before the verb (tests/cli_support.py).

A verb that is not wired into ``catkeeper.cli`` fails these tests. Test-driver hosts keep their
state per connection, so a write there is gone when the process ends: tests that need a second
command to see the first one's write use the real libvirtd.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from catkeeper.backend import metadata_time
from catkeeper.backend.reservations import metadata as rx
from tests.cli_support import Result, cli_env, imported_top_levels, run_catkeeper, write_config
from tests.daemons import DomainFactory
from tests.tui_support import RUNNING, SHUTOFF, UNREACHABLE_URI, Dom, node_file

HELD_UNTIL = "2099-01-01T00:00:00Z"
EXPIRED_UNTIL = "2020-01-01T00:00:00Z"
DOMS = (
    Dom("held", RUNNING, owner="alice", note="bisecting kernel", until=HELD_UNTIL),
    Dom("stale", SHUTOFF, owner="bob", note="load test", until=EXPIRED_UNTIL),
    Dom("open", SHUTOFF, owner="carol", note="no end in sight"),
    Dom("free", RUNNING),
    Dom("free2", SHUTOFF),
)


def catkeeper(config: Path, *argv: str, user: str = "dave", **env: str) -> Result:
    """``catkeeper --config CONFIG ARGV…`` as ``user``, in the config's directory."""
    return run_catkeeper(
        "--config",
        str(config),
        *argv,
        cwd=config.parent,
        env=cli_env(config.parent / "state", user=user, extra=env),
    )


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    node = node_file(tmp_path, "alpha", DOMS)
    return write_config(tmp_path / "config.yaml", {"alpha": f"test://{node}"})


# ---------------------------------------------------------------------------------------
# Listing


def test_reservations_lists_every_reserved_vm(lab: Path) -> None:
    r = catkeeper(lab, "reservations")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].split() == ["VM", "OWNER", "UNTIL", "NOTE"]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["alpha/held", "alice"],
        ["alpha/open", "carol"],
        ["alpha/stale", "bob"],
    ]
    assert "2099-01-01 00:00 UTC" in lines[1] and lines[1].endswith("bisecting kernel")
    assert "no end" in lines[2]
    assert "2020-01-01 00:00 UTC EXPIRED" in lines[3]


def test_reservations_json_and_filter(lab: Path) -> None:
    r = catkeeper(lab, "reservations", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert [(d["host"], d["vm"], d["owner"], d["expired"]) for d in doc] == [
        ("alpha", "held", "alice", False),
        ("alpha", "open", "carol", False),
        ("alpha", "stale", "bob", True),
    ]
    assert doc[0] == {
        "host": "alpha",
        "vm": "held",
        "owner": "alice",
        "note": "bisecting kernel",
        "since": None,
        "until": metadata_time.parse_time(HELD_UNTIL),
        "contact": None,
        "revision": 1,
        "expired": False,
    }
    expired = catkeeper(lab, "reservations", "--filter", "reserved:expired", "--json")
    assert [d["vm"] for d in expired.json()] == ["stale"]
    mine = catkeeper(lab, "--json", "reservations", "--filter", "owner:me", user="carol")
    assert [d["vm"] for d in mine.json()] == ["open"]
    bad = catkeeper(lab, "reservations", "--filter", "colour:red")
    assert bad.code == 2 and "--filter: unknown filter key 'colour'" in bad.err


def test_reservations_with_an_unreachable_host_lists_the_rest_and_exits_3(
    tmp_path: Path,
) -> None:
    node = node_file(tmp_path, "alpha", DOMS)
    config = write_config(
        tmp_path / "config.yaml", {"alpha": f"test://{node}", "gamma": UNREACHABLE_URI}
    )
    r = catkeeper(config, "--timeout", "5", "reservations", "--json")
    assert r.code == 3
    assert [d["vm"] for d in r.json()] == ["held", "open", "stale"]
    assert "unreachable, not listed: gamma" in r.err


# ---------------------------------------------------------------------------------------
# Writing (each process has its own copy of a test-driver host)


def test_reserve_a_free_vm(lab: Path) -> None:
    before = time.time()
    r = catkeeper(lab, "reserve", "alpha/free", "--note", "ci run 42", "--until", "3d", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["action"] == "reserved" and doc["previous"] is None
    assert (doc["host"], doc["vm"], doc["owner"], doc["note"]) == (
        "alpha",
        "free",
        "dave",
        "ci run 42",
    )
    assert before + 3 * 86400 - 2 <= doc["until"] <= time.time() + 3 * 86400
    assert doc["revision"] == 1 and doc["expired"] is False
    human = catkeeper(lab, "reserve", "free", "--note", "mine", "--owner", "ci", "--contact", "x@y")
    assert human.code == 0, human.err
    assert human.out == 'reserved alpha/free: ci with no end: "mine" (contact x@y)\n'


def test_someone_elses_reservation_is_a_conflict_naming_the_holder(lab: Path) -> None:
    r = catkeeper(lab, "reserve", "alpha/held", "--note", "mine")
    assert r.code == 5
    assert r.err.splitlines() == [
        'catkeeper: alpha/held is reserved by alice until 2099-01-01 00:00 UTC: "bisecting '
        'kernel"; take it over to claim it anyway (--take-over)',
        "  owner: alice",
        "  note:  bisecting kernel",
        "  until: 2099-01-01 00:00 UTC",
    ]
    as_json = catkeeper(lab, "reserve", "alpha/held", "--note", "mine", "--json")
    assert as_json.code == 5
    doc = as_json.json()
    assert doc["exit_code"] == 5 and doc["error"].startswith("alpha/held is reserved by alice")
    assert doc["holder"]["owner"] == "alice" and doc["holder"]["note"] == "bisecting kernel"
    taken = catkeeper(lab, "reserve", "alpha/held", "--note", "mine", "--take-over", "--json")
    assert taken.code == 0, taken.err
    assert taken.json()["action"] == "took-over"
    assert taken.json()["previous"]["owner"] == "alice"
    # An expired reservation is free to claim.
    claimed = catkeeper(lab, "reserve", "alpha/stale", "--note", "mine", "--json")
    assert claimed.code == 0 and claimed.json()["previous"]["expired"] is True


def test_release(lab: Path) -> None:
    r = catkeeper(lab, "release", "alpha/held")
    assert r.code == 5
    assert "only alice can release it; force to release it anyway (--force)" in r.err
    forced = catkeeper(lab, "release", "alpha/held", "--force", "--json")
    assert forced.code == 0, forced.err
    doc = forced.json()
    assert (doc["action"], doc["previous"]["owner"]) == ("released", "alice")
    assert "owner" not in doc  # no reservation after it
    own = catkeeper(lab, "release", "alpha/open", user="carol")
    assert own.code == 0 and own.out.startswith("released alpha/open (was carol with no end")
    free = catkeeper(lab, "release", "alpha/free")
    assert (free.code, free.out) == (0, "alpha/free was not reserved; nothing to do\n")


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["reserve", "alpha/nope", "--note", "x"], 4, "no VM named 'nope' on alpha"),
        (["reserve", "nope", "--note", "x"], 4, "no VM named 'nope'"),
        (["release", "alpha/nope"], 4, "no VM named 'nope' on alpha"),
        (["reserve", "beta/free", "--note", "x"], 2, "no host named beta"),
        (["reserve", "alpha/free", "--note", "x", "--until", "3x"], 2, "--until: unknown unit"),
        (["reserve", "alpha/free", "--note", "x", "--until", "2020-01-01"], 2, "in the past"),
        (["reserve", "alpha/free", "--note", "x", "--owner", " "], 2, "needs an owner"),
        (["reserve", "alpha/free"], 2, "the following arguments are required: --note"),
        (["--readonly", "reserve", "alpha/free", "--note", "x"], 6, "alpha is read-only"),
        (["--readonly", "release", "alpha/held", "--force"], 6, "alpha is read-only"),
    ],
)
def test_exit_codes(lab: Path, argv: list[str], code: int, message: str) -> None:
    r = catkeeper(lab, *argv)
    assert r.code == code, r.err
    assert message in r.err
    assert r.out == ""


def test_a_read_only_host_in_the_config(tmp_path: Path) -> None:
    node = node_file(tmp_path, "alpha", DOMS)
    config = tmp_path / "ro.yaml"
    config.write_text(f"hosts:\n  - name: alpha\n    uri: test://{node}\n    readonly: true\n")
    r = catkeeper(config, "reserve", "alpha/free", "--note", "x", "--json")
    assert r.code == 6
    assert r.json() == {
        "error": "alpha is read-only: cannot reserve alpha/free",
        "exit_code": 6,
    }


def test_an_unreachable_host_exits_3(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml", {"gamma": UNREACHABLE_URI})
    r = catkeeper(config, "--timeout", "5", "reserve", "gamma/vm", "--note", "x")
    assert r.code == 3, r.err
    assert "unreachable: gamma" in r.err


# ---------------------------------------------------------------------------------------
# Across processes, on the real daemon


@pytest.mark.daemon
def test_commands_share_reservations_through_the_real_daemon(
    tmp_path: Path, tcg_domain: DomainFactory
) -> None:
    dom = tcg_domain()
    name = dom.name()
    config = write_config(
        tmp_path / "config.yaml", {"qemu": "qemu:///system"}, extra="owner: alice\n"
    )
    reserved = catkeeper(
        config, "reserve", f"qemu/{name}", "--note", "kernel bisect", "--until", "2h", "--json"
    )
    assert reserved.code == 0, reserved.err
    assert reserved.json()["owner"] == "alice" and reserved.json()["revision"] == 1

    # The fleet dump (``catkeeper --json``) carries it too.
    dump = catkeeper(config, "--json", "--filter", name)
    assert dump.code == 0, dump.err
    [dumped] = dump.json()["vms"]
    assert dumped["reservation"] == {
        k: v for k, v in reserved.json().items() if k in dumped["reservation"]
    }

    listed = catkeeper(config, "reservations", "--json", "--filter", name)
    assert [(d["vm"], d["owner"], d["note"]) for d in listed.json()] == [
        (name, "alice", "kernel bisect")
    ]
    # Another owner, another process: refused, told who holds it.
    bob = catkeeper(config, "reserve", f"qemu/{name}", "--note", "mine", "--owner", "bob")
    assert bob.code == 5
    assert f"qemu/{name} is reserved by alice until" in bob.err
    assert "  note:  kernel bisect" in bob.err
    assert catkeeper(config, "release", f"qemu/{name}", "--owner", "bob").code == 5
    # Extending one's own is a plain update.
    extended = catkeeper(
        config, "reserve", f"qemu/{name}", "--note", "kernel bisect", "--until", "1d", "--json"
    )
    assert extended.code == 0 and extended.json()["action"] == "updated"
    assert extended.json()["revision"] == 2
    released = catkeeper(config, "release", f"qemu/{name}")
    assert released.code == 0 and released.out.startswith(f"released qemu/{name} (was alice")
    assert catkeeper(config, "reservations", "--json", "--filter", name).json() == []
    stored = subprocess.run(
        ["virsh", "-c", "qemu:///system", "metadata", name, rx.NAMESPACE],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    record = rx.record_from_string(stored)
    assert record is not None and record.reservation is None
    assert (record.revision, record.changed_by, record.action) == (3, "alice", "released")


def test_the_commands_load_no_ui_modules(lab: Path) -> None:
    """The verbs never import textual or rich: start-up stays light for scripts."""
    for argv in (
        ["reservations", "--filter", "owner:alice"],
        ["reserve", "alpha/free", "--note", "x", "--until", "4h"],
        ["release", "alpha/held", "--force"],
    ):
        r = catkeeper(lab, *argv, PYTHONPROFILEIMPORTTIME="1")
        assert r.code == 0, r.err
        imported = imported_top_levels(r.err)
        assert "catkeeper" in imported and "libvirt" in imported  # the probe sees imports
        assert not imported & {"textual", "rich"}, argv
