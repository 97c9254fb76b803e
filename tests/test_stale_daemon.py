"""Stale-reservation evidence on the real libvirtd: a file-backed volume in a dir pool whose
mtime the test sets in the past (``touch -d``, then a pool refresh), a running idle guest,
and ``catkeeper reservations --stale`` through the real binary."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from catkeeper.backend.fleet import Fleet
from catkeeper.backend.stale import IDLE, OFF, Staleness, read_disk_times
from catkeeper.config import StaleSettings, Timing
from tests.cli_support import run_catkeeper
from tests.daemons import DomainFactory, tcg_domain_xml, unique_domain_name
from tests.fleet_helpers import fleet_config

pytestmark = pytest.mark.daemon

OLD = 1_000_000_000  # 2001-09-09T01:46:40Z
DAY = 86400.0
NS = "https://catkeeper.dev/xmlns/reservation/1"
RESERVED_SINCE_2001 = (
    "<reservation><owner>alice</owner><note>bisecting</note>"
    "<since>2001-01-01T00:00:00Z</since></reservation>"
)


@pytest.fixture
def old_volume(tcg_domain: DomainFactory, tmp_path: Path) -> Iterator[str]:
    """A 1 MiB raw volume in a fresh dir pool, last modified in 2001 as libvirt sees it."""
    conn = tcg_domain.conn
    pool_dir = tmp_path / "pool"
    pool_dir.mkdir()
    name = f"ckt-pool-{secrets.token_hex(4)}"
    pool = conn.storagePoolCreateXML(
        f"<pool type='dir'><name>{name}</name><target><path>{pool_dir}</path></target></pool>", 0
    )
    try:
        vol = pool.createXML(
            "<volume><name>disk.img</name><capacity unit='MiB'>1</capacity>"
            "<target><format type='raw'/></target></volume>",
            0,
        )
        path = vol.path()
        subprocess.run(["touch", "-d", f"@{OLD}", path], check=True)
        pool.refresh(0)
        yield path
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            pool.destroy()


def _reserved(
    factory: DomainFactory, disk: str | None = None, *, start: bool = False
) -> libvirt.virDomain:
    xml = tcg_domain_xml(unique_domain_name(), vnc=False, nic=False)
    if disk is not None:
        xml = xml.replace(
            "<devices>",
            "<devices><disk type='file' device='disk'><driver name='qemu' type='raw'/>"
            f"<source file='{disk}'/><target dev='vda' bus='virtio'/></disk>",
        )
    dom = factory.conn.defineXML(xml)
    factory.domains.append(dom)
    dom.setMetadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT,
        RESERVED_SINCE_2001,
        "catkeeper",
        NS,
        libvirt.VIR_DOMAIN_AFFECT_CONFIG,
    )
    if start:
        dom.create()
    return dom


def test_volume_mtime_comes_from_the_volume_xml(tcg_domain: DomainFactory, old_volume: str) -> None:
    dom = _reserved(tcg_domain, old_volume)
    times = read_disk_times(tcg_domain.conn, {dom.UUIDString(): [old_volume]}, local=False)
    got = times[dom.UUIDString()]
    assert got.path == old_volume and got.mtime is not None and int(got.mtime) == OLD
    # A path libvirt has no volume for, on a host that is not local: unknown.
    missing = read_disk_times(tcg_domain.conn, {"x": ["/nonexistent/disk.img"]}, local=False)
    assert missing["x"].mtime is None and missing["x"].unknown == 1


async def test_running_idle_guest_is_idle_since_its_first_idle_sample(
    tcg_domain: DomainFactory,
) -> None:
    dom = _reserved(tcg_domain, start=True)
    uuid = dom.UUIDString()
    timing = Timing(connect_timeout=10, call_timeout=15, refresh_interval=0, stats_interval=0.3)
    fleet = Fleet(fleet_config([("qemu", "qemu:///system")], timing=timing))
    staleness = Staleness(fleet.sessions, StaleSettings(), time.monotonic)
    await fleet.start()
    try:
        assert await fleet.wait_settled(20)
        session = fleet.session("qemu")
        deadline = time.monotonic() + 60
        # A guest with no OS goes idle once its firmware gives up booting (< 1 % CPU).
        while (act := session.stats.activity(uuid)) is None or act.idle_since is None:
            assert time.monotonic() < deadline, session.stats.series(uuid)
            await asyncio.sleep(0.1)
        vm = session.vms[uuid]
        assert vm.reservation is not None and vm.reservation.owner == "alice"
        now = time.time()
        ev = staleness.evidence(vm, now)
        assert ev.kind == IDLE and ev.since == act.idle_since and ev.since <= now
        assert not staleness.stale(vm, now)  # idle for seconds, not a week
        assert staleness.stale(vm, act.idle_since + 8 * DAY)  # the same evidence, a week on
    finally:
        await fleet.aclose()


def test_reservations_stale_through_the_binary(
    tcg_domain: DomainFactory, old_volume: str, tmp_path: Path
) -> None:
    old = _reserved(tcg_domain, old_volume)
    running = _reserved(tcg_domain, start=True)
    config = tmp_path / "config.yaml"
    config.write_text(
        "hosts:\n  - name: qemu\n    uri: qemu:///system\ntiming:\n  stats_interval: 0.5\n"
    )
    result = run_catkeeper(
        "--config", str(config), "reservations", "--stale", "--json", cwd=tmp_path
    )
    assert result.code == 0, result.err
    listed = {v["vm"]: v for v in result.json()}
    last_used = listed[old.name()]["last_used"]
    assert (last_used["kind"], int(last_used["since"])) == (OFF, OLD)
    assert (last_used["at_least"], last_used["detail"]) == (False, old_volume)
    assert running.name() not in listed  # running, idle for a second: not stale
    text = run_catkeeper("--config", str(config), "reservations", "--stale", cwd=tmp_path)
    assert f"qemu/{old.name()}  alice  shut off, disks last written 2001-09-09" in text.out
    # Evidence only: both are still reserved.
    every = run_catkeeper("--config", str(config), "reservations", "--json", cwd=tmp_path)
    assert {old.name(), running.name()} <= {v["vm"] for v in every.json()}
