"""Choosing and preparing a console viewer: which program, its argv from a template, and the
password handed over in a file rather than on the command line.

The viewer is started from an argv template (``["vncviewer", "{host}::{port}"]``), never
through a shell. A VNC password reaches the viewer through a file (mode 0600, in a private
0700 directory, removed when the viewer exits), never through its command line, which every
local user can read in ``/proc``.

Placeholders in templates: ``{host}``, ``{port}``, ``{scheme}`` (vnc or spice) and
``{display}`` (port - 5900, for viewers that want a display number).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence

from catkeeper.backend.errors import BackendError

# Tried in order when the config names no viewer.
DEFAULT_VIEWERS: tuple[tuple[str, ...], ...] = (
    ("vncviewer", "{host}::{port}"),
    ("xtigervncviewer", "{host}::{port}"),
    ("remote-viewer", "{scheme}://{host}:{port}"),
)
# Viewers that read a vncpasswd-style obfuscated file given with -passwd (TigerVNC,
# TightVNC and the RealVNC 4 family all do).
_PASSWD_FILE_VIEWERS = frozenset(
    ("vncviewer", "xtigervncviewer", "xtightvncviewer", "xvnc4viewer", "tigervnc")
)
_VV_VIEWERS = frozenset(("remote-viewer",))


class ConsoleError(BackendError):
    """The console cannot be opened; ``str()`` says why, for a person."""


def has_display(env: Mapping[str, str]) -> bool:
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def find_viewer(
    configured: Sequence[str] | None,
    *,
    which: Callable[[str], str | None] = shutil.which,
) -> tuple[str, ...] | None:
    """The argv template to use: the configured one, else the first default on PATH."""
    if configured:
        return tuple(configured)
    for template in DEFAULT_VIEWERS:
        if which(template[0]) is not None:
            return template
    return None


def viewer_kind(template: Sequence[str]) -> str:
    """``passwd-file``, ``vv-file`` or ``other``: how a password can reach this viewer."""
    name = os.path.basename(template[0])
    if name in _PASSWD_FILE_VIEWERS:
        return "passwd-file"
    if name in _VV_VIEWERS:
        return "vv-file"
    return "other"


# The fixed DES key every VNC implementation uses to obfuscate stored passwords (vncpasswd,
# ~/.vnc/passwd). VNC's d3des reverses the bits of each key byte, so for a standard DES
# implementation the key is the bit-reversed form of {23, 82, 107, 6, 35, 78, 88, 7}.
_VNC_OBFUSCATION_KEY = bytes((23, 82, 107, 6, 35, 78, 88, 7))


def _reverse_bits(byte: int) -> int:
    return int(f"{byte:08b}"[::-1], 2)


def vnc_obfuscate(password: str) -> bytes:
    """The 8-byte vncpasswd file content for ``password`` (VNC uses at most 8 bytes).

    This is obfuscation, not encryption: the file is protected by its mode, not by DES.
    DES comes from ``cryptography`` (already installed as asyncssh's dependency); its
    single-DES form is TripleDES with the key repeated three times.
    """
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    key = bytes(_reverse_bits(b) for b in _VNC_OBFUSCATION_KEY)
    block = password.encode("utf-8")[:8].ljust(8, b"\0")
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()  # ECB: one block, VNC format
    return encryptor.update(block) + encryptor.finalize()


class Secrets:
    """A private directory for password files: 0700, files 0600, removed in one go."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="catkeeper-viewer-")  # mode 0700

    def write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.directory, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return path

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def build_argv(
    template: Sequence[str],
    *,
    host: str,
    port: int,
    protocol: str,
    password_file: str | None = None,
) -> list[str]:
    """The viewer's argv: placeholders filled, the password file option added if any.

    ``password_file`` is a vncpasswd file for ``passwd-file`` viewers, a .vv file for
    remote-viewer (which then replaces the URI argument: the file names host and port).
    """
    values = {
        "host": host,
        "port": port,
        "scheme": protocol,
        "display": port - 5900 if port >= 5900 else port,
    }
    kind = viewer_kind(template)
    if password_file is not None and kind == "vv-file":
        rest = [a for a in template[1:] if not any(f"{{{k}}}" in a for k in values)]
        return [template[0], *(_fill(a, values) for a in rest), password_file]
    argv = [_fill(a, values) for a in template]
    if password_file is not None and kind == "passwd-file":
        argv[1:1] = ["-passwd", password_file]
    return argv


def _fill(arg: str, values: Mapping[str, object]) -> str:
    try:
        return arg.format_map(values)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConsoleError(
            f"viewer template argument {arg!r}: unknown placeholder {exc} "
            "(known: {host}, {port}, {scheme}, {display})"
        ) from None


def vv_file(protocol: str, host: str, port: int, password: str, title: str) -> bytes:
    # remote-viewer's connection file; delete-this-file makes it remove the file once read.
    lines = [
        "[virt-viewer]",
        f"type={protocol}",
        f"host={host}",
        f"port={port}",
        f"password={password}",
        f"title={title}",
        "delete-this-file=1",
    ]
    return ("\n".join(lines) + "\n").encode()


def graphics_password(secure_xml: str, index: int) -> str | None:
    """The ``passwd`` of the index-th ``<graphics>`` in a domain's secure XML."""
    devices = ET.fromstring(secure_xml).find("devices")
    graphics = devices.findall("graphics") if devices is not None else []
    if index >= len(graphics):
        return None
    return graphics[index].get("passwd") or None
