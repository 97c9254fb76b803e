"""Open a VM's graphical console: plan it, tunnel it, start the viewer, clean up after it.

The viewer's argv and password file come from ``viewer_setup`` (no shell, no password on a
command line). Without a display, nothing is started: the caller gets the tunnel and a
:class:`~catkeeper.backend.console.plan.ConnectionInfo` to show instead. The names of
``viewer_setup`` that callers use are re-exported here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import getpass
import logging
import os
import shutil
import signal
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from catkeeper.backend.console.plan import (
    ConnectionInfo,
    ConsolePlan,
    HostTransport,
    Route,
    connection_info,
    plan_console,
    viewer_protocols,
)
from catkeeper.backend.console.viewer_setup import (
    DEFAULT_VIEWERS,
    ConsoleError,
    Secrets,
    build_argv,
    find_viewer,
    graphics_password,
    has_display,
    viewer_kind,
    vnc_obfuscate,
    vv_file,
)
from catkeeper.backend.ssh import LocalSocketRelay, Tunnel
from catkeeper.backend.timeouts import within
from catkeeper.model import VM

if TYPE_CHECKING:
    from catkeeper.backend.host import HostSession

log = logging.getLogger(__name__)


__all__ = [
    "DEFAULT_VIEWERS",
    "Console",
    "ConsoleError",
    "Consoles",
    "Viewer",
    "build_argv",
    "find_viewer",
    "graphics_password",
    "has_display",
    "viewer_kind",
    "vnc_obfuscate",
]


# A console: a tunnel (maybe), a viewer (maybe), password files (maybe)


@dataclass
class Viewer:
    """A running viewer process."""

    argv: list[str]  # holds no password: it goes through a file
    process: asyncio.subprocess.Process
    stderr_tail: collections.deque[str]
    _reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode


class Console:
    """One opened console. ``viewer`` is None when there was no display (or no viewer):
    then ``info`` tells how to connect, and the tunnel stays open until ``aclose``."""

    def __init__(
        self,
        vm: VM,
        plan: ConsolePlan,
        info: ConnectionInfo,
        tunnel: Tunnel | None,
    ) -> None:
        self.vm = vm
        self.plan = plan
        self.info = info
        self.tunnel = tunnel
        self.viewer: Viewer | None = None
        self._secrets: Secrets | None = None
        self._watch: asyncio.Task[None] | None = None
        self._done = asyncio.Event()
        self.on_exit: list[Callable[[Console], None]] = []

    @property
    def closed(self) -> bool:
        return self._done.is_set()

    @property
    def failure(self) -> str | None:
        """Why the viewer failed (its exit code and last stderr lines), None if it did not."""
        viewer = self.viewer
        if viewer is None or not viewer.returncode:
            return None
        tail = " | ".join(list(viewer.stderr_tail)[-3:])
        return f"viewer {viewer.argv[0]} exited with {viewer.returncode}: {tail}"

    async def wait(self) -> int | None:
        """Until the viewer has exited and everything is cleaned up; its exit code."""
        await self._done.wait()
        return self.viewer.returncode if self.viewer is not None else None

    def _cleanup(self) -> None:
        if self.tunnel is not None:
            self.tunnel.close()
        if self._secrets is not None:
            self._secrets.remove()
            self._secrets = None
        if not self._done.is_set():
            self._done.set()
            for cb in self.on_exit:
                with contextlib.suppress(Exception):
                    cb(self)

    async def _watch_viewer(self) -> None:
        assert self.viewer is not None
        try:
            code = await self.viewer.process.wait()
            tail = " | ".join(self.viewer.stderr_tail)
            if code:
                log.info("viewer pid %d exited with %d: %s", self.viewer.pid, code, tail)
            else:
                log.info("viewer pid %d exited", self.viewer.pid)
        finally:
            self._cleanup()

    async def aclose(self) -> None:
        """End the viewer (SIGTERM, then SIGKILL) and close the tunnel."""
        viewer = self.viewer
        if viewer is not None and viewer.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                viewer.process.send_signal(signal.SIGTERM)
            try:
                await within(viewer.process.wait(), 3)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    viewer.process.kill()
                with contextlib.suppress(TimeoutError):
                    await within(viewer.process.wait(), 3)
        if self._watch is not None:
            # The watcher's own ending (failed, cancelled) is not raised here; a cancel of
            # this close is (suppressing CancelledError also swallowed the caller's).
            await asyncio.wait({self._watch}, timeout=1)
            if self._watch.done() and not self._watch.cancelled():
                self._watch.exception()
        self._cleanup()


class Consoles:
    """Every console this process opened; ``aclose`` ends them all (catkeeper quitting).

    ``viewer``: the config's argv template, None to look for one on PATH. ``env``: the
    environment viewers run in (and where $DISPLAY is looked up); default ``os.environ``.
    """

    def __init__(
        self,
        viewer: Sequence[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        which: Callable[[str], str | None] = shutil.which,
    ) -> None:
        self.template = find_viewer(viewer, which=which)
        self.env = dict(os.environ if env is None else env)
        self.active: list[Console] = []

    async def open(self, session: HostSession, vm: VM, *, launch: bool = True) -> Console:
        """Plan, tunnel and (with a display and ``launch``) start a viewer for ``vm``.

        Raises :class:`ConsoleError` when the console cannot be reached, with the reason.
        """
        fresh = await session.refresh_domain(vm.uuid)  # autoport may have changed the port
        if fresh is None:
            raise ConsoleError(f"{vm.ref} no longer exists")
        vm = fresh
        transport = HostTransport.of(session.cfg)
        display = has_display(self.env)
        start_viewer = launch and display and self.template is not None
        protocols = viewer_protocols(self.template) if start_viewer else ("vnc", "spice")
        plan = plan_console(vm, transport, protocols=protocols)
        if not plan.possible:
            raise ConsoleError(plan.reason)
        tunnel = await self._endpoint(session, plan)
        endpoint = tunnel.endpoint if tunnel is not None else (plan.host or "", plan.port or 0)
        reason = None
        if not start_viewer:
            if not launch:
                reason = "asked to print the connection instead of starting a viewer"
            elif not display:
                reason = "no display here ($DISPLAY and $WAYLAND_DISPLAY are unset)"
            else:
                reason = (
                    "no VNC viewer found (install tigervnc-viewer or set viewer: in the config)"
                )
        info = connection_info(
            vm.ref, plan, transport, endpoint, here=_here(), me=_me(), reason=reason
        )
        console = Console(vm, plan, info, tunnel)
        self.active.append(console)
        console.on_exit.append(self._forget)
        if not start_viewer:
            return console
        try:
            await self._launch(session, console)
        except BaseException:
            await console.aclose()
            raise
        return console

    async def _endpoint(self, session: HostSession, plan: ConsolePlan) -> Tunnel | None:
        if plan.route is Route.DIRECT:
            return None
        if plan.route is Route.LOCAL_SOCKET:
            assert plan.socket is not None
            return await LocalSocketRelay(plan.socket).start()
        if session.ssh is None:  # HostTransport said ssh, so this cannot happen
            raise ConsoleError(f"{session.name} has no ssh connection to tunnel through")
        if plan.route is Route.TUNNEL_SOCKET:
            assert plan.socket is not None
            return await session.ssh.open_tunnel_to_path(plan.socket)
        assert plan.host is not None and plan.port is not None
        return await session.ssh.open_tunnel(plan.host, plan.port)

    async def _launch(self, session: HostSession, console: Console) -> None:
        assert self.template is not None
        template = self.template
        info, plan = console.info, console.plan
        password_file = None
        if plan.has_password and not session.readonly and plan.index is not None:
            password_file = await self._password_file(session, console, template)
        argv = build_argv(
            template,
            host=info.host,
            port=info.port,
            protocol=info.protocol,
            password_file=password_file,
        )
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,  # never onto the TUI's terminal
                stderr=asyncio.subprocess.PIPE,
                env=self.env,
                # Its own session: a Ctrl-C meant for catkeeper's terminal does not reach it;
                # catkeeper ends it by PID when it quits.
                start_new_session=True,
            )
        except OSError as exc:
            raise ConsoleError(
                f"cannot start the viewer {argv[0]!r}: {exc.strerror or exc}"
            ) from None
        tail: collections.deque[str] = collections.deque(maxlen=20)
        console.viewer = Viewer(argv, process, tail, asyncio.ensure_future(_collect(process, tail)))
        log.info("viewer pid %d for %s: %s", process.pid, console.vm.ref, argv)
        console._watch = asyncio.ensure_future(console._watch_viewer())

    async def _password_file(
        self, session: HostSession, console: Console, template: Sequence[str]
    ) -> str | None:
        import libvirt

        index = console.plan.index
        assert index is not None
        xml = await session.call_domain(
            console.vm.uuid,
            lambda d: d.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE),
            what="reading the console password",
        )
        password = graphics_password(xml, index)
        del xml
        if password is None:
            return None
        kind = viewer_kind(template)
        if kind == "other":
            log.info("viewer %s cannot take a password from catkeeper; it will ask", template[0])
            return None
        console._secrets = secrets = Secrets()
        if kind == "passwd-file":
            return secrets.write("passwd", vnc_obfuscate(password))
        info = console.info
        data = vv_file(info.protocol, info.host, info.port, password, console.vm.ref)
        return secrets.write("console.vv", data)

    def _forget(self, console: Console) -> None:
        with contextlib.suppress(ValueError):
            self.active.remove(console)

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in list(self.active)), return_exceptions=True)


async def _collect(process: asyncio.subprocess.Process, tail: collections.deque[str]) -> None:
    """Keep the last lines the viewer wrote to stderr (for an error message)."""
    if process.stderr is None:
        return
    with contextlib.suppress(Exception):
        async for line in process.stderr:
            text = line.decode(errors="replace").strip()
            if text:
                tail.append(text)


def _here() -> str:
    return socket.getfqdn() or socket.gethostname()


def _me() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None
