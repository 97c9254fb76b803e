"""``catkeeper hosts`` and ``catkeeper place`` through the installed script, on test-driver hosts
whose CPUs and memory each test writes into its node files, and one host that refuses.

The test driver reads ``<memory>`` of the node in KiB (a ``unit`` attribute is ignored, so the
files give KiB) and cannot tell free memory (capacity.py treats its 0 as unknown).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.cli_support import Result, run_catkeeper

RUNNING, SHUTOFF = 1, 5
GIB = 1024 * 1024  # KiB
REFUSED = "qemu+tcp://127.0.0.1:1/system"  # nothing listens on port 1: refused at once


def node(path: Path, cpus: int, gib: int, doms: list[tuple[str, int, int, int]]) -> Path:
    """A node file with ``cpus`` CPUs, ``gib`` GiB and domains (name, state, vcpus, GiB)."""
    body = "".join(
        f"""
  <domain type='test'>
    <name>{name}</name>
    <uuid>{uuid.uuid5(uuid.NAMESPACE_DNS, f"{path.stem}.{name}")}</uuid>
    <memory unit='GiB'>{mem}</memory>
    <vcpu>{vcpus}</vcpu>
    <os><type>hvm</type></os>
    <test:runstate>{state}</test:runstate>
  </domain>"""
        for name, state, vcpus, mem in doms
    )
    path.write_text(
        f"""<node xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>{cpus}</cores><threads>1</threads>
    <active>{cpus}</active><mhz>2000</mhz><model>x86_64</model></cpu>
  <memory>{gib * GIB}</memory>{body}
</node>
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    """lab1: 16 CPUs, 64 GiB, gpu; lab2: 8 CPUs, 32 GiB; lab3 refuses; lab4: 4 CPUs,
    16 GiB, gpu, nearly full."""
    lab1 = node(
        tmp_path / "lab1.xml",
        16,
        64,
        [("a", RUNNING, 4, 8), ("b", RUNNING, 8, 16), ("c", SHUTOFF, 8, 24)],
    )
    lab2 = node(tmp_path / "lab2.xml", 8, 32, [("d", RUNNING, 2, 8)])
    lab4 = node(tmp_path / "lab4.xml", 4, 16, [("e", RUNNING, 4, 12), ("f", SHUTOFF, 2, 4)])
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""hosts:
  - name: lab1
    uri: test://{lab1}
    tags: [gpu, big]
  - name: lab2
    uri: test://{lab2}
  - name: lab3
    uri: {REFUSED}
    tags: [gpu]
  - name: lab4
    uri: test://{lab4}
    tags: [gpu]
