"""``catkeeper stop|serial|edit`` through the installed script against the real libvirtd, on
real TCG guests: each command its own process (tests/cli_support.py), each effect checked
on libvirt through a connection of the test's own.

A guest with no OS ignores ACPI and ctrl-alt-del, so its graceful stop must escalate all
the way to force off, each stage on its own stderr line; the ACPI boot-sector guest
(tests/guest_watch.py) obeys the power button, so its stop ends after the first stage.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import libvirt
import pytest

from tests.cli_support import Result, cli_env, end, run_catkeeper, start_catkeeper
from tests.console_support import define
from tests.daemons import DomainFactory, LibvirtDaemon, tcg_domain_xml, unique_domain_name
from tests.guest_watch import acpi_guest_disk, wait_armed
from tests.test_console_daemon import serial_kernel
from tests.vmops_support import HOST, Lab, lab_fixture  # noqa: F401 - the lab fixture

pytestmark = pytest.mark.daemon

WAIT = 60.0  # bound for what takes a second or two; only a hang reaches it


@pytest.fixture
def config(libvirtd: LibvirtDaemon, tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"hosts:\n  - name: {HOST}\n    uri: {libvirtd.uri}\n"
        "timing:\n  connect_timeout: 10\n  call_timeout: 30\n  refresh_interval: 0\n"
    )
    return path


def cli(config: Path, *argv: str, extra: dict[str, str] | None = None) -> Result:
    env = cli_env(config.parent / "state", user="bob", extra=extra)
    return run_catkeeper("--config", str(config), *argv, cwd=config.parent, env=env)


def state(dom: libvirt.virDomain) -> int:
    return int(dom.state()[0])


def test_stop_escalates_on_a_guest_that_ignores_acpi(
    config: Path, tcg_domain: DomainFactory
) -> None:
    dom = tcg_domain(start=True)
    ref = f"{HOST}/{dom.name()}"
    started = time.monotonic()
    r = cli(config, "stop", ref, "--acpi-wait", "2", "--cad-wait", "1", "--json")
    took = time.monotonic() - started
    assert r.code == 0, r.err
    lines = r.err.splitlines()
    assert lines[0] == f"{ref}: ACPI shutdown sent, waiting up to 2 s", lines
    assert lines[1] == (
        f"{ref}: ctrl-alt-del sent, waiting up to 1 s (ACPI shutdown ignored for 2 s)"
    ), lines
    assert lines[2] == f"{ref}: forcing off (ctrl-alt-del ignored for 1 s)", lines
    assert lines[3].startswith(f"{ref}: forced off ("), lines
    assert len(lines) == 4, lines
    doc = r.json()
    assert doc["stages"] == ["acpi", "ctrl-alt-del", "destroy", "stopped"]
    assert (doc["result"], doc["state"], doc["error"]) == ("done", "shutoff", None)
    assert state(dom) == libvirt.VIR_DOMAIN_SHUTOFF
    assert took >= 3  # it sat through both waits before forcing


def test_stop_of_a_guest_that_obeys_acpi_ends_after_the_first_stage(config: Path, lab: Lab) -> None:
    dom = lab.domain(disk=acpi_guest_disk(lab), start=True)
    asyncio.run(wait_armed(dom))
    ref = f"{HOST}/{dom.name()}"
    r = cli(config, "stop", ref)
    assert r.code == 0, r.err
    lines = r.err.splitlines()
    assert lines[0] == f"{ref}: ACPI shutdown sent, waiting up to 60 s", lines
    assert lines[1].startswith(f"{ref}: shut off after ACPI shutdown ("), lines
    assert r.out == f"stopped {ref} (shutoff)\n"
    assert state(dom) == libvirt.VIR_DOMAIN_SHUTOFF


def test_acpi_only_never_escalates(config: Path, tcg_domain: DomainFactory) -> None:
    dom = tcg_domain(start=True)
    ref = f"{HOST}/{dom.name()}"
    r = cli(config, "stop", ref, "--acpi-only", "--acpi-wait", "1")
    assert (r.code, r.out) == (1, ""), r.err
    assert f"stop {ref}: still running 1 s after ACPI shutdown" in r.err
    assert "ctrl-alt-del" not in r.err
    assert state(dom) == libvirt.VIR_DOMAIN_RUNNING


def test_ctrl_c_cancels_the_escalation_and_leaves_the_guest_running(
    config: Path, tcg_domain: DomainFactory
) -> None:
    dom = tcg_domain(start=True)
    ref = f"{HOST}/{dom.name()}"

    async def go() -> None:
        env = cli_env(config.parent / "state", user="bob")
        proc = await start_catkeeper(
            "--config", str(config), "stop", ref, "--acpi-wait", "300", cwd=config.parent, env=env
        )
        try:
            assert proc.stderr is not None
            line = await asyncio.wait_for(proc.stderr.readline(), WAIT)
            assert line.decode() == f"{ref}: ACPI shutdown sent, waiting up to 300 s\n"
            proc.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(proc.wait(), WAIT) == 130
            rest = (await proc.stderr.read()).decode()
            assert "interrupted: cancelling" in rest
            assert f"stop of {ref} cancelled after ACPI shutdown; left as it is" in rest
        finally:
            await end(proc)

    asyncio.run(go())
    assert state(dom) == libvirt.VIR_DOMAIN_RUNNING


def test_serial_streams_until_interrupted(
    config: Path, tcg_domain: DomainFactory, tmp_path: Path
) -> None:
    kernel = serial_kernel(tmp_path / "serial.bin", b"catkeeper cli serial\r\n")
    xml = (
        tcg_domain_xml(unique_domain_name())
        .replace("hvm</type>", f"hvm</type><kernel>{kernel}</kernel>")
        .replace("<memballoon", "<serial type='pty'/><console type='pty'/><memballoon")
    )
    dom = define(tcg_domain, xml)
    ref = f"{HOST}/{dom.name()}"

    async def go() -> None:
        env = cli_env(config.parent / "state", user="bob")
        proc = await start_catkeeper(
            "--config", str(config), "serial", ref, cwd=config.parent, env=env
        )
        try:
            assert proc.stdout is not None and proc.stderr is not None
            for _ in range(2):  # the guest writes the line again and again
                out = await asyncio.wait_for(proc.stdout.readuntil(b"catkeeper cli serial"), WAIT)
                assert out.endswith(b"catkeeper cli serial")
            proc.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(proc.wait(), WAIT) == 0
            err = (await proc.stderr.read()).decode()
            assert f"serial console of {ref}; Ctrl-C leaves" in err
            assert "left the serial console" in err
        finally:
            await end(proc)

    asyncio.run(go())
    # The console was let go: another reader, without force, gets it.
    stream = dom.connect().newStream(0)
    dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_SAFE)
    stream.abort()


def test_serial_of_a_shut_off_vm_fails(config: Path, tcg_domain: DomainFactory) -> None:
    dom = tcg_domain()
    r = cli(config, "serial", f"{HOST}/{dom.name()}")
    assert (r.code, r.out) == (1, ""), r.err
    assert "serial console" in r.err


def _editor(tmp_path: Path, body: str) -> dict[str, str]:
    """$EDITOR: a small script that rewrites the file it is given (``body`` in Python)."""
    script = tmp_path / "editor.py"
    script.write_text(
        "import sys, pathlib\np = pathlib.Path(sys.argv[1])\ntext = p.read_text()\n" + body
    )
    return {"EDITOR": f"python3 {script}", "VISUAL": ""}


def test_edit_applies_a_change_and_keeps_a_refused_one(
    config: Path, tcg_domain: DomainFactory, tmp_path: Path
) -> None:
    dom = tcg_domain()
    ref = f"{HOST}/{dom.name()}"
    add = _editor(
        tmp_path,
        "p.write_text(text.replace('</name>', '</name>\\n  <description>edited</description>'))",
    )
    r = cli(config, "edit", ref, extra=add)  # no terminal: it shows the diff and asks for --yes
    assert r.code == 2 and "pass --yes" in r.err and "your edit is kept in " in r.err
    kept = Path(r.err.split("your edit is kept in ")[1].split()[0])
    assert "<description>edited</description>" in kept.read_text()
    kept.unlink()
    assert "+  <description>edited</description>" in r.out
    assert "<description>" not in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)

    r = cli(config, "edit", ref, "--yes", extra=add)
    assert r.code == 0, r.err
    assert r.out.endswith(f"{ref}: new definition applied\n")
    assert "<description>edited</description>" in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)

    before = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    bad = _editor(tmp_path, "p.write_text(text.replace('<vcpu', '<vcpu bogus=\"1\"'))")
    r = cli(config, "edit", ref, "--yes", extra=bad)
    assert (r.code, r.err.count("not applied, nothing changed")) == (1, 1), r.err
    kept = Path(r.err.split("your edit is kept in ")[1].split()[0])
    assert 'bogus="1"' in kept.read_text()
    kept.unlink()
    assert dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) == before

    same = _editor(tmp_path, "pass")
    r = cli(config, "edit", ref, extra=same)
    assert (r.code, r.out) == (0, f"{ref}: no changes\n"), r.err
