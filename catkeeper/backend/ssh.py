"""One asyncssh connection per host, shared by libvirt, VNC tunnels and remote commands.

For a host with ``ssh`` settings catkeeper opens a single authenticated connection and
multiplexes everything over it: libvirt reaches the remote daemon through a forwarded unix
socket (no ``nc``/``socat``/``virt-ssh-helper`` on the host), VNC consoles through local
port forwards, IP sweeps through exec channels. One authentication per host means one
hardware-key touch, not one per VM.

Security choices:

* ``known_hosts`` is always enforced. Unknown keys are refused unless the host's
  ``accept_unknown_host_key`` is set (then the key is recorded, like OpenSSH's
  ``StrictHostKeyChecking accept-new``); a *changed* key is refused always. An ssh config
  that disables checking (``UserKnownHostsFile none``) does not disable it here.
* Nothing can prompt on the TUI's terminal: no password or keyboard-interactive
  authentication, passphrase-protected keys are skipped (use ssh-agent). Every failure is a
  :class:`SshError` whose text names the host and what to do.
* Forwards listen on 127.0.0.1 (TCP) or inside a private 0700 directory (unix socket).

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from catkeeper.backend.errors import HostUnavailable
from catkeeper.config import HostConfig, SshSettings, Timing

if TYPE_CHECKING:
    import asyncssh

log = logging.getLogger(__name__)

LIBVIRT_SOCKET = "/run/libvirt/libvirt-sock"
LIBVIRT_SOCKET_RO = "/run/libvirt/libvirt-sock-ro"
LOOPBACK = "127.0.0.1"  # every local listener binds here and nowhere else
_SSH_SCHEMES = ("ssh", "libssh", "libssh2")


class SshError(HostUnavailable):
    """An ssh failure, worded for a person (``str()`` is the whole message)."""


class HostKeyError(SshError):
    """The host's key is unknown or differs from known_hosts; the connection was refused."""


class SshAuthError(SshError):
    """The server refused every key catkeeper may offer."""


# ---------------------------------------------------------------------------------------
# Which hosts use ssh, and how (pure functions of the configuration)


def ssh_settings_for(cfg: HostConfig) -> SshSettings | None:
    """The ssh settings for this host: configured ones, else those in a ``+ssh`` URI.

    A ``qemu+ssh://user@host:port/system`` host has its libvirt connection made by libvirt
    itself, but its VNC tunnels and remote commands still need an ssh connection of ours.
    """
    if cfg.ssh is not None:
        return cfg.ssh
    parts = urlsplit(cfg.uri)
    _driver, _, transport = parts.scheme.partition("+")
    if transport not in _SSH_SCHEMES or not parts.hostname:
        return None
    query = dict(parse_qsl(parts.query))
    return SshSettings(
        host=parts.hostname,
        user=parts.username,
        port=parts.port,
        key=query.get("keyfile"),
        known_hosts=query.get("known_hosts"),
    )


def carries_libvirt(cfg: HostConfig) -> bool:
    """True when libvirt itself should travel over our ssh connection.

    That is the case for hosts with ssh settings whose URI names no remote end of its own
    (``qemu:///system``, the default for such hosts). A URI with its own transport or host
    (``qemu+tls://…``, ``qemu+ssh://…``) keeps working as given; the ssh settings then serve
    tunnels and remote commands only.
    """
    if cfg.ssh is None:
        return False
    parts = urlsplit(cfg.uri)
    return "+" not in parts.scheme and not parts.netloc


def forwarded_uri(uri: str, local_socket: str) -> str:
    """``qemu:///system`` → ``qemu+unix:///system?socket=LOCAL`` (other query kept)."""
    parts = urlsplit(uri)
    driver = parts.scheme.partition("+")[0]
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "socket"]
    query.append(("socket", local_socket))
    # Built by hand: urlunsplit drops the "//" of an empty authority.
    return f"{driver}+unix://{parts.path or '/system'}?{urlencode(query, safe='/')}"


def target_text(settings: SshSettings) -> str:
    """``user@host:port`` as a person would write it (for messages)."""
    user = f"{settings.user}@" if settings.user else ""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    port = f":{settings.port}" if settings.port else ""
    return f"{user}{host}{port}"


# ---------------------------------------------------------------------------------------
# Forwards


