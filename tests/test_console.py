"""Console decisions (a table over graphics variants), connection info, viewer argv and the
VNC password file format. Pure: no daemon. The real-daemon console tests are in
test_console_daemon.py."""

from __future__ import annotations

import shlex

import pytest

from catkeeper.backend.console.plan import (
    ConnectionInfo,
    HostTransport,
    Route,
    TransportKind,
    connection_info,
    plan_console,
    viewer_protocols,
)
from catkeeper.backend.console.viewer import (
    build_argv,
    find_viewer,
    graphics_password,
    has_display,
    vnc_obfuscate,
)
from catkeeper.backend.ssh import carries_libvirt, forwarded_uri, ssh_settings_for
from catkeeper.config import HostConfig, SshSettings
from catkeeper.model import VM, Graphics, VmState

LOCAL = HostTransport(TransportKind.LOCAL)
SSH = HostTransport(TransportKind.SSH, "lab1", "root", 2222)
REMOTE = HostTransport(TransportKind.REMOTE, "lab2.example")


def vm(*graphics: Graphics, state: VmState = VmState.RUNNING) -> VM:
    return VM(
        host="lab1",
        name="web",
        uuid="u",
        state=state,
        vcpus=1,
        memory_kib=1,
        max_memory_kib=1,
        autostart=False,
        persistent=True,
        graphics=graphics,
    )


VNC_LO = Graphics("vnc", port=5901, listen="127.0.0.1", autoport=True, has_password=False)
VNC_ANY = Graphics("vnc", port=5902, listen="0.0.0.0")
VNC_ANY6 = Graphics("vnc", port=5903, listen="::")
VNC_ADDR = Graphics("vnc", port=5904, listen="192.0.2.7")
VNC_NOLISTEN = Graphics("vnc", port=5905)
VNC_LOCALHOST = Graphics("vnc", port=5906, listen="localhost")
VNC_V6LO = Graphics("vnc", port=5907, listen="::1")
VNC_SOCKET = Graphics("vnc", socket="/run/libvirt/qemu/vnc.sock")
VNC_AUTO_PENDING = Graphics("vnc", autoport=True, listen="127.0.0.1")
VNC_NONE = Graphics("vnc")
SPICE = Graphics("spice", port=5930, listen="127.0.0.1")
SPICE_TLS_ONLY = Graphics("spice", tls_port=5931, listen="127.0.0.1")
SDL = Graphics("sdl")

X = Route.IMPOSSIBLE
D = Route.DIRECT
T = Route.TUNNEL

