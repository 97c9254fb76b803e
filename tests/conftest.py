"""Shared fixtures. Daemon fixtures drive real libvirtd/sshd on loopback (see daemons.py)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

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
from tests.environment import REQUIRE, require_tools, required, unavailable

# libvirt prints every error to stderr by default; tests assert on exceptions instead.
libvirt.registerErrorHandler(lambda *_: None, None)


# Tests that use these fixtures need real daemons: they get the ``daemon`` mark, so that
# ``-m "not daemon"`` selects the rest (CI runs those again under faketime, years ahead).
DAEMON_FIXTURES = frozenset({"libvirtd", "sshd"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if DAEMON_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.daemon)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """With CATKEEPER_REQUIRE_DAEMONS=1 no test may skip, whatever skipped it.

    ``unavailable`` already fails for the environment's gaps we know of; this catches every
    other ``pytest.skip``/``skipif`` so that "0 skipped" under CI is a fact, not a hope.
    """
    outcome: Any = yield
    report: pytest.TestReport = outcome.get_result()
    if report.skipped and required() and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under {REQUIRE}=1, where every test must run: {reason}"


@pytest.fixture(scope="session", autouse=True)
def _private_state_and_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests never write the user's own state or config (the audit log, saved views): both
    XDG homes point into this session's temporary folder; a test may point them elsewhere."""
    root = tmp_path_factory.mktemp("xdg")
    saved = {k: os.environ.get(k) for k in ("XDG_STATE_HOME", "XDG_CONFIG_HOME")}
    os.environ["XDG_STATE_HOME"] = str(root / "state")
    os.environ["XDG_CONFIG_HOME"] = str(root / "config")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[LibvirtDaemon]:
    """The real system libvirtd (qemu:///system), started for the session if none answers."""
    require_tools("libvirtd", "virtlogd", "virsh", "qemu-system-x86_64")
    try:
        daemon = ensure_libvirtd()
    except DaemonError as e:
        unavailable(str(e))
    yield daemon
    daemon.stop()


@pytest.fixture
def restart_libvirtd(libvirtd: LibvirtDaemon) -> Callable[[], float]:
    """``restart_libvirtd()`` restarts the daemon (returns seconds until it answered).

    Waits while another test session uses the daemon. ``unavailable`` (a skip, or a failure
    under CATKEEPER_REQUIRE_DAEMONS=1) when the suite did not start the daemon: we never kill
    a foreign one. Reopen connections afterwards.
    """
    if not libvirtd.owned:
        unavailable("libvirtd was not started by the test suite; restarting means killing it")

    def restart() -> float:
        try:
            return libvirtd.restart()
        except (DaemonBusyError, DaemonNotOwnedError) as e:
            unavailable(str(e))

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
    require_tools("/usr/sbin/sshd", "ssh-keygen")
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
