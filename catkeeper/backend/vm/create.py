"""Create VMs: from a disk image, a cloud image with cloud-init, a network install, or a
blank disk with an ISO. Shared by the create form and ``catkeeper create``.

Everything reaches the host through libvirt (storage volumes for disks, seed images and
installer files, upload streams for their content), so a remote host needs nothing else.

A creation is a list of steps. All the input is checked first, locally (``validate``) and
then against the host (pool, names, source volume, network), before anything is made. Each
step that makes something registers how to undo it; when a later step fails, everything
made so far is removed again and ``CreateError`` says which step failed and what was
removed. Progress goes to a callback as ``CreateProgress``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import tempfile
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import IO, TypeVar
from xml.sax.saxutils import escape, quoteattr

import libvirt

from catkeeper.backend.actions import ActionError
from catkeeper.backend.errors import BackendError, describe
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.host import HostSession
from catkeeper.backend.vm import cloudinit, netinstall, storage
from catkeeper.backend.vm.vmops import (
    Refused,
    check_name,
    name_taken,
    on_host,
    refresh,
    undefine_all,
)
from catkeeper.model import VM

log = logging.getLogger(__name__)
T = TypeVar("T")

GIB = 1024**3
MIB = 1024**2
DEFAULT_BLANK_GIB = 20.0
_NET_RE = re.compile(r"^(network|bridge):([A-Za-z0-9_.:-]{1,64})$")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": MIB, "G": GIB, "T": 1024**4}


# ---------------------------------------------------------------------------------------
# What to create


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


@dataclass(frozen=True)
class CreateSpec:
    host: str
    name: str
    source: Source
    vcpus: int = 2
    memory_mib: int = 2048
    disk_gib: float | None = None  # None: the image's size, or DEFAULT_BLANK_GIB for blanks
    pool: str = "default"  # where the new volumes go
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
    if not spec.pool:
        bad("pool", "name the storage pool for the new disk")
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


def _hostname(name: str) -> str:
    """A VM name as a hostname: dots and underscores become dashes."""
    return re.sub(r"[^A-Za-z0-9-]", "-", name).strip("-")[:63] or "vm"


# ---------------------------------------------------------------------------------------
# Progress, errors, results


@dataclass(frozen=True)
class CreateProgress:
    step: str
    message: str
    done: int | None = None  # bytes (uploads, downloads)
    total: int | None = None


class CreateError(ActionError):
    """A creation failed; everything it had made was removed (``str()`` says what)."""

    def __init__(self, message: str, *, step: str, code: int | None = None) -> None:
        super().__init__(message, code=code)
        self.step = step


@dataclass(frozen=True)
class Created:
    ref: str
    uuid: str
    vm: VM | None
    volumes: tuple[str, ...]  # volumes made for it (paths on the host)
    install_pending: bool = False  # a network install runs: see netinstall.InstallWatcher


# ---------------------------------------------------------------------------------------
# Domain XML


def _graphics_xml(spec: CreateSpec) -> str:
    if spec.graphics == "none":
        return ""
    listen = quoteattr(spec.vnc_listen)
    return (
        f"<graphics type='vnc' autoport='yes' listen={listen}>"
        f"<listen type='address' address={listen}/></graphics>"
    )


def _interface_xml(spec: CreateSpec) -> str:
    if spec.network == "none":
        return ""
    if spec.network == "user":
        return "<interface type='user'><model type='virtio'/></interface>"
    kind, name = spec.network.split(":", 1)
    return (
        f"<interface type='{kind}'><source {kind}={quoteattr(name)}/>"
        "<model type='virtio'/></interface>"
    )


def domain_xml(
    spec: CreateSpec,
    *,
    uuid: str,
    domain_type: str,
    disk: str,
    disk_format: str = "qcow2",
    cdrom: str | None = None,
    boot_cdrom: bool = False,
    metadata: str | None = None,
) -> str:
    """The persistent definition of a new VM."""
    machine = f" machine={quoteattr(spec.machine)}" if spec.machine else ""
    cd_bus = "sata" if spec.machine and "q35" in spec.machine else "ide"
    cd_dev = "sda" if cd_bus == "sata" else "hdc"
    boots = ("<boot dev='cdrom'/>" if boot_cdrom else "") + "<boot dev='hd'/>"
    devices = [
        f"<disk type='file' device='disk'><driver name='qemu' type={quoteattr(disk_format)}/>"
        f"<source file={quoteattr(disk)}/><target dev='vda' bus='virtio'/></disk>"
    ]
    if cdrom is not None:
        devices.append(
            "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>"
            f"<source file={quoteattr(cdrom)}/><target dev='{cd_dev}' bus='{cd_bus}'/>"
            "<readonly/></disk>"
        )
    devices += [
        _interface_xml(spec),
        _graphics_xml(spec),
        "<serial type='pty'/><console type='pty'/>",
        "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>",
    ]
    meta = f"<metadata>{metadata}</metadata>" if metadata else ""
    body = "\n    ".join(d for d in devices if d)
    return f"""<domain type='{domain_type}'>
  <name>{escape(spec.name)}</name>
  <uuid>{uuid}</uuid>
  {meta}
  <memory unit='MiB'>{spec.memory_mib}</memory>
  <vcpu>{spec.vcpus}</vcpu>
  <os><type arch='x86_64'{machine}>hvm</type>{boots}</os>
  <features><acpi/><apic/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    {body}
  </devices>