# (id, vm, transport, viewer protocols, route, host, port, socket, words in the reason)
TABLE = [
    ("shutoff", vm(VNC_LO, state=VmState.SHUTOFF), SSH, ("vnc",), X, None, None, None, "shutoff"),
    ("crashed", vm(VNC_LO, state=VmState.CRASHED), LOCAL, ("vnc",), X, None, None, None, "start"),
    ("no-graphics", vm(), SSH, ("vnc",), X, None, None, None, "no VNC or SPICE"),
    ("sdl-only", vm(SDL), LOCAL, ("vnc",), X, None, None, None, "only sdl"),
    ("paused-ok", vm(VNC_LO, state=VmState.PAUSED), SSH, ("vnc",), T, "127.0.0.1", 5901, None, ""),
    ("ssh-loopback", vm(VNC_LO), SSH, ("vnc",), T, "127.0.0.1", 5901, None, "through ssh"),
    ("ssh-any", vm(VNC_ANY), SSH, ("vnc",), T, "127.0.0.1", 5902, None, ""),
    ("ssh-any6", vm(VNC_ANY6), SSH, ("vnc",), T, "::1", 5903, None, ""),
    ("ssh-addr", vm(VNC_ADDR), SSH, ("vnc",), T, "192.0.2.7", 5904, None, ""),
    ("ssh-nolisten", vm(VNC_NOLISTEN), SSH, ("vnc",), T, "127.0.0.1", 5905, None, ""),
    ("ssh-localhost", vm(VNC_LOCALHOST), SSH, ("vnc",), T, "127.0.0.1", 5906, None, ""),
    (
        "ssh-socket",
        vm(VNC_SOCKET),
        SSH,
        ("vnc",),
        Route.TUNNEL_SOCKET,
        None,
        None,
        "/run/libvirt/qemu/vnc.sock",
        "socket",
    ),
    ("local-loopback", vm(VNC_LO), LOCAL, ("vnc",), D, "127.0.0.1", 5901, None, ""),
    ("local-any", vm(VNC_ANY), LOCAL, ("vnc",), D, "127.0.0.1", 5902, None, ""),
    ("local-v6lo", vm(VNC_V6LO), LOCAL, ("vnc",), D, "::1", 5907, None, ""),
    ("local-addr", vm(VNC_ADDR), LOCAL, ("vnc",), D, "192.0.2.7", 5904, None, ""),
    (
        "local-socket",
        vm(VNC_SOCKET),
        LOCAL,
        ("vnc",),
        Route.LOCAL_SOCKET,
        None,
        None,
        "/run/libvirt/qemu/vnc.sock",
        "",
    ),
    ("remote-any", vm(VNC_ANY), REMOTE, ("vnc",), D, "lab2.example", 5902, None, ""),
    ("remote-addr", vm(VNC_ADDR), REMOTE, ("vnc",), D, "192.0.2.7", 5904, None, ""),
    ("remote-loopback", vm(VNC_LO), REMOTE, ("vnc",), X, None, None, None, "ssh settings"),
    ("remote-nolisten", vm(VNC_NOLISTEN), REMOTE, ("vnc",), X, None, None, None, "loopback"),
    ("remote-socket", vm(VNC_SOCKET), REMOTE, ("vnc",), X, None, None, None, "unix socket"),
    ("autoport-pending", vm(VNC_AUTO_PENDING), SSH, ("vnc",), X, None, None, None, "autoport"),
    ("listen-none", vm(VNC_NONE), SSH, ("vnc",), X, None, None, None, "listen type none"),
    ("tls-only", vm(SPICE_TLS_ONLY), SSH, ("vnc", "spice"), X, None, None, None, "TLS-only"),
    ("spice-vnc-viewer", vm(SPICE), SSH, ("vnc",), X, None, None, None, "only a SPICE"),
    ("spice-remote-viewer", vm(SPICE), SSH, ("vnc", "spice"), T, "127.0.0.1", 5930, None, ""),
    ("vnc-preferred", vm(SPICE, VNC_LO), SSH, ("vnc", "spice"), T, "127.0.0.1", 5901, None, ""),
    ("first-usable", vm(VNC_AUTO_PENDING, VNC_ANY), SSH, ("vnc",), T, "127.0.0.1", 5902, None, ""),
]


@pytest.mark.parametrize(
    ("the_vm", "transport", "protocols", "route", "host", "port", "socket", "words"),
    [pytest.param(*row[1:], id=row[0]) for row in TABLE],
)
def test_console_decision_table(
    the_vm: VM,
    transport: HostTransport,
    protocols: tuple[str, ...],
    route: Route,
    host: str | None,
    port: int | None,
    socket: str | None,
    words: str,
) -> None:
    plan = plan_console(the_vm, transport, protocols=protocols)
    assert (plan.route, plan.host, plan.port, plan.socket) == (route, host, port, socket), plan
    assert words in plan.reason
    assert plan.possible == (route is not Route.IMPOSSIBLE)
    if plan.possible:
        assert plan.protocol in protocols
        assert plan.index is not None and the_vm.graphics[plan.index].type == plan.protocol


def test_plan_carries_password_presence_and_index() -> None:
    g = Graphics("vnc", port=5901, listen="127.0.0.1", has_password=True)
    plan = plan_console(vm(SPICE, g), SSH, protocols=("vnc", "spice"))
    assert plan.has_password is True and plan.index == 1


