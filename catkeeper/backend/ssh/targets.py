"""Which hosts use ssh, and how: pure functions of the configuration (no asyncssh)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

from catkeeper.config import HostConfig, SshSettings

LIBVIRT_SOCKET = "/run/libvirt/libvirt-sock"
LIBVIRT_SOCKET_RO = "/run/libvirt/libvirt-sock-ro"
LOOPBACK = "127.0.0.1"  # every local listener binds here and nowhere else
_SSH_SCHEMES = ("ssh", "libssh", "libssh2")


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
