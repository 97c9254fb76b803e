"""Network installs from an http(s) repository: find the installer, run it, switch over.

How an install runs (the scheme virt-install uses, done through libvirt only):

1. ``probe_tree`` finds the installer kernel and initrd in the repository (SUSE, Fedora-like,
   Debian, Ubuntu layouts), on the client.
2. ``create`` (``create/steps.py``) fetches both on the client, uploads them to the host as
   storage volumes, starts a *transient* domain that boots them with the installer's kernel
   arguments (``install_xml``: ``<kernel>``/``<initrd>``/``<cmdline>``, and
   ``on_reboot=destroy``), then defines the *final* persistent domain (same name and UUID,
   booting from its disk). libvirt keeps the installer as the running configuration and the
   final XML as the next boot's.
3. When the installer reboots, the domain stops (``on_reboot=destroy``). ``finish_install``
   then deletes the kernel/initrd volumes and boots the final definition. The final XML
   carries a marker in ``<metadata>`` (``INSTALL_NAMESPACE``) naming those volumes, so any
   catkeeper process can finish an install another one started; ``InstallWatcher`` does it
   as soon as the stop shows up (event, or polling as a fallback).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO
from xml.sax.saxutils import escape

import libvirt

from catkeeper.backend.actions import ActionError
from catkeeper.backend.errors import describe
from catkeeper.backend.events import DomainEvent, FleetEvent, VmRemoved
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.timeouts import within
from catkeeper.backend.vm import storage
from catkeeper.backend.vm.common import Refused, on_host, refresh
from catkeeper.model import VM

log = logging.getLogger(__name__)

INSTALL_NAMESPACE = "https://catkeeper.dev/xmlns/install/1"
INSTALL_PREFIX = "catkeeper-install"
_INSTALL_TAG = f"{{{INSTALL_NAMESPACE}}}install"
FETCH_LIMIT = 2 * 1024**3  # an installer kernel or initrd larger than this is not one
_ARG_RE = re.compile(r"^[\x21-\x7e]+$")  # one kernel argument: printable, no spaces


class NetInstallError(ValueError):
    """A repository or argument problem found before anything was changed."""


@dataclass(frozen=True)
class Layout:
    distro: str
    kernel: str  # relative to the repository URL
    initrd: str


LAYOUTS: tuple[Layout, ...] = (
    Layout("suse", "boot/x86_64/loader/linux", "boot/x86_64/loader/initrd"),
    Layout("fedora", "images/pxeboot/vmlinuz", "images/pxeboot/initrd.img"),
    Layout(
        "debian",
        "main/installer-amd64/current/images/netboot/debian-installer/amd64/linux",
        "main/installer-amd64/current/images/netboot/debian-installer/amd64/initrd.gz",
    ),
    Layout(
        "ubuntu",
        "main/installer-amd64/current/legacy-images/netboot/ubuntu-installer/amd64/linux",
        "main/installer-amd64/current/legacy-images/netboot/ubuntu-installer/amd64/initrd.gz",
    ),
)
DISTROS = tuple(layout.distro for layout in LAYOUTS)


@dataclass(frozen=True)
class Tree:
    url: str  # the repository, ending in "/"
    distro: str
    kernel_url: str
    initrd_url: str


def check_url(url: str, what: str = "repository URL") -> str:
    url = url.strip()
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NetInstallError(f"{what} {url!r}: give an http:// or https:// URL")
    if any(c.isspace() for c in url):
        raise NetInstallError(f"{what} {url!r}: must not contain spaces")
    return url


def _exists(url: str, timeout: float) -> bool:
    """Whether the server has this file (HEAD; a GET of one byte where HEAD is refused)."""
    for method, headers in (("HEAD", {}), ("GET", {"Range": "bytes=0-0"})):
        request = urllib.request.Request(url, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return 200 <= int(response.status) < 300
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                return False
            if exc.code in (405, 501):  # HEAD not allowed: try GET
                continue
            raise NetInstallError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise NetInstallError(f"cannot reach {url}: {reason}") from None
    return False


def probe_tree(url: str, distro: str | None = None, *, timeout: float = 10.0) -> Tree:
    """The installer in the repository at ``url`` (blocking: run it in a thread).

    ``distro`` picks the layout instead of trying each in turn.
    """
    base = check_url(url)
    if not base.endswith("/"):
        base += "/"
    if distro is not None and distro not in DISTROS:
        raise NetInstallError(f"unknown distro {distro!r} (known: {', '.join(DISTROS)})")
    layouts = [lay for lay in LAYOUTS if distro in (None, lay.distro)]
    for layout in layouts:
        kernel = urllib.parse.urljoin(base, layout.kernel)
        initrd = urllib.parse.urljoin(base, layout.initrd)
        if _exists(kernel, timeout) and _exists(initrd, timeout):
            return Tree(url=base, distro=layout.distro, kernel_url=kernel, initrd_url=initrd)
    tried = ", ".join(lay.kernel for lay in layouts)
    raise NetInstallError(f"no installer found under {base} (looked for {tried})")


def kernel_args(tree: Tree, *, autoinstall: str | None = None, extra: str = "") -> str:
    """The installer's command line: where the repository is, and the unattended answers
    (AutoYaST profile, kickstart or preseed) when given."""
    args: list[str] = []
    if autoinstall is not None:
        autoinstall = check_url(autoinstall, "autoinstall URL")
    if tree.distro == "suse":
        args.append(f"install={tree.url}")
        if autoinstall:
            args.append(f"autoyast={autoinstall}")
    elif tree.distro == "fedora":
        args.append(f"inst.repo={tree.url}")
        if autoinstall:
            args.append(f"inst.ks={autoinstall}")
    else:  # debian, ubuntu: the netboot initrd knows its mirror; preseed answers the rest
        if autoinstall:
            args += ["auto=true", "priority=critical", f"url={autoinstall}"]
    for arg in extra.split():
        if not _ARG_RE.match(arg):
            raise NetInstallError(f"kernel argument {arg!r} has characters that do not belong")
        args.append(arg)
    return " ".join(args)


def fetch(
    url: str,
    out: IO[bytes],
    *,
    on_progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 30.0,
    limit: int = FETCH_LIMIT,
) -> int:
    """Download ``url`` into ``out`` (blocking: run it in a thread); returns the size."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and total > limit:
                raise NetInstallError(f"{url}: {total} bytes is too large for an installer file")
            done = 0
            while chunk := response.read(1024 * 1024):
                out.write(chunk)
                done += len(chunk)
                if done > limit:
                    raise NetInstallError(f"{url}: more than {limit} bytes")
                if on_progress is not None:
                    on_progress(done, total)
    except urllib.error.HTTPError as exc:
        raise NetInstallError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NetInstallError(f"cannot fetch {url}: {reason}") from None
    if total is not None and done != total:
        raise NetInstallError(f"{url}: got {done} of {total} bytes")
    return done


