"""What to create, and everything about it that can be checked without the host.

The create form and ``catkeeper create`` build a ``CreateSpec``; ``validate`` reports every
field that is wrong at once (by field name, so a form can mark its inputs) before the host
is asked anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from catkeeper.backend.vm import cloudinit, netinstall
from catkeeper.backend.vm.common import check_name

GIB = 1024**3
MIB = 1024**2
DEFAULT_BLANK_GIB = 20.0
DEFAULT_POOL = "default"  # for new volumes when there is no image to follow
_NET_RE = re.compile(r"^(network|bridge):([A-Za-z0-9_.:-]{1,64})$")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": MIB, "G": GIB, "T": 1024**4}


@dataclass(frozen=True)
class ImageSource:
    """An existing disk image on the host (``/path`` or ``POOL/VOLUME``)."""

    image: str
    copy: bool = False  # False: a qcow2 overlay backed by the image; True: a full copy


@dataclass(frozen=True)
class CloudInitSource:
    """A cloud image on the host, and a NoCloud seed with the user's ssh keys."""

    image: str
    ssh_keys: tuple[str, ...]
    user: str | None = None  # also create this user (the image's default user gets the keys)


@dataclass(frozen=True)
class NetInstallSource:
    """A network install from an http(s) repository."""

    url: str
    distro: str | None = None  # None: detect from the repository layout
    autoinstall: str | None = None  # AutoYaST / kickstart / preseed URL
    extra_args: str = ""


@dataclass(frozen=True)
class IsoSource:
    """A blank disk and an installer ISO on the host (``/path`` or ``POOL/VOLUME``)."""

    iso: str


Source = ImageSource | CloudInitSource | NetInstallSource | IsoSource
SOURCE_KINDS = ("image", "cloud-init", "netinstall", "iso")


def source_text(source: Source) -> str:
    """What a VM was made from, for its history: "from image /x.qcow2 (overlay)"."""
    if isinstance(source, ImageSource):
        return f"from image {source.image} ({'copy' if source.copy else 'overlay'})"
    if isinstance(source, CloudInitSource):
        return f"from cloud image {source.image} with a cloud-init seed"
    if isinstance(source, NetInstallSource):
        return f"network install from {source.url}"
    return f"blank disk, installer ISO {source.iso}"


@dataclass(frozen=True)
class CreateSpec:
    host: str
    name: str
    source: Source
    vcpus: int = 2
    memory_mib: int = 2048
    disk_gib: float | None = None  # None: the image's size, or DEFAULT_BLANK_GIB for blanks
    # Where the new volumes go. None: the image's own pool when there is an image (a host
    # need not have a pool called "default"), else DEFAULT_POOL.
    pool: str | None = None
    network: str = "network:default"  # network:NAME, bridge:NAME, user, none
    graphics: str = "vnc"  # vnc, none
    vnc_listen: str = "127.0.0.1"  # loopback: reach it through catkeeper's ssh tunnel
    domain_type: str | None = None  # kvm, qemu; None: kvm when the host has it
    machine: str | None = None  # None: libvirt's default for the arch
    start: bool = True
    paused: bool = False  # start with its CPUs paused (inspect before it runs)


@dataclass(frozen=True)
class FieldError:
    field: str  # the CreateSpec field (source fields as "source.image", ...)
    message: str


def parse_size(text: str, default_unit: str = "G") -> int:
    """``"20G"``, ``"512M"``, ``"1.5T"``, ``"20"`` (in ``default_unit``) → bytes."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size (e.g. 20G, 512M)")
    unit = (m.group(2) or default_unit).upper()
    return int(float(m.group(1)) * _UNITS[unit])


def validate(spec: CreateSpec) -> list[FieldError]:
    """Everything that can be checked without the host; empty when the spec is fine."""
    errors: list[FieldError] = []

    def bad(name: str, message: str) -> None:
        errors.append(FieldError(name, message))

    if not spec.host:
        bad("host", "choose a host")
    try:
        check_name(spec.name)
    except ValueError as exc:
        bad("name", str(exc))
    if not 1 <= spec.vcpus <= 512:
        bad("vcpus", "vCPUs must be between 1 and 512")
    if not 16 <= spec.memory_mib <= 16 * 1024 * 1024:
        bad("memory_mib", "memory must be between 16 MiB and 16 TiB")
    if spec.disk_gib is not None and not 0 < spec.disk_gib <= 64 * 1024:
        bad("disk_gib", "disk size must be more than 0 and at most 64 TiB")
    if spec.pool is not None and not spec.pool.strip():
        bad("pool", "name the storage pool for the new disk (or leave it out)")
    if spec.network not in ("none", "user") and not _NET_RE.match(spec.network):
        bad("network", "use network:NAME, bridge:NAME, user or none")
    if spec.graphics not in ("vnc", "none"):
        bad("graphics", "use vnc or none")
    if spec.domain_type not in (None, "kvm", "qemu"):
        bad("domain_type", "use kvm or qemu")
    src = spec.source
    if isinstance(src, ImageSource | CloudInitSource) and not _volume_spec_ok(src.image):
        bad("source.image", "name the image as /path/on/host or POOL/VOLUME")
    if isinstance(src, IsoSource) and not _volume_spec_ok(src.iso):
        bad("source.iso", "name the ISO as /path/on/host or POOL/VOLUME")
    if isinstance(src, CloudInitSource):
        for key in src.ssh_keys:
            if key.strip():
                try:
                    cloudinit.check_ssh_key(key)
                except cloudinit.CloudInitError as exc:
                    bad("source.ssh_keys", str(exc))
        if not any(k.strip() for k in src.ssh_keys):
            bad("source.ssh_keys", "give at least one ssh public key (to log in)")
        if src.user is not None and not cloudinit.USER_RE.match(src.user):
            bad("source.user", f"user name {src.user!r} is not valid")
    if isinstance(src, NetInstallSource):
        try:
            netinstall.check_url(src.url)
        except netinstall.NetInstallError as exc:
            bad("source.url", str(exc))
        if src.distro is not None and src.distro not in netinstall.DISTROS:
            bad("source.distro", f"use one of {', '.join(netinstall.DISTROS)} (or auto)")
        try:
            if src.autoinstall:
                netinstall.check_url(src.autoinstall, "autoinstall URL")
            fake = netinstall.Tree("http://x/", src.distro or "suse", "", "")
            netinstall.kernel_args(fake, extra=src.extra_args)
        except netinstall.NetInstallError as exc:
            bad(
                "source.autoinstall" if "autoinstall" in str(exc) else "source.extra_args", str(exc)
            )
    return errors


def _volume_spec_ok(text: str) -> bool:
    if text.startswith("/"):
        return len(text) > 1
    pool, sep, vol = text.partition("/")
    return bool(sep and pool and vol)


def hostname(name: str) -> str:
    """A VM name as a hostname: dots and underscores become dashes."""
    return re.sub(r"[^A-Za-z0-9-]", "-", name).strip("-")[:63] or "vm"


def image_of(source: Source) -> str | None:
    """The disk image a VM is built on (``/path`` or ``POOL/VOLUME``), if it has one."""
    return source.image if isinstance(source, ImageSource | CloudInitSource) else None
