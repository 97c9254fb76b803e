"""Where a new VM's volumes go, against a real libvirtd that has no pool named "default"
(as many hosts do not): next to the image unless ``pool`` / ``--pool`` says otherwise.

Through the backend (``create_vm``) and through the installed ``catkeeper create``; every
effect is checked on libvirt through a connection of the test's own.
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from catkeeper.backend.fleet import Fleet
from catkeeper.backend.vm.create import CreateError, CreateSpec, ImageSource, IsoSource, create_vm
from tests.cli_support import run_catkeeper
from tests.daemons import LibvirtDaemon, unique_domain_name
from tests.vmops_support import (
    HOST,
    Lab,
    disk_sources,
    fleet_fixture,  # noqa: F401 - the fleet fixture
    lab_fixture,  # noqa: F401 - the lab fixture
    qemu_img_info,
)

pytestmark = pytest.mark.daemon


def spec(lab: Lab, source: ImageSource | IsoSource, **kw: object) -> CreateSpec:
    """A small shut-off TCG VM without a NIC; ``pool`` left to the default unless given."""
    name = unique_domain_name()
    lab.track(name)
    options: dict[str, object] = {
        "vcpus": 1,
        "memory_mib": 64,
        "network": "none",
        "domain_type": "qemu",
        "machine": "pc",
        "start": False,
    }
    options.update(kw)
    return CreateSpec(host=HOST, name=name, source=source, **options)  # type: ignore[arg-type]


def no_default_pool(lab: Lab) -> None:
    pools = lab.conn.listStoragePools() + lab.conn.listDefinedStoragePools()
    # The point of these tests: a pool called "default" would hide the bug.
    assert "default" not in pools, "a test left a pool named 'default' on the daemon"


def backing_of(path: str) -> str:
    return next(
        line.split(":", 1)[1].strip()
        for line in qemu_img_info(path).splitlines()
        if line.startswith("backing file:")
    )


@pytest.fixture
def other_pool(lab: Lab, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A second directory pool on the same daemon, removed afterwards."""
    name = f"ckt-pool-{secrets.token_hex(4)}"
    directory = tmp_path / "other-pool"
    directory.mkdir()
    pool = lab.conn.storagePoolDefineXML(
        f"<pool type='dir'><name>{name}</name><target><path>{directory}</path></target></pool>"
    )
    pool.create(0)
    try:
        yield name, directory
    finally:
        pool.refresh(0)
        for vol in pool.listAllVolumes(0):
            vol.delete(0)
        pool.destroy()
        pool.undefine()


async def test_the_overlay_goes_to_the_images_pool(fleet: Fleet, lab: Lab) -> None:
    no_default_pool(lab)
    image = lab.image("base-pool.qcow2", "32M")
    for source in (ImageSource(f"{lab.pool_name}/base-pool.qcow2"), ImageSource(image)):
        s = spec(lab, source)
        assert s.pool is None
        created = await create_vm(fleet, s)
        overlay = str(lab.dir / f"{s.name}.qcow2")
        assert created.volumes == (overlay,)
        assert disk_sources(lab.conn.lookupByName(s.name))["vda"] == overlay
        assert backing_of(overlay) == image
    # A full copy follows the image too.
    s = spec(lab, ImageSource(image, copy=True))
    created = await create_vm(fleet, s)
    assert created.volumes == (str(lab.dir / f"{s.name}.qcow2"),)


async def test_pool_given_wins_over_the_images(
    fleet: Fleet, lab: Lab, other_pool: tuple[str, Path]
) -> None:
    name, directory = other_pool
    image = lab.image("base-pool.qcow2", "32M")
    s = spec(lab, ImageSource(f"{lab.pool_name}/base-pool.qcow2"), pool=name)
    created = await create_vm(fleet, s)
    assert created.volumes == (str(directory / f"{s.name}.qcow2"),)
    assert backing_of(created.volumes[0]) == image
    assert f"{s.name}.qcow2" not in lab.volumes()


async def test_without_an_image_the_pool_is_still_default(fleet: Fleet, lab: Lab) -> None:
    no_default_pool(lab)
    iso = lab.image("installer.iso", "1M", fmt="raw")
    before = lab.volumes()
    # An ISO is only read: a blank disk does not follow it into the ISO's pool.
    with pytest.raises(CreateError, match="no storage pool named 'default'") as info:
        await create_vm(fleet, spec(lab, IsoSource(iso)))
    assert info.value.step == "check the host"
    assert lab.volumes() == before
    with pytest.raises(CreateError, match="pool: name the storage pool"):
        await create_vm(fleet, spec(lab, IsoSource(iso), pool=""))


def test_catkeeper_create_puts_the_overlay_next_to_the_image(
    libvirtd: LibvirtDaemon, lab: Lab, tmp_path: Path
) -> None:
    no_default_pool(lab)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"hosts:\n  - name: {HOST}\n    uri: {libvirtd.uri}\n"
        "timing:\n  connect_timeout: 10\n  call_timeout: 30\n  refresh_interval: 0\n"
    )
    image = lab.image("base-cli.qcow2", "32M")
    name = unique_domain_name()
    lab.track(name)
    r = run_catkeeper(
        "--config",
        str(config),
        "create",
        f"{HOST}/{name}",
        "--image",
        f"{lab.pool_name}/base-cli.qcow2",
        "--no-start",
        "--network",
        "none",
        "--type",
        "qemu",
        "--memory",
        "64M",
        "--json",
        cwd=tmp_path,
    )
    assert r.code == 0, r.err
    overlay = str(lab.dir / f"{name}.qcow2")
    assert r.json()["volumes"] == [overlay]
    assert backing_of(overlay) == image
    dom = lab.conn.lookupByName(name)
    assert dom.info()[0] == libvirt.VIR_DOMAIN_SHUTOFF
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert root.findtext("name") == name
