"""One asyncssh connection per host, shared by libvirt, VNC tunnels and remote commands.

For a host with ``ssh`` settings, or a ``DRIVER+ssh://user@host[:port]/…`` URI (unless
it says ``libvirt_transport: libvirt``), catkeeper opens a single authenticated connection
and multiplexes everything over it: libvirt reaches the remote daemon through a forwarded unix
socket (no ``nc``/``socat``/``virt-ssh-helper`` on the host), VNC consoles through local
port forwards, IP sweeps through exec channels. One authentication per host means one
hardware-key touch, not one per VM.

Modules: ``targets`` (which hosts, which remote socket: pure), ``transport`` (the
connection and its uses), ``forwards`` (local listeners), ``hostkeys`` (known_hosts
policy), ``errors``.

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

from catkeeper.backend.ssh.errors import HostKeyError, SshAuthError, SshError
from catkeeper.backend.ssh.forwards import LibvirtForward, LocalSocketRelay, RemoteResult, Tunnel
from catkeeper.backend.ssh.targets import (
    LIBVIRT_SOCKET,
    LIBVIRT_SOCKET_RO,
    LOOPBACK,
    carries_libvirt,
    forwarded_uri,
    remote_socket,
    ssh_settings_for,
    target_text,
)
from catkeeper.backend.ssh.transport import SshTransport

__all__ = [
    "LIBVIRT_SOCKET",
    "LIBVIRT_SOCKET_RO",
    "LOOPBACK",
    "HostKeyError",
    "LibvirtForward",
    "LocalSocketRelay",
    "RemoteResult",
    "SshAuthError",
    "SshError",
    "SshTransport",
    "Tunnel",
    "carries_libvirt",
    "forwarded_uri",
    "remote_socket",
    "ssh_settings_for",
    "target_text",
]
