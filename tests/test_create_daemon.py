"""Creating VMs against a real libvirtd: from a disk image (booted under TCG), with a
cloud-init seed (read back through the storage API), by network install from a fake
repository served on 127.0.0.1, and failures that must leave nothing behind."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import struct
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from catkeeper.backend import audit
from catkeeper.backend.audit.store import read_ring
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.vm import cloudinit, netinstall, storage
from catkeeper.backend.vm.create import (
    CloudInitSource,
    CreateError,
    CreateProgress,
    CreateSpec,
    ImageSource,
    IsoSource,
    NetInstallSource,
    create_vm,
)
from tests.daemons import unique_domain_name
from tests.vmops_support import (
    HOST,
    Lab,
    disk_sources,
    fleet_fixture,  # noqa: F401 - the fleet fixture
    inactive_xml,
    lab_fixture,  # noqa: F401 - the lab fixture
    qemu_img_info,
)

pytestmark = pytest.mark.daemon


def spec_for(lab: Lab, source: object, **kw: object) -> CreateSpec:
    """A small TCG VM in the lab's pool, without a NIC (no iPXE ROMs on these machines)."""
    name = str(kw.pop("name", unique_domain_name()))
    lab.track(name)
    options: dict[str, object] = {
        "vcpus": 1,
        "memory_mib": 64,
        "pool": lab.pool_name,
        "network": "none",
        "domain_type": "qemu",
        "machine": "pc",
    }
    options.update(kw)
    return CreateSpec(host=HOST, name=name, source=source, **options)  # type: ignore[arg-type]


def fake_bzimage() -> bytes:
    """Just enough of a Linux boot header (boot protocol 2.12) for qemu to load it; the
    "kernel" never runs, since the installer domain is started paused."""
    image = bytearray(8192)
    image[0x1F1] = 4  # setup sectors
    image[0x1FE:0x200] = b"\x55\xaa"
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x206, 0x020C)
    image[0x211] = 0x01  # LOADED_HIGH
    struct.pack_into("<I", image, 0x22C, 0x7FFFFFFF)  # initrd_addr_max
    struct.pack_into("<I", image, 0x238, 2048)  # cmdline_size
    return bytes(image)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # pytest shows stderr of failing tests: keep it for what matters


