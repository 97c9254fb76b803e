"""Operations on VMs as objects: create, delete (one with its volumes chosen, or several
marked, volumes kept), rename, clone, take a snapshot (of each marked VM), the snapshots
screen, and editing the domain XML. Each asks first, naming the holder, where the command
table says so."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from textual.app import App

from catkeeper.backend.vm import create, netinstall, snapshots, vmops
from catkeeper.commands import Command
from catkeeper.model import VM
from catkeeper.screens.confirm import ConfirmScreen, holder
from catkeeper.screens.create_form import CreateFormScreen
from catkeeper.screens.delete_confirm import DeleteConfirmScreen
from catkeeper.screens.snapshots import SnapshotsScreen
from catkeeper.screens.store import vm_key
from catkeeper.screens.xml_edit import edit_vm_xml
from catkeeper.tui.asking import confirm, run_each
from catkeeper.tui.consoles import one_vm
from catkeeper.tui.host import Handler, Host
from catkeeper.tui.placement import placer


class VmOps:
    def __init__(self, host: Host, app: App[Any]) -> None:
        self.host = host
        self._app = app  # the Textual app itself: the $EDITOR flow suspends it

    def handlers(self) -> dict[str, Handler]:
        return {
            "edit": self.edit,
            "create": self.create,
            "delete": self.delete,
            "rename": self.rename,
            "clone": self.clone,
            "snapshot": self.snapshot,
            "snapshots": self.snapshots,
        }

    # ---- edit XML, snapshots ------------------------------------------------------------

    def edit(self, command: Command, _args: Sequence[str]) -> None:
        vm = one_vm(self.host, "edit")
        if vm is None:
            return

        def run() -> None:
            flow = edit_vm_xml(self._app, self.host.fleet, vm)
            self.host.start(flow, name=f"edit {vm.ref}", group="edit")

        confirm(self.host, command, [vm], run, verb="Edit")

    def snapshots(self, _command: Command, _args: Sequence[str]) -> None:
        vm = one_vm(self.host, "snapshots")
        if vm is not None:
            screen = SnapshotsScreen(self.host.fleet, vm, me=self.host.me, clock=self.host.clock)
            self.host.show(screen)

    def snapshot(self, command: Command, args: Sequence[str]) -> None:
        vms = self.host.selected_vms()
        name = " ".join(args)

        async def take(vm: VM) -> None:
            snap = await snapshots.create_snapshot(self.host.fleet, vm, name)
            if len(vms) == 1:
                self.host.notify(f"took snapshot {snap.name} of {vm.ref}", title="Snapshots")

        if vms:
            confirm(
                self.host,
                command,
                vms,
                lambda: run_each(self.host, "snapshot", vms, take, group="vmops"),
                verb="Snapshot",
            )

    # ---- create ---------------------------------------------------------------------------

    def create(self, _command: Command, _args: Sequence[str]) -> None:
        self.create_on(None)

    def create_on(self, chosen: str | None, *, memory: str = "2G", vcpus: int = 2) -> None:
        """The create form, on host ``chosen`` (None: the best fit for its size) — ``:place``
        opens it on the host picked there."""
        work = self._create(chosen, memory, vcpus)
        self.host.start(work, name="create a VM", group="create")

    async def _create(self, chosen: str | None, memory: str, vcpus: int) -> None:
        host = self.host
        cursor = host.selected_vms()
        hosts = [name for name, s in host.fleet.sessions.items() if not s.readonly]
        if not hosts:
            host.notify("every host is read-only", severity="error")
            return
        form = CreateFormScreen(
            hosts,
            host=chosen or (cursor[0].host if cursor else None),
            ssh_keys=_own_ssh_keys(),
            memory=memory,
            vcpus=vcpus,
            place=placer(host.store),
            host_chosen=chosen is not None,
        )
        spec = await host.wait_for(form)
        if spec is None:
            return
        ref = f"{spec.host}/{spec.name}"
        key = f"create {ref}"

        def progress(p: create.CreateProgress) -> None:
            done = ""
            if p.done is not None and p.total:
                done = f" {100 * p.done // p.total}%"
            host.set_activity(key, f"creating {ref}: {p.message}{done}")

        host.set_activity(key, f"creating {ref}…")
        try:
            created = await create.create_vm(host.fleet, spec, progress)
        finally:
            host.set_activity(key, None)
        host.notify(f"created {created.ref}", title="New VM")
        if created.vm is not None:
            host.jump_to(vm_key(created.vm))
        if created.install_pending:
            watch = self._watch_install(spec.host, created.uuid, created.ref)
            host.start(watch, name=f"install of {created.ref}", group="installs")

    async def _watch_install(self, host_name: str, uuid: str, ref: str) -> None:
        host = self.host
        key = f"install {ref}"
        watcher = netinstall.InstallWatcher(
            host.fleet, host_name, uuid, on_progress=lambda m: host.set_activity(key, f"{ref}: {m}")
        )
        try:
            finished = await watcher.wait()
        finally:
            host.set_activity(key, None)
        left = f"; left behind: {', '.join(finished.left)}" if finished.left else ""
        started = ", started from its disk" if finished.started else ""
        host.notify(f"install of {ref} finished{started}{left}", title="New VM")

    # ---- delete ---------------------------------------------------------------------------

    def delete(self, command: Command, _args: Sequence[str]) -> None:
        vms = self.host.selected_vms()
        if len(vms) == 1:
            # Its own dialog: lists the volumes to choose from and names any holder.
            self.host.start(self._delete(vms[0]), name=f"delete {vms[0].ref}", group="delete")
        elif vms:
            now = self.host.clock()
            held = [vm for vm in vms if holder(vm, self.host.me, now)]
            running = sum(1 for vm in vms if vm.state.is_active)
            detail = "Their volumes are kept (delete one VM at a time to choose volumes)."
            if running:
                detail += f" {running} running: forced off first."
            dialog = ConfirmScreen("Delete", vms, detail=detail, held=held, now=now)
            self.host.show(dialog, lambda yes: self._delete_many(vms) if yes else None)

    def _delete_many(self, vms: Sequence[VM]) -> None:
        async def one(vm: VM) -> None:
            await vmops.delete(self.host.fleet, vm, force_off=vm.state.is_active)

        run_each(self.host, "delete", vms, one, group="delete")

    async def _delete(self, vm: VM) -> None:
        host = self.host
        disks = await vmops.disks(host.fleet, vm)
        choice = await host.wait_for(DeleteConfirmScreen(vm, disks, me=host.me, now=host.clock()))
        if choice is None:
            return
        result = await vmops.delete(
            host.fleet, vm, volumes=choice.volumes, force_off=choice.force_off
        )
        gone = len(result.removed_volumes)
        extra = f" and {gone} volume{'s' if gone != 1 else ''}" if gone else ""
        host.notify(f"deleted {result.ref}{extra}", title="Delete")

    # ---- rename, clone --------------------------------------------------------------------

    def rename(self, command: Command, args: Sequence[str]) -> None:
        if len(args) != 1:
            self.host.notify(f"usage: :rename {command.usage}", severity="error")
            return
        vm = one_vm(self.host, "rename")
        if vm is None:
            return
        new_name = args[0]

        async def run() -> None:
            renamed = await vmops.rename(self.host.fleet, vm, new_name)
            self.host.notify(f"renamed {vm.ref} to {renamed.name}", title="Rename")

        def go() -> None:
            self.host.start(run(), name=f"rename {vm.ref}", group="vmops")

        confirm(self.host, command, [vm], go, verb="Rename")

    def clone(self, command: Command, args: Sequence[str]) -> None:
        if not 1 <= len(args) <= 2 or args[1:] not in ([], ["copy"], ["overlay"]):
            self.host.notify(
                f"usage: :clone {command.usage} (copy is the default)", severity="error"
            )
            return
        vm = one_vm(self.host, "clone")
        if vm is None:
            return
        new_name = args[0]
        mode: vmops.CloneMode = "overlay" if args[1:] == ["overlay"] else "copy"
        key = f"clone {vm.ref}"
        host = self.host

        async def run() -> None:
            host.set_activity(key, f"cloning {vm.ref} as {new_name}…")
            try:
                made = await vmops.clone(
                    host.fleet,
                    vm,
                    new_name,
                    mode=mode,
                    on_progress=lambda m: host.set_activity(key, f"clone of {vm.ref}: {m}"),
                )
            finally:
                host.set_activity(key, None)
            host.notify(f"cloned {vm.ref} as {made.ref}", title="Clone")

        confirm(
            host, command, [vm], lambda: host.start(run(), name=key, group="vmops"), verb="Clone"
        )


def _own_ssh_keys() -> list[str]:
    """The user's public keys (``~/.ssh/id_*.pub``), to offer in the create form."""
    keys = []
    for path in sorted(Path.home().glob(".ssh/id_*.pub")):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            line = path.read_text(encoding="utf-8").strip()
            if line:
                keys.append(line)
    return keys
