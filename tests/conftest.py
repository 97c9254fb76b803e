"""Shared fixtures. Daemon fixtures drive real libvirtd/sshd on loopback (see daemons.py)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import libvirt
import pytest

from tests.daemons import (
    DaemonBusyError,
    DaemonError,
    DaemonNotOwnedError,
    DelayRelay,
    DomainFactory,
    LibvirtDaemon,
    SshServer,
    ensure_libvirtd,
)

# libvirt prints every error to stderr by default; tests assert on exceptions instead.
libvirt.registerErrorHandler(lambda *_: None, None)


def _unavailable(reason: str) -> NoReturn:
    # With CATKEEPER_REQUIRE_DAEMONS=1 (meant for CI, where we are root) a missing daemon
    # fails loudly instead of quietly turning the real-transport tests into skips.
    if os.environ.get("CATKEEPER_REQUIRE_DAEMONS"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def _require(*tools: str) -> None:
    if os.geteuid() != 0:
        _unavailable("needs root to run real daemons")
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        _unavailable(f"not installed: {', '.join(missing)} (scripts/bootstrap test)")


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[LibvirtDaemon]:
    """The real system libvirtd (qemu:///system), started for the session if none answers."""
    _require("libvirtd", "virtlogd", "virsh", "qemu-system-x86_64")
    try:
        daemon = ensure_libvirtd()
    except DaemonError as e:
        _unavailable(str(e))
    yield daemon
    daemon.stop()


@pytest.fixture
def restart_libvirtd(libvirtd: LibvirtDaemon) -> Callable[[], float]:
    """``restart_libvirtd()`` restarts the daemon (returns seconds until it answered).

    Skips instead when the suite did not start the daemon (we never kill a foreign one) or
    another test session keeps using it. Reopen connections afterwards.
    """
    if not libvirtd.owned:
        pytest.skip("libvirtd was not started by the test suite; restarting means killing it")

    def restart() -> float:
        try:
            return libvirtd.restart()
        except (DaemonBusyError, DaemonNotOwnedError) as e:
            pytest.skip(str(e))

    return restart


@pytest.fixture
def tcg_domain(libvirtd: LibvirtDaemon) -> Iterator[DomainFactory]:
    """``tcg_domain(start=False, **tcg_domain_xml kwargs)`` → a fresh ``ckt-`` domain,
    destroyed and undefined after the test. ``tcg_domain.conn`` is its connection."""
    factory = DomainFactory(libvirtd)
    yield factory
    factory.close()


@pytest.fixture
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """A private sshd on 127.0.0.1 accepting root with ``sshd.client_key``; fresh log per test."""
    _require("/usr/sbin/sshd", "ssh-keygen")
    with SshServer(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def delay_relay() -> Iterator[Callable[..., DelayRelay]]:
    """``delay_relay(target_port, delay=0.05, blackhole=False)`` → a started DelayRelay."""
    relays: list[DelayRelay] = []

    def make(target_port: int, **kwargs: Any) -> DelayRelay:
        relay = DelayRelay(target_port, **kwargs).start()
        relays.append(relay)
        return relay

    yield make
    for relay in relays:
        relay.stop()