@pytest.mark.parametrize(
    ("cfg", "kind", "host", "user", "port"),
    [
        (HostConfig("a", "qemu:///system"), TransportKind.LOCAL, None, None, None),
        (HostConfig("a", "test:///default"), TransportKind.LOCAL, None, None, None),
        (HostConfig("a", "qemu+tls://lab2/system"), TransportKind.REMOTE, "lab2", None, None),
        (
            HostConfig("a", "qemu+ssh://bob@lab3:2200/system"),
            TransportKind.SSH,
            "lab3",
            "bob",
            2200,
        ),
        (
            HostConfig("a", "qemu:///system", ssh=SshSettings("lab4", "root", 22)),
            TransportKind.SSH,
            "lab4",
            "root",
            22,
        ),
    ],
)
def test_host_transport_of_config(
    cfg: HostConfig, kind: TransportKind, host: str | None, user: str | None, port: int | None
) -> None:
    t = HostTransport.of(cfg)
    assert (t.kind, t.host, t.ssh_user, t.ssh_port) == (kind, host, user, port)


def test_which_hosts_carry_libvirt_over_our_ssh() -> None:
    ssh = SshSettings("lab1")
    assert carries_libvirt(HostConfig("a", "qemu:///system", ssh=ssh))
    assert not carries_libvirt(HostConfig("a", "qemu+tls://lab1/system", ssh=ssh))
    assert carries_libvirt(HostConfig("a", "qemu+ssh://lab1/system"))  # one login (issue 13)
    assert not carries_libvirt(HostConfig("a", "qemu:///system"))
    # A +ssh URI still gets ssh settings of ours for tunnels, taken from the URI.
    got = ssh_settings_for(HostConfig("a", "qemu+ssh://u@h:23/system?keyfile=/k"))
    assert got == SshSettings(host="h", user="u", port=23, key="/k")
    assert (
        forwarded_uri("qemu:///system", "/tmp/d/libvirt-sock")
        == "qemu+unix:///system?socket=/tmp/d/libvirt-sock"
    )


# ---------------------------------------------------------------------------------------
# Connection info for users without a display


def test_connection_info_for_an_ssh_tunnel() -> None:
    plan = plan_console(vm(VNC_LO), SSH)
    info = connection_info("lab1/web", plan, SSH, ("127.0.0.1", 40123), here="jump", me="ann")
    assert info.endpoint == "127.0.0.1:40123"
    assert info.ssh_command == "ssh -N -L 5901:127.0.0.1:5901 -p 2222 root@lab1"
    assert info.jump_command == "ssh -N -L 5901:127.0.0.1:40123 ann@jump"
    assert info.viewer_command == "vncviewer localhost::5901"
    # Ready to paste: one shell word per argv element.
    assert shlex.split(info.ssh_command)[3] == "5901:127.0.0.1:5901"


def test_connection_info_for_ipv6_and_socket_targets() -> None:
    plan6 = plan_console(vm(VNC_ANY6), SSH)
    info6 = connection_info("lab1/web", plan6, SSH, ("127.0.0.1", 40000))
    # Quoted: [ ] are glob characters to a shell.
    assert info6.ssh_command == "ssh -N -L '5903:[::1]:5903' -p 2222 root@lab1"
    assert info6.jump_command is None  # no name for this machine given
    sock = plan_console(vm(VNC_SOCKET), SSH)
    info = connection_info("lab1/web", sock, SSH, ("127.0.0.1", 40001), here="jump")
    assert info.ssh_command == "ssh -N -L 5900:/run/libvirt/qemu/vnc.sock -p 2222 root@lab1"
    assert info.jump_command == "ssh -N -L 5900:127.0.0.1:40001 jump"


def test_connection_info_for_a_directly_reachable_server() -> None:
    plan = plan_console(vm(VNC_ANY), REMOTE)
    info = connection_info("lab2/web", plan, REMOTE, ("lab2.example", 5902), here="jump")
    assert info.ssh_command is None and info.jump_command is None
    assert info.viewer_command == "vncviewer lab2.example::5902"


