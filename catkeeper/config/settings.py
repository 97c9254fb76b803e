"""The typed settings a configuration file turns into, and the one error it can raise.

Plain frozen dataclasses: the backend reads them, nothing here knows about YAML.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from catkeeper.config.views import View

# The package's demo fleet (catkeeper/demo), one directory up from this package.
DEMO_DIR = Path(__file__).parent.parent / "demo"
DEMO_SOURCE = "<demo>"
LibvirtTransport = Literal["catkeeper", "libvirt"]
LIBVIRT_TRANSPORTS: tuple[LibvirtTransport, ...] = ("catkeeper", "libvirt")


def current_user(config: Config) -> str:
    """Who "me" is (reservation owner, ``owner:me``): the configured owner, else the login."""
    if config.owner:
        return config.owner
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry, e.g. in a container
        return str(os.getuid())


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
    # Who carries a DRIVER+ssh:// URI: "catkeeper" (its one asyncssh connection per host,
    # shared with VNC tunnels and remote commands: one login) or "libvirt" (libvirt's own
    # ssh transport, as the URI says; tunnels then log in a second time).
    libvirt_transport: LibvirtTransport = "catkeeper"


@dataclass(frozen=True)
class Timing:
    connect_timeout: float = 10.0  # seconds for one connection attempt
    call_timeout: float = 30.0  # seconds for one libvirt call
    refresh_interval: float = 10.0  # seconds between warm refreshes (0: events only)
    # Seconds between live-stats polls, one bulk call per host (0: off; equal to
    # refresh_interval: carried by the warm refresh's own call).
    stats_interval: float = 10.0
    backoff_initial: float = 1.0  # first reconnect delay (a quarter of it after a drop)
    backoff_max: float = 60.0  # reconnect delays double up to this
    backoff_jitter: float = 0.5  # each delay is cut by up to this share of it, at random
    keepalive_interval: int = 5  # libvirt keepalive, where the driver supports it
    keepalive_count: int = 3
    workers_per_host: int = 8  # most threads one host may use for parallel calls (bench/remote)
    shared_workers: int = 56  # threads beyond each host's first, shared by all hosts (0: none)
    worker_idle: float = 30.0  # seconds an idle worker thread lives before it ends


@dataclass(frozen=True)
class StaleSettings:
    stale_after: float = 7 * 86400.0  # seconds a reservation may go unused: reserved:stale
    disk_recheck: float = 300.0  # seconds before disk times of shut-off VMs are read again


@dataclass(frozen=True)
class GracefulStop:
    acpi_wait: float = 60.0  # seconds after ACPI shutdown before ctrl-alt-del
    ctrl_alt_del_wait: float = 30.0  # seconds after ctrl-alt-del before destroy


@dataclass(frozen=True)
class IpScan:
    libvirt_interval: float = 60.0  # seconds between background libvirt IP queries (0: off)
    sweep_interval: float = 0.0  # seconds between background active sweeps (0: off)
    host_timeout: float = 30.0  # bound on one host's scan
    max_age: float = 3600.0  # seconds before a sighting is forgotten
    sweep_timeout: float = 1.0  # seconds a raw-socket sweep waits for answers
    sweep_wait: float = 1.0  # unprivileged: seconds between the poke and reading the table
    max_addresses: int = 1024  # the largest subnet catkeeper will sweep
    # Per-VM IP calls in flight per host (the guest agent; lease/arp for VMs no bulk call
    # answered); 0: the host's worker threads less one, so a person's action finds one free.
    per_vm_calls: int = 0


@dataclass(frozen=True)
class Config:
    hosts: tuple[HostConfig, ...]
    source: str  # the file it came from, or "<demo>"
    timing: Timing = field(default_factory=Timing)
    graceful_stop: GracefulStop = field(default_factory=GracefulStop)
    ipscan: IpScan = field(default_factory=IpScan)
    stale: StaleSettings = field(default_factory=StaleSettings)
    viewer: tuple[str, ...] | None = None  # argv template; None: first viewer found on PATH
    owner: str | None = None  # reservation owner; None: the login name
    readonly: bool = False
    views: tuple[View, ...] = ()  # saved views: the config's, then views.yaml's
    views_file: str = ""  # where :save-view writes (catkeeper.config.views.views_path)

    @property
    def is_demo(self) -> bool:
        return self.source == DEMO_SOURCE
