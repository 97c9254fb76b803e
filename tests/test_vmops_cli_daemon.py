"""``catkeeper create|snapshot|rename|clone|delete`` end to end against a real libvirtd,
through argparse exactly as cli.py wires the commands in."""

from __future__ import annotations

import argparse
import io
import json

import libvirt
import pytest

from catkeeper import vm_cli
from catkeeper.backend import reservation_xml
from catkeeper.config import Config, HostConfig, Timing
from catkeeper.model import Reservation
from tests.daemons import LibvirtDaemon, unique_domain_name
from tests.vmops_support import HOST, Lab, lab_fixture  # noqa: F401 - the lab fixture

pytestmark = pytest.mark.daemon


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="catkeeper")
    p.add_argument("--readonly", action="store_true")
    vm_cli.add_subcommands(p.add_subparsers(dest="command"))
    return p


def cli(config: Config, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = vm_cli.run(parser().parse_args(argv), config, out=out)
    return code, out.getvalue()


@pytest.fixture
def config(libvirtd: LibvirtDaemon) -> Config:
    return Config(
        hosts=(HostConfig(name=HOST, uri=libvirtd.uri),),
        source="<test>",
        timing=Timing(connect_timeout=10, call_timeout=30, refresh_interval=0),
    )


def test_cli_round_trip(config: Config, lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    image = lab.image("base.qcow2")
    name, copy, renamed = unique_domain_name(), unique_domain_name(), unique_domain_name()
    for n in (name, copy, renamed):
        lab.track(n)
    common = ["--pool", lab.pool_name, "--network", "none", "--type", "qemu", "--memory", "64M"]

    code, out = cli(
        config, "create", f"{HOST}/{name}", "--image", image, "--no-start", *common, "--json"
    )
    assert code == 0, capsys.readouterr().err
    doc = json.loads(out)
    assert doc["ref"] == f"{HOST}/{name}" and doc["vm"]["state"] == "shutoff"
    assert doc["volumes"] == [str(lab.dir / f"{name}.qcow2")]

    code, out = cli(config, "snapshot", "create", f"{HOST}/{name}", "first", "-d", "clean")
    assert (code, out.strip()) == (0, f"took snapshot first of {HOST}/{name}")
    code, out = cli(config, "snapshot", "list", f"{HOST}/{name}", "--json")
    assert [(s["name"], s["description"]) for s in json.loads(out)] == [("first", "clean")]
    assert cli(config, "snapshot", "delete", f"{HOST}/{name}", "first", "--yes")[0] == 0

    code, out = cli(config, "clone", f"{HOST}/{name}", copy, "--json")
    assert code == 0 and json.loads(out)["name"] == copy
    assert cli(config, "rename", f"{HOST}/{copy}", renamed)[0] == 0

    # A VM reserved by someone else: --yes is not enough, its name must be typed.
    lab.conn.lookupByName(renamed).setMetadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT,
        reservation_xml.to_string(Reservation(owner="someone-else", note="busy")),
        reservation_xml.PREFIX,
        reservation_xml.NAMESPACE,
        libvirt.VIR_DOMAIN_AFFECT_CONFIG,
    )
    code, _out = cli(config, "delete", f"{HOST}/{renamed}", "--storage", "--yes")
    assert code == vm_cli.EXIT_USAGE
    assert "reserved by someone-else: pass --confirm-name" in capsys.readouterr().err
    assert lab.conn.lookupByName(renamed)
    code, out = cli(
        config, "delete", f"{HOST}/{renamed}", "--storage", "--confirm-name", renamed, "--json"
    )
    assert code == 0
    assert json.loads(out)["removed_volumes"] == [str(lab.dir / f"{copy}-vda.qcow2")]
    assert lab.volumes() == {"base.qcow2", f"{name}.qcow2"}

    # Usage and failures: exit codes, and messages on stderr.
    capsys.readouterr()
    assert cli(config, "rename", f"{HOST}/{name}", "bad name")[0] == vm_cli.EXIT_FAILED
    assert "is not valid" in capsys.readouterr().err
    assert cli(config, "delete", f"{HOST}/ckt-nope", "--yes")[0] == vm_cli.EXIT_FAILED
    assert "no VM named 'ckt-nope'" in capsys.readouterr().err
    assert cli(config, "delete", f"nohost/{name}", "--yes")[0] == vm_cli.EXIT_USAGE
    code, _ = cli(config, "create", f"{HOST}/{name}-2", "--image", image, "--vcpus", "0", *common)
    assert code == vm_cli.EXIT_USAGE and "vCPUs must be" in capsys.readouterr().err