class Tunnel:
    """A listener on 127.0.0.1 whose connections are carried to a target (a VNC server).

    ``local_port`` is the port a viewer connects to; ``connections`` counts the connections
    it has carried. Closing stops the listener, so the port refuses from then on.
    """

    local_host = LOOPBACK

    def __init__(self, target: str) -> None:
        self.target = target
        self.local_port = 0
        self.connections = 0
        self._closed = asyncio.Event()
        self._closer: Callable[[], None] | None = None
        self._on_close: list[Callable[[Tunnel], None]] = []

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def endpoint(self) -> tuple[str, int]:
        return self.local_host, self.local_port

    def _accept(self, orig_host: str, _orig_port: int) -> bool:
        # Bound to 127.0.0.1, so only local processes get here; count them for the tests
        # and the status line.
        self.connections += 1
        log.debug(
            "tunnel %s:%d → %s: connection from %s",
            LOOPBACK,
            self.local_port,
            self.target,
            orig_host,
        )
        return True

    def close(self) -> None:
        if self.closed:
            return
        self._closed.set()
        if self._closer is not None:
            with contextlib.suppress(Exception):
                self._closer()
        for cb in self._on_close:
            cb(self)
        log.info("tunnel %s:%d → %s closed", LOOPBACK, self.local_port, self.target)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Tunnel {LOOPBACK}:{self.local_port} → {self.target} ({state})>"


class LocalSocketRelay(Tunnel):
    """A loopback TCP port relayed to a unix socket on this machine.

    For a local domain whose VNC listens on a unix socket: viewer templates speak
    ``host:port``, so catkeeper offers one, bound to 127.0.0.1.
    """

    def __init__(self, path: str) -> None:
        super().__init__(f"unix:{path}")
        self.path = path
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> LocalSocketRelay:
        self._server = await asyncio.start_server(self._handle, LOOPBACK, 0)
        self.local_port = int(self._server.sockets[0].getsockname()[1])
        self._closer = self._stop
        return self

    def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._pipes:
            task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        self._accept(LOOPBACK, 0)
        try:
            ur, uw = await asyncio.open_unix_connection(self.path)
        except OSError as exc:
            log.info("relay to %s: %s", self.path, exc)
            writer.close()
            self._pipes.discard(task)
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                if dst.can_write_eof():
                    dst.write_eof()

        try:
            await asyncio.gather(pipe(reader, uw), pipe(ur, writer))
        finally:
            for w in (writer, uw):
                w.close()
            self._pipes.discard(task)


@dataclass
class LibvirtForward:
    """A local unix socket, in a private directory, forwarded to the remote libvirt socket."""

    uri: str  # qemu+unix:///system?socket=<socket_path>
    socket_path: str
    directory: str
    listener: Any  # asyncssh.SSHListener

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.listener.close()
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass(frozen=True)
class RemoteResult:
    """What a command run on the host over ssh produced."""

    exit_status: int | None  # None: killed by a signal or the channel closed early
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


