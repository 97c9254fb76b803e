"""Rename, clone and delete against a real libvirtd with TCG guests and qcow2 volumes in a
directory pool the test creates."""

from __future__ import annotations

import os
import time

import libvirt
import pytest

from catkeeper.backend.actions import ActionError
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.reservations import metadata
from catkeeper.backend.vm import clone, vmops
from catkeeper.model import Reservation
from tests.daemons import unique_domain_name
from tests.disk_patterns import reads_as, write_pattern
from tests.vmops_support import (
    HOST,
    Lab,
    disk_sources,
    fleet_fixture,  # noqa: F401 - the fleet fixture
    inactive_xml,
    lab_fixture,  # noqa: F401 - the lab fixture
    macs,
    qemu_img_info,
    vm_of,
)

pytestmark = pytest.mark.daemon
LEN = 64 * 1024


def assert_no_domain(conn: libvirt.virConnect, *, name: str = "", uuid: str = "") -> None:
    """The lookup fails because no such domain exists (not for some other reason)."""
    with pytest.raises(libvirt.libvirtError) as info:
        conn.lookupByName(name) if name else conn.lookupByUUIDString(uuid)
    assert info.value.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN, info.value


# ---- rename ---------------------------------------------------------------------------


async def test_rename_is_refused_while_running_and_works_when_shut_off(
    fleet: Fleet, lab: Lab
) -> None:
    dom = lab.domain(start=True)
    old = dom.name()
    vm = await vm_of(fleet, dom)
    new = unique_domain_name()
    lab.track(new)
    with pytest.raises(ActionError) as info:
        await vmops.rename(fleet, vm, new)
    assert str(info.value).startswith(f"rename {HOST}/{old} to {new!r}: it is running")
    assert dom.name() == old

    dom.destroy()
    vm = await vm_of(fleet, dom)
    renamed = await vmops.rename(fleet, vm, new)
    assert renamed.name == new and renamed.uuid == vm.uuid
    assert fleet.session(HOST).vms[vm.uuid].name == new
    assert lab.conn.lookupByUUIDString(vm.uuid).name() == new
    assert_no_domain(lab.conn, name=old)


async def test_rename_refuses_bad_and_taken_names_without_changing_anything(
    fleet: Fleet, lab: Lab
) -> None:
    dom, other = lab.domain(), lab.domain()
    vm = await vm_of(fleet, dom)
    before = inactive_xml(dom)
    with pytest.raises(ActionError, match="is not valid"):
        await vmops.rename(fleet, vm, "bad/name")
    with pytest.raises(ActionError, match=f"a VM named '{other.name()}' already exists"):
        await vmops.rename(fleet, vm, other.name())
    assert inactive_xml(dom) == before


async def test_rename_by_redefine_keeps_uuid_autostart_and_metadata(fleet: Fleet, lab: Lab) -> None:
    """The path for drivers without virDomainRename, forced here on the real daemon."""
    dom = lab.domain()
    res = Reservation(owner="alice", note="keep me", revision=2)
    dom.setMetadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT,
        metadata.to_string(res),
        metadata.PREFIX,
        metadata.NAMESPACE,
        libvirt.VIR_DOMAIN_AFFECT_CONFIG,
    )
    dom.setAutostart(1)
    vm = await vm_of(fleet, dom)
    new = unique_domain_name()
    lab.track(new)
    renamed = await vmops.rename(fleet, vm, new, redefine=True)
    again = lab.conn.lookupByName(new)
    assert again.UUIDString() == vm.uuid
    assert again.autostart() == 1
    assert renamed.reservation is not None and renamed.reservation.note == "keep me"


# ---- clone ----------------------------------------------------------------------------


async def test_clone_has_new_identity_independent_disks_and_no_reservation(
    fleet: Fleet, lab: Lab
) -> None:
    disk = lab.image("src.qcow2")
    write_pattern(disk, 0xAB, 0, LEN)
    dom = lab.domain(disk=disk, mac="52:54:00:aa:bb:01")
    dom.setMetadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT,
        metadata.to_string(Reservation(owner="bob", note="mine")),
        metadata.PREFIX,
        metadata.NAMESPACE,
        libvirt.VIR_DOMAIN_AFFECT_CONFIG,
    )
    vm = await vm_of(fleet, dom)
    assert vm.reservation is not None
    new = unique_domain_name()
    lab.track(new)
    progress: list[str] = []
    t0 = time.monotonic()
    cloned = await vmops.clone(fleet, vm, new, on_progress=progress.append)
    print(f"\nclone took {time.monotonic() - t0:.2f} s; progress {progress}")

    copy = lab.conn.lookupByName(new)
    assert cloned.name == new and cloned.uuid == copy.UUIDString() != vm.uuid
    assert cloned.reservation is None
    assert metadata.NAMESPACE not in inactive_xml(copy)
    assert macs(copy) and macs(copy)[0] != "52:54:00:aa:bb:01"
    new_disk = disk_sources(copy)["vda"]
    assert new_disk == str(lab.dir / f"{new}-vda.qcow2") != disk
    assert "backing file" not in qemu_img_info(new_disk)  # a full copy, not an overlay
    assert reads_as(new_disk, 0xAB, 0, LEN)  # the data was copied
    # Writing the copy leaves the original as it was.
    write_pattern(new_disk, 0xCD, 0, LEN)
    assert reads_as(new_disk, 0xCD, 0, LEN)
    assert reads_as(disk, 0xAB, 0, LEN) and not reads_as(disk, 0xCD, 0, LEN)
    # The original is untouched.
    assert dom.UUIDString() == vm.uuid and disk_sources(dom)["vda"] == disk
    assert lab.conn.lookupByName(dom.name()).metadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT, metadata.NAMESPACE, 0
    )


