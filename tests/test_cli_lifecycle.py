"""``catkeeper start|stop|shutdown|destroy|reboot|reset|pause|resume`` through the installed
script, on test-driver fleets of the test's own (no daemon).

The test driver keeps its state in the process that opened the node file, so each run starts
from the file: a verb's effect is read from its own output (the state after it, as libvirt
reported it) and its exit code. The graceful stop of a real guest, with its escalation, is
in test_cli_lifecycle_daemon.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_support import Result, cli_env, run_catkeeper, write_config
from tests.tui_support import PAUSED, RUNNING, SHUTOFF, Dom, node_file

ALPHA = (
    Dom("web", RUNNING),
    Dom("off", SHUTOFF),
    Dom("sleepy", PAUSED),
    Dom("held", RUNNING, owner="alice", note="busy", until="2099-01-01T00:00:00Z"),
    Dom("lapsed", SHUTOFF, owner="alice", note="old", until="2020-01-01T00:00:00Z"),
    Dom("twin", SHUTOFF),
)
BETA = (Dom("twin", RUNNING), Dom("db", RUNNING))


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    """Two test-driver hosts: alpha and beta, both with a VM called twin."""
    hosts = {
        "alpha": f"test://{node_file(tmp_path, 'alpha', ALPHA)}",
        "beta": f"test://{node_file(tmp_path, 'beta', BETA)}",
    }
    return write_config(tmp_path / "config.yaml", hosts)


def ck(config: Path, *argv: str, user: str = "bob") -> Result:
    env = cli_env(config.parent / "state", user=user)
    return run_catkeeper("--config", str(config), *argv, cwd=config.parent, env=env)


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["start", "alpha/off"], "started alpha/off (running)"),
        (["shutdown", "alpha/web"], "asked to shut down (ACPI) alpha/web (shutoff)"),
        (["destroy", "alpha/web"], "forced off alpha/web (shutoff)"),
        (["force-off", "alpha/web"], "forced off alpha/web (shutoff)"),  # the alias
        (["reboot", "alpha/web"], "asked to reboot alpha/web (running)"),
        (["reset", "alpha/web"], "reset alpha/web (running)"),
        (["pause", "alpha/web"], "paused alpha/web (paused)"),
        (["suspend", "alpha/web"], "paused alpha/web (paused)"),  # the alias
        (["resume", "alpha/sleepy"], "resumed alpha/sleepy (running)"),
        (["stop", "alpha/web"], "stopped alpha/web (shutoff)"),
    ],
)
def test_each_power_verb(lab: Path, argv: list[str], line: str) -> None:
    r = ck(lab, *argv)
    assert (r.code, r.out) == (0, line + "\n"), r.err


def test_stop_reports_each_stage_on_stderr(lab: Path) -> None:
    """The test driver's guests obey ACPI at once: one stage, then stopped."""
    r = ck(lab, "stop", "alpha/web", "--acpi-wait", "42")
    assert r.code == 0, r.err
    lines = r.err.splitlines()
    assert lines[0] == "alpha/web: ACPI shutdown sent, waiting up to 42 s"
    assert lines[1].startswith("alpha/web: shut off after ACPI shutdown ("), lines
    assert r.out == "stopped alpha/web (shutoff)\n"


def test_stop_force_and_acpi_only(lab: Path) -> None:
    r = ck(lab, "stop", "alpha/web", "--force", "--json")
    assert r.code == 0, r.err
    assert r.err == "alpha/web: forcing off (--force)\n"
    doc = r.json()
    assert (doc["result"], doc["state"], doc["stages"]) == ("done", "shutoff", ["destroy"])
    r = ck(lab, "stop", "alpha/web", "--acpi-only", "--acpi-wait", "30", "--json")
    assert r.code == 0, r.err
    assert r.json()["stages"] == ["acpi", "stopped"]
    r = ck(lab, "stop", "alpha/web", "--force", "--acpi-only")
    assert r.code == 2 and "not allowed with argument" in r.err
    r = ck(lab, "stop", "alpha/web", "--acpi-wait", "-1")
    assert r.code == 2 and "0 or more" in r.err