# ---------------------------------------------------------------------------------------
# The shared connection


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
        policy = _HostKeyPolicy(s.known_hosts, s.accept_unknown_host_key)
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
            conn = await asyncio.wait_for(
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

    def _explain(self, exc: BaseException, policy: _HostKeyPolicy) -> SshError:
        import asyncssh

        where = self.target
        if isinstance(exc, SshError):
            return exc
        if isinstance(exc, asyncssh.HostKeyNotVerifiable):
            return HostKeyError(policy.explain(self.name, where, str(exc)))
        if isinstance(exc, asyncssh.PermissionDenied):
            hint = "catkeeper never prompts: use ssh-agent, ssh.key or ~/.ssh/config"
            if self.settings.key and _is_encrypted_key(self.settings.key):
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

    async def forward_libvirt(self, *, readonly: bool) -> LibvirtForward:
        """A private local socket carried to the host's libvirt socket.

        Read-only sessions reach ``libvirt-sock-ro``, so the remote daemon itself refuses
        changes, whatever the client asks for.
        """
        conn = await self.connect()
        remote = LIBVIRT_SOCKET_RO if readonly else LIBVIRT_SOCKET
        # mkdtemp makes the directory 0700: no other local user can reach the socket.
        directory = tempfile.mkdtemp(prefix="catkeeper-libvirt-")
        path = os.path.join(directory, "libvirt-sock")
        try:
            listener = await conn.forward_local_path(path, remote)
        except Exception as exc:
            shutil.rmtree(directory, ignore_errors=True)
            raise SshError(f"{self.name}: cannot forward {remote} over ssh: {exc}") from None
        return LibvirtForward(
            uri=forwarded_uri("qemu:///system", path),
            socket_path=path,
            directory=directory,
            listener=listener,
        )

    async def open_tunnel(self, dest_host: str, dest_port: int) -> Tunnel:
        """A port on 127.0.0.1 (picked by the kernel) forwarded to ``dest_host:dest_port``
        as the host sees it."""
        conn = await self.connect()
        tunnel = Tunnel(f"{_hostport(dest_host, dest_port)} on {self.name}")
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
            result = await asyncio.wait_for(conn.run(command, input=stdin, check=False), timeout)
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
                await asyncio.wait_for(conn.wait_closed(), 2)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_encrypted_key(path: str) -> bool:
    import asyncssh

    try:
        asyncssh.read_private_key(path)
    except asyncssh.KeyEncryptionError:
        return True
    except Exception as exc:  # a missing or unreadable file is reported as such elsewhere
        return "passphrase" in str(exc).lower()
    return False


class _HostKeyPolicy:
    """known_hosts checking that cannot be switched off by an ssh config.

    asyncssh asks ``match`` for the keys it may trust; if the server's key is not among
    them it asks ``decide``. Knowing whether the host had entries tells "unknown" (maybe
    accept, if allowed) from "changed" (never).
    """

    def __init__(self, explicit: str | None, accept_unknown: bool) -> None:
        self.explicit = os.path.expanduser(explicit) if explicit else None
        self.accept_unknown = accept_unknown
        self.files: list[str] = []
        self._known: Any = None  # asyncssh.SSHKnownHosts
        self._had_entries = False
        self._verdict: str | None = None  # "unknown" or "changed", after a refusal
        self._accepted: tuple[str, int, Any] | None = None

    def load(self, from_config: object) -> None:
        import asyncssh

        if self.explicit:
            candidates = [self.explicit]
        elif isinstance(from_config, list | tuple) and from_config:
            candidates = [os.path.expanduser(str(p)) for p in from_config]
        else:  # also when the config says "none": checking stays on
            candidates = [os.path.expanduser("~/.ssh/known_hosts"), "/etc/ssh/ssh_known_hosts"]
        self.files = candidates
        readable = [p for p in candidates if os.path.isfile(p) and os.access(p, os.R_OK)]
        self._known = asyncssh.read_known_hosts(readable) if readable else None

    def match(self, host: str, addr: str, port: int | None) -> Any:
        if self._known is None:
            result: tuple[Any, ...] = ([], [], [], [], [], [], [])
        else:
            result = self._known.match(host, addr, port)
        self._had_entries = bool(result[0]) or bool(result[1])
        return result

    def decide(self, host: str, port: int, key: Any) -> bool:
        if self._had_entries:
            self._verdict = "changed"
            return False
        if not self.accept_unknown:
            self._verdict = "unknown"
            return False
        self._accepted = (host, port, key)
        return True

    def record_accepted(self) -> None:
        """Write a key accepted under ``accept_unknown_host_key`` (trust on first use)."""
        if self._accepted is None:
            return
        host, port, key = self._accepted
        path = self.explicit or os.path.expanduser("~/.ssh/known_hosts")
        pattern = host if port in (22, None) else f"[{host}]:{port}"
        kind, blob = key.export_public_key("openssh").decode().split()[:2]
        line = f"{pattern} {kind} {blob}\n"
        try:
            os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write(line)
            log.warning("accepted new ssh host key for %s, recorded in %s", pattern, path)
        except OSError as exc:
            log.warning("accepted new ssh host key for %s; could not record it: %s", pattern, exc)

    def explain(self, name: str, where: str, detail: str) -> str:
        files = ", ".join(self.files) or "known_hosts"
        if self._verdict == "changed":
            return (
                f"{name}: ssh host key of {where} has CHANGED: it does not match {files}. "
                "Refusing to connect (this could be a man-in-the-middle attack); if the "
                "host was reinstalled, remove its old entry and verify the new key"
            )
        if self._verdict == "unknown":
            return (
                f"{name}: ssh host key of {where} is unknown (not in {files}); refusing to "
                "connect. Verify it and add it (ssh-keyscan), or set "
                "ssh.accept_unknown_host_key: true for this host"
            )
        return f"{name}: ssh host key of {where} was refused: {detail}"