"""
    )
    return config


def ck(config: Path, *argv: str) -> Result:
    return run_catkeeper("--config", str(config), *argv, cwd=config.parent)


def test_hosts_table(fleet: Path) -> None:
    r = ck(fleet, "hosts")
    lines = r.out.splitlines()
    assert lines[:5] == [
        "HOST  STATE        CPUS  MEMORY  VCPUS RUN/ALL  MEMORY RUN/ALL  FREE  OVERCOMMIT CPU/MEM",
        "lab1  up             16  64 GiB          12/20   24 GiB/48 GiB     -           0.75/0.75",
        "lab2  up              8  32 GiB            2/2     8 GiB/8 GiB     -           0.25/0.25",
        "lab3  unreachable     -       -              -               -     -                   -",
        "lab4  up              4  16 GiB            4/6   12 GiB/16 GiB     -           1.00/1.00",
    ], r.out
    assert lines[5].startswith("lab3: ") and "127.0.0.1:1" in lines[5], r.out
    assert r.code == 3, r.err  # Exit.UNREACHABLE, after listing the others in full


def test_hosts_json_and_only_the_reachable_hosts(fleet: Path) -> None:
    r = ck(fleet, "--host", "lab1", "--host", "lab4", "hosts", "--json")
    assert r.code == 0, r.err
    lab1, lab4 = r.json()
    assert lab1 == {
        "host": "lab1",
        "state": "up",
        "error": None,
        "tags": ["gpu", "big"],
        "cpus": 16,
        "memory_kib": 64 * GIB,
        "free_memory_kib": None,
        "vms_running": 2,
        "vms_defined": 3,
        "vcpus_running": 12,
        "vcpus_defined": 20,
        "memory_running_kib": 24 * GIB,
        "memory_defined_kib": 48 * GIB,
        "cpu_overcommit": 0.75,
        "memory_overcommit": 0.75,
    }
    assert (lab4["vcpus_running"], lab4["memory_defined_kib"], lab4["cpu_overcommit"]) == (
        4,
        16 * GIB,
        1.0,
    )
    r = ck(fleet, "--json", "hosts")  # the global --json before the verb works too
    assert r.code == 3 and [h["state"] for h in r.json()] == ["up", "up", "unreachable", "up"]
    assert r.json()[2]["cpus"] is None and "127.0.0.1:1" in r.json()[2]["error"]


def test_place_ranks_the_hosts_and_says_why_the_others_do_not_fit(fleet: Path) -> None:
    r = ck(fleet, "place", "--memory", "16G", "--vcpus", "8")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[:4] == [
        "a VM of 16 GiB and 8 vCPUs fits on 2 hosts, best first:",
        "  HOST  MEMORY LEFT  FREE AFTER  CPU OVERCOMMIT",
        "  lab1       24 GiB           -            1.25",
        "  lab2        8 GiB           -            1.25",
    ], r.out
    assert lines[4] == "does not fit:"
    assert lines[5].startswith("  lab3: unreachable (") and "127.0.0.1:1" in lines[5]
    assert lines[6:] == ["  lab4: 4 GiB free after running VMs, needs 16 GiB"]
    r = ck(fleet, "place", "--memory", "2048", "--json")  # a bare number is MiB, as create
    doc = r.json()
    assert (r.code, doc["memory_kib"], doc["vcpus"]) == (0, 2 * GIB, 2)
    assert [(f["host"], f["memory_left_kib"], f["cpu_overcommit"]) for f in doc["fits"]] == [
        ("lab1", 38 * GIB, 0.88),
        ("lab2", 22 * GIB, 0.5),
        ("lab4", 2 * GIB, 1.5),
    ]
    assert [m["host"] for m in doc["misfits"]] == ["lab3"]


def test_place_fits_nowhere(fleet: Path) -> None:
    r = ck(fleet, "place", "--memory", "48G", "--vcpus", "4")
    assert r.code == 1, r.err  # Exit.FAILED: no host fits
    lines = r.out.splitlines()
    assert lines[:2] == ["a VM of 48 GiB and 4 vCPUs fits on no host", "why not:"], r.out
    assert lines[2] == "  lab1: 40 GiB free after running VMs, needs 48 GiB"
    assert lines[3] == "  lab2: 24 GiB free after running VMs, needs 48 GiB"
    assert lines[4].startswith("  lab3: unreachable (")
    assert lines[5:] == ["  lab4: 4 GiB free after running VMs, needs 48 GiB"]
    r = ck(fleet, "place", "--memory", "48G", "--json")
    assert r.code == 1 and r.json()["fits"] == []
    reasons = {m["host"]: m["reason"] for m in r.json()["misfits"]}
    assert reasons["lab1"] == "40 GiB free after running VMs, needs 48 GiB"
    assert reasons["lab3"].startswith("unreachable (")


def test_place_with_tags(fleet: Path) -> None:
    r = ck(fleet, "place", "--memory", "2G", "--tag", "gpu", "--json")
    doc = r.json()
    assert (r.code, doc["tags"]) == (0, ["gpu"]), r.err
    assert [f["host"] for f in doc["fits"]] == ["lab1", "lab4"]
    lab2, lab3 = doc["misfits"]
    assert lab2 == {"host": "lab2", "reason": "no tag gpu"}
    assert lab3["host"] == "lab3" and lab3["reason"].startswith("unreachable (")
    r = ck(fleet, "place", "--memory", "2G", "--tag", "gpu", "--tag", "big")
    assert r.code == 0, r.err
    assert "(tags gpu, big) fits on 1 host, best first:" in r.out
    assert "  lab4: no tag big" in r.out.splitlines() and "  lab2: no tags gpu, big" in r.out
    r = ck(fleet, "place", "--memory", "2G", "--tag", "nvme")
    assert r.code == 1 and "  lab1: no tag nvme" in r.out.splitlines(), r.out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--memory", "lots"], "--memory: 'lots' is not a size"),
        (["--memory", "0"], "--memory: '0': memory must be more than 0"),
        (["--memory", "1G", "--vcpus", "0"], "--vcpus: a VM needs at least 1 vCPU"),
        ([], "the following arguments are required: --memory"),
    ],
)
def test_place_usage_errors(fleet: Path, argv: list[str], message: str) -> None:
    r = ck(fleet, "place", *argv)
    assert (r.code, r.out) == (2, ""), r.err
    assert message in r.err
