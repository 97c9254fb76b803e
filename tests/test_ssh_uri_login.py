"""A ``qemu+ssh://`` host logs in once: libvirt, VNC tunnels and commands share one login.

Against the real sshd and libvirtd of tests/daemons.py on loopback. The host is configured
by its URI alone (no ``ssh:`` block), as people write it for virsh; sshd's VERBOSE log
counts the logins ("Accepted publickey"). With ``libvirt_transport: libvirt`` libvirt opens
its own ssh connection and a tunnel costs a second login, which is what issue 13 reported
for every such host.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

import libvirt
import pytest

from catkeeper.backend.fleet import Fleet
from catkeeper.backend.host import HostSession
from catkeeper.backend.ssh import LIBVIRT_SOCKET, LIBVIRT_SOCKET_RO
from catkeeper.config import Config, HostConfig, LibvirtTransport, Timing
from catkeeper.model import HostState
from tests.daemons import DomainFactory, SshServer, rfb_banner, vnc_port
from tests.environment import require_tools

pytestmark = pytest.mark.daemon

TIMING = Timing(connect_timeout=8, call_timeout=10, refresh_interval=0, backoff_initial=0.2)


def ssh_uri(
    sshd: SshServer, path: str = "/system", *, scheme: str = "qemu+ssh", **query: str
) -> str:
    params = {"keyfile": str(sshd.client_key), "known_hosts": str(sshd.known_hosts), **query}
    text = "&".join(f"{k}={quote(v, safe='/')}" for k, v in params.items())
    return f"{scheme}://root@127.0.0.1:{sshd.port}{path}?{text}"


@asynccontextmanager
async def fleet_of(
    uri: str, *, readonly: bool = False, transport: LibvirtTransport = "catkeeper"
) -> AsyncIterator[HostSession]:
    host = HostConfig("viauri", uri, libvirt_transport=transport)
    fleet = Fleet(Config(hosts=(host,), source="<test>", timing=TIMING, readonly=readonly))
    await fleet.start()
    try:
        assert await fleet.wait_settled(30)
        session = fleet.session("viauri")
        assert session.host.state is HostState.UP, session.host.error
        yield session
    finally:
        await fleet.aclose()


async def test_ssh_uri_lists_tunnels_and_runs_commands_on_one_login(
    sshd: SshServer, tcg_domain: DomainFactory
) -> None:
    dom = tcg_domain(start=True)
    async with fleet_of(ssh_uri(sshd)) as session:
        # libvirt came through our forward to the system socket, not through libvirt's ssh.
        forward = session._libvirt_forward
        assert forward is not None and forward.remote_socket == LIBVIRT_SOCKET
        assert forward.uri == f"qemu+unix:///system?socket={forward.socket_path}"
        assert session.host.uri.startswith("qemu+ssh://")  # shown as configured
        assert dom.UUIDString() in session.vms
        assert session.vms[dom.UUIDString()].state.value == "running"
        ssh = session.ssh
        assert ssh is not None
        tunnel = await ssh.open_tunnel("127.0.0.1", vnc_port(dom))
        assert await asyncio.to_thread(rfb_banner, tunnel.local_port) == b"RFB 003.008\n"
        result = await ssh.run(["id", "-un"])
        assert result.ok and result.stdout == "root\n"
        await session.refresh_domain(dom.UUIDString())  # libvirt still answers alongside
        assert sshd.authentications() == 1
        assert sshd.connections() == 1
        assert ssh.connections_opened == 1
    assert not os.path.exists(forward.directory)


async def test_read_only_ssh_uri_reaches_the_read_only_socket(
    sshd: SshServer, tcg_domain: DomainFactory
) -> None:
    dom = tcg_domain()
    async with fleet_of(ssh_uri(sshd), readonly=True) as session:
        forward = session._libvirt_forward
        assert forward is not None and forward.remote_socket == LIBVIRT_SOCKET_RO
        assert dom.UUIDString() in session.vms
        # The remote daemon refuses: the read-only socket, not just our own check.
        with pytest.raises(libvirt.libvirtError, match=r"read only|read-only"):
            await session.call_domain(dom.UUIDString(), lambda d: d.setAutostart(1))


async def test_opt_out_uses_libvirts_own_ssh_and_a_tunnel_logs_in_again(
    sshd: SshServer, tcg_domain: DomainFactory
) -> None:
    require_tools("virt-ssh-helper")
    dom = tcg_domain(start=True)
    # libssh: libvirt's ssh client that takes known_hosts and the key from the URI (the
    # OpenSSH one would consult and write ~/.ssh/known_hosts).
    uri = ssh_uri(sshd, scheme="qemu+libssh", known_hosts_verify="normal", sshauth="privkey")
    async with fleet_of(uri, transport="libvirt") as session:
        assert session._libvirt_forward is None
        assert dom.UUIDString() in session.vms
        assert sshd.authentications() == 1  # libvirt's own
        assert session.ssh is not None and not session.ssh.connected
        tunnel = await session.ssh.open_tunnel("127.0.0.1", vnc_port(dom))
        assert await asyncio.to_thread(rfb_banner, tunnel.local_port) == b"RFB 003.008\n"
        assert sshd.authentications() == 2  # ... and ours: what the default avoids
        assert sshd.connections() == 2


async def test_same_libssh_uri_by_default_is_one_login(
    sshd: SshServer, tcg_domain: DomainFactory
) -> None:
    dom = tcg_domain(start=True)
    uri = ssh_uri(sshd, scheme="qemu+libssh", known_hosts_verify="normal", sshauth="privkey")
    async with fleet_of(uri) as session:
        assert session._libvirt_forward is not None
        assert session.ssh is not None
        tunnel = await session.ssh.open_tunnel("127.0.0.1", vnc_port(dom))
        assert await asyncio.to_thread(rfb_banner, tunnel.local_port) == b"RFB 003.008\n"
        assert sshd.authentications() == 1 and sshd.connections() == 1


async def test_socket_query_names_the_remote_socket(
    sshd: SshServer, tcg_domain: DomainFactory, tmp_path: Path
) -> None:
    dom = tcg_domain()
    link = tmp_path / "elsewhere.sock"  # the daemon's socket under another name
    link.symlink_to(LIBVIRT_SOCKET)
    async with fleet_of(ssh_uri(sshd, socket=str(link))) as session:
        forward = session._libvirt_forward
        assert forward is not None and forward.remote_socket == str(link)
        assert forward.uri == f"qemu+unix:///system?socket={forward.socket_path}"
        assert dom.UUIDString() in session.vms
        assert sshd.authentications() == 1


async def test_session_uri_forwards_the_remote_users_session_socket(
    tcg_domain: DomainFactory, tmp_path: Path
) -> None:
    """``/session`` reaches the login's own daemon, whose socket only the host can name
    ($XDG_RUNTIME_DIR/libvirt/libvirt-sock). Here sshd sets XDG_RUNTIME_DIR to a directory
    whose libvirt-sock leads to the test libvirtd: root's daemon answers for /session too."""
    require_tools("/usr/sbin/sshd", "ssh-keygen")
    dom = tcg_domain()
    runtime = tmp_path / "runtime"
    (runtime / "libvirt").mkdir(parents=True)
    (runtime / "libvirt" / "libvirt-sock").symlink_to(LIBVIRT_SOCKET)
    server_dir = tmp_path / "sshd"
    server_dir.mkdir()
    with SshServer(server_dir, extra_config={"SetEnv": f"XDG_RUNTIME_DIR={runtime}"}) as sshd:
        async with fleet_of(ssh_uri(sshd, "/session")) as session:
            forward = session._libvirt_forward
            assert forward is not None
            assert forward.remote_socket == f"{runtime}/libvirt/libvirt-sock"
            assert forward.uri == f"qemu+unix:///session?socket={forward.socket_path}"
            assert dom.UUIDString() in session.vms
            # Asking the host for the path took one command on the same login.
            assert sshd.authentications() == 1 and sshd.sessions() == 1
