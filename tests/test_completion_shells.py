"""``catkeeper completion zsh|fish`` run in the real shells: verbs, options and host names.

bash is driven in tests/test_commands.py. zsh runs interactively on a pty (``zpty``) with
compinit and the generated ``_catkeeper`` on its fpath (tests/completion_probe.zsh); fish
answers ``complete -C LINE`` itself. Host names come from the ``--config`` typed on the line,
which the shells must find even after the verb (zsh's ``_arguments`` cuts ``$words`` there).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cli_support import CATKEEPER, cli_env, run_catkeeper, write_config
from tests.environment import require_tools

PROBE = Path(__file__).with_name("completion_probe.zsh")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "config.yaml",
        {"lab-one": "test:///nonexistent/a.xml", "lab-two": "test:///nonexistent/b.xml"},
    )


def _shell(argv: list[str], cwd: Path) -> list[str]:
    env = cli_env(cwd / "state")
    env["PATH"] = f"{CATKEEPER.parent}:{env.get('PATH', '/usr/bin:/bin')}"
    proc = subprocess.run(
        argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


def _script(shell: str, where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    r = run_catkeeper("completion", shell, cwd=where)
    assert r.code == 0, r.err
    path = where / {"zsh": "_catkeeper", "fish": "catkeeper.fish"}[shell]
    path.write_text(r.out)
    return path


def test_zsh_completes_verbs_options_and_hosts(config: Path, tmp_path: Path) -> None:
    require_tools("zsh", root=False)
    fpath = _script("zsh", tmp_path / "fpath").parent

    def complete(line: str) -> list[str]:
        return sorted(_shell(["zsh", "-f", str(PROBE), str(fpath), line], tmp_path))

    assert complete("catkeeper st") == ["start", "stop"]
    assert complete("catkeeper stop --a") == ["--acpi-only", "--acpi-wait"]
    c = str(config)
    assert complete(f"catkeeper --config {c} stop lab") == ["lab-one", "lab-two"]
    assert complete(f"catkeeper --config '{c}' scan lab-o") == ["lab-one"]
    assert complete(f"catkeeper --config {c} --host lab-t") == ["lab-two"]


def test_fish_completes_verbs_options_and_hosts(config: Path, tmp_path: Path) -> None:
    require_tools("fish", root=False)
    script = _script("fish", tmp_path)

    def complete(line: str) -> list[str]:
        # fish prints "match<TAB>description"; the match is what the user gets.
        out = _shell(
            ["fish", "--no-config", "-c", f"source {script}; complete -C {line!r}"], tmp_path
        )
        return sorted(entry.split("\t")[0] for entry in out)

    assert complete("catkeeper st") == ["start", "stop"]
    assert complete("catkeeper stop --a") == ["--acpi-only", "--acpi-wait"]
    c = str(config)
    assert complete(f"catkeeper --config {c} stop lab") == ["lab-one/", "lab-two/"]
    assert complete(f"catkeeper --config {c} scan lab-o") == ["lab-one"]
    assert complete(f"catkeeper --config {c} --host lab-t") == ["lab-two"]
