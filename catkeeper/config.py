"""YAML configuration → typed, validated settings.

Search order: ``--config PATH``, ``$CATKEEPER_CONFIG``,
``$XDG_CONFIG_HOME/catkeeper/config.yaml`` (``~/.config`` when unset), then the embedded
demo fleet. Every error names the file, the line and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class ConfigError(Exception):
    """A bad configuration file; ``str()`` is one line: ``FILE:LINE: KEY: what is wrong``."""

    def __init__(self, path: str, line: int | None, key: str | None, message: str) -> None:
        self.path = path
        self.line = line
        self.key = key
        self.message = message
        where = f"{path}:{line}" if line is not None else path
        what = f"{key}: {message}" if key else message
        super().__init__(f"{where}: {what}")


@dataclass(frozen=True)
class SshSettings:
    host: str
    user: str | None = None
    port: int | None = None
    key: str | None = None  # path to a private key; None: agent and ~/.ssh/config
    known_hosts: str | None = None  # None: ~/.ssh/known_hosts
    accept_unknown_host_key: bool = False


@dataclass(frozen=True)
class HostConfig:
    name: str
    uri: str
    ssh: SshSettings | None = None
    tags: tuple[str, ...] = ()
    subnets: tuple[str, ...] = ()  # CIDR strings, validated
    readonly: bool = False


@dataclass(frozen=True)
class Timing:
    connect_timeout: float = 10.0  # seconds for one connection attempt
    call_timeout: float = 30.0  # seconds for one libvirt call
    refresh_interval: float = 10.0  # seconds between warm refreshes (0: events only)
    backoff_initial: float = 1.0  # first reconnect delay
    backoff_max: float = 60.0  # reconnect delays double up to this
    keepalive_interval: int = 5  # libvirt keepalive, where the driver supports it
    keepalive_count: int = 3
    workers_per_host: int = 4  # threads per host for parallel per-domain calls


@dataclass(frozen=True)
class GracefulStop:
    acpi_wait: float = 60.0  # seconds after ACPI shutdown before ctrl-alt-del
    ctrl_alt_del_wait: float = 30.0  # seconds after ctrl-alt-del before destroy


@dataclass(frozen=True)
class Config:
    hosts: tuple[HostConfig, ...]
    source: str  # the file it came from, or "<demo>"
    timing: Timing = field(default_factory=Timing)
    graceful_stop: GracefulStop = field(default_factory=GracefulStop)
    viewer: tuple[str, ...] | None = None  # argv template; None: first viewer found on PATH
    owner: str | None = None  # reservation owner; None: the login name
    readonly: bool = False

    @property
    def is_demo(self) -> bool:
        return self.source == "<demo>"
