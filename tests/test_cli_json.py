"""The real ``catkeeper`` command in --json mode: output, schema, exit codes, bounds."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import catkeeper
from catkeeper.demo.fleetgen import write_fleet

SCHEMA = json.loads((Path(catkeeper.__file__).parent / "fleet.schema.json").read_text())


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "CATKEEPER_CONFIG": "", "XDG_CONFIG_HOME": "/nonexistent"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "catkeeper", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )


def test_demo_fleet_json_matches_the_documented_schema(tmp_path: Path) -> None:
    proc = run("--json", "--log", str(tmp_path / "log"))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    jsonschema.validate(doc, SCHEMA)
    assert doc["config"] == "<demo>"
    assert {h["name"] for h in doc["hosts"]} == {"lab1", "lab2", "build3", "gpu4"}
    assert all(h["state"] == "up" for h in doc["hosts"])
    assert len(doc["vms"]) == sum(h["vm_count"] for h in doc["hosts"]) >= 50
    # The demo has VNC passwords; only their presence may show.
    assert any(g["has_password"] for vm in doc["vms"] for g in vm["graphics"])
    assert "passwd" not in proc.stdout


def _write_config(tmp_path: Path, hosts: list[tuple[str, str]], extra: str = "") -> Path:
    lines = ["hosts:"]
    for name, uri in hosts:
        lines += [f"  - name: {name}", f"    uri: {uri}"]
    path = tmp_path / "config.yaml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def _hung_listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)  # the kernel completes handshakes; nobody ever answers
    return sock


def test_unreachable_host_exit_3_others_listed_within_timeout(tmp_path: Path) -> None:
    paths = write_fleet(tmp_path, hosts=2, vms_per_host=10, seed=2)
    hung = _hung_listener()
    try:
        config = _write_config(
            tmp_path,
            [(p.stem, f"test://{p}") for p in paths]
            + [("hung", f"qemu+tcp://127.0.0.1:{hung.getsockname()[1]}/system")],
            # Without --timeout the hung host would hold the run for 300 + 300 s.
            extra="timing:\n  connect_timeout: 300\n  call_timeout: 300\n",
        )
        started = time.monotonic()
        proc = run("--config", str(config), "--json", "--timeout", "2")
        elapsed = time.monotonic() - started
    finally:
        hung.close()
    assert proc.returncode == 3, proc.stderr
    assert elapsed < 60  # --timeout 2 ended it (~3.5 s here), not the 300 s connect timeout
    doc = json.loads(proc.stdout)
    jsonschema.validate(doc, SCHEMA)
    hosts = {h["name"]: h for h in doc["hosts"]}
    assert hosts["hung"]["state"] == "unreachable"
    assert hosts["hung"]["error"]
    assert len(doc["vms"]) == 20


def test_host_option_limits_hosts(tmp_path: Path) -> None:
    proc = run("--demo", "--json", "--host", "gpu4", "--host", "lab2")
    assert proc.returncode == 0
    doc = json.loads(proc.stdout)
    assert [h["name"] for h in doc["hosts"]] == ["lab2", "gpu4"] or {
        h["name"] for h in doc["hosts"]
    } == {"lab2", "gpu4"}
    assert {vm["host"] for vm in doc["vms"]} == {"lab2", "gpu4"}


def test_unknown_host_option_is_a_usage_error() -> None:
    proc = run("--demo", "--json", "--host", "nope")
    assert proc.returncode == 2
    assert "no host named nope" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("hosts:\n  - name: a\n    uri: lab1\n", ":3: hosts[0].uri"),
        ("hosts:\n  - name: a\n    uri: test:///x\n    colour: red\n", ":4: hosts[0].colour"),
        ("hosts: [\n", ":2"),
    ],
)
def test_config_errors_exit_2_with_file_and_line(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    proc = run("--config", str(path), "--json")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert f"{path}{where}" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_config_from_environment(tmp_path: Path) -> None:
    (path,) = write_fleet(tmp_path, hosts=1, vms_per_host=3, seed=9)
    config = _write_config(tmp_path, [("envhost", f"test://{path}")])
    proc = run("--json", env={"CATKEEPER_CONFIG": str(config)})
    doc: dict[str, Any] = json.loads(proc.stdout)
    assert [h["name"] for h in doc["hosts"]] == ["envhost"]
    assert doc["config"] == str(config)


def test_log_goes_to_the_file_not_the_terminal(tmp_path: Path) -> None:
    log = tmp_path / "state" / "catkeeper" / "catkeeper.log"
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))
    port = refused.getsockname()[1]
    refused.close()
    config = _write_config(tmp_path, [("down", f"qemu+tcp://127.0.0.1:{port}/system")])
    proc = run(
        "--config",
        str(config),
        "--json",
        "--timeout",
        "2",
        "-v",
        env={"XDG_STATE_HOME": str(tmp_path / "state")},
    )
    assert proc.returncode == 3
    assert proc.stderr == ""
    assert "down" in log.read_text()


def test_ips_option_adds_libvirt_addresses_with_source(tmp_path: Path) -> None:
    without = json.loads(run("--demo", "--json").stdout)
    assert all(vm["ips"] == [] for vm in without["vms"])
    proc = run("--demo", "--json", "--ips")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    jsonschema.validate(doc, SCHEMA)
    with_ips = [vm for vm in doc["vms"] if vm["ips"]]
    # The test driver invents addresses for running guests on its 'default' network.
    assert with_ips and all(vm["state"] in ("running", "paused") for vm in with_ips)
    for vm in with_ips:
        macs = {n["mac"] for n in vm["nics"]}
        for sighting in vm["ips"]:
            assert sighting["mac"] in macs
            assert sighting["source"] in ("agent", "lease", "arp")
            assert sighting["seen_at"] >= doc["generated_at"] - 60