# ---------------------------------------------------------------------------------------
# Domain XML


def install_marker(kernel: str, initrd: str) -> str:
    """The ``<metadata>`` element that names the installer volumes of a pending install."""
    return (
        f"<{INSTALL_PREFIX}:install xmlns:{INSTALL_PREFIX}='{INSTALL_NAMESPACE}'>"
        f"<{INSTALL_PREFIX}:kernel>{escape(kernel)}</{INSTALL_PREFIX}:kernel>"
        f"<{INSTALL_PREFIX}:initrd>{escape(initrd)}</{INSTALL_PREFIX}:initrd>"
        f"</{INSTALL_PREFIX}:install>"
    )


def pending_install(xml: str) -> tuple[str, str] | None:
    """(kernel path, initrd path) when this domain XML marks an unfinished install."""
    root = ET.fromstring(xml)
    elem = root.find(f"metadata/{_INSTALL_TAG}")
    if elem is None:
        return None
    kernel = elem.findtext(f"{{{INSTALL_NAMESPACE}}}kernel") or ""
    initrd = elem.findtext(f"{{{INSTALL_NAMESPACE}}}initrd") or ""
    return (kernel, initrd) if kernel and initrd else None


def install_xml(final_xml: str, kernel: str, initrd: str, cmdline: str) -> str:
    """The installer's XML: the final domain booting ``kernel``/``initrd`` with ``cmdline``,
    stopping (not rebooting) when the installer reboots, without the install marker."""
    root = ET.fromstring(final_xml)
    os_elem = root.find("os")
    if os_elem is None:
        raise ValueError("domain XML without <os>")
    for boot in os_elem.findall("boot"):
        os_elem.remove(boot)  # direct kernel boot; per-device boot order stays untouched
    for tag, text in (("kernel", kernel), ("initrd", initrd), ("cmdline", cmdline)):
        ET.SubElement(os_elem, tag).text = text
    on_reboot = root.find("on_reboot")
    if on_reboot is None:
        on_reboot = ET.SubElement(root, "on_reboot")
    on_reboot.text = "destroy"
    metadata = root.find("metadata")
    if metadata is not None:
        for child in metadata.findall(_INSTALL_TAG):
            metadata.remove(child)
        if len(metadata) == 0:
            root.remove(metadata)
    return ET.tostring(root, encoding="unicode")


# ---------------------------------------------------------------------------------------
# Switching over