def test_connection_info_refuses_an_impossible_plan() -> None:
    with pytest.raises(ValueError, match="impossible"):
        connection_info("x/y", plan_console(vm(), SSH), SSH, ("127.0.0.1", 1))


def test_connection_info_is_plain_data() -> None:
    import dataclasses
    import json

    plan = plan_console(vm(VNC_LO), SSH)
    info = connection_info("lab1/web", plan, SSH, ("127.0.0.1", 4), here="j", me="m")
    assert isinstance(info, ConnectionInfo)
    json.dumps(dataclasses.asdict(info))


# ---------------------------------------------------------------------------------------
# Viewer templates and password files


def test_vnc_password_obfuscation_matches_vncpasswd() -> None:
    # `printf password | vncpasswd -f | xxd -p` (TigerVNC) gives dbd83cfd727a1458.
    assert vnc_obfuscate("password").hex() == "dbd83cfd727a1458"
    # VNC uses at most 8 bytes; shorter ones are NUL-padded.
    assert vnc_obfuscate("password-too-long") == vnc_obfuscate("password")
    assert len(vnc_obfuscate("")) == 8


def test_build_argv_fills_placeholders_and_adds_the_password_file() -> None:
    tiger = ("vncviewer", "{host}::{port}")
    assert build_argv(tiger, host="127.0.0.1", port=4000, protocol="vnc") == [
        "vncviewer",
        "127.0.0.1::4000",
    ]
    assert build_argv(
        tiger, host="127.0.0.1", port=4000, protocol="vnc", password_file="/p/passwd"
    ) == ["vncviewer", "-passwd", "/p/passwd", "127.0.0.1::4000"]
    rv = ("remote-viewer", "--full-screen", "{scheme}://{host}:{port}")
    assert build_argv(rv, host="h", port=1, protocol="spice") == [
        "remote-viewer",
        "--full-screen",
        "spice://h:1",
    ]
    # remote-viewer gets a .vv file instead of the URI (the file names host and port).
    assert build_argv(rv, host="h", port=1, protocol="vnc", password_file="/p/c.vv") == [
        "remote-viewer",
        "--full-screen",
        "/p/c.vv",
    ]
    # A viewer catkeeper does not know gets no password option at all.
    other = ("gvncviewer", "{host}:{display}")
    assert build_argv(other, host="h", port=5901, protocol="vnc", password_file="/p") == [
        "gvncviewer",
        "h:1",
    ]


def test_build_argv_names_a_bad_placeholder() -> None:
    from catkeeper.backend.console.viewer import ConsoleError

    with pytest.raises(ConsoleError, match="unknown placeholder"):
        build_argv(("v", "{hostname}:{port}"), host="h", port=1, protocol="vnc")


def test_find_viewer_and_display() -> None:
    on_path = {"xtigervncviewer", "remote-viewer"}

    def which(name: str) -> str | None:
        return f"/usr/bin/{name}" if name in on_path else None

    assert find_viewer(None, which=which) == ("xtigervncviewer", "{host}::{port}")
    assert find_viewer(("my", "{port}"), which=which) == ("my", "{port}")
    assert find_viewer(None, which=lambda _n: None) is None
    assert viewer_protocols(("remote-viewer", "{scheme}://{host}:{port}")) == ("vnc", "spice")
    assert viewer_protocols(("remote-viewer", "vnc://{host}:{port}")) == ("vnc",)
    assert has_display({"DISPLAY": ":1"}) and has_display({"WAYLAND_DISPLAY": "wayland-0"})
    assert not has_display({}) and not has_display({"DISPLAY": ""})


def test_graphics_password_reads_the_right_head() -> None:
    xml = (
        "<domain><devices><graphics type='spice' passwd='s1'/>"
        "<graphics type='vnc' port='5900' passwd='v2'/><graphics type='vnc'/></devices></domain>"
    )
    assert graphics_password(xml, 0) == "s1"
    assert graphics_password(xml, 1) == "v2"
    assert graphics_password(xml, 2) is None
    assert graphics_password(xml, 5) is None
