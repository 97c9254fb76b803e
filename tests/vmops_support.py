"""Fixtures for the VM-operation tests: a real libvirtd, a directory storage pool in a tmp
dir (destroyed and undefined afterwards), qcow2 disks made with ``qemu-img``, and TCG
domains that use them. Everything is named ``ckt-…`` so the session sweep finds leaks."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import libvirt
import pytest

from catkeeper.backend.fleet import Fleet
from catkeeper.config import Config, HostConfig, Timing
from catkeeper.model import VM
from tests.daemons import LibvirtDaemon, _remove_domain, tcg_domain_xml, unique_domain_name

HOST = "qemu"


@dataclass
class Lab:
    """One test's playground on the real daemon: a pool and the domains made in it."""

    conn: libvirt.virConnect
    pool: libvirt.virStoragePool
    pool_name: str
    dir: Path
    domains: list[str] = field(default_factory=list)  # names to remove at the end

    def image(self, name: str, size: str = "16M", fmt: str = "qcow2") -> str:
        """A disk image made with qemu-img in the pool's directory; returns its path."""
        path = self.dir / name
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", fmt, str(path), size],
            check=True,
            capture_output=True,
            timeout=30,
        )
        self.pool.refresh(0)
        return str(path)

    def domain(
        self, *, disk: str | None = None, name: str | None = None, start: bool = False, **kw: object
    ) -> libvirt.virDomain:
        """A TCG domain (``tcg_domain_xml``), with ``disk`` as its virtio disk vda."""
        name = name or unique_domain_name()
        xml = tcg_domain_xml(name, **kw)  # type: ignore[arg-type]
        if disk is not None:
            fmt = "qcow2" if disk.endswith(".qcow2") else "raw"
            xml = xml.replace(
                "<devices>",
                "<devices>\n    <disk type='file' device='disk'>"
                f"<driver name='qemu' type='{fmt}'/><source file='{disk}'/>"
                "<target dev='vda' bus='virtio'/></disk>",
                1,
            )
        self.domains.append(name)
        dom = self.conn.defineXML(xml)
        if start:
            dom.create()
        return dom

    def track(self, name: str) -> None:
        self.domains.append(name)

    def volumes(self) -> set[str]:
        self.pool.refresh(0)
        return set(self.pool.listVolumes())

    def close(self) -> None:
        doms = []
        for name in self.domains:
            with contextlib.suppress(libvirt.libvirtError):
                doms.append(self.conn.lookupByName(name))
        threads = [threading.Thread(target=_remove_domain, args=(d,)) for d in doms]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        with contextlib.suppress(libvirt.libvirtError):
            self.pool.refresh(0)
            for vol in self.pool.listAllVolumes(0):
                with contextlib.suppress(libvirt.libvirtError):
                    vol.delete(0)
        with contextlib.suppress(libvirt.libvirtError):
            self.pool.destroy()
        with contextlib.suppress(libvirt.libvirtError):
            self.pool.undefine()
        self.conn.close()


# Registered under short names; test modules import the *_fixture names (so the fixture
# function and the test's parameter do not clash).
@pytest.fixture(name="lab")
def lab_fixture(libvirtd: LibvirtDaemon, tmp_path: Path) -> Iterator[Lab]:
    conn = libvirtd.open()
    name = f"ckt-pool-{secrets.token_hex(4)}"
    directory = tmp_path / "pool"
    directory.mkdir()
    pool = conn.storagePoolDefineXML(
        f"<pool type='dir'><name>{name}</name><target><path>{directory}</path></target></pool>"
    )
    pool.create(0)
    lab = Lab(conn=conn, pool=pool, pool_name=name, dir=directory)
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(name="fleet")
async def fleet_fixture(libvirtd: LibvirtDaemon) -> AsyncIterator[Fleet]:
    config = Config(
        hosts=(HostConfig(name=HOST, uri=libvirtd.uri),),
        source="<test>",
        timing=Timing(connect_timeout=10, call_timeout=30, refresh_interval=0),
    )
    f = Fleet(config)
    await f.start()
    try:
        assert await f.wait_settled(30)
        yield f
    finally:
        await f.aclose()


async def vm_of(fleet: Fleet, dom: libvirt.virDomain) -> VM:
    vm = await fleet.session(HOST).refresh_domain(dom.UUIDString())
    assert vm is not None
    return vm


def inactive_xml(dom: libvirt.virDomain) -> str:
    return str(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE))


def disk_sources(dom: libvirt.virDomain) -> dict[str, str]:
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    out = {}
    for disk in root.iterfind("devices/disk"):
        target, source = disk.find("target"), disk.find("source")
        if target is not None and source is not None:
            out[target.get("dev", "")] = source.get("file", "")
    return out


def macs(dom: libvirt.virDomain) -> list[str]:
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    return [m.get("address", "") for m in root.iterfind("devices/interface/mac")]


def qemu_img_info(path: str) -> str:
    return subprocess.run(
        ["qemu-img", "info", "-U", path], check=True, capture_output=True, text=True, timeout=30
    ).stdout