async def test_clone_overlay_and_refusals(fleet: Fleet, lab: Lab) -> None:
    disk = lab.image("base.qcow2")
    dom = lab.domain(disk=disk)
    vm = await vm_of(fleet, dom)
    new = unique_domain_name()
    lab.track(new)
    await vmops.clone(fleet, vm, new, mode="overlay")
    overlay = disk_sources(lab.conn.lookupByName(new))["vda"]
    assert f"backing file: {disk}" in qemu_img_info(overlay)

    # The same name again: refused before any volume is made.
    volumes = lab.volumes()
    with pytest.raises(ActionError, match="already exists"):
        await vmops.clone(fleet, vm, new)
    assert lab.volumes() == volumes

    # A running source is refused.
    dom2 = lab.domain(start=True)
    vm2 = await vm_of(fleet, dom2)
    with pytest.raises(ActionError, match="it is running"):
        await vmops.clone(fleet, vm2, unique_domain_name())


async def test_clone_that_fails_at_define_removes_the_volumes_it_made(
    fleet: Fleet, lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = lab.image("src.qcow2")
    dom = lab.domain(disk=disk)
    vm = await vm_of(fleet, dom)
    before = lab.volumes()
    # Make the define fail for real: someone else defines a VM of that name (another
    # UUID) after the clone checked the name and copied the disk.
    new = unique_domain_name()
    lab.track(new)
    real_clone_xml = vmops.clone_xml

    def racing_clone_xml(xml: str, name: str, paths: dict[str, str]) -> str:
        lab.domain(name=name)  # someone else takes the name meanwhile, with another UUID
        return real_clone_xml(xml, name, paths)

    monkeypatch.setattr(clone, "clone_xml", racing_clone_xml)  # where clone() looks it up
    with pytest.raises(ActionError) as info:
        await vmops.clone(fleet, vm, new)
    assert "removed the new volumes again" in str(info.value)
    assert lab.volumes() == before


# ---- delete ---------------------------------------------------------------------------


async def test_delete_with_storage_removes_exactly_the_listed_volumes(
    fleet: Fleet, lab: Lab
) -> None:
    keep = lab.image("shared-iso.img", fmt="raw")
    data = lab.image("data.qcow2")
    boot = lab.image("boot.qcow2")
    other = lab.image("other.qcow2")
    dom = lab.domain(disk=boot)
    dom = lab.conn.defineXML(
        inactive_xml(dom).replace(
            "</devices>",
            f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source file='{data}'/><target dev='vdb' bus='virtio'/></disk>"
            f"<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>"
            f"<source file='{keep}'/><target dev='hdc' bus='ide'/><readonly/></disk>"
            "</devices>",
        )
    )
    # A snapshot: undefine must take its metadata along.
    dom.snapshotCreateXML("<domainsnapshot><name>s1</name></domainsnapshot>", 0)
    vm = await vm_of(fleet, dom)

    listed = {d.target: d for d in await vmops.disks(fleet, vm)}
    assert set(listed) == {"vda", "vdb", "hdc"}
    assert listed["vda"].suggested and listed["vdb"].suggested
    assert listed["hdc"].deletable and not listed["hdc"].suggested  # read-only media
    assert listed["vda"].pool == lab.pool_name and listed["vda"].volume == "boot.qcow2"

    # A path that is not the VM's: refused, nothing changes.
    with pytest.raises(ActionError, match="not a storage volume of this VM"):
        await vmops.delete(fleet, vm, volumes=[boot, other])
    assert lab.conn.lookupByUUIDString(vm.uuid)

    result = await vmops.delete(fleet, vm, volumes=[boot])
    assert result.removed_volumes == (boot,)
    assert_no_domain(lab.conn, uuid=vm.uuid)
    assert vm.uuid not in fleet.session(HOST).vms
    assert not os.path.exists(boot)
    assert lab.volumes() == {"shared-iso.img", "data.qcow2", "other.qcow2"}


async def test_delete_refuses_a_running_vm_unless_forced_and_flags_shared_disks(
    fleet: Fleet, lab: Lab
) -> None:
    base = lab.image("base.qcow2")
    dom = lab.domain(disk=base, start=True)
    lab.domain(disk=base)  # another VM uses the same file
    vm = await vm_of(fleet, dom)
    (listed,) = await vmops.disks(fleet, vm)
    assert listed.used_by and not listed.suggested
    with pytest.raises(ActionError, match="it is running"):
        await vmops.delete(fleet, vm)
    assert dom.isActive()
    await vmops.delete(fleet, vm, force_off=True)
    assert_no_domain(lab.conn, uuid=vm.uuid)
    assert os.path.exists(base)
