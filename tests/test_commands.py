"""The CLI face of the command table, through the installed script: every CLI verb of the
table is listed by ``catkeeper --help`` and wired to a module that parses and runs it; the
README's key and command tables are the generated ones; the exit codes the README lists are
the ones the code has; ``catkeeper completion`` completes verbs, options and host names in a
real bash.
"""

from __future__ import annotations

import importlib
import re
import subprocess
from pathlib import Path

import pytest

from catkeeper.cli.common import Exit
from catkeeper.commands import Face, reaching
from catkeeper.commands.markdown import markdown_commands, markdown_keys
from tests.cli_support import (
    CATKEEPER,
    REPO,
    cli_env,
    imported_top_levels,
    run_catkeeper,
    write_config,
)
from tests.test_cli_verbs import verbs_of

README = REPO / "README.md"
CLI_COMMANDS = list(reaching(Face.CLI))


def test_help_lists_every_cli_verb_of_the_table_in_order(tmp_path: Path) -> None:
    r = run_catkeeper("--help", cwd=tmp_path)
    assert r.code == 0, r.err
    assert verbs_of(r.out) == [c.name for c in CLI_COMMANDS]
    for command in CLI_COMMANDS:  # aliases are shown next to the name
        if command.aliases:
            assert f"{command.name} ({', '.join(command.aliases)})" in r.out


@pytest.mark.parametrize("command", CLI_COMMANDS, ids=lambda c: c.name)
def test_each_verb_is_wired_to_its_module(tmp_path: Path, command: object) -> None:
    """The verb's module (``Command.cli``) has both halves, and the script parses the verb
    and each alias: ``VERB --help`` is its own usage, not the main parser's error."""
    from catkeeper.commands import Command

    assert isinstance(command, Command)
    module = importlib.import_module(command.cli)
    assert callable(module.add_arguments) and callable(module.run), command.cli
    for name in command.names:
        r = run_catkeeper(name, "--help", cwd=tmp_path)
        assert r.code == 0, r.err
        assert r.out.startswith(f"usage: catkeeper {command.name} "), r.out  # alias: the name
        assert command.help in " ".join(r.out.split()), r.out


def _between(text: str, name: str) -> str:
    match = re.search(rf"<!-- {name}:begin -->\n(.*?)\n<!-- {name}:end -->", text, re.DOTALL)
    assert match, f"README.md has no <!-- {name}:begin/end --> markers"
    return match.group(1)


def test_readme_tables_are_the_generated_ones() -> None:
    text = README.read_text()
    assert _between(text, "keys") == markdown_keys(), (
        "README's key table is stale: paste `python -m catkeeper.commands --markdown`"
    )
    assert _between(text, "commands") == markdown_commands(), (
        "README's command table is stale: paste `python -m catkeeper.commands --markdown`"
    )


def test_readme_lists_every_exit_code() -> None:
    section = README.read_text().split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    listed = [int(m) for m in re.findall(r"^\| (\d+) \|", section, re.MULTILINE)]
    assert listed == sorted(int(e) for e in Exit)


def test_readme_opens_with_the_two_setup_commands() -> None:
    block = README.read_text().split("```sh\n", 1)[1].split("```", 1)[0]
    assert [line.split()[0] for line in block.splitlines()] == ["scripts/demo", "scripts/test"]


# ---------------------------------------------------------------------------------------
# Shell completion


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "config.yaml",
        {"lab-one": "test:///nonexistent/a.xml", "lab-two": "test:///nonexistent/b.xml"},
    )


def _complete(script: Path, *words: str, cwd: Path) -> list[str]:
    """What bash completes for the last of ``words`` (the line as typed so far)."""
    driver = (
        f'source "{script}"\n'
        'COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}\n'
        "COMPREPLY=(); _shtab_catkeeper\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = cli_env(cwd / "state")
    env["PATH"] = f"{CATKEEPER.parent}:{env.get('PATH', '/usr/bin:/bin')}"
    proc = subprocess.run(
        ["bash", "-c", driver, "bash", *words],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


def test_bash_completion_of_verbs_options_and_hosts(config: Path, tmp_path: Path) -> None:
    r = run_catkeeper("completion", "bash", cwd=tmp_path)
    assert r.code == 0, r.err
    script = tmp_path / "catkeeper.bash"
    script.write_text(r.out)
    assert _complete(script, "catkeeper", "st", cwd=tmp_path) == ["start", "stop"]
    assert _complete(script, "catkeeper", "re", cwd=tmp_path) == [
        "reboot",
        "reset",
        "resume",
        "reserve",
        "release",
        "reservations",
        "rename",
    ]
    options = _complete(script, "catkeeper", "stop", "--a", cwd=tmp_path)
    assert options == ["--acpi-only", "--acpi-wait"]
    c = str(config)
    assert _complete(script, "catkeeper", "--config", c, "stop", "lab", cwd=tmp_path) == [
        "lab-one/",
        "lab-two/",
    ]
    assert _complete(script, "catkeeper", "--config", c, "--host", "lab-t", cwd=tmp_path) == [
        "lab-two"
    ]
    assert _complete(script, "catkeeper", "--config", c, "scan", "lab-o", cwd=tmp_path) == [
        "lab-one"
    ]


def test_list_hosts_reads_the_configuration_without_connecting(config: Path) -> None:
    r = run_catkeeper("--config", str(config), "--list-hosts", cwd=config.parent)
    assert (r.code, r.out) == (0, "lab-one\nlab-two\n"), r.err


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_carry_verbs_and_the_host_lookup(tmp_path: Path, shell: str) -> None:
    """Every verb is in the script (tests/test_completion_shells.py runs them in the shells)."""
    r = run_catkeeper("completion", shell, cwd=tmp_path)
    assert r.code == 0, r.err
    for command in CLI_COMMANDS:
        assert command.name in r.out
    assert "--list-hosts" in r.out and "--acpi-wait" in r.out
    r = run_catkeeper("completion", "tcsh", cwd=tmp_path)
    assert r.code == 2 and "invalid choice: 'tcsh'" in r.err


@pytest.mark.parametrize(
    "argv",
    [["start", "off"], ["stop", "alpha/web", "--json"], ["completion", "bash"]],
    ids=lambda a: a[0],
)
def test_verbs_load_no_ui_modules(tmp_path: Path, argv: list[str]) -> None:
    """A verb (the installed script, end to end) never imports textual or rich."""
    from tests.tui_support import RUNNING, SHUTOFF, Dom, node_file

    node = node_file(tmp_path, "alpha", (Dom("web", RUNNING), Dom("off", SHUTOFF)))
    config = write_config(tmp_path / "config.yaml", {"alpha": f"test://{node}"})
    env = cli_env(tmp_path / "state", extra={"PYTHONPROFILEIMPORTTIME": "1"})
    r = run_catkeeper("--config", str(config), *argv, cwd=tmp_path, env=env)
    assert r.code == 0, r.err
    imported = imported_top_levels(r.err)
    assert "catkeeper" in imported  # the probe sees the run's imports
    assert not imported & {"textual", "rich"}, argv
