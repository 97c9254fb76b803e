"""Which hosts use ssh, and how: pure functions of the configuration (no asyncssh).

A ``qemu+ssh://user@host[:port]/system`` host used to log in twice: libvirt's own ssh for
libvirt, then catkeeper's asyncssh connection as soon as a VNC tunnel or a remote sweep was
needed (two hardware-key touches, two host-key checks by two different programs). Such URIs
are now carried over catkeeper's one connection (``carries_libvirt``): same user, host,
port and key, libvirt reaching the remote daemon's socket through a forward. The host's
``libvirt_transport: libvirt`` keeps libvirt's own transport.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

from catkeeper.config import HostConfig, SshSettings

LIBVIRT_SOCKET = "/run/libvirt/libvirt-sock"
LIBVIRT_SOCKET_RO = "/run/libvirt/libvirt-sock-ro"
LOOPBACK = "127.0.0.1"  # every local listener binds here and nowhere else
_SSH_SCHEMES = ("ssh", "libssh", "libssh2")
# URI parameters that tell libvirt's remote driver how to reach the far end. Through our
# forward the far end is a local socket, so they are spent (``socket`` names the remote
# one) and must not reach libvirt, which would pass unknown ones on to the remote driver.
_TRANSPORT_PARAMS = frozenset(
    (
        "socket",
        "mode",
        "command",
        "netcat",
        "proxy",
        "keyfile",
        "no_verify",
        "no_tty",
        "known_hosts",
        "known_hosts_verify",
        "sshauth",
        "pkipath",
        "tls_priority",
    )
)
# The remote user's session socket, as libvirt computes it (virGetUserRuntimeDirectory):
# $XDG_RUNTIME_DIR/libvirt, else the cache directory. A constant script, no data in it.
SESSION_SOCKET_SCRIPT = 'printf %s "${XDG_RUNTIME_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}}/libvirt/$1"'


def _ssh_uri(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme.partition("+")[2] in _SSH_SCHEMES and bool(parts.hostname)


def ssh_settings_for(cfg: HostConfig) -> SshSettings | None:
    """The ssh settings for this host: configured ones, else those in a ``+ssh`` URI.

    For a ``qemu+ssh://user@host:port/system?keyfile=…`` host they are the URI's own: the
    connection that carries libvirt (``carries_libvirt``), or with ``libvirt_transport:
    libvirt`` the one VNC tunnels and remote commands still need.
    """
    if cfg.ssh is not None:
        return cfg.ssh
    if not _ssh_uri(cfg.uri):
        return None
    parts = urlsplit(cfg.uri)
    assert parts.hostname is not None
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

    * Hosts with ssh settings whose URI names no remote end of its own (``qemu:///system``,
      the default for such hosts). A URI with its own transport or host (``qemu+tls://…``)
      keeps working as given; the ssh settings then serve tunnels and commands only.
    * Hosts whose URI is ``DRIVER+ssh://…`` (or libssh, libssh2), unless the host says
      ``libvirt_transport: libvirt`` or the URI names its own ssh program (``?command=``,
      which asyncssh cannot stand in for).
    """
    parts = urlsplit(cfg.uri)
    if cfg.ssh is not None:
        return "+" not in parts.scheme and not parts.netloc
    if cfg.libvirt_transport == "libvirt" or not _ssh_uri(cfg.uri):
        return False
    return "command" not in dict(parse_qsl(parts.query))


def remote_socket(uri: str, *, readonly: bool) -> str | None:
    """The libvirt socket on the host that ``uri`` means; None: the remote user's session
    socket, which only the host can name (``SESSION_SOCKET_SCRIPT``).

    ``?socket=PATH`` wins, as it does for libvirt. ``/session`` is the login's own daemon;
    every other path (``/system``, a test driver's ``/path/fleet.xml``) is served by the
    system daemon, through its read-only socket for read-only sessions (so the remote
    daemon itself refuses changes); ``?mode=direct`` names the driver's own daemon
    (virtqemud) instead of libvirtd/virtproxyd, as libvirt's ssh transport does.
    """
    parts = urlsplit(uri)
    query = dict(parse_qsl(parts.query))
    if query.get("socket"):
        return query["socket"]
    if parts.path.rstrip("/") == "/session":
        return None
    if query.get("mode") == "direct":
        driver = parts.scheme.partition("+")[0]
        return f"/run/libvirt/virt{driver}d-sock{'-ro' if readonly else ''}"
    return LIBVIRT_SOCKET_RO if readonly else LIBVIRT_SOCKET


def session_socket_name(uri: str) -> str:
    """The file name of the session socket in the remote user's libvirt runtime directory."""
    parts = urlsplit(uri)
    if dict(parse_qsl(parts.query)).get("mode") == "direct":
        return f"virt{parts.scheme.partition('+')[0]}d-sock"
    return "libvirt-sock"


def forwarded_uri(uri: str, local_socket: str) -> str:
    """``DRIVER[+ssh]://[user@host]/PATH?…`` → ``DRIVER+unix:///PATH?socket=LOCAL``.

    The path (``/system``, ``/session``) is kept; transport parameters are dropped (see
    ``_TRANSPORT_PARAMS``), others kept.
    """
    parts = urlsplit(uri)
    driver = parts.scheme.partition("+")[0]
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k not in _TRANSPORT_PARAMS
    ]
    query.append(("socket", local_socket))
    path = parts.path.rstrip("/") or "/system"
    # Built by hand: urlunsplit drops the "//" of an empty authority.
    return f"{driver}+unix://{path}?{urlencode(query, safe='/')}"


def target_text(settings: SshSettings) -> str:
    """``user@host:port`` as a person would write it (for messages)."""
    user = f"{settings.user}@" if settings.user else ""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    port = f":{settings.port}" if settings.port else ""
    return f"{user}{host}{port}"