</domain>
"""


# ---------------------------------------------------------------------------------------
# Checking against the host


@dataclass(frozen=True)
class _HostFacts:
    domain_type: str
    source: storage.VolumeInfo | None  # the image or ISO
    disk_name: str
    seed_name: str
    kernel_name: str
    initrd_name: str


def _preflight(conn: libvirt.virConnect, spec: CreateSpec) -> _HostFacts:
    """Everything about the host that could make the creation fail, checked up front."""
    if name_taken(conn, spec.name):
        raise Refused(f"a VM named {spec.name!r} already exists")
    pool = storage.pool_by_name(conn, spec.pool)
    facts = _HostFacts(
        domain_type=spec.domain_type or _best_domain_type(conn),
        source=None,
        disk_name=f"{spec.name}.qcow2",
        seed_name=f"{spec.name}-cidata.iso",
        kernel_name=f"{spec.name}-install-kernel",
        initrd_name=f"{spec.name}-install-initrd",
    )
    wanted = [facts.disk_name]
    src = spec.source
    if isinstance(src, CloudInitSource):
        wanted.append(facts.seed_name)
    if isinstance(src, NetInstallSource):
        wanted += [facts.kernel_name, facts.initrd_name]
    for name in wanted:
        if storage.volume_exists(pool, name):
            raise Refused(f"volume {name!r} already exists in pool {spec.pool!r}")
    if isinstance(src, ImageSource | CloudInitSource | IsoSource):
        what = src.iso if isinstance(src, IsoSource) else src.image
        info = storage.volume_info(storage.lookup_volume(conn, what))
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


def _best_domain_type(conn: libvirt.virConnect) -> str:
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


# ---------------------------------------------------------------------------------------
# Running the steps


@dataclass
class _Run:
    session: HostSession
    spec: CreateSpec
    say: Callable[[CreateProgress], None]
    attempt: str
    undo: list[tuple[str, Callable[[], Awaitable[object]]]] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    step: str = "check the input"

    def progress(self, message: str, done: int | None = None, total: int | None = None) -> None:
        try:
            self.say(CreateProgress(self.step, message, done, total))
        except Exception:  # a broken progress display must not leave half a VM behind
            log.exception("create progress callback failed")

    def begin(self, step: str, message: str | None = None) -> None:
        self.step = step
        self.progress(message or step)

    async def call(self, fn: Callable[[libvirt.virConnect], T], timeout: float | None = None) -> T:
        return await on_host(self.session, f"{self.attempt}: {self.step}", fn, timeout=timeout)

    async def new_volume(self, xml: str) -> str:
        pool_name = self.spec.pool

        def make(conn: libvirt.virConnect) -> str:
            return str(storage.create_volume(storage.pool_by_name(conn, pool_name), xml).path())

        path = await self.call(make)
        self.volumes.append(path)
        self.undo.append((f"volume {path}", lambda: self.session.call(
            lambda c: storage.delete_volume_by_path(c, path), what=f"removing {path}"
        )))  # fmt: skip
        return path

    async def upload(self, path: str, source: bytes | IO[bytes], size: int) -> None:
        await storage.upload(
            self.session,
            path,
            source,
            size,
            on_progress=lambda done, total: self.progress(self.step, done, total),
            what=f"{self.attempt}: {self.step}",
        )

    async def rollback(self) -> list[str]:
        notes = []
        for what, fn in reversed(self.undo):
            try:
                await fn()
                notes.append(what)
            except Exception as exc:
                notes.append(f"{what} (NOT removed: {describe(exc)})")
        self.undo.clear()
        return notes


async def create_vm(
    fleet: Fleet, spec: CreateSpec, on_progress: Callable[[CreateProgress], None] | None = None
) -> Created:
    """Create the VM ``spec`` describes (see the module doc for the guarantees)."""
    attempt = f"create {spec.host}/{spec.name}"
    errors = validate(spec)
    if errors:
        raise CreateError(
            f"{attempt}: " + "; ".join(f"{e.field}: {e.message}" for e in errors),
            step="check the input",
        )
    session = fleet.writable(spec.host, attempt)
    run = _Run(session=session, spec=spec, say=on_progress or (lambda _p: None), attempt=attempt)
    try:
        return await _create(run)
    except BaseException as exc:
        removed = await run.rollback()
        if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
            raise
        tail = f"; removed again: {', '.join(removed)}" if removed else ""
        if isinstance(exc, CreateError):
            raise CreateError(f"{exc}{tail}", step=exc.step, code=exc.code) from exc
        # Our own errors read well as they are; anything else gets its type name.
        plain = isinstance(exc, BackendError | ValueError | storage.StorageError)
        why = str(exc) if plain else describe(exc)
        if why.startswith(f"{attempt}: "):
            why = why[len(attempt) + 2 :]
        if why.startswith(f"{run.step}: "):
            why = why[len(run.step) + 2 :]
        code = exc.code if isinstance(exc, ActionError) else None
        raise CreateError(
            f"{attempt}: step '{run.step}' failed: {why}{tail}", step=run.step, code=code
        ) from exc


async def _create(run: _Run) -> Created:
    spec, src = run.spec, run.spec.source
    tree: netinstall.Tree | None = None
    cmdline = ""
    if isinstance(src, NetInstallSource):
        # Client-side and changes nothing: before the host is even asked.
        run.begin("probe the repository", f"looking for an installer under {src.url}")
        tree = await asyncio.to_thread(netinstall.probe_tree, src.url, src.distro)
        cmdline = netinstall.kernel_args(tree, autoinstall=src.autoinstall, extra=src.extra_args)
        run.progress(f"found a {tree.distro} installer")

    run.begin("check the host")
    facts = await run.call(lambda c: _preflight(c, spec))
    uuid = str(uuidlib.uuid4())
    cdrom: str | None = None
    metadata: str | None = None
    kernel = initrd = ""

    if isinstance(src, NetInstallSource):
        assert tree is not None
        kernel = await _fetch_and_upload(run, "kernel", tree.kernel_url, facts.kernel_name)
        initrd = await _fetch_and_upload(run, "initrd", tree.initrd_url, facts.initrd_name)
        metadata = netinstall.install_marker(kernel, initrd)

    run.begin("create the disk")
    disk = await _make_disk(run, facts)

    if isinstance(src, CloudInitSource):
        run.begin("build the cloud-init seed")
        hostname = _hostname(spec.name)
        image = cloudinit.seed_iso(
            {
                "user-data": cloudinit.user_data(
                    hostname=hostname, ssh_keys=src.ssh_keys, user=src.user
                ),
                "meta-data": cloudinit.meta_data(instance_id=uuid, hostname=hostname),
            }
        )
        run.begin("create the seed volume")
        cdrom = await run.new_volume(storage.volume_xml(facts.seed_name, len(image), "raw"))
        run.begin("upload the seed image")
        await run.upload(cdrom, image, len(image))
    elif isinstance(src, IsoSource):
        assert facts.source is not None
        cdrom = facts.source.path

    xml = domain_xml(
        spec,
        uuid=uuid,
        domain_type=facts.domain_type,
        disk=disk,
        cdrom=cdrom,
        boot_cdrom=isinstance(src, IsoSource),
        metadata=metadata,
    )
    flags = libvirt.VIR_DOMAIN_START_PAUSED if spec.paused else 0
    install_pending = False
    if isinstance(src, NetInstallSource):
        run.begin("start the installer", "booting the installer kernel")
        boot = netinstall.install_xml(xml, kernel, initrd, cmdline)
        await run.call(lambda c: c.createXML(boot, flags))
        run.undo.append(("the installer domain", lambda: run.session.call(
            lambda c: _destroy_quietly(c, uuid), what="stopping the installer"
        )))  # fmt: skip
        run.begin("define the VM", "defining the final VM (boots from its disk)")
        await run.call(lambda c: c.defineXML(xml))
        run.undo.append(("the VM definition", lambda: run.session.call(
            lambda c: _undefine_quietly(c, uuid), what="undefining"
        )))  # fmt: skip
        install_pending = True
    else:
        run.begin("define the VM")
        await run.call(lambda c: c.defineXML(xml))
        run.undo.append(("the VM definition", lambda: run.session.call(
            lambda c: _undefine_quietly(c, uuid), what="undefining"
        )))  # fmt: skip
        if spec.start:
            run.begin("start the VM")
            await run.call(lambda c: c.lookupByUUIDString(uuid).createWithFlags(flags))

    run.undo.clear()  # done: nothing is taken back from here on
    vm = await refresh(run.session, uuid)
    run.step = "done"
    run.progress(f"created {spec.host}/{spec.name}")
    return Created(
        ref=f"{spec.host}/{spec.name}",
        uuid=uuid,
        vm=vm,
        volumes=tuple(run.volumes),
        install_pending=install_pending,
    )


def _destroy_quietly(conn: libvirt.virConnect, uuid: str) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        dom = conn.lookupByUUIDString(uuid)
        if dom.isActive():
            dom.destroy()


def _undefine_quietly(conn: libvirt.virConnect, uuid: str) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        dom = conn.lookupByUUIDString(uuid)
        if dom.isActive():
            dom.destroy()
        if dom.isPersistent():
            undefine_all(dom)


async def _make_disk(run: _Run, facts: _HostFacts) -> str:
    spec, src = run.spec, run.spec.source
    size = int(spec.disk_gib * GIB) if spec.disk_gib is not None else None
    if isinstance(src, ImageSource | CloudInitSource):
        base = facts.source
        assert base is not None
        capacity = max(size or 0, base.capacity)
        if isinstance(src, ImageSource) and src.copy:
            run.progress(f"copying {base.path}")
            xml = storage.volume_xml(facts.disk_name, capacity, "qcow2")
            pool_name = spec.pool

            def copy(conn: libvirt.virConnect) -> str:
                pool = storage.pool_by_name(conn, pool_name)
                src_vol = conn.storageVolLookupByPath(base.path)
                return str(pool.createXMLFrom(xml, src_vol, 0).path())

            timeout = run.session.timing.call_timeout + base.capacity / (50 * MIB)
            path = await run.call(copy, timeout=timeout)
            run.volumes.append(path)
            run.undo.append((f"volume {path}", lambda: run.session.call(
                lambda c: storage.delete_volume_by_path(c, path), what=f"removing {path}"
            )))  # fmt: skip
            return path
        run.progress(f"overlay on {base.path}")
        return await run.new_volume(
            storage.volume_xml(
                facts.disk_name,
                capacity,
                "qcow2",
                backing_path=base.path,
                backing_format=base.format or "raw",
            )
        )
    capacity = size or int(DEFAULT_BLANK_GIB * GIB)
    return await run.new_volume(storage.volume_xml(facts.disk_name, capacity, "qcow2"))


async def _fetch_and_upload(run: _Run, what: str, url: str, volume: str) -> str:
    run.begin(f"fetch the {what}", f"downloading {url}")
    loop = asyncio.get_running_loop()

    def fetched(done: int, total: int | None) -> None:
        # Called on the download thread: report on the loop's, where listeners live.
        loop.call_soon_threadsafe(run.progress, f"downloading {url}", done, total)

    with tempfile.TemporaryFile(prefix="catkeeper-") as tmp:
        size = await asyncio.to_thread(netinstall.fetch, url, tmp, on_progress=fetched)
        if size == 0:
            raise netinstall.NetInstallError(f"{url} is empty")
        tmp.seek(0)
        run.begin(f"create the {what} volume")
        path = await run.new_volume(storage.volume_xml(volume, size, "raw"))
        run.begin(f"upload the {what}")
        await run.upload(path, tmp, size)
    return path
