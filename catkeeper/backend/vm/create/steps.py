"""The steps of a creation, in order, each undone again when a later one fails.

See the package doc for the guarantees; ``create_vm`` is the one entry point.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import uuid as uuidlib
from collections.abc import Callable

import libvirt

from catkeeper.backend import audit
from catkeeper.backend.actions import ActionError
from catkeeper.backend.errors import BackendError, describe
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.vm import cloudinit, netinstall, storage
from catkeeper.backend.vm.common import refresh, undefine_all
from catkeeper.backend.vm.create.domain import domain_xml
from catkeeper.backend.vm.create.preflight import HostFacts, preflight
from catkeeper.backend.vm.create.run import Created, CreateError, CreateProgress, Run
from catkeeper.backend.vm.create.spec import (
    DEFAULT_BLANK_GIB,
    GIB,
    MIB,
    CloudInitSource,
    CreateSpec,
    ImageSource,
    IsoSource,
    NetInstallSource,
    hostname,
    source_text,
    validate,
)


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
    run = Run(session=session, spec=spec, say=on_progress or (lambda _p: None), attempt=attempt)
    try:
        created = await _create(run)
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
    if created.vm is not None:  # after the rollback's reach: recording never undoes it
        await audit.record(fleet, created.vm, "create", source_text(spec.source))
    return created


async def _create(run: Run) -> Created:
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
    facts = await run.call(lambda c: preflight(c, spec))
    run.pool = facts.pool
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
        host_name = hostname(spec.name)
        image = cloudinit.seed_iso(
            {
                "user-data": cloudinit.user_data(
                    hostname=host_name, ssh_keys=src.ssh_keys, user=src.user
                ),
                "meta-data": cloudinit.meta_data(instance_id=uuid, hostname=host_name),
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


async def _make_disk(run: Run, facts: HostFacts) -> str:
    spec, src = run.spec, run.spec.source
    size = int(spec.disk_gib * GIB) if spec.disk_gib is not None else None
    if isinstance(src, ImageSource | CloudInitSource):
        base = facts.source
        assert base is not None
        capacity = max(size or 0, base.capacity)
        if isinstance(src, ImageSource) and src.copy:
            run.progress(f"copying {base.path}")
            xml = storage.volume_xml(facts.disk_name, capacity, "qcow2")
            pool_name = facts.pool

            def copy(conn: libvirt.virConnect) -> str:
                pool = storage.pool_by_name(conn, pool_name)
                src_vol = conn.storageVolLookupByPath(base.path)
                return str(pool.createXMLFrom(xml, src_vol, 0).path())

            timeout = run.session.timing.call_timeout + base.capacity / (50 * MIB)
            path = await run.call(copy, timeout=timeout)
            run.made(path)
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


async def _fetch_and_upload(run: Run, what: str, url: str, volume: str) -> str:
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
