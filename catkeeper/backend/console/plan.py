"""How to reach a VM's graphical console: a pure decision, no I/O.

virt-manager's ``ConnectionInfo`` (virtManager/details/sshtunnels.py) is the model: look at
the domain's ``<graphics>`` and at how we reach its host, and decide whether a viewer can
connect straight to ``host:port``, needs a tunnel, or cannot connect at all, and why. Kept
apart from the tunnels and processes (backend/ssh/, backend/console/viewer.py) so the whole table
of cases is tested without a daemon.

Routes:

* ``DIRECT``: the viewer connects to ``host:port`` as given.
* ``TUNNEL``: an ssh local forward to ``host:port`` *as the libvirt host sees it* (a VNC
  server on the host's loopback, or any address: over ssh we always tunnel, since VNC itself
  is unencrypted).
* ``TUNNEL_SOCKET``: an ssh local forward to the unix socket ``socket`` on the host.
* ``LOCAL_SOCKET``: the unix socket is on this machine; a loopback relay offers it as a port.
* ``IMPOSSIBLE``: ``reason`` says why (VM off, no graphics, TLS-only, SPICE with a VNC-only
  viewer, autoport not assigned yet, listening only where we cannot reach).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from catkeeper.backend.ssh import ssh_settings_for
from catkeeper.config import HostConfig
from catkeeper.model import VM, Graphics


class Route(StrEnum):
    DIRECT = "direct"
    TUNNEL = "tunnel"
    TUNNEL_SOCKET = "tunnel-socket"
    LOCAL_SOCKET = "local-socket"
    IMPOSSIBLE = "impossible"


class TransportKind(StrEnum):
    LOCAL = "local"  # the libvirt daemon runs on this machine (qemu:///system, test:///…)
    REMOTE = "remote"  # a plain remote URI (qemu+tcp://, qemu+tls://) and no ssh of ours
    SSH = "ssh"  # we have an ssh connection to the host


@dataclass(frozen=True)
class HostTransport:
    """How catkeeper reaches a host, as far as consoles care."""

    kind: TransportKind
    host: str | None = None  # remote: the URI's host name; ssh: the ssh target host
    ssh_user: str | None = None
    ssh_port: int | None = None

    @classmethod
    def of(cls, cfg: HostConfig) -> HostTransport:
        settings = ssh_settings_for(cfg)
        if settings is not None:
            return cls(TransportKind.SSH, settings.host, settings.user, settings.port)
        hostname = urlsplit(cfg.uri).hostname
        if hostname and hostname not in ("localhost", "127.0.0.1", "::1"):
            return cls(TransportKind.REMOTE, hostname)
        return cls(TransportKind.LOCAL)


@dataclass(frozen=True)
class ConsolePlan:
    route: Route
    reason: str  # why this route, or why none: shown to the user as is
    protocol: str | None = None  # vnc, spice
    host: str | None = None  # DIRECT: connect here; TUNNEL: the target as the host sees it
    port: int | None = None
    socket: str | None = None  # TUNNEL_SOCKET / LOCAL_SOCKET: the unix socket path
    has_password: bool | None = None  # None: unknown (read-only connection)
    index: int | None = None  # which <graphics> element (order in the domain XML)

    @property
    def possible(self) -> bool:
        return self.route is not Route.IMPOSSIBLE


def viewer_protocols(template: Sequence[str] | None) -> tuple[str, ...]:
    """What a viewer template can show: remote-viewer speaks SPICE if the URI scheme is left
    to catkeeper (``{scheme}``); VNC viewers only VNC."""
    if not template:
        return ("vnc",)
    if any("{scheme}" in arg for arg in template):
        return ("vnc", "spice")
    return ("vnc",)


def _is_loopback(address: str | None) -> bool:
    if address is None:
        # No listen address: qemu.conf's vnc_listen/spice_listen, 127.0.0.1 by default.
        return True
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_any(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address.strip("[]")).is_unspecified
    except ValueError:
        return False


def _any_to_loopback(address: str) -> str:
    # A server on 0.0.0.0 is reached on 127.0.0.1; one on :: on ::1, which works whether or
    # not the socket is dual-stack (an IPV6_V6ONLY socket would refuse 127.0.0.1).
    return "::1" if ":" in address else "127.0.0.1"


def plan_console(
    vm: VM,
    transport: HostTransport,
    *,
    protocols: Collection[str] = ("vnc",),
) -> ConsolePlan:
    """Decide how a viewer speaking ``protocols`` reaches ``vm``'s console."""
    if not vm.state.is_active:
        return ConsolePlan(
            Route.IMPOSSIBLE, f"{vm.ref} is {vm.state.value}: start it to see its console"
        )
    graphical = [(i, g) for i, g in enumerate(vm.graphics) if g.type in ("vnc", "spice")]
    if not graphical:
        kinds = ", ".join(sorted({g.type for g in vm.graphics}))
        extra = f" (only {kinds})" if kinds else ""
        return ConsolePlan(
            Route.IMPOSSIBLE, f"{vm.ref} has no VNC or SPICE console{extra}; try the serial one"
        )
    usable = [(i, g) for i, g in graphical if g.type in protocols]
    if not usable:
        have = "/".join(sorted({g.type.upper() for _, g in graphical}))
        want = "/".join(p.upper() for p in protocols)
        return ConsolePlan(
            Route.IMPOSSIBLE,
            f"{vm.ref} has only a {have} console and the viewer speaks {want}; "
            "configure a viewer that does (e.g. remote-viewer '{scheme}://{host}:{port}')",
        )
    # Prefer a VNC head when there are several: every viewer speaks it.
    usable.sort(key=lambda ig: (ig[1].type != "vnc", ig[0]))
    plans = [_plan_one(vm, i, g, transport) for i, g in usable]
    return next((p for p in plans if p.possible), plans[0])


