"""Which hosts carry libvirt over catkeeper's one ssh connection, and to which socket.

Pure functions of the configuration (issue 13: a ``qemu+ssh://`` host logged in twice, and
``forward_libvirt`` always reached the system socket whatever the URI's path said).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from catkeeper.backend.ssh import (
    LIBVIRT_SOCKET,
    LIBVIRT_SOCKET_RO,
    carries_libvirt,
    forwarded_uri,
    remote_socket,
    ssh_settings_for,
)
from catkeeper.backend.ssh.targets import session_socket_name
from catkeeper.config import ConfigError, HostConfig, SshSettings, load_config, parse_config

SSH = SshSettings("lab1")


@pytest.mark.parametrize(
    ("cfg", "carried"),
    [
        # ssh block: libvirt rides along unless the URI names its own remote end.
        (HostConfig("a", "qemu:///system", ssh=SSH), True),
        (HostConfig("a", "qemu:///session", ssh=SSH), True),
        (HostConfig("a", "qemu+tls://lab1/system", ssh=SSH), False),
        # +ssh URIs: carried by default, with every ssh flavour libvirt knows.
        (HostConfig("a", "qemu+ssh://root@lab1:2222/system?keyfile=/k"), True),
        (HostConfig("a", "qemu+libssh://lab1/system"), True),
        (HostConfig("a", "qemu+libssh2://lab1/system"), True),
        (HostConfig("a", "test+ssh://root@lab1/srv/fleet.xml"), True),
        # The opt-out, and a URI naming its own ssh program (asyncssh cannot stand in).
        (HostConfig("a", "qemu+ssh://lab1/system", libvirt_transport="libvirt"), False),
        (HostConfig("a", "qemu+ssh://lab1/system?command=/opt/tsh-ssh"), False),
        # Not ssh at all.
        (HostConfig("a", "qemu:///system"), False),
        (HostConfig("a", "qemu+tls://lab1/system"), False),
        (HostConfig("a", "test:///default"), False),
        (HostConfig("a", "qemu+ssh:///system"), False),  # no host: nothing to log in to
    ],
)
def test_which_hosts_carry_libvirt(cfg: HostConfig, carried: bool) -> None:
    assert carries_libvirt(cfg) is carried


def test_ssh_target_comes_from_the_uri() -> None:
    cfg = HostConfig("a", "qemu+ssh://ops@lab1.example.net:2222/system?keyfile=/k&known_hosts=/kh")
    assert ssh_settings_for(cfg) == SshSettings(
        host="lab1.example.net", user="ops", port=2222, key="/k", known_hosts="/kh"
    )
    # No user, no port: left to ~/.ssh/config and the login name, as ssh itself does.
    assert ssh_settings_for(HostConfig("a", "qemu+ssh://lab1/system")) == SshSettings("lab1")
    # An explicit ssh block wins over the URI.
    assert ssh_settings_for(HostConfig("a", "qemu+ssh://x/system", ssh=SSH)) is SSH


@pytest.mark.parametrize(
    ("uri", "readonly", "socket"),
    [
        ("qemu:///system", False, LIBVIRT_SOCKET),
        ("qemu:///system", True, LIBVIRT_SOCKET_RO),
        ("qemu+ssh://h/system?keyfile=/k", True, LIBVIRT_SOCKET_RO),
        ("qemu+ssh://h/system/", False, LIBVIRT_SOCKET),
        ("qemu+ssh://h/session", False, None),  # the host names it (its user's runtime dir)
        ("qemu+ssh://h/session", True, None),
        ("qemu+ssh://h/system?socket=/srv/libvirt.sock", False, "/srv/libvirt.sock"),
        ("qemu+ssh://h/session?socket=/srv/s.sock", True, "/srv/s.sock"),  # socket= wins
        ("qemu+ssh://h/system?mode=direct", False, "/run/libvirt/virtqemud-sock"),
        ("qemu+ssh://h/system?mode=direct", True, "/run/libvirt/virtqemud-sock-ro"),
        ("test+ssh://h/srv/fleet.xml", False, LIBVIRT_SOCKET),  # served by the system daemon
    ],
)
def test_remote_socket_follows_the_uri(uri: str, readonly: bool, socket: str | None) -> None:
    assert remote_socket(uri, readonly=readonly) == socket


def test_session_socket_name() -> None:
    assert session_socket_name("qemu+ssh://h/session") == "libvirt-sock"
    assert session_socket_name("qemu+ssh://h/session?mode=direct") == "virtqemud-sock"


@pytest.mark.parametrize(
    ("uri", "forwarded"),
    [
        ("qemu:///system", "qemu+unix:///system?socket=/d/s"),
        ("qemu:///session", "qemu+unix:///session?socket=/d/s"),
        (
            "qemu+ssh://root@h:2222/system?keyfile=/k&no_tty=1&known_hosts=/kh&no_verify=1",
            "qemu+unix:///system?socket=/d/s",
        ),
        ("qemu+ssh://u@h/session?socket=/remote.sock", "qemu+unix:///session?socket=/d/s"),
        ("qemu+libssh://h/system?sshauth=privkey&mode=direct", "qemu+unix:///system?socket=/d/s"),
        ("test+ssh://h/srv/fleet.xml", "test+unix:///srv/fleet.xml?socket=/d/s"),
        # Not about the transport: handed on to the remote driver as before.
        (
            "qemu+ssh://h/system?name=qemu:///system",
            "qemu+unix:///system?name=qemu%3A///system&socket=/d/s",
        ),
    ],
)
def test_forwarded_uri_keeps_the_path_and_drops_transport_parameters(
    uri: str, forwarded: str
) -> None:
    assert forwarded_uri(uri, "/d/s") == forwarded


# ---------------------------------------------------------------------------------------
# The per-host opt-out, as the config file says it


def host_yaml(extra: str, uri: str = "qemu+ssh://root@lab1/system") -> str:
    return f"hosts:\n  - name: a\n    uri: {uri}\n{extra}"


def test_libvirt_transport_defaults_to_catkeeper_and_can_opt_out() -> None:
    (default,) = parse_config(host_yaml(""), "c.yaml").hosts
    assert default.libvirt_transport == "catkeeper" and carries_libvirt(default)
    (native,) = parse_config(host_yaml("    libvirt_transport: libvirt\n"), "c.yaml").hosts
    assert native.libvirt_transport == "libvirt" and not carries_libvirt(native)
    # ... and its tunnels still get ssh settings of ours from the URI.
    assert ssh_settings_for(native) == SshSettings(host="lab1", user="root")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            host_yaml("    libvirt_transport: openssh\n"),
            "c.yaml:4: hosts[0].libvirt_transport: 'openssh': expected one of catkeeper, libvirt",
        ),
        (
            host_yaml("    libvirt_transport: libvirt\n", uri="qemu:///system"),
            "c.yaml:4: hosts[0].libvirt_transport: 'libvirt' needs a uri with its own transport",
        ),
        (
            host_yaml("    libvirt_transport: yes\n"),
            "hosts[0].libvirt_transport: expected a string, got boolean 'yes'",
        ),
        (host_yaml("    libvirt_transprot: libvirt\n"), "did you mean 'libvirt_transport'?"),
    ],
)
def test_libvirt_transport_errors_name_line_and_key(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml")
    assert fragment in str(info.value)


def test_example_file_documents_the_key() -> None:
    config = load_config(str(Path(__file__).parent.parent / "config.example.yaml"), {})
    lab1 = config.hosts[0]
    assert lab1.uri.startswith("qemu+ssh://") and lab1.libvirt_transport == "catkeeper"
    assert carries_libvirt(lab1)
