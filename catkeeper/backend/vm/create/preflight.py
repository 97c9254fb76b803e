"""Everything about the host that could make a creation fail, checked before anything is made.

Runs on the host's thread (one libvirt call after another, no awaits), so the answer is one
consistent look at the host: names free, pool active, image present, network running. It also
settles which pool the new volumes go to when the spec leaves that open.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt

from catkeeper.backend.vm import storage
from catkeeper.backend.vm.common import Refused, name_taken
from catkeeper.backend.vm.create.spec import (
    DEFAULT_POOL,
    GIB,
    CloudInitSource,
    CreateSpec,
    ImageSource,
    IsoSource,
    NetInstallSource,
)


@dataclass(frozen=True)
class HostFacts:
    domain_type: str
    pool: str  # where the new volumes go
    source: storage.VolumeInfo | None  # the image or ISO
    disk_name: str
    seed_name: str
    kernel_name: str
    initrd_name: str


def preflight(conn: libvirt.virConnect, spec: CreateSpec) -> HostFacts:
    """What the steps need to know about the host; ``Refused`` when it cannot work."""
    if name_taken(conn, spec.name):
        raise Refused(f"a VM named {spec.name!r} already exists")
    src = spec.source
    source_vol: libvirt.virStorageVol | None = None
    if isinstance(src, ImageSource | CloudInitSource | IsoSource):
        source_vol = storage.lookup_volume(
            conn, src.iso if isinstance(src, IsoSource) else src.image
        )
    pool_name = spec.pool or _default_pool(spec, source_vol)
    pool = storage.pool_by_name(conn, pool_name)
    facts = HostFacts(
        domain_type=spec.domain_type or best_domain_type(conn),
        pool=pool_name,
        source=None,
        disk_name=f"{spec.name}.qcow2",
        seed_name=f"{spec.name}-cidata.iso",
        kernel_name=f"{spec.name}-install-kernel",
        initrd_name=f"{spec.name}-install-initrd",
    )
    wanted = [facts.disk_name]
    if isinstance(src, CloudInitSource):
        wanted.append(facts.seed_name)
    if isinstance(src, NetInstallSource):
        wanted += [facts.kernel_name, facts.initrd_name]
    for name in wanted:
        if storage.volume_exists(pool, name):
            raise Refused(f"volume {name!r} already exists in pool {pool_name!r}")
    if source_vol is not None:
        info = storage.volume_info(source_vol)
        facts = dataclasses.replace(facts, source=info)
        too_small = spec.disk_gib is not None and spec.disk_gib * GIB < info.capacity
        if not isinstance(src, IsoSource) and too_small:
            raise Refused(
                f"the disk ({spec.disk_gib:g} GiB) would be smaller than the image "
                f"({info.capacity / GIB:.2f} GiB)"
            )
    if spec.network.startswith("network:"):
        name = spec.network.split(":", 1)[1]
        try:
            net = conn.networkLookupByName(name)
        except libvirt.libvirtError:
            raise Refused(f"the host has no network named {name!r}") from None
        if spec.start and not net.isActive():
            raise Refused(f"network {name!r} is not active")
    return facts


def _default_pool(spec: CreateSpec, source_vol: libvirt.virStorageVol | None) -> str:
    """The image's pool: an overlay next to its backing file works on any host, while a pool
    named "default" exists only where someone made one. An ISO is only read, so a blank disk
    does not follow it (ISO directories are often read-only shares)."""
    if source_vol is not None and not isinstance(spec.source, IsoSource):
        return str(source_vol.storagePoolLookupByVolume().name())
    return DEFAULT_POOL


def best_domain_type(conn: libvirt.virConnect) -> str:
    caps = ET.fromstring(conn.getCapabilities())
    for guest in caps.iterfind("guest"):
        arch = guest.find("arch")
        if (
            arch is not None
            and arch.get("name") == "x86_64"
            and arch.find("domain[@type='kvm']") is not None
        ):
            return "kvm"
    return "qemu"
