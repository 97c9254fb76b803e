"""Hosts and fleets for the tests against the private sshd (tests/daemons.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from catkeeper.backend.fleet import Fleet
from catkeeper.config import Config, HostConfig, SshSettings, Timing
from tests.daemons import SshServer

TIMING = Timing(connect_timeout=8, call_timeout=10, refresh_interval=0, backoff_initial=0.2)
TEST_DRIVER = "test:///default"


def ssh_host(
    sshd: SshServer,
    name: str = "viassh",
    *,
    port: int | None = None,
    key: str | None = None,
    known_hosts: str | None = None,
    accept_unknown: bool = False,
) -> HostConfig:
    return HostConfig(
        name=name,
        uri="qemu:///system",  # what the config loader stores for ssh hosts
        ssh=SshSettings(
            host="127.0.0.1",
            user="root",
            port=port or sshd.port,
            key=key or str(sshd.client_key),
            known_hosts=known_hosts or str(sshd.known_hosts),
            accept_unknown_host_key=accept_unknown,
        ),
    )


def settings(sshd: SshServer, **kw: object) -> SshSettings:
    got = ssh_host(sshd, **kw).ssh  # type: ignore[arg-type]
    assert got is not None
    return got


def config(*hosts: HostConfig, readonly: bool = False) -> Config:
    return Config(hosts=hosts, source="<test>", timing=TIMING, readonly=readonly)


async def started(cfg: Config) -> Fleet:
    fleet = Fleet(cfg)
    await fleet.start()
    assert await fleet.wait_settled(30)
    return fleet


async def until(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s")
        await asyncio.sleep(0.02)
