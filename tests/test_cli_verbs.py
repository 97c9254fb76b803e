"""Every verb of ``catkeeper --help`` through the installed script, with no daemon.

Each test writes a fresh test-driver node file (``test:///abs/path/alpha.xml``). The test
driver keeps its state inside the process that opened it, so a verb's effect is checked
through its own output and exit code here; the effects across processes are checked on the
real libvirtd in test_vmops_cli_daemon.py, test_reservations_cli.py, test_console_daemon.py
and test_ipscan_netns.py.

``test_every_verb_has_a_real_binary_test`` keeps it that way: a verb added to the parser
without a test that runs it through the script fails the suite.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import os
import pty
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.cli_support import (
    Result,
    catkeeper_argv,
    cli_env,
    end,
    run_catkeeper,
    start_catkeeper,
    write_config,
)
from tests.tui_support import RUNNING, SHUTOFF, Dom, node_file

TESTS = Path(__file__).resolve().parent
WAIT = 60.0  # bound for things that take well under a second; only a hang reaches it

DOMS = (
    Dom("web", RUNNING),
    Dom("off", SHUTOFF),
    Dom("held", SHUTOFF, owner="alice", note="busy", until="2099-01-01T00:00:00Z"),
)


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    """A config with one test-driver host, alpha, from a node file of this test's own."""
    node = node_file(tmp_path, "alpha", DOMS)
    return write_config(tmp_path / "config.yaml", {"alpha": f"test://{node}"})


def ck(config: Path, *argv: str) -> Result:
    return run_catkeeper("--config", str(config), *argv, cwd=config.parent)


# ---------------------------------------------------------------------------------------
# The verbs, one process each


def test_snapshot_verbs(lab: Path) -> None:
    r = ck(lab, "snapshot", "create", "alpha/off", "s1", "-d", "before")
    assert (r.code, r.out) == (0, "took snapshot s1 of alpha/off\n"), r.err
    r = ck(lab, "snapshot", "list", "alpha/off")
    assert (r.code, r.out) == (0, "alpha/off has no snapshots\n"), r.err  # a new process
    r = ck(lab, "snapshot", "list", "alpha/off", "--json")
    assert (r.code, r.json()) == (0, []), r.err
    for action in ("revert", "delete"):
        r = ck(lab, "snapshot", action, "alpha/off", "s1", "--yes")
        assert r.code == 1 and "no domain snapshot with matching name 's1'" in r.err, action
        r = ck(lab, "snapshot", action, "alpha/off", "s1")  # no terminal to ask on
        assert r.code == 2 and "pass --yes" in r.err, action
    r = ck(lab, "snapshot", "create", "alpha/nope")
    assert r.code == 4 and "no VM named 'nope' on alpha" in r.err  # Exit.NOT_FOUND
    r = ck(lab, "snapshot", "alpha/off")
    assert r.code == 2 and "invalid choice: 'alpha/off'" in r.err


