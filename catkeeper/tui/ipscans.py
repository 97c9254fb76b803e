"""Finding guest IPs on demand: ``i``/``:scan`` for the marked VMs (or the cursor's),
``:scan HOST`` and ``I``/``:scan-host [HOST]`` for every VM of a host. Progress goes to the
status line, the outcome to one notice per scan."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from catkeeper.backend.errors import describe
from catkeeper.backend.ipscan.scheduler import HostScan, ScanProgress
from catkeeper.commands import Command
from catkeeper.model import VM
from catkeeper.tui.host import Handler, Host


class IpScans:
    def __init__(self, host: Host) -> None:
        self.host = host

    def handlers(self) -> dict[str, Handler]:
        return {"scan": self.scan, "scan-host": self.scan_host}

    def scan(self, _command: Command, args: Sequence[str]) -> None:
        if args:  # :scan HOST — a VM's name is not a host, so this is unambiguous
            self._hosts(args)
            return
        vms = self.host.selected_vms()
        if len(vms) == 1:
            vm = vms[0]
            self.host.start(
                self._scan(f"ips {vm.ref}", vm.ref, partial(self.host.ipscan.scan_vm, vm)),
                name=f"find IPs of {vm.ref}",
                group="ipscan",
            )
        elif vms:
            self.host.start(
                self._scan_many(vms), name=f"find IPs of {len(vms)} VMs", group="ipscan"
            )

    async def _scan_many(self, vms: Sequence[VM]) -> None:
        """Several marked VMs: scanned at once, one line in the status, one notice."""
        host = self.host
        key = f"ips of {len(vms)} VMs"
        host.set_activity(key, f"finding IPs of {len(vms)} VMs…")
        try:
            scans = await asyncio.gather(
                *(host.ipscan.scan_vm(vm) for vm in vms), return_exceptions=True
            )
        finally:
            host.set_activity(key, None)
        lines, failed = [], 0
        for vm, scan in zip(vms, scans, strict=True):
            if isinstance(scan, BaseException):
                failed += 1
                lines.append(f"{vm.ref}: failed ({describe(scan)})")
                continue
            found = sorted({s.ip for r in scan.results for s in r.sightings})
            lines.append(f"{vm.ref}: {', '.join(found[:3]) or 'no address found'}")
        title = f"IP scan of {len(vms)} VMs: {len(vms) - failed} done, {failed} failed"
        host.notify("\n".join(lines), title=title, severity="warning" if failed else "information")

    def scan_host(self, _command: Command, args: Sequence[str]) -> None:
        if args:
            self._hosts(args)
        else:
            self._hosts(list(dict.fromkeys(vm.host for vm in self.host.selected_vms())))

    def _hosts(self, names: Sequence[str]) -> None:
        known = self.host.store.hosts
        unknown = [n for n in names if n not in known]
        if unknown:
            self.host.notify(
                f"no host {unknown[0]!r} (hosts: {', '.join(known)})", severity="error"
            )
            return
        for name in names:
            self.host.start(
                self._scan(
                    f"ips {name}", f"host {name}", partial(self.host.ipscan.scan_host, name)
                ),
                name=f"find IPs on {name}",
                group="ipscan",
            )

    async def _scan(
        self,
        key: str,
        what: str,
        run: Callable[..., Awaitable[HostScan]],
    ) -> None:
        """Run one scan, its progress in the status line, its outcome as a toast."""
        host = self.host

        def progress(p: ScanProgress) -> None:
            if p.stage != "done":
                count = f" {p.done}/{p.total}" if p.total > 1 else ""
                host.set_activity(key, f"finding IPs of {what}: {p.stage}{count}")

        host.set_activity(key, f"finding IPs of {what}…")
        try:
            scan = await run(progress=progress)
        finally:
            host.set_activity(key, None)
        found = sorted({s.ip for r in scan.results for s in r.sightings})
        shown = ", ".join(found[:6]) + (f" and {len(found) - 6} more" if len(found) > 6 else "")
        message = f"{what}: {shown}" if found else f"{what}: no address found"
        if scan.error:
            message += f" ({scan.error})"
        host.notify(message, title="IP scan", severity="warning" if scan.error else "information")
