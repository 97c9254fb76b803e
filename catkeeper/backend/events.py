"""What the backend tells its listeners (the TUI, the headless run). Plain data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from catkeeper.model import VM, Host


@dataclass(frozen=True)
class HostChanged:
    host: Host


@dataclass(frozen=True)
class InventoryLoaded:
    """Every VM of one host, replacing what was known (cold load, reconnect, going stale)."""

    host: str
    vms: tuple[VM, ...]


@dataclass(frozen=True)
class VmChanged:
    vm: VM


@dataclass(frozen=True)
class VmRemoved:
    host: str
    uuid: str


@dataclass(frozen=True)
class DomainEvent:
    """A raw libvirt domain event, for code that waits on one (e.g. graceful stop)."""

    host: str
    uuid: str
    event_id: int  # libvirt.VIR_DOMAIN_EVENT_ID_*
    args: tuple[object, ...]


@dataclass(frozen=True)
class StatsUpdated:
    """New live-stats samples for the VMs of one host (in its session's ``stats``)."""

    host: str


FleetEvent = HostChanged | InventoryLoaded | VmChanged | VmRemoved | DomainEvent | StatsUpdated
Listener = Callable[[FleetEvent], None]