def test_rename_clone_delete(lab: Path) -> None:
    r = ck(lab, "rename", "alpha/off", "off2")
    assert (r.code, r.out) == (0, "renamed alpha/off to off2\n"), r.err
    r = ck(lab, "rename", "alpha/off", "off2", "--json")
    assert r.code == 0 and r.json()["name"] == "off2", r.err
    r = ck(lab, "rename", "alpha/web", "web2")
    assert r.code == 1 and "web" in r.err and r.out == ""  # running: refused
    r = ck(lab, "clone", "alpha/off", "off-copy", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert (doc["host"], doc["name"], doc["state"]) == ("alpha", "off-copy", "shutoff")
    r = ck(lab, "clone", "alpha/off", "web")
    assert r.code == 1 and "web" in r.err and r.out == ""  # the name is taken
    r = ck(lab, "delete", "alpha/off", "--yes")
    assert (r.code, r.out) == (0, "deleted alpha/off\n"), r.err
    r = ck(lab, "delete", "alpha/held", "--yes")  # --yes alone never deletes someone's VM
    assert r.code == 5 and "reserved by alice until 2099-" in r.err, r.err
    assert "pass --confirm-name held to delete anyway" in r.err
    r = ck(lab, "delete", "alpha/held", "--confirm-name", "held", "--json")
    assert r.code == 0 and r.json()["ref"] == "alpha/held", r.err
    r = ck(lab, "--readonly", "delete", "alpha/off", "--yes")
    assert r.code == 6 and "read-only" in r.err  # Exit.READONLY


def test_someone_elses_vm_needs_a_yes_for_every_change(lab: Path) -> None:
    """The command table's holder rule, for rename, clone, edit and snapshots: alice holds
    ``held``; the tests run as someone else."""
    for argv in (
        ["rename", "alpha/held", "h2"],
        ["clone", "held", "h3"],
        ["edit", "alpha/held"],
        ["snapshot", "create", "alpha/held", "s1"],
        ["snapshot", "revert", "alpha/held", "s1"],
        ["snapshot", "delete", "alpha/held", "s1"],
    ):
        r = ck(lab, *argv)
        assert (r.code, r.out) == (5, ""), (argv, r.err)
        assert "alpha/held is reserved by alice until 2099-01-01 00:00 UTC, 'busy'" in r.err
    r = ck(lab, "rename", "alpha/held", "h2", "--confirm-name", "held")
    assert (r.code, r.out) == (0, "renamed alpha/held to h2\n"), r.err
    r = ck(lab, "snapshot", "revert", "alpha/held", "s1", "--yes")  # past the rule: no s1
    assert r.code == 1 and "no domain snapshot with matching name 's1'" in r.err
    r = ck(lab, "snapshot", "list", "alpha/held")  # reading is fine whoever holds it
    assert r.code == 0, r.err


def test_edit_without_a_change_changes_nothing(lab: Path, tmp_path: Path) -> None:
    env = cli_env(tmp_path / "state", extra={"EDITOR": "true", "VISUAL": ""})
    r = run_catkeeper("--config", str(lab), "edit", "off", cwd=lab.parent, env=env)
    assert (r.code, r.out) == (0, "alpha/off: no changes\n"), r.err
    env["EDITOR"] = "false"
    r = run_catkeeper("--config", str(lab), "edit", "off", cwd=lab.parent, env=env)
    assert (r.code, r.out) == (1, ""), r.err
    assert "false exited with status 1; nothing applied" in r.err
    env["EDITOR"] = "'unbalanced"
    r = run_catkeeper("--config", str(lab), "edit", "off", cwd=lab.parent, env=env)
    assert r.code == 2 and "cannot be split into a command" in r.err


def test_delete_several_and_by_filter(lab: Path) -> None:
    r = ck(lab, "delete", "--filter", "state:shutoff", "--yes")  # held is alice's
    assert (r.code, r.out) == (5, ""), r.err
    assert "pass --confirm-name held to delete anyway" in r.err
    r = ck(lab, "delete", "--filter", "state:shutoff", "--yes", "--confirm-name", "held")
    assert (r.code, r.out) == (0, "deleted alpha/held\ndeleted alpha/off\n"), r.err
    r = ck(lab, "delete", "web", "off", "--yes")  # web runs: refused; off goes all the same
    assert (r.code, r.out) == (1, "deleted alpha/off\n"), r.err
    assert "delete alpha/web: it is running; stop it first" in r.err
    r = ck(lab, "delete", "--yes")
    assert r.code == 2 and "delete: name a TARGET or --filter EXPR" in r.err


def test_edit_on_a_terminal_offers_to_edit_a_refused_text_again(lab: Path, tmp_path: Path) -> None:
    """The first edit renames the VM (refused: rename is its own verb); the user edits again,
    the editor sees the refused text (not the original) and fixes it; it is applied."""
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import sys, pathlib\n"
        "p = pathlib.Path(sys.argv[1]); text = p.read_text()\n"
        "if '<name>off</name>' in text:\n"
        "    p.write_text(text.replace('<name>off</name>', '<name>renamed</name>'))\n"
        "else:\n"
        "    p.write_text(text.replace('<name>renamed</name>',"
        " '<name>off</name><description>second try</description>'))\n"
    )
    env = cli_env(tmp_path / "state", extra={"EDITOR": f"python3 {editor}", "VISUAL": ""})
    master, slave = pty.openpty()
    os.write(master, b"y\ny\ny\n")  # apply; edit again; apply
    proc = subprocess.Popen(
        catkeeper_argv("--config", str(lab), "edit", "alpha/off"),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=lab.parent,
    )
    os.close(slave)
    seen = b""
    with contextlib.suppress(OSError):  # EIO once the last writer is gone
        while chunk := os.read(master, 65536):
            seen += chunk
    os.close(master)
    assert proc.wait(WAIT) == 0
    text = seen.decode().replace("\r\n", "\n")
    assert "+  <name>renamed</name>" in text
    assert "not applied, nothing changed: the name changed ('off' → 'renamed')" in text
    assert "Edit again? [Y/n]" in text
    assert "+  <name>off</name><description>second try</description>" in text
    assert text.rstrip().endswith("alpha/off: new definition applied")


def test_the_global_json_option_reaches_the_vm_verbs(lab: Path) -> None:
    r = ck(lab, "--json", "rename", "alpha/off", "off2")
    assert r.code == 0 and r.json()["name"] == "off2", r.err


def test_create_names_what_is_missing(lab: Path) -> None:
    """The test driver has no storage pool: create says the image is in none (the real create is in
    test_vmops_cli_daemon.py)."""
    r = ck(lab, "create", "alpha/new", "--image", "/var/lib/x.qcow2", "--no-start")
    assert r.code == 1 and "is not a volume in any active storage pool" in r.err, r.err
    assert r.out == ""
    r = ck(lab, "create", "new", "--image", "/var/lib/x.qcow2")
    assert r.code == 2 and "name it as HOST/NAME" in r.err
    r = ck(lab, "create", "beta/new", "--image", "/var/lib/x.qcow2")
    assert r.code == 2 and "beta" in r.err


