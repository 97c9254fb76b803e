"""Small helpers for tests that build fleets from test-driver node files."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from catkeeper.config import Config, HostConfig, Timing
from catkeeper.model import VM, VmState

TEST_NS = "{http://libvirt.org/schemas/domain/test/1.0}"
_STATES = {1: "running", 3: "paused", 5: "shutoff"}


@dataclass(frozen=True)
class ExpectedVm:
    name: str
    uuid: str
    state: str
    macs: tuple[str, ...]
    vnc_ports: tuple[int, ...]


def expected_from_node(path: Path) -> dict[str, ExpectedVm]:
    """What the node file says, read independently of catkeeper's own parser."""
    out = {}
    for dom in ET.parse(path).getroot().iter("domain"):
        runstate = dom.findtext(f"{TEST_NS}runstate")
        state = _STATES.get(int(runstate), "?") if runstate else "running"
        macs = tuple(m.get("address", "").lower() for m in dom.iter("mac"))
        ports = tuple(
            int(g.get("port", "-1"))
            for g in dom.iter("graphics")
            if g.get("type") == "vnc" and int(g.get("port", "-1")) > 0
        )
        name = dom.findtext("name", "")
        out[name] = ExpectedVm(name, dom.findtext("uuid", ""), state, macs, ports)
    return out


def fleet_config(
    uris: Sequence[tuple[str, str]], *, timing: Timing | None = None, readonly: bool = False
) -> Config:
    return Config(
        hosts=tuple(HostConfig(name=n, uri=u) for n, u in uris),
        source="<test>",
        timing=timing or Timing(connect_timeout=3, call_timeout=5, refresh_interval=0),
        readonly=readonly,
    )


def plain_vm(host: str, name: str, state: VmState = VmState.RUNNING, *, uuid: str = "") -> VM:
    """A VM as the model holds it, with nothing but a name, a state and small figures."""
    return VM(
        host=host,
        name=name,
        uuid=uuid or f"{host}-{name}",
        state=state,
        vcpus=1,
        memory_kib=1024,
        max_memory_kib=1024,
        autostart=False,
        persistent=True,
    )