def _plan_one(vm: VM, index: int, g: Graphics, transport: HostTransport) -> ConsolePlan:
    proto = g.type
    name = proto.upper()

    def plan(
        route: Route,
        reason: str,
        *,
        host: str | None = None,
        port: int | None = None,
        socket: str | None = None,
    ) -> ConsolePlan:
        return ConsolePlan(
            route,
            reason,
            protocol=proto,
            host=host,
            port=port,
            socket=socket,
            has_password=g.has_password,
            index=index,
        )

    def impossible(reason: str) -> ConsolePlan:
        return plan(Route.IMPOSSIBLE, reason)

    if g.socket:
        if transport.kind is TransportKind.LOCAL:
            return plan(Route.LOCAL_SOCKET, f"{name} on local socket {g.socket}", socket=g.socket)
        if transport.kind is TransportKind.SSH:
            return plan(
                Route.TUNNEL_SOCKET,
                f"{name} on socket {g.socket} on {transport.host}, through ssh",
                socket=g.socket,
            )
        return impossible(
            f"{vm.ref}'s {name} listens on a unix socket on {transport.host}, reachable only "
            "over ssh: give the host ssh settings"
        )
    if g.port is None:
        if g.tls_port is not None:
            return impossible(
                f"{vm.ref}'s {name} is TLS-only (tlsPort {g.tls_port}, no plain port); "
                "catkeeper's viewers cannot use it"
            )
        if g.autoport:
            return impossible(
                f"{vm.ref}'s {name} port is not assigned yet (autoport): try again in a moment"
            )
        return impossible(
            f"{vm.ref}'s {name} has no port or socket (listen type none): only local "
            "clients holding a libvirt file descriptor can show it"
        )
    listen = g.listen
    if transport.kind is TransportKind.SSH:
        dest = _any_to_loopback(listen) if listen and _is_any(listen) else (listen or "127.0.0.1")
        if dest == "localhost":
            dest = "127.0.0.1"
        return plan(
            Route.TUNNEL,
            f"{name} on {_hp(dest, g.port)} on {transport.host}, through ssh",
            host=dest,
            port=g.port,
        )
    if transport.kind is TransportKind.LOCAL:
        dest = "127.0.0.1" if listen is None or listen == "localhost" else listen
        if _is_any(dest):
            dest = _any_to_loopback(dest)
        return plan(Route.DIRECT, f"{name} on {_hp(dest, g.port)}", host=dest, port=g.port)
    # A plain remote URI: we can only connect to addresses reachable from here.
    if _is_loopback(listen):
        return impossible(
            f"{vm.ref}'s {name} listens only on {transport.host}'s loopback "
            f"({listen or '127.0.0.1'}); give the host ssh settings to tunnel to it"
        )
    assert listen is not None
    dest = transport.host if _is_any(listen) and transport.host else listen
    return plan(Route.DIRECT, f"{name} on {_hp(dest, g.port)}", host=dest, port=g.port)


