"""cloud-init NoCloud seed images, built in memory.

A NoCloud seed is a small ISO9660 filesystem labelled ``cidata`` holding ``user-data`` and
``meta-data`` (and optionally ``network-config``). It is built here, on the client, with
pycdlib (pure Python, no ``genisoimage`` needed anywhere) and then uploaded to the host as a
storage volume, so a remote host needs nothing but libvirt.

The ISO carries Rock Ridge and Joliet names: plain ISO9660 names are 8.3 upper case, and
``user-data`` is neither; Linux (and so cloud-init) reads the Rock Ridge names.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Sequence

import yaml

VOLUME_ID = "cidata"
# Key types OpenSSH accepts in authorized_keys (ssh -Q key).
_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-dss",
)
_HOSTNAME_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


class CloudInitError(ValueError):
    """Bad input for a seed; ``str()`` says which and why."""


def check_ssh_key(line: str) -> str:
    """One public key line (``TYPE BASE64 [comment]``), checked; returns it stripped."""
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise CloudInitError(f"not an ssh public key: {line.strip()[:40]!r}")
    kind, blob = parts[0], parts[1]
    if kind not in _KEY_TYPES:
        raise CloudInitError(f"unknown ssh key type {kind!r} (expected e.g. ssh-ed25519)")
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise CloudInitError(f"ssh key {kind} …: the key data is not base64") from None
    # The blob starts with its own type name, length-prefixed: catches pasted junk.
    if raw[4 : 4 + len(kind)] != kind.encode():
        raise CloudInitError(f"ssh key {kind} …: the key data does not match its type")
    return line.strip()


def check_hostname(name: str) -> str:
    if not _HOSTNAME_RE.match(name):
        raise CloudInitError(
            f"hostname {name!r} is not valid: 1-63 letters, digits and '-', "
            "not starting or ending with '-'"
        )
    return name


def user_data(
    *,
    hostname: str,
    ssh_keys: Sequence[str],
    user: str | None = None,
) -> str:
    """``#cloud-config`` that sets the hostname and lets ``ssh_keys`` in.

    The keys go to the image's default user (ubuntu, fedora, opensuse, …); with ``user``
    also to that new user, who gets passwordless sudo. No password is set anywhere.
    """
    keys = [check_ssh_key(k) for k in ssh_keys if k.strip()]
    if not keys:
        raise CloudInitError("at least one ssh public key is needed to log in")
    check_hostname(hostname)
    config: dict[str, object] = {
        "hostname": hostname,
        "preserve_hostname": False,
        "ssh_authorized_keys": keys,
        "ssh_pwauth": False,
    }
    if user is not None:
        if not USER_RE.match(user):
            raise CloudInitError(f"user name {user!r} is not valid")
        config["users"] = [
            "default",
            {
                "name": user,
                "ssh_authorized_keys": list(keys),  # a copy: no YAML alias to the first
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "shell": "/bin/bash",
                "lock_passwd": True,
            },
        ]
    # One key per line, never folded: people (and tests) grep seeds for their key.
    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=1 << 20)
    return "#cloud-config\n" + body


def meta_data(*, instance_id: str, hostname: str) -> str:
    return yaml.safe_dump(
        {"instance-id": instance_id, "local-hostname": check_hostname(hostname)}, sort_keys=False
    )


def seed_iso(files: dict[str, str]) -> bytes:
    """An ISO9660 image labelled ``cidata`` with ``files`` (name → text) in its root."""
    import pycdlib  # here, not at the top: 2-5 MB of every TUI's memory, for creating VMs

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=VOLUME_ID, joliet=3, rock_ridge="1.09")
    for index, (name, text) in enumerate(sorted(files.items())):
        data = text.encode("utf-8")
        # The ISO9660 name only has to be unique and legal; readers use the RR/Joliet one.
        iso_name = f"/F{index}.;1"
        iso.add_fp(io.BytesIO(data), len(data), iso_name, rr_name=name, joliet_path=f"/{name}")
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()


def read_seed(image: bytes) -> dict[str, str]:
    """The files of a seed image by their Rock Ridge names (to check what a host holds)."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(image))
    try:
        out: dict[str, str] = {}
        for child in iso.list_children(rr_path="/"):
            if child is None or child.is_dot() or child.is_dotdot():
                continue
            name = child.rock_ridge.name().decode()
            data = io.BytesIO()
            iso.get_file_from_iso_fp(data, rr_path=f"/{name}")
            out[name] = data.getvalue().decode("utf-8")
        return out
    finally:
        iso.close()
