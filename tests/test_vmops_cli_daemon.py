"""``catkeeper create|snapshot|rename|clone|delete`` end to end against a real libvirtd: the
installed ``catkeeper`` script, each command its own process (tests/cli_support.py), and
every effect checked on libvirt through a connection of the test's own."""

from __future__ import annotations

from pathlib import Path

import libvirt
import pytest

from catkeeper.backend.reservations import metadata
from catkeeper.model import Reservation
from tests.cli_support import Result, run_catkeeper
from tests.daemons import LibvirtDaemon, unique_domain_name
from tests.vmops_support import HOST, Lab, lab_fixture  # noqa: F401 - the lab fixture

pytestmark = pytest.mark.daemon

# The documented exit codes (README, cli.common.Exit), spelled out on purpose.
EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_HELD = 1, 2, 4, 5


@pytest.fixture
def config(libvirtd: LibvirtDaemon, tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"hosts:\n  - name: {HOST}\n    uri: {libvirtd.uri}\n"
        "timing:\n  connect_timeout: 10\n  call_timeout: 30\n  refresh_interval: 0\n"
    )
    return path


def cli(config: Path, *argv: str) -> Result:
    """``catkeeper --config CONFIG ARGV…``, no terminal on stdin."""
    return run_catkeeper("--config", str(config), *argv, cwd=config.parent)


def state(lab: Lab, name: str) -> int:
    return int(lab.conn.lookupByName(name).info()[0])


def snapshot_names(lab: Lab, name: str) -> list[str]:
    return sorted(lab.conn.lookupByName(name).snapshotListNames())


def gone(lab: Lab, name: str) -> bool:
    try:
        lab.conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        assert exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN, exc
        return True
    return False


