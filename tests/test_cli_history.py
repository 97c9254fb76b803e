"""``catkeeper history`` through the installed script, and the ring as ``virsh metadata``
reads it from a real libvirtd.

Test-driver hosts keep their state per connection, so a ring written by one process is gone
when it ends: the test-driver tests here read a ring seeded into the node file (as another
catkeeper would have left it), and the one that needs a second process to see the first
one's entries uses the real daemon.
"""

from __future__ import annotations

import json
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from catkeeper.backend import actions, audit
from catkeeper.backend.audit import ring
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.reservations import metadata as rx
from catkeeper.config import Config, HostConfig, Timing
from catkeeper.demo.fleetgen import write_fleet
from catkeeper.model import VmState
from tests.cli_support import Result, cli_env, imported_top_levels, run_catkeeper, write_config
from tests.daemons import DomainFactory

HOST = "host01"
DAY = 86400.0


def catkeeper(config: Path, *argv: str, user: str = "dave", **env: str) -> Result:
    return run_catkeeper(
        "--config",
        str(config),
        *argv,
        cwd=config.parent,
        env=cli_env(config.parent / "state", user=user, extra=env),
    )


def _utc(ts: float, today: bool) -> str:
    return time.strftime("%H:%M:%S" if today else "%Y-%m-%d %H:%M", time.gmtime(ts))


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[Path, str, list[audit.Entry]]:
    """A config whose first VM carries a ring of three entries; (config, VM name, entries)."""
    node = write_fleet(tmp_path / "fleet", 1, 4, seed=5)[0]
    now = time.time()
    entries = [
        ring.entry(now - 3 * DAY, "bob", "reserve", "for bob, 'load test'"),
        ring.entry(now - 3 * DAY + 60, "bob", "start"),
        ring.entry(now - 5, "carol", "reboot"),
    ]
    root = ET.parse(node).getroot()
    dom = root.findall("domain")[0]
    name = dom.findtext("name", "")
    metadata = dom.find("metadata")
    if metadata is None:
        metadata = ET.SubElement(dom, "metadata")
    elem = ET.fromstring(ring.to_string(entries))
    elem.tag = f"{{{ring.NAMESPACE}}}audit"
    for child in elem:
        child.tag = f"{{{ring.NAMESPACE}}}entry"
    metadata.append(elem)
    node.write_text(ET.tostring(root, encoding="unicode"))
    config = write_config(tmp_path / "config.yaml", {HOST: f"test://{node}"})
    return config, name, entries


def test_history_newest_first_with_the_date_when_not_today(
    seeded: tuple[Path, str, list[audit.Entry]],
) -> None:
    config, name, entries = seeded
    r = catkeeper(config, "history", f"{HOST}/{name}")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == f"{HOST}/{name}: 3 changes recorded on the host, newest first"
    assert lines[1].split() == ["WHEN", "WHO", "ACTION", "DETAIL"]
    newest, older, oldest = lines[2:]
    # Seconds ago is today (unless the test straddles midnight UTC: then the date is right).
    today = time.gmtime(entries[2].when)[:3] == time.gmtime()[:3]
    assert newest.split()[: 3 if today else 4] == [
        *_utc(entries[2].when, today).split(),
        "carol",
        "reboot",
    ]
    assert older.split()[:4] == [*_utc(entries[1].when, False).split(), "bob", "start"]
    assert oldest.endswith("reserve  for bob, 'load test'")
    # The columns line up: every ACTION starts where the header's does.
    starts = {
        line.index(action)
        for line, action in zip(lines[1:], ("ACTION", "reboot", "start", "reserve"), strict=True)
    }
    assert starts == {lines[1].index("ACTION")}


def test_history_json_and_read_only(seeded: tuple[Path, str, list[audit.Entry]]) -> None:
    config, name, entries = seeded
    r = catkeeper(config, "--readonly", "history", name, "--json")  # a bare unique name
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["vm"] == f"{HOST}/{name}" and doc["host"] == HOST and doc["name"] == name
    assert doc["entries"] == [e.to_json() for e in reversed(entries)]


def test_no_history_unknown_vm_and_no_ui_modules(
    seeded: tuple[Path, str, list[audit.Entry]],
) -> None:
    config, name, _ = seeded
    dump = catkeeper(config, "--json")
    other = next(v["name"] for v in dump.json()["vms"] if v["name"] != name)
    r = catkeeper(config, "history", f"{HOST}/{other}", PYTHONPROFILEIMPORTTIME="1")
    assert r.code == 0 and r.out == f"{HOST}/{other}: no changes recorded on the host\n"
    assert not imported_top_levels(r.err) & {"textual", "rich"}
    missing = catkeeper(config, "history", f"{HOST}/nosuchvm")
    assert missing.code == 4 and "no VM named 'nosuchvm'" in missing.err