# libvirt's VIR_DOMAIN_SHUTOFF_* reasons that mean the installer did not end by itself.
_BAD_STOPS = {
    libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: "it crashed",
    libvirt.VIR_DOMAIN_SHUTOFF_FAILED: "it failed to start",
}


@dataclass(frozen=True)
class Finished:
    ref: str
    started: bool
    removed: tuple[str, ...]  # installer volumes deleted
    left: tuple[str, ...]  # installer volumes that could not be deleted (with why)


async def finish_install(fleet: Fleet, host: str, uuid: str, *, start: bool = True) -> Finished:
    """The switch-over: once the installer's domain has stopped, delete the installer
    volumes, drop the install marker and (``start``) boot the final definition.

    Refused while the installer still runs. Harmless on a domain with no pending install
    (it is only started, if asked and shut off).
    """
    session = fleet.writable(host, f"finish the install of {host}/{uuid}")
    vm = session.vms.get(uuid)
    ref = vm.ref if vm is not None else f"{host}/{uuid}"
    attempt = f"finish the install of {ref}"

    def inspect(conn: libvirt.virConnect) -> tuple[str, str] | None:
        dom = conn.lookupByUUIDString(uuid)
        if dom.isActive():
            raise Refused("the installer is still running")
        return pending_install(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))

    pending = await on_host(session, attempt, inspect)
    removed: list[str] = []
    left: list[str] = []
    for path in pending or ():
        try:
            await session.call(
                lambda c, p=path: storage.delete_volume_by_path(c, p),  # type: ignore[misc]
                what=f"{attempt}: removing {path}",
            )
            removed.append(path)
        except Exception as exc:
            left.append(f"{path}: {describe(exc)}")
    if pending is not None and not left:
        # Only once the volumes are gone: a marker left in place lets a retry find them.
        await on_host(
            session,
            attempt,
            lambda c: c.lookupByUUIDString(uuid).setMetadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                None,
                None,
                INSTALL_NAMESPACE,
                libvirt.VIR_DOMAIN_AFFECT_CONFIG,
            ),
        )
    started = False
    if start:
        await on_host(
            session, f"start {ref} from its disk", lambda c: c.lookupByUUIDString(uuid).create()
        )
        started = True
    await refresh(session, uuid)
    return Finished(ref=ref, started=started, removed=tuple(removed), left=tuple(left))


class InstallWatcher:
    """Waits for an install to end, then switches over (``finish_install``).

    Wakes on the domain's lifecycle events and, because some connections do not deliver
    them, polls every ``poll`` seconds. An installer that crashed or failed is not
    switched over: ``wait()`` raises and the VM is left as it is for a person to look at.
    """

    def __init__(
        self,
        fleet: Fleet,
        host: str,
        uuid: str,
        *,
        poll: float = 5.0,
        start: bool = True,
        on_progress: Callable[[str], None] | None = None,
    ) -> None:
        self.fleet = fleet
        self.host = host
        self.uuid = uuid
        self.poll = poll
        self.start = start
        self._say = on_progress or (lambda _m: None)
        self._wake = asyncio.Event()

    def _on_event(self, event: FleetEvent) -> None:
        if isinstance(event, DomainEvent | VmRemoved) and (event.host, event.uuid) == (
            self.host,
            self.uuid,
        ):
            self._wake.set()

    async def _stopped(self) -> tuple[bool, int]:
        session = self.fleet.session(self.host)

        def state(conn: libvirt.virConnect) -> tuple[bool, int]:
            dom = conn.lookupByUUIDString(self.uuid)
            code, reason = dom.state()
            return code == libvirt.VIR_DOMAIN_SHUTOFF, int(reason)

        return await on_host(session, f"watch the install of {self.host}/{self.uuid}", state)

    async def wait(self) -> Finished:
        unsubscribe = self.fleet.subscribe(self._on_event)
        try:
            self._say("installer running; waiting for it to finish")
            while True:
                self._wake.clear()
                with contextlib.suppress(ActionError):  # a blip: the next round retries
                    off, reason = await self._stopped()
                    if off:
                        break
                with contextlib.suppress(TimeoutError):
                    await within(self._wake.wait(), self.poll)
        finally:
            unsubscribe()
        vm: VM | None = self.fleet.session(self.host).vms.get(self.uuid)
        ref = vm.ref if vm is not None else f"{self.host}/{self.uuid}"
        if reason in _BAD_STOPS:
            raise ActionError(
                f"install of {ref}: the installer stopped because {_BAD_STOPS[reason]}; "
                "left as it is (its installer volumes too)"
            )
        self._say("installer finished; starting the VM from its disk")
        return await finish_install(self.fleet, self.host, self.uuid, start=self.start)