def _hp(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ---------------------------------------------------------------------------------------
# What to tell a user who has no display here


@dataclass(frozen=True)
class ConnectionInfo:
    """How to reach a console from elsewhere: plain data for ``--print`` and the TUI panel.

    ``host:port`` is where a viewer *on this machine* connects (a tunnel's loopback end, or
    the VNC server itself). ``ssh_command`` forwards a port on the user's own machine
    straight to the VNC server through the libvirt host; ``jump_command`` goes through this
    machine instead (to the tunnel catkeeper holds open, or to a local VNC server).
    """

    vm: str  # HOST/VM
    protocol: str  # vnc, spice
    host: str
    port: int
    route: Route
    target: str  # what the endpoint reaches, e.g. "127.0.0.1:5900 on lab1"
    local_port: int  # the port the commands below open on the user's machine
    ssh_command: str | None = None
    jump_command: str | None = None
    viewer_command: str | None = None  # run on the user's machine once a command above runs
    has_password: bool | None = None
    reason: str | None = None  # why no viewer was started here, if none was

    @property
    def endpoint(self) -> str:
        return _hp(self.host, self.port)


def connection_info(
    vm_ref: str,
    plan: ConsolePlan,
    transport: HostTransport,
    endpoint: tuple[str, int],
    *,
    here: str | None = None,
    me: str | None = None,
    reason: str | None = None,
) -> ConnectionInfo:
    """Describe ``plan`` (already set up, its viewer endpoint at ``endpoint``) for a person.

    ``here``/``me``: this machine's name and the user's login on it, for ``jump_command``.
    """
    import shlex

    if not plan.possible:
        raise ValueError(f"no connection info for an impossible console: {plan.reason}")
    host, port = endpoint
    protocol = plan.protocol or "vnc"
    remote_port = plan.port or 0
    local = remote_port if 1024 <= remote_port <= 65535 else 5900
    ssh_command = None
    if transport.kind is TransportKind.SSH and transport.host:
        if plan.route is Route.TUNNEL and plan.host:
            forward = f"{local}:{_bracket(plan.host)}:{remote_port}"
        elif plan.route is Route.TUNNEL_SOCKET and plan.socket:
            forward = f"{local}:{plan.socket}"
        else:
            forward = None
        if forward is not None:
            argv = ["ssh", "-N", "-L", forward]
            if transport.ssh_port and transport.ssh_port != 22:
                argv += ["-p", str(transport.ssh_port)]
            user = f"{transport.ssh_user}@" if transport.ssh_user else ""
            argv.append(f"{user}{transport.host}")
            ssh_command = shlex.join(argv)
    jump_command = None
    if here and _is_loopback(host):
        target = f"{me}@{here}" if me else here
        jump_command = shlex.join(["ssh", "-N", "-L", f"{local}:{_bracket(host)}:{port}", target])
    if protocol == "vnc":
        viewer_command = f"vncviewer localhost::{local}"
    else:
        viewer_command = f"remote-viewer {protocol}://localhost:{local}"
    if ssh_command is None and jump_command is None:
        # Reachable as is (a remote VNC server listening on a public address).
        viewer_command = (
            f"vncviewer {host}::{port}"
            if protocol == "vnc"
            else f"remote-viewer {protocol}://{_hp(host, port)}"
        )
    return ConnectionInfo(
        vm=vm_ref,
        protocol=protocol,
        host=host,
        port=port,
        route=plan.route,
        target=plan.reason,
        local_port=local,
        ssh_command=ssh_command,
        jump_command=jump_command,
        viewer_command=viewer_command,
        has_password=plan.has_password,
        reason=reason,
    )


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
