"""Small test-driver fleets for the TUI tests: every VM spelled out, so tests can name them."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from catkeeper.app import CatkeeperApp
from catkeeper.config import Config, GracefulStop, HostConfig, IpScan

# 2027-01-15 12:00 UTC: reservations below end before or after it.
FROZEN_NOW = 1_800_000_000.0
# 2026-11-23 12:00 UTC, for the demo fleet: two of its eight reservations have expired.
DEMO_NOW = 1_795_435_200.0
# No background IP scans: a test that wants addresses asks for them (or turns them on).
NO_BACKGROUND_SCANS = IpScan(libvirt_interval=0.0)
RUNNING, PAUSED, SHUTOFF = 1, 3, 5
NS = "https://catkeeper.dev/xmlns/reservation/1"


@dataclass(frozen=True)
class Dom:
    name: str
    state: int = SHUTOFF
    owner: str | None = None
    note: str = ""
    until: str | None = None  # ISO time, e.g. 2027-02-01T00:00:00Z
    vcpus: int = 1
    memory_mib: int = 512


def _domain(host: str, index: int, d: Dom) -> str:
    uid = uuidlib.uuid5(uuidlib.NAMESPACE_DNS, f"{host}.{d.name}")
    meta = ""
    if d.owner is not None:
        until = f"<ck:until>{d.until}</ck:until>" if d.until else ""
        meta = (
            f"<metadata><ck:reservation xmlns:ck='{NS}' revision='1'>"
            f"<ck:owner>{d.owner}</ck:owner><ck:note>{d.note}</ck:note>{until}"
            "</ck:reservation></metadata>"
        )
    return f"""
  <domain type='test'>
    <name>{d.name}</name>
    <uuid>{uid}</uuid>
    <memory unit='MiB'>{d.memory_mib}</memory>
    <vcpu>{d.vcpus}</vcpu>
    <os><type>hvm</type></os>
    {meta}
    <devices>
      <interface type='network'>
        <mac address='52:54:00:{index // 256:02x}:{index % 256:02x}:{len(host):02x}'/>
        <source network='default'/>
      </interface>
      <graphics type='vnc' port='{5900 + index}' autoport='no' listen='127.0.0.1'/>
    </devices>
    <test:runstate>{d.state}</test:runstate>
  </domain>"""


def node_file(directory: Path, host: str, doms: Sequence[Dom]) -> Path:
    body = "".join(_domain(host, i, d) for i, d in enumerate(doms))
    path = directory / f"{host}.xml"
    path.write_text(
        f"""<node xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>8</cores><threads>1</threads>
    <active>8</active><mhz>2000</mhz><model>x86_64</model></cpu>
  <memory unit='GiB'>64</memory>
  <network><name>default</name><forward mode='nat'/><bridge name='virbr0'/>
    <ip address='10.9.0.1' netmask='255.255.0.0'>
      <dhcp><range start='10.9.0.2' end='10.9.255.254'/></dhcp></ip></network>{body}
</node>
""",
        encoding="utf-8",
    )
    return path


ALPHA = (
    Dom(
        "web-01",
        RUNNING,
        owner="alice",
        note="bisecting kernel",
        until="2027-02-01T00:00:00Z",
        vcpus=2,
        memory_mib=2048,
    ),
    Dom("web-02", RUNNING, vcpus=4, memory_mib=4096),
    Dom(
        "db-01",
        PAUSED,
        owner="bob",
        note="load test",
        until="2026-12-01T00:00:00Z",
        vcpus=8,
        memory_mib=16384,
    ),
    Dom("build-01", SHUTOFF, vcpus=2, memory_mib=1024),
)
BETA = (
    Dom("web-03", SHUTOFF, owner="carol", note="release candidate", vcpus=2, memory_mib=2048),
    Dom("cache-01", RUNNING, vcpus=1, memory_mib=512),
    Dom(
        "ci-runner",
        RUNNING,
        owner="alice",
        note="nightly",
        until="2027-03-01T00:00:00Z",
        vcpus=4,
        memory_mib=8192,
    ),
)
UNREACHABLE_URI = "qemu+tcp://127.0.0.1:1/system"


def fleet_config(
    tmp_path: Path,
    *,
    unreachable: bool = False,
    readonly: bool = False,
    acpi_wait: float = 60.0,
    ctrl_alt_del_wait: float = 30.0,
    ipscan: IpScan = NO_BACKGROUND_SCANS,
) -> Config:
    hosts = [
        HostConfig("alpha", f"test://{node_file(tmp_path, 'alpha', ALPHA)}"),
        HostConfig("beta", f"test://{node_file(tmp_path, 'beta', BETA)}"),
    ]
    if unreachable:
        hosts.append(HostConfig("gamma", UNREACHABLE_URI))
    return Config(
        hosts=tuple(hosts),
        source=str(tmp_path / "config.yaml"),
        readonly=readonly,
        graceful_stop=GracefulStop(acpi_wait=acpi_wait, ctrl_alt_del_wait=ctrl_alt_del_wait),
        ipscan=ipscan,
    )


def make_app(config: Config, **kwargs: object) -> CatkeeperApp:
    """An app with the clock frozen and latency hidden, as snapshots need."""
    options: dict[str, object] = {
        "clock": lambda: FROZEN_NOW,
        "latency_format": lambda _ms: "1ms",
        "me": "alice",
    }
    options.update(kwargs)
    return CatkeeperApp(config, **options)  # type: ignore[arg-type]


def plain(widget: object) -> str:
    """What a Static shows, as plain text (rich renderables rendered at a wide width)."""
    from rich.console import Console
    from textual.widgets import Static

    assert isinstance(widget, Static)
    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(widget.content)
    return console.export_text()


def names(app: CatkeeperApp) -> list[str]:
    table = app.fleet_screen.table
    return [vm.name for key in table.shown_keys if (vm := table.vm(key)) is not None]


async def until(condition: object, timeout: float = 10.0, what: str = "condition") -> None:
    """Wait (letting the app run) until ``condition()`` is true; fail with ``what`` if not."""
    import asyncio
    import time
    from collections.abc import Callable

    assert callable(condition)
    check: Callable[[], object] = condition
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def state_of(app: CatkeeperApp, name: str) -> str:
    for vm in app.store.vms.values():
        if vm.name == name:
            return vm.state.value
    raise KeyError(name)


def key_of(app: CatkeeperApp, name: str) -> str:
    for key, vm in app.store.vms.items():
        if vm.name == name:
            return key
    raise KeyError(name)
