"""The host's one asyncssh connection: opened on first use, reopened after a drop.

asyncssh is imported lazily: it costs ~0.4 s, and hosts without ssh settings never need it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from catkeeper.backend.ssh.errors import HostKeyError, SshAuthError, SshError
from catkeeper.backend.ssh.forwards import LibvirtForward, RemoteResult, Tunnel, hostport
from catkeeper.backend.ssh.hostkeys import HostKeyPolicy, is_encrypted_key
from catkeeper.backend.ssh.targets import (
    LOOPBACK,
    SESSION_SOCKET_SCRIPT,
    forwarded_uri,
    remote_socket,
    session_socket_name,
    ssh_settings_for,
    target_text,
)
from catkeeper.backend.timeouts import within
from catkeeper.config import HostConfig, SshSettings, Timing

if TYPE_CHECKING:
    import asyncssh

log = logging.getLogger(__name__)


class SshTransport:
    """The host's one ssh connection: opened on first use, reopened after a drop.

    Use it from the asyncio loop of the session that owns it (asyncssh is loop-bound).
    ``config_paths`` replaces ``~/.ssh/config`` (tests); ``None`` means the default.
    """

    def __init__(
        self,
        name: str,
        settings: SshSettings,
        *,
        connect_timeout: float = 10.0,
        keepalive_interval: float = 5.0,
        keepalive_count: int = 3,
        config_paths: Sequence[str] | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.connect_timeout = connect_timeout
        self.keepalive_interval = keepalive_interval
        self.keepalive_count = keepalive_count
        self.config_paths = config_paths
        self.connections_opened = 0  # successful connects, over this transport's life
        self.tunnels: list[Tunnel] = []
        self._conn: asyncssh.SSHClientConnection | None = None
        self._lock: asyncio.Lock | None = None
        self._closed = False

    @classmethod
    def for_host(cls, cfg: HostConfig, timing: Timing) -> SshTransport | None:
        """The transport a host session owns, or None for hosts without ssh."""
        settings = ssh_settings_for(cfg)
        if settings is None:
            return None
        return cls(
            cfg.name,
            settings,
            connect_timeout=timing.connect_timeout,
            keepalive_interval=timing.keepalive_interval,
            keepalive_count=timing.keepalive_count,
        )

    @property
    def target(self) -> str:
        return target_text(self.settings)

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def busy(self) -> bool:
        """True while tunnels use the connection (closing it would cut a viewer off)."""
        return any(not t.closed for t in self.tunnels)

    # ---- connecting ---------------------------------------------------------------------

    async def connect(self) -> asyncssh.SSHClientConnection:
        """The shared connection, opening (or reopening) it if needed."""
        if self._closed:
            raise SshError(f"{self.name}: ssh transport is closed")
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._conn is None:
                self._conn = await self._open()
                self.connections_opened += 1
            return self._conn

    async def _open(self) -> asyncssh.SSHClientConnection:
        import asyncssh

        s = self.settings
        policy = HostKeyPolicy(s.known_hosts, s.accept_unknown_host_key)
        transport = self

        class Client(asyncssh.SSHClient):
            def validate_host_public_key(
                self, host: str, addr: str, port: int, key: asyncssh.SSHKey
            ) -> bool:
                return policy.decide(host, port, key)

            def connection_lost(self, exc: Exception | None) -> None:
                transport._lost(conn_ref, exc)

        conn_ref: list[asyncssh.SSHClientConnection] = []
        try:
            options = await asyncssh.SSHClientConnectionOptions.construct(
                None,
                host=s.host,
                port=s.port if s.port else (),
                config=list(self.config_paths) if self.config_paths is not None else (),
                username=s.user if s.user else (),
                client_keys=[s.key] if s.key else (),
                # An encrypted key would need a passphrase, i.e. a prompt: skip it and let
                # the agent (which may hold it unlocked) do the signing instead.
                ignore_encrypted=True,
                passphrase=None,
                password=None,
                password_auth=False,
                kbdint_auth=False,
                connect_timeout=self.connect_timeout,
                login_timeout=self.connect_timeout,
                keepalive_interval=self.keepalive_interval,
                keepalive_count_max=self.keepalive_count,
                agent_forwarding=False,
                x11_forwarding=False,
            )
            policy.load(options.known_hosts)
            conn = await within(
                asyncssh.connect(
                    s.host,
                    s.port if s.port else (),
                    options=options,
                    client_factory=Client,
                    known_hosts=policy.match,
                ),
                self.connect_timeout + 1,
            )
        except Exception as exc:
            raise self._explain(exc, policy) from None
        conn_ref.append(conn)
        policy.record_accepted()
        log.info("%s: ssh connection to %s open", self.name, self.target)
        return conn

    def _lost(self, ref: list[asyncssh.SSHClientConnection], exc: Exception | None) -> None:
        if ref and self._conn is ref[0]:
            self._conn = None
            log.info("%s: ssh connection lost%s", self.name, f": {exc}" if exc else "")
            # asyncssh closes the forwards' listeners with the connection.
            for tunnel in list(self.tunnels):
                tunnel.close()

    def _explain(self, exc: BaseException, policy: HostKeyPolicy) -> SshError:
        import asyncssh

        where = self.target
        if isinstance(exc, SshError):
            return exc
        if isinstance(exc, asyncssh.HostKeyNotVerifiable):
            return HostKeyError(policy.explain(self.name, where, str(exc)))
        if isinstance(exc, asyncssh.PermissionDenied):
            hint = "catkeeper never prompts: use ssh-agent, ssh.key or ~/.ssh/config"
            if self.settings.key and is_encrypted_key(self.settings.key):
                hint = f"{self.settings.key} is passphrase-protected: add it to ssh-agent"
            return SshAuthError(
                f"{self.name}: ssh authentication to {where} failed (no key was accepted); {hint}"
            )
        if isinstance(exc, asyncssh.DisconnectError):
            return SshError(f"{self.name}: ssh to {where}: {exc.reason}")
        if isinstance(exc, TimeoutError | asyncio.TimeoutError):
            return SshError(
                f"{self.name}: ssh to {where} timed out after {self.connect_timeout:g} s"
            )
        if isinstance(exc, ConnectionRefusedError):
            return SshError(f"{self.name}: ssh to {where}: connection refused")
        if isinstance(exc, OSError):
            return SshError(f"{self.name}: ssh to {where}: {exc.strerror or exc}")
        if isinstance(exc, asyncssh.KeyImportError | ValueError):
            return SshError(f"{self.name}: ssh settings for {where}: {exc}")
        return SshError(f"{self.name}: ssh to {where}: {type(exc).__name__}: {exc}")

    # ---- uses of the connection -----------------------------------------------------------

    async def forward_libvirt(
        self, *, readonly: bool, uri: str = "qemu:///system"
    ) -> LibvirtForward:
        """A private local socket carried to the libvirt socket ``uri`` means on the host.

        ``forward.uri`` is ``uri`` turned into ``DRIVER+unix:///PATH?socket=LOCAL`` (its own
        path: ``/system`` or ``/session``). Read-only sessions on ``/system`` reach
        ``libvirt-sock-ro``, so the remote daemon itself refuses changes, whatever the
        client asks for; elsewhere the read-only open flag is what the daemon enforces.
        """
        conn = await self.connect()
        remote = remote_socket(uri, readonly=readonly)
        if remote is None:
            remote = await self._session_socket(uri)
        # mkdtemp makes the directory 0700: no other local user can reach the socket.
        directory = tempfile.mkdtemp(prefix="catkeeper-libvirt-")
        path = os.path.join(directory, "libvirt-sock")
        try:
            listener = await conn.forward_local_path(path, remote)
        except Exception as exc:
            shutil.rmtree(directory, ignore_errors=True)
            raise SshError(f"{self.name}: cannot forward {remote} over ssh: {exc}") from None
        return LibvirtForward(
            uri=forwarded_uri(uri, path),
            socket_path=path,
            directory=directory,
            listener=listener,
            remote_socket=remote,
        )

    async def _session_socket(self, uri: str) -> str:
        """The remote login's own session socket path, asked of the host (one command)."""
        name = session_socket_name(uri)
        result = await self.run(["sh", "-c", SESSION_SOCKET_SCRIPT, "sh", name], timeout=10)
        path = result.stdout.strip()
        if not result.ok or not path.startswith("/"):
            detail = result.stderr.strip() or f"got {path!r}"
            raise SshError(f"{self.name}: cannot find the libvirt session socket: {detail}")
        return path

    async def open_tunnel(self, dest_host: str, dest_port: int) -> Tunnel:
        """A port on 127.0.0.1 (picked by the kernel) forwarded to ``dest_host:dest_port``
        as the host sees it."""
        conn = await self.connect()
        tunnel = Tunnel(f"{hostport(dest_host, dest_port)} on {self.name}")
        try:
            listener = await conn.forward_local_port(
                LOOPBACK, 0, dest_host, dest_port, accept_handler=tunnel._accept
            )
        except Exception as exc:
            raise SshError(f"{self.name}: cannot open a tunnel: {exc}") from None
        return self._track(tunnel, listener)

    async def open_tunnel_to_path(self, dest_path: str) -> Tunnel:
        """A port on 127.0.0.1 forwarded to a unix socket on the host."""
        conn = await self.connect()
        tunnel = Tunnel(f"unix:{dest_path} on {self.name}")
        try:
            listener = await conn.forward_local_port_to_path(
                LOOPBACK, 0, dest_path, accept_handler=tunnel._accept
            )
        except Exception as exc:
            raise SshError(f"{self.name}: cannot open a tunnel: {exc}") from None
        return self._track(tunnel, listener)

    def _track(self, tunnel: Tunnel, listener: Any) -> Tunnel:
        tunnel.local_port = int(listener.get_port())
        tunnel._closer = listener.close
        tunnel._on_close.append(self._untrack)
        self.tunnels.append(tunnel)
        log.info("%s: tunnel %s:%d → %s", self.name, LOOPBACK, tunnel.local_port, tunnel.target)
        return tunnel

    def _untrack(self, tunnel: Tunnel) -> None:
        with contextlib.suppress(ValueError):
            self.tunnels.remove(tunnel)

    async def run(
        self, argv: Sequence[str], *, timeout: float = 30.0, stdin: str | None = None
    ) -> RemoteResult:
        """Run a command on the host. ``argv`` is quoted for the remote shell, word by word."""
        conn = await self.connect()
        command = shlex.join(argv)
        try:
            result = await within(conn.run(command, input=stdin, check=False), timeout)
        except TimeoutError:
            raise SshError(f"{self.name}: {argv[0]} timed out after {timeout:g} s") from None
        except Exception as exc:
            raise SshError(f"{self.name}: running {argv[0]}: {exc}") from None
        out, err = result.stdout, result.stderr
        return RemoteResult(
            exit_status=result.exit_status,
            stdout=out if isinstance(out, str) else (out or b"").decode(errors="replace"),
            stderr=err if isinstance(err, str) else (err or b"").decode(errors="replace"),
        )

    # ---- closing ----------------------------------------------------------------------------

    def close_if_idle(self) -> None:
        """Close the connection unless tunnels use it (a reconnect then authenticates anew)."""
        if self.busy or self._conn is None:
            return
        conn, self._conn = self._conn, None
        conn.close()

    async def aclose(self) -> None:
        """Close every tunnel and the connection; the transport cannot be used again."""
        self._closed = True
        for tunnel in list(self.tunnels):
            tunnel.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                await within(conn.wait_closed(), 2)