def test_cli_round_trip(config: Path, lab: Lab) -> None:
    image = lab.image("base.qcow2")
    name, copy, renamed = unique_domain_name(), unique_domain_name(), unique_domain_name()
    for n in (name, copy, renamed):
        lab.track(n)
    common = ["--pool", lab.pool_name, "--network", "none", "--type", "qemu", "--memory", "64M"]

    # create: a shut-off domain on an overlay volume of the image.
    r = cli(config, "create", f"{HOST}/{name}", "--image", image, "--no-start", *common, "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["ref"] == f"{HOST}/{name}" and doc["vm"]["state"] == "shutoff"
    assert doc["volumes"] == [str(lab.dir / f"{name}.qcow2")]
    assert state(lab, name) == libvirt.VIR_DOMAIN_SHUTOFF
    assert doc["uuid"] == lab.conn.lookupByName(name).UUIDString()
    assert lab.volumes() == {"base.qcow2", f"{name}.qcow2"}

    # snapshot create | list | revert | delete
    r = cli(config, "snapshot", "create", f"{HOST}/{name}", "first", "-d", "clean")
    assert (r.code, r.out) == (0, f"took snapshot first of {HOST}/{name}\n"), r.err
    r = cli(config, "snapshot", "create", f"{HOST}/{name}", "second")
    assert r.code == 0, r.err
    assert snapshot_names(lab, name) == ["first", "second"]
    assert lab.conn.lookupByName(name).snapshotCurrent().getName() == "second"
    r = cli(config, "snapshot", "list", f"{HOST}/{name}", "--json")
    assert r.code == 0, r.err
    listed = {s["name"]: s for s in r.json()}
    assert {n: (s["description"], s["current"]) for n, s in listed.items()} == {
        "first": ("clean", False),
        "second": ("", True),
    }
    r = cli(config, "snapshot", "list", f"{HOST}/{name}")
    assert [line.split()[:2] for line in r.out.splitlines()] == [
        ["first", "shutoff"],
        ["*", "second"],
    ]

    # No terminal to ask on and no --yes: refused, nothing changed.
    r = cli(config, "snapshot", "revert", f"{HOST}/{name}", "first")
    assert r.code == EXIT_USAGE and "not confirmed (no terminal to ask on; pass --yes)" in r.err
    assert lab.conn.lookupByName(name).snapshotCurrent().getName() == "second"
    r = cli(config, "snapshot", "revert", f"{HOST}/{name}", "first", "--yes")
    assert (r.code, r.out) == (0, f"reverted {HOST}/{name} to first\n"), r.err
    assert lab.conn.lookupByName(name).snapshotCurrent().getName() == "first"

    r = cli(config, "snapshot", "delete", f"{HOST}/{name}", "second", "--yes", "--json")
    assert r.code == 0 and r.json() == {"ref": f"{HOST}/{name}", "deleted": "second"}, r.err
    assert snapshot_names(lab, name) == ["first"]
    r = cli(config, "snapshot", "delete", f"{HOST}/{name}", "first", "--yes")
    assert (r.code, r.out) == (0, "deleted snapshot first\n"), r.err
    assert snapshot_names(lab, name) == []

    # clone: a second domain with its own volume; the original is untouched.
    r = cli(config, "clone", f"{HOST}/{name}", copy, "--json")
    assert r.code == 0, r.err
    assert r.json()["name"] == copy
    assert r.json()["uuid"] == lab.conn.lookupByName(copy).UUIDString()
    assert r.json()["uuid"] != lab.conn.lookupByName(name).UUIDString()
    assert state(lab, copy) == libvirt.VIR_DOMAIN_SHUTOFF
    assert lab.volumes() == {"base.qcow2", f"{name}.qcow2", f"{copy}-vda.qcow2"}

    # rename: the same domain (UUID) under its new name only.
    uuid = lab.conn.lookupByName(copy).UUIDString()
    r = cli(config, "rename", f"{HOST}/{copy}", renamed)
    assert (r.code, r.out) == (0, f"renamed {HOST}/{copy} to {renamed}\n"), r.err
    assert gone(lab, copy)
    assert lab.conn.lookupByName(renamed).UUIDString() == uuid

    # A VM reserved by someone else: --yes is not enough, its name must be typed.
    lab.conn.lookupByName(renamed).setMetadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT,
        metadata.to_string(Reservation(owner="someone-else", note="busy")),
        metadata.PREFIX,
        metadata.NAMESPACE,
        libvirt.VIR_DOMAIN_AFFECT_CONFIG,
    )
    r = cli(config, "delete", f"{HOST}/{renamed}", "--storage", "--yes")
    assert r.code == EXIT_HELD
    assert f"{HOST}/{renamed} is reserved by someone-else (no end), 'busy'" in r.err
    assert f"pass --confirm-name {renamed} to delete anyway" in r.err
    assert not gone(lab, renamed)
    # Clone asks the same (the holder rule of the command table), and --yes answers it.
    lab.track(f"{renamed}-c")
    r = cli(config, "clone", f"{HOST}/{renamed}", f"{renamed}-c", "--overlay")
    assert (r.code, r.out) == (EXIT_HELD, ""), r.err
    assert gone(lab, f"{renamed}-c")
    r = cli(config, "clone", f"{HOST}/{renamed}", f"{renamed}-c", "--overlay", "--yes")
    assert r.code == 0, r.err
    assert not gone(lab, f"{renamed}-c")
    r = cli(config, "delete", f"{renamed}-c", "--storage", "--yes")  # a bare name; not reserved
    assert r.code == 0 and gone(lab, f"{renamed}-c"), r.err
    r = cli(config, "delete", f"{HOST}/{renamed}", "--storage", "--confirm-name", renamed, "--json")
    assert r.code == 0, r.err
    assert r.json()["removed_volumes"] == [str(lab.dir / f"{copy}-vda.qcow2")]
    assert gone(lab, renamed)
    assert lab.volumes() == {"base.qcow2", f"{name}.qcow2"}

    # delete without --storage keeps the volume, and says so.
    r = cli(config, "delete", f"{HOST}/{name}", "--yes")
    assert r.code == 0, r.err
    assert r.out.splitlines() == [f"deleted {HOST}/{name}", f"  kept {lab.dir / f'{name}.qcow2'}"]
    assert gone(lab, name)
    assert lab.volumes() == {"base.qcow2", f"{name}.qcow2"}


def test_cli_usage_and_failures(config: Path, lab: Lab) -> None:
    """Exit codes and messages on stderr; nothing is created or changed."""
    image = lab.image("base.qcow2")
    dom = lab.domain()
    name = dom.name()
    common = ["--pool", lab.pool_name, "--network", "none", "--type", "qemu", "--memory", "64M"]

    r = cli(config, "rename", f"{HOST}/{name}", "bad name")
    assert r.code == EXIT_FAILED and "is not valid" in r.err
    assert not gone(lab, name)
    r = cli(config, "delete", f"{HOST}/ckt-nope", "--yes")
    assert r.code == EXIT_NOT_FOUND and "no VM named 'ckt-nope'" in r.err
    r = cli(config, "delete", f"nohost/{name}", "--yes")
    assert r.code == EXIT_USAGE and "nohost" in r.err
    assert not gone(lab, name)
    r = cli(config, "delete", f"{HOST}/{name}")  # no --yes, and no terminal to ask on
    assert r.code == EXIT_USAGE and "pass --yes" in r.err
    assert not gone(lab, name)
    lab.track(f"{name}-2")
    r = cli(config, "create", f"{HOST}/{name}-2", "--image", image, "--vcpus", "0", *common)
    assert r.code == EXIT_USAGE and "vCPUs must be" in r.err
    assert gone(lab, f"{name}-2") and lab.volumes() == {"base.qcow2"}
    r = cli(config, "create", f"{HOST}/{name}-2", *common)  # no source given
    assert r.code == EXIT_USAGE and "one of the arguments --image" in r.err
    assert r.out == ""
