"""Who catkeeper's ssh connection trusts, and how it fails: host keys, client keys, config.

Against the private sshd of tests/daemons.py: known_hosts is always enforced, nothing ever
prompts, and every refusal reaches the host's state as a sentence a person can act on.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from catkeeper.backend.ssh import HostKeyError, SshAuthError, SshTransport
from catkeeper.config import HostConfig, SshSettings
from catkeeper.model import HostState
from tests.daemons import DomainFactory, SshServer
from tests.ssh_helpers import TEST_DRIVER, config, settings, ssh_host, started

pytestmark = pytest.mark.daemon


async def test_unknown_host_key_is_refused_with_a_clear_error(
    sshd: SshServer, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    fleet = await started(
        config(ssh_host(sshd, known_hosts=str(empty)), HostConfig("t", TEST_DRIVER))
    )
    try:
        host = fleet.session("viassh").host
        assert host.state is HostState.UNREACHABLE
        assert host.error is not None
        assert "host key" in host.error and "unknown" in host.error
        assert str(empty) in host.error and "accept_unknown_host_key" in host.error
        assert fleet.session("t").host.state is HostState.UP
        assert empty.read_text() == ""  # nothing was recorded
        assert sshd.authentications() == 0  # refused before authenticating
    finally:
        await fleet.aclose()


async def test_changed_host_key_is_refused_even_when_unknown_keys_are_accepted(
    sshd: SshServer, tmp_path: Path
) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    stale = tmp_path / "known_hosts"
    wrong = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    stale.write_text(f"[127.0.0.1]:{sshd.port} {wrong}\n")
    transport = SshTransport("viassh", settings(sshd, known_hosts=str(stale), accept_unknown=True))
    with pytest.raises(HostKeyError, match="CHANGED"):
        await transport.connect()
    await transport.aclose()
    assert stale.read_text() == f"[127.0.0.1]:{sshd.port} {wrong}\n"


async def test_accept_unknown_host_key_records_the_key(sshd: SshServer, tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    accepting = settings(sshd, known_hosts=str(kh), accept_unknown=True)
    first = SshTransport("viassh", accepting)
    await first.connect()
    await first.aclose()
    assert kh.read_text() == f"[127.0.0.1]:{sshd.port} {sshd.host_key_line}\n"
    # Now known: a second connection needs no acceptance and records nothing more.
    strict = SshTransport("viassh", dataclasses.replace(accepting, accept_unknown_host_key=False))
    await strict.connect()
    await strict.aclose()
    assert kh.read_text().count("\n") == 1


async def test_wrong_client_key_is_a_host_error_while_other_hosts_work(
    sshd: SshServer, tmp_path: Path, tcg_domain: DomainFactory
) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    fleet = await started(
        config(ssh_host(sshd, "badkey", key=str(stranger)), HostConfig("t", TEST_DRIVER))
    )
    try:
        host = fleet.session("badkey").host
        assert host.state is HostState.UNREACHABLE
        assert host.error is not None and "authentication" in host.error
        assert "never prompts" in host.error
        assert fleet.session("t").host.state is HostState.UP
        assert fleet.session("t").vms  # test:///default has a domain
    finally:
        await fleet.aclose()
    transport = SshTransport("badkey", settings(sshd, key=str(stranger)))
    with pytest.raises(SshAuthError):
        await transport.connect()
    await transport.aclose()


async def test_passphrase_protected_key_is_skipped_not_prompted(
    sshd: SshServer, tmp_path: Path
) -> None:
    locked = tmp_path / "locked"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "s3cret-pass", "-f", str(locked)], check=True
    )
    transport = SshTransport("h", settings(sshd, key=str(locked)))
    with pytest.raises(SshAuthError, match="passphrase-protected: add it to ssh-agent"):
        await transport.connect()
    await transport.aclose()


async def test_ssh_config_alias_is_honoured(sshd: SshServer, tmp_path: Path) -> None:
    cfg = tmp_path / "ssh_config"
    cfg.write_text(
        f"Host lab-alias\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User root\n"
        f"  IdentityFile {sshd.client_key}\n  UserKnownHostsFile {sshd.known_hosts}\n"
    )
    transport = SshTransport("alias", SshSettings(host="lab-alias"), config_paths=[str(cfg)])
    try:
        result = await transport.run(["id", "-un"])
        assert result.stdout.strip() == "root"
    finally:
        await transport.aclose()