@contextlib.contextmanager
def http_server(root: Path) -> Iterator[str]:
    """A static file server on 127.0.0.1 for ``root``; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# ---- from a disk image --------------------------------------------------------------


async def test_create_from_image_makes_an_overlay_and_boots(fleet: Fleet, lab: Lab) -> None:
    image = lab.image("base-image.qcow2", "32M")
    seen: list[CreateProgress] = []
    t0 = time.monotonic()
    created = await create_vm(
        fleet, spec_for(lab, ImageSource(image), disk_gib=0.0625), on_progress=seen.append
    )
    took = time.monotonic() - t0
    dom = lab.conn.lookupByUUIDString(created.uuid)
    overlay = disk_sources(dom)["vda"]
    print(f"\ncreate from image took {took:.2f} s; steps {[p.step for p in seen]}")

    assert created.vm is not None and created.vm.state.value == "running"
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert created.volumes == (overlay,)
    assert overlay == str(lab.dir / f"{dom.name()}.qcow2")
    info = qemu_img_info(overlay)
    assert f"backing file: {image}" in info and "backing file format: qcow2" in info
    assert "virtual size: 64 MiB" in info  # grown to the requested size
    vol = lab.pool.storageVolLookupByName(f"{dom.name()}.qcow2")
    assert ET.fromstring(vol.XMLDesc(0)).findtext("backingStore/path") == image
    graphics = ET.fromstring(dom.XMLDesc(0)).find("devices/graphics")
    assert graphics is not None and graphics.get("listen") == "127.0.0.1"
    steps = [p.step for p in seen]
    assert steps[0] == "check the host" and "create the disk" in steps
    assert "define the VM" in steps and steps[-1] == "done"
    # Its history starts with who made it from what, on the host (running and defined
    # copies) and in the local log.
    made = ("create", f"from image {image} (overlay)")
    for flags in (libvirt.VIR_DOMAIN_AFFECT_LIVE, libvirt.VIR_DOMAIN_AFFECT_CONFIG):
        assert [(e.action, e.detail) for e in read_ring(dom, flags)] == [made]
    local = [(d["action"], d["detail"]) for d in audit.read_local() if d["uuid"] == created.uuid]
    assert local == [made]


async def test_bad_input_is_refused_before_anything_is_made(fleet: Fleet, lab: Lab) -> None:
    image = lab.image("base.qcow2")
    volumes = lab.volumes()
    with pytest.raises(CreateError) as info:
        await create_vm(fleet, spec_for(lab, ImageSource(image), name="bad name", vcpus=0))
    assert info.value.step == "check the input"
    assert "name: name 'bad name' is not valid" in str(info.value)
    assert "vcpus: vCPUs must be between" in str(info.value)

    taken = spec_for(lab, ImageSource(image))
    lab.image(f"{taken.name}.qcow2")  # its disk volume name is taken
    volumes = lab.volumes()
    with pytest.raises(
        CreateError, match=r"step 'check the host' failed: volume .* already exists"
    ):
        await create_vm(fleet, taken)
    with pytest.raises(CreateError, match="smaller than the image"):
        await create_vm(fleet, spec_for(lab, ImageSource(image), disk_gib=0.001))
    with pytest.raises(CreateError, match="is not a volume in any active storage pool"):
        await create_vm(fleet, spec_for(lab, ImageSource("/nonexistent/disk.qcow2")))
    with pytest.raises(CreateError, match="no network named 'ckt-nonet'"):
        await create_vm(fleet, spec_for(lab, ImageSource(image), network="network:ckt-nonet"))
    assert lab.volumes() == volumes
    assert not any(n.startswith("ckt-") for n in lab.conn.listDefinedDomains() if n in lab.domains)


async def test_a_failing_step_removes_what_earlier_steps_made(fleet: Fleet, lab: Lab) -> None:
    iso = lab.image("installer.iso", "1M", fmt="raw")
    volumes = lab.volumes()
    # libvirt refuses the machine type only when the VM is defined, after its disk exists.
    spec = spec_for(lab, IsoSource(iso), machine="ckt-no-such-machine", disk_gib=0.01)
    with pytest.raises(CreateError) as info:
        await create_vm(fleet, spec)
    message = str(info.value)
    assert info.value.step == "define the VM"
    assert message.startswith(f"create {HOST}/{spec.name}: step 'define the VM' failed: ")
    assert "No PCI buses available" in message  # libvirt's own words for that machine
    assert f"removed again: volume {lab.dir / spec.name}.qcow2" in message
    assert lab.volumes() == volumes
    with pytest.raises(libvirt.libvirtError) as gone:
        lab.conn.lookupByName(spec.name)
    assert gone.value.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN
    assert [d for d in audit.read_local() if d["vm"] == spec.name] == []  # nothing was made


async def test_blank_disk_and_iso_boots_from_the_cdrom(fleet: Fleet, lab: Lab) -> None:
    iso = lab.image("installer.iso", "1M", fmt="raw")
    created = await create_vm(fleet, spec_for(lab, IsoSource(iso), disk_gib=0.05, start=False))
    root = ET.fromstring(inactive_xml(lab.conn.lookupByUUIDString(created.uuid)))
    assert [b.get("dev") for b in root.iterfind("os/boot")] == ["cdrom", "hd"]
    cdrom = root.find("devices/disk[@device='cdrom']/source")
    assert cdrom is not None and cdrom.get("file") == iso
    assert "virtual size: 51.2 MiB" in qemu_img_info(created.volumes[0])


# ---- cloud-init --------------------------------------------------------------------


async def test_cloud_init_seed_is_on_the_host_with_the_users_key(
    fleet: Fleet, lab: Lab, tmp_path: Path
) -> None:
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "alice@lab",
            "-f",
            str(tmp_path / "k"),
        ],
        check=True,
        capture_output=True,
    )
    key = (tmp_path / "k.pub").read_text().strip()
    image = lab.image("cloud.qcow2", "32M")
    spec = spec_for(lab, CloudInitSource(image, ssh_keys=(key,), user="alice"), start=False)
    created = await create_vm(fleet, spec)
    seed_path = str(lab.dir / f"{spec.name}-cidata.iso")
    assert set(created.volumes) == {str(lab.dir / f"{spec.name}.qcow2"), seed_path}

    # Read it back the way a remote client would: a libvirt download stream.
    data = await storage.download(fleet.session(HOST), seed_path)
    files = cloudinit.read_seed(data)
    assert set(files) == {"user-data", "meta-data"}
    assert files["user-data"].startswith("#cloud-config\n")
    assert key in files["user-data"]
    assert f"local-hostname: {spec.name}" in files["meta-data"]
    assert f"instance-id: {created.uuid}" in files["meta-data"]
    # An independent reader agrees on the filesystem and its label.
    (tmp_path / "seed.iso").write_bytes(data)
    blkid = subprocess.run(
        ["blkid", "-o", "export", str(tmp_path / "seed.iso")], capture_output=True, text=True
    ).stdout
    assert "LABEL=cidata" in blkid and "TYPE=iso9660" in blkid
    # The VM has it as a read-only CD-ROM.
    root = ET.fromstring(inactive_xml(lab.conn.lookupByUUIDString(created.uuid)))
    cdrom = root.find("devices/disk[@device='cdrom']")
    assert cdrom is not None and cdrom.find("readonly") is not None
    source = cdrom.find("source")
    assert source is not None and source.get("file") == seed_path


async def test_cloud_init_refuses_a_bad_key_before_touching_the_host(
    fleet: Fleet, lab: Lab
) -> None:
    image = lab.image("cloud.qcow2")
    volumes = lab.volumes()
    with pytest.raises(CreateError, match=r"source\.ssh_keys: ssh key ssh-ed25519 …: the key data"):
        await create_vm(
            fleet, spec_for(lab, CloudInitSource(image, ssh_keys=("ssh-ed25519 AAAAnotakey",)))
        )
    assert lab.volumes() == volumes


# ---- network install ----------------------------------------------------------------


async def test_network_install_boots_the_installer_then_switches_to_the_disk(
    fleet: Fleet, lab: Lab, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    loader = repo / "boot/x86_64/loader"
    loader.mkdir(parents=True)
    kernel_bytes, initrd_bytes = fake_bzimage(), b"initrd!" * 300
    (loader / "linux").write_bytes(kernel_bytes)
    (loader / "initrd").write_bytes(initrd_bytes)
    with http_server(tmp_path) as base:
        url = f"{base}/repo"
        profile = f"{base}/autoyast.xml"
        spec = spec_for(
            lab,
            NetInstallSource(url, autoinstall=profile, extra_args="console=ttyS0"),
            paused=True,
            disk_gib=0.05,
        )
        seen: list[CreateProgress] = []
        created = await create_vm(fleet, spec, on_progress=seen.append)
    assert created.install_pending
    kernel = str(lab.dir / f"{spec.name}-install-kernel")
    initrd = str(lab.dir / f"{spec.name}-install-initrd")
    disk = str(lab.dir / f"{spec.name}.qcow2")
    assert set(created.volumes) == {kernel, initrd, disk}
    session = fleet.session(HOST)
    assert await storage.download(session, kernel) == kernel_bytes
    assert await storage.download(session, initrd) == initrd_bytes
    uploads = [p for p in seen if p.step == "upload the kernel" and p.total]
    assert uploads and uploads[-1].done == uploads[-1].total == len(kernel_bytes)

    # The installer runs (paused here: the fake kernel must not execute) from the volumes.
    dom = lab.conn.lookupByUUIDString(created.uuid)
    assert dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED and dom.isPersistent()
    live = ET.fromstring(dom.XMLDesc(0))
    assert live.findtext("os/kernel") == kernel and live.findtext("os/initrd") == initrd
    assert live.findtext("os/cmdline") == f"install={url}/ autoyast={profile} console=ttyS0"
    assert live.findtext("on_reboot") == "destroy"
    # The next boot's definition boots from the disk and remembers the installer files.
    final = ET.fromstring(inactive_xml(dom))
    assert final.find("os/kernel") is None and final.findtext("on_reboot") == "restart"
    assert [b.get("dev") for b in final.iterfind("os/boot")] == ["hd"]
    assert disk_sources(dom)["vda"] == disk
    assert netinstall.pending_install(inactive_xml(dom)) == (kernel, initrd)

    # The installer "reboots": with on_reboot=destroy the domain stops. The watcher sees
    # the stop (lifecycle event) and switches over.
    progress: list[str] = []
    watcher = netinstall.InstallWatcher(
        fleet, HOST, created.uuid, poll=600, on_progress=progress.append
    )
    waiting = asyncio.create_task(watcher.wait())
    await asyncio.sleep(0.2)
    assert not waiting.done()
    t0 = time.monotonic()
    dom.destroy()
    # Polling every 600 s, so only the lifecycle event can end this wait in time.
    finished = await asyncio.wait_for(waiting, 120)
    print(f"\nswitch-over {time.monotonic() - t0:.2f} s after the installer stopped")
    assert finished.started and set(finished.removed) == {kernel, initrd} and not finished.left
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert ET.fromstring(dom.XMLDesc(0)).find("os/kernel") is None
    assert netinstall.pending_install(inactive_xml(dom)) is None
    assert lab.volumes() >= {f"{spec.name}.qcow2"}
    assert not {f"{spec.name}-install-kernel", f"{spec.name}-install-initrd"} & lab.volumes()


async def test_network_install_probe_finds_layouts_and_says_what_it_missed(tmp_path: Path) -> None:
    pxe = tmp_path / "fedora/images/pxeboot"
    pxe.mkdir(parents=True)
    (pxe / "vmlinuz").write_bytes(b"k")
    (pxe / "initrd.img").write_bytes(b"i")
    (tmp_path / "empty").mkdir()
    with http_server(tmp_path) as base:
        tree = await asyncio.to_thread(netinstall.probe_tree, f"{base}/fedora")
        assert tree.distro == "fedora"
        assert tree.kernel_url == f"{base}/fedora/images/pxeboot/vmlinuz"
        assert netinstall.kernel_args(tree, autoinstall=f"{base}/ks.cfg") == (
            f"inst.repo={base}/fedora/ inst.ks={base}/ks.cfg"
        )
        with pytest.raises(netinstall.NetInstallError, match="no installer found under"):
            await asyncio.to_thread(netinstall.probe_tree, f"{base}/empty")
        with pytest.raises(netinstall.NetInstallError, match="give an http"):
            netinstall.probe_tree("file:///etc/passwd")