def test_a_cli_action_records_who_in_the_local_log(
    seeded: tuple[Path, str, list[audit.Entry]],
) -> None:
    config, _, _ = seeded
    dump = catkeeper(config, "--json").json()
    on = next(v for v in dump["vms"] if v["state"] == "running")
    r = catkeeper(config, "pause", f"{HOST}/{on['name']}", "--yes", user="erin")
    assert r.code == 0, r.err
    assert "warning" not in r.err
    lines = (config.parent / "state" / "catkeeper" / "audit.jsonl").read_text().splitlines()
    [logged] = [json.loads(line) for line in lines]
    assert (logged["host"], logged["vm"], logged["who"], logged["action"]) == (
        HOST,
        on["name"],
        "erin",
        "pause",
    )
    assert abs(logged["when"] - time.time()) < 120


# ---- the real daemon: the ring outlives the process, and virsh reads it ----------------------

NOW = 1_900_000_000.0


def virsh_metadata(name: str, uri: str, *extra: str) -> str:
    return subprocess.run(
        ["virsh", "-c", "qemu:///system", "metadata", name, "--uri", uri, *extra],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout


async def test_virsh_reads_the_ring_bounded_at_50_and_history_across_processes(
    tmp_path: Path, tcg_domain: DomainFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    dom = tcg_domain(start=True)
    name = dom.name()
    config = write_config(tmp_path / "config.yaml", {"qemu": "qemu:///system"})
    reserved = catkeeper(config, "reserve", f"qemu/{name}", "--note", "audit test", user="bob")
    assert reserved.code == 0, reserved.err
    clock = [NOW]
    timing = Timing(connect_timeout=10, call_timeout=30, refresh_interval=0)
    fleet_cfg = Config(
        hosts=(HostConfig(name="qemu", uri="qemu:///system"),),
        source="<test>",
        timing=timing,
        owner="alice",
    )
    fleet = Fleet(fleet_cfg, clock=lambda: clock[0])
    await fleet.start()
    try:
        assert await fleet.wait_settled(20)
        session = fleet.session("qemu")
        for i in range(30):
            clock[0] = NOW + 2 * i
            await actions.suspend(fleet, session.vms[dom.UUIDString()])
            clock[0] = NOW + 2 * i + 1
            await actions.resume(fleet, session.vms[dom.UUIDString()])
        assert session.vms[dom.UUIDString()].state is VmState.RUNNING
    finally:
        await fleet.aclose()
    # What any other tool sees: 50 entries; the oldest 11 (the reservation, 10 actions) gone.
    for copy in ((), ("--config",)):
        entries = ring.from_string(virsh_metadata(name, ring.NAMESPACE, *copy))
        assert entries is not None and len(entries) == 50
        assert (entries[0].action, entries[0].when) == ("pause", NOW + 10)
        assert (entries[-1].action, entries[-1].when, entries[-1].who) == (
            "resume",
            NOW + 59,
            "alice",
        )
    # The reservation element stood beside the ring all along.
    record = rx.record_from_string(virsh_metadata(name, rx.NAMESPACE))
    assert record is not None and record.reservation is not None
    assert record.reservation.owner == "bob" and record.reservation.note == "audit test"
    # Another process reads the same ring.
    r = catkeeper(config, "history", f"qemu/{name}", "--json")
    assert r.code == 0, r.err
    got = r.json()["entries"]
    assert len(got) == 50 and got[0] == {
        "when": NOW + 59,
        "who": "alice",
        "action": "resume",
        "detail": "",
    }
    # The persistent config had every entry too, not only the running guest.
    dom.destroy()  # off: virsh now shows the persistent config's copy
    assert ring.from_string(virsh_metadata(name, ring.NAMESPACE)) == entries


def test_a_failed_audit_write_is_a_warning_and_the_action_still_succeeds(
    seeded: tuple[Path, str, list[audit.Entry]],
) -> None:
    config, _, _ = seeded
    on = next(v for v in catkeeper(config, "--json").json()["vms"] if v["state"] == "running")
    # A directory where the log file should be: the append fails, the pause does not.
    (config.parent / "state" / "catkeeper" / "audit.jsonl").mkdir(parents=True)
    r = catkeeper(config, "pause", f"{HOST}/{on['name']}", "--yes", "--json")
    assert r.code == 0, r.err
    assert r.json()["result"] == "done"
    [warning] = [line for line in r.err.splitlines() if "warning" in line]
    assert warning.startswith(f"catkeeper: warning: pause {HOST}/{on['name']} was done, but")
    assert "local audit log" in warning