def test_bare_names_ambiguous_names_and_several_targets(lab: Path) -> None:
    r = ck(lab, "start", "off")  # unique in the fleet
    assert (r.code, r.out) == (0, "started alpha/off (running)\n"), r.err
    r = ck(lab, "start", "twin")  # on both hosts: refused, naming both
    assert r.code == 4 and r.out == ""
    assert "'twin' is ambiguous: alpha/twin, beta/twin; name it as HOST/VM" in r.err
    r = ck(lab, "pause", "alpha/web", "beta/twin", "db")
    assert r.code == 0, r.err
    assert sorted(r.out.splitlines()) == [
        "paused alpha/web (paused)",
        "paused beta/db (paused)",
        "paused beta/twin (paused)",
    ]
    r = ck(lab, "start", "alpha/nope")
    assert (r.code, r.out) == (4, "") and "no VM named 'nope' on alpha" in r.err
    r = ck(lab, "start", "gamma/x")
    assert r.code == 2 and "no host named gamma" in r.err, r.err
    r = ck(lab, "start")
    assert r.code == 2 and "name a TARGET (HOST/VM or a VM name) or --filter EXPR" in r.err


def test_filter_selects_the_targets(lab: Path) -> None:
    r = ck(lab, "destroy", "--filter", "state:running host:beta", "--json")
    assert r.code == 0, r.err
    docs = [json.loads(line) for line in r.out.splitlines()]
    assert sorted((d["host"], d["name"], d["state"]) for d in docs) == [
        ("beta", "db", "shutoff"),
        ("beta", "twin", "shutoff"),
    ]
    # The global --filter, typed before the verb, works the same.
    r = ck(lab, "--filter", "state:paused", "resume")
    assert (r.code, r.out) == (0, "resumed alpha/sleepy (running)\n"), r.err
    r = ck(lab, "start", "--filter", "nothing-like-this")
    assert r.code == 4 and "no VM matches --filter" in r.err
    r = ck(lab, "start", "--filter", "bogus:1")
    assert r.code == 2 and "unknown filter key 'bogus'" in r.err


def test_someone_elses_reserved_vm_is_refused_unless_said(lab: Path) -> None:
    r = ck(lab, "stop", "alpha/held", "alpha/web")
    assert (r.code, r.out) == (5, ""), r.err
    assert "alpha/held is reserved by alice until 2099-01-01 00:00 UTC, 'busy'" in r.err
    assert "pass --confirm-name held (or --yes for all) to stop anyway" in r.err
    assert "alpha/web" not in r.err.replace("alpha/held", "")  # nothing was done to web either
    r = ck(lab, "stop", "alpha/held", "alpha/web", "--json")
    assert r.code == 5
    refused = {d["name"]: d for d in map(json.loads, r.out.splitlines())}
    assert refused["held"]["result"] == "refused" and "alice" in refused["held"]["error"]
    assert refused["held"]["state"] == "running"
    r = ck(lab, "reset", "alpha/held", "--confirm-name", "held")
    assert (r.code, r.out) == (0, "reset alpha/held (running)\n"), r.err
    r = ck(lab, "pause", "held", "--yes")
    assert (r.code, r.out) == (0, "paused alpha/held (paused)\n"), r.err
    r = ck(lab, "pause", "held", user="alice")  # her own
    assert r.code == 0, r.err
    r = ck(lab, "start", "lapsed")  # an expired reservation holds nothing
    assert r.code == 0, r.err


def test_json_shape_and_failures(lab: Path) -> None:
    r = ck(lab, "start", "alpha/web", "alpha/off", "--json")
    assert r.code == 1  # one failed
    docs = {d["name"]: d for d in map(json.loads, r.out.splitlines())}
    assert docs["off"] == {
        "host": "alpha",
        "name": "off",
        "action": "start",
        "result": "done",
        "state": "running",
        "error": None,
    }
    assert docs["web"]["result"] == "failed" and docs["web"]["state"] == "running"
    assert "start alpha/web: " in docs["web"]["error"] and "already running" in docs["web"]["error"]
    r = ck(lab, "--json", "stop", "alpha/web")  # the global --json
    assert r.code == 0, r.err
    assert set(r.json()) == {"host", "name", "action", "result", "state", "error", "stages"}


def test_read_only_refuses(lab: Path) -> None:
    r = ck(lab, "--readonly", "start", "alpha/off")
    assert (r.code, r.out) == (6, ""), r.err
    assert "alpha is read-only: cannot start alpha/off" in r.err
    config = lab.read_text() + "readonly: true\n"
    lab.write_text(config)
    r = ck(lab, "stop", "alpha/web", "--json")
    assert r.code == 6
    assert r.json()["error"] == "alpha is read-only: cannot stop alpha/web"
