"""Delete a VM: undefine it with its snapshots' metadata, managed save and NVRAM, then delete
exactly the volumes the user chose (and only the VM's own).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import libvirt

from catkeeper.backend import audit
from catkeeper.backend.actions import ActionError
from catkeeper.backend.errors import describe
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.vm.common import Refused, deleter, on_host, refresh, undefine_all
from catkeeper.backend.vm.disks import disks_of
from catkeeper.model import VM


@dataclass(frozen=True)
class DeleteResult:
    ref: str
    removed_volumes: tuple[str, ...]


async def delete(
    fleet: Fleet,
    vm: VM,
    *,
    volumes: Sequence[str] = (),
    force_off: bool = False,
) -> DeleteResult:
    """Undefine the VM (with its snapshots' metadata, managed save and NVRAM) and delete
    exactly the storage volumes at ``volumes`` (paths as ``disks()`` lists them).

    A path that is not one of the VM's own volume-backed disks is refused before anything
    changes. A running VM is refused unless ``force_off``, which pulls its plug first.
    """
    attempt = f"delete {vm.ref}"
    session = fleet.writable(vm.host, attempt)
    wanted = list(dict.fromkeys(volumes))

    def check_and_undefine(conn: libvirt.virConnect) -> None:
        dom = conn.lookupByUUIDString(vm.uuid)
        own = {d.path for d in disks_of(conn, dom) if d.deletable}
        strangers = [p for p in wanted if p not in own]
        if strangers:
            raise Refused(
                "not a storage volume of this VM, so not deleting anything: " + ", ".join(strangers)
            )
        if dom.isActive():
            if not force_off:
                raise Refused("it is running; stop it first (or force it off)")
            dom.destroy()
        if dom.isPersistent():
            undefine_all(dom)

    try:
        await on_host(session, attempt, check_and_undefine)
    except ActionError:
        await refresh(session, vm.uuid)
        raise
    await refresh(session, vm.uuid)
    # The domain and its ring are gone: the local log is all that remembers it.
    with_volumes = f"with {', '.join(wanted)}" if wanted else "its volumes kept"
    await audit.record(fleet, vm, "delete", with_volumes, on_host=False)
    removed: list[str] = []
    failed: list[str] = []
    for path in wanted:
        try:
            gone = await on_host(
                session,
                f"{attempt}: volume {path}",
                deleter(path),
            )
            if gone:
                removed.append(path)
        except Exception as exc:
            failed.append(describe(exc))
    if failed:
        raise ActionError(
            f"{attempt}: the VM is gone, but {len(failed)} volume(s) remain: " + "; ".join(failed)
        )
    return DeleteResult(ref=vm.ref, removed_volumes=tuple(removed))