def test_reserve_release_reservations(lab: Path) -> None:
    r = ck(lab, "reservations")
    assert r.code == 0, r.err
    assert [line.split()[:2] for line in r.out.splitlines()] == [
        ["VM", "OWNER"],
        ["alpha/held", "alice"],
    ]
    r = ck(lab, "reservations", "--expired")
    assert (r.code, r.out) == (0, "no reserved VMs\n"), r.err
    r = ck(lab, "reservations", "--mine", "--json")  # "me" is the login: not alice
    assert (r.code, r.json()) == (0, []), r.err
    r = ck(lab, "reserve", "alpha/off", "--note", "x", "--until", "4h", "--owner", "bob")
    assert r.code == 0 and r.out.startswith("reserved alpha/off: bob until "), r.err
    r = ck(lab, "release", "alpha/held", "--owner", "bob")
    assert r.code == 5 and "only alice can release it" in r.err


def test_vnc_print_on_a_local_host_holds_until_interrupted(lab: Path) -> None:
    async def go() -> None:
        proc = await start_catkeeper(
            "--config", str(lab), "vnc", "alpha/web", "--print", cwd=lab.parent
        )
        try:
            assert proc.stdout is not None
            out = await asyncio.wait_for(
                proc.stdout.readuntil(b"Ctrl-C closes the tunnel.\n"), WAIT
            )
            lines = out.decode().splitlines()
            assert lines[0] == "endpoint 127.0.0.1:5900"  # the node file's port for web
            assert lines[1] == "console  vnc of alpha/web: VNC on 127.0.0.1:5900"
            assert proc.returncode is None
            proc.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(proc.wait(), WAIT) == 0
        finally:
            await end(proc)

    asyncio.run(go())


@pytest.mark.parametrize(
    ("ref", "code", "message"),
    [
        ("alpha/no-such-vm", 4, "catkeeper console: no VM named 'no-such-vm' on alpha"),
        ("alpha/off", 1, "shutoff: start it"),
    ],
)
def test_console_failures(lab: Path, ref: str, code: int, message: str) -> None:
    r = ck(lab, "console", ref, "--print")
    assert (r.code, r.out) == (code, ""), r.err
    assert message in r.err


def test_scan(lab: Path) -> None:
    r = ck(lab, "--host", "alpha", "--json", "scan", "--no-sweep")  # global options first
    assert r.code == 0, r.err
    rows = {v["ref"]: v for v in r.json()["vms"]}
    assert set(rows) == {"alpha/web", "alpha/off", "alpha/held"}
    assert rows["alpha/web"]["ips"] and not rows["alpha/off"]["ips"]
    r = ck(lab, "scan", "alpha", "--no-sweep", "--json")  # HOST as a positional
    assert r.code == 0 and [h["host"] for h in r.json()["hosts"]] == ["alpha"], r.err
    r = ck(lab, "scan", "beta")
    assert r.code == 2 and "no host named beta" in r.err
    r = ck(lab, "scan", "--timeout", "0")
    assert r.code == 2 and "--timeout must be positive" in r.err


def test_no_verb_is_a_usage_error(lab: Path) -> None:
    r = ck(lab, "frobnicate")
    assert r.code == 2 and "invalid choice: 'frobnicate'" in r.err


# ---------------------------------------------------------------------------------------
# Every verb is run through the script somewhere

# The helpers that run the installed script (tests/cli_support.py and the tests' own thin
# wrappers around it); a call's string arguments name the verb it runs.
RUNNERS = {"run_catkeeper", "start_catkeeper", "catkeeper_argv", "catkeeper", "ck", "cli"}


def verbs_of(help_text: str) -> list[str]:
    """The sub-commands listed under ``positional arguments`` of an argparse --help."""
    block = help_text.split("positional arguments:", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^    (\w[\w-]*)\s", block, re.MULTILINE)


def _strings(nodes: list[ast.expr]) -> set[str]:
    return {
        n.value
        for arg in nodes
        for n in ast.walk(arg)
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


def runner_calls() -> list[tuple[str, set[str]]]:
    """(file, string arguments) of every runner call in the test files; a call inside a
    parametrized test also carries the strings of its decorators (``ck(lab, *argv)``)."""
    calls = []
    for path in sorted(TESTS.glob("test_*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            params = _strings(func.decorator_list)
            for node in ast.walk(func):
                if not isinstance(node, ast.Call):
                    continue
                f = node.func
                name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", "")
                if name in RUNNERS:
                    calls.append((path.name, _strings(node.args) | params))
    return calls


def test_every_verb_has_a_real_binary_test(tmp_path: Path) -> None:
    top = run_catkeeper("--help", cwd=tmp_path)
    assert top.code == 0, top.err
    verbs = verbs_of(top.out)
    assert {"create", "reserve", "scan", "console", "stop", "snapshot"} <= set(verbs), verbs
    snap = run_catkeeper("snapshot", "--help", cwd=tmp_path)
    actions = verbs_of(snap.out)
    assert set(actions) >= {"list", "create", "revert", "delete"}, actions
    calls = runner_calls()
    missing = [v for v in verbs if not any(v in strings for _f, strings in calls)]
    missing += [
        f"snapshot {a}"
        for a in actions
        if not any({"snapshot", a} <= strings for _f, strings in calls)
    ]
    assert missing == [], f"verbs no test runs through the installed script: {missing}"
