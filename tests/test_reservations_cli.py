"""``catkeeper reserve | release | reservations`` as separate processes: exit codes, output.

Each command runs in its own Python process. Until ``catkeeper.reserve_cli`` is wired into
``catkeeper.cli`` the commands go through a stand-in main that builds the same parser shape
(the main options, then ``add_subcommands``) and calls ``run``; once it is wired they run
``python -m catkeeper`` itself. Test-driver hosts keep their state per connection, so a
write there is gone when the process ends: tests that need a second command to see the
first one's write use the real libvirtd.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from catkeeper import cli
from catkeeper.backend import reservation_xml as rx
from tests.daemons import DomainFactory
from tests.tui_support import RUNNING, SHUTOFF, UNREACHABLE_URI, Dom, node_file

REPO = Path(__file__).resolve().parent.parent
WIRED = "catkeeper.reserve_cli" in getattr(cli, "COMMAND_MODULES", ())

# A stand-in for ``catkeeper.cli.main`` while the command module is not wired in.
STAND_IN = """
import argparse, os, sys
import libvirt
libvirt.registerErrorHandler(lambda *a: None, None)
from catkeeper import reserve_cli
from catkeeper.config import ConfigError, load_config
parser = argparse.ArgumentParser(prog="catkeeper")
parser.add_argument("--config")
parser.add_argument("--readonly", action="store_true")
parser.add_argument("--json", action="store_true")
parser.add_argument("--host", action="append")
parser.add_argument("--filter")
parser.add_argument("--timeout", type=float)
reserve_cli.add_subcommands(parser.add_subparsers(dest="command", metavar="COMMAND"))
args = parser.parse_args()
try:
    config = load_config(args.config, os.environ)
except ConfigError as exc:
    print(f"catkeeper: {exc}", file=sys.stderr)
    sys.exit(2)
sys.exit(reserve_cli.run(args, config))
"""

HELD_UNTIL = "2099-01-01T00:00:00Z"
EXPIRED_UNTIL = "2020-01-01T00:00:00Z"
DOMS = (
    Dom("held", RUNNING, owner="alice", note="bisecting kernel", until=HELD_UNTIL),
    Dom("stale", SHUTOFF, owner="bob", note="load test", until=EXPIRED_UNTIL),
    Dom("open", SHUTOFF, owner="carol", note="no end in sight"),
    Dom("free", RUNNING),
    Dom("free2", SHUTOFF),
)


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def write_config(tmp_path: Path, hosts: dict[str, str], *, extra: str = "") -> Path:
    lines = ["hosts:"]
    for name, uri in hosts.items():
        lines += [f"  - name: {name}", f"    uri: {uri}"]
    path = tmp_path / "config.yaml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def catkeeper(config: Path, *argv: str, user: str = "dave") -> Result:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "USER": user,  # getpass.getuser() reads it: who "me" is
        "LOGNAME": user,
        "XDG_STATE_HOME": str(config.parent / "state"),
        "TZ": "UTC",
    }
    head = ["-m", "catkeeper"] if WIRED else ["-c", STAND_IN]
    proc = subprocess.run(
        [sys.executable, *head, "--config", str(config), *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=REPO,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    return write_config(tmp_path, {"alpha": f"test://{node_file(tmp_path, 'alpha', DOMS)}"})


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
        "until": rx.parse_time(HELD_UNTIL),
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
    config = write_config(tmp_path, {"alpha": f"test://{node}", "gamma": UNREACHABLE_URI})
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
    config = write_config(tmp_path, {"gamma": UNREACHABLE_URI})
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
    config = write_config(tmp_path, {"qemu": "qemu:///system"}, extra="owner: alice\n")
    reserved = catkeeper(
        config, "reserve", f"qemu/{name}", "--note", "kernel bisect", "--until", "2h", "--json"
    )
    assert reserved.code == 0, reserved.err
    assert reserved.json()["owner"] == "alice" and reserved.json()["revision"] == 1

    # The fleet dump (``catkeeper --json``, always the real main) carries it too.
    dump = subprocess.run(
        [sys.executable, "-m", "catkeeper", "--config", str(config), "--json", "--filter", name],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "XDG_STATE_HOME": str(tmp_path)},
        timeout=60,
        cwd=REPO,
    )
    assert dump.returncode == 0, dump.stderr
    [dumped] = json.loads(dump.stdout)["vms"]
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
    code = (
        "import argparse, io, contextlib, sys\n"
        "from catkeeper import reserve_cli\n"
        "from catkeeper.config import load_config\n"
        "p = argparse.ArgumentParser()\n"
        "reserve_cli.add_subcommands(p.add_subparsers())\n"
        f"config = load_config({str(lab)!r}, {{}})\n"
        "for argv in (['reservations', '--filter', 'owner:alice'],\n"
        "             ['reserve', 'alpha/free', '--note', 'x', '--until', '4h']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        assert reserve_cli.run(p.parse_args(argv), config) == 0\n"
        "ui = ('textual', 'rich')\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ui)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
