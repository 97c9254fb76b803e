"""Plain data shared by the backend, the TUI and the ``--json`` dump.

Every class is a frozen dataclass of JSON-native values (str, int, float, bool, None,
tuples and nested dataclasses), so ``dataclasses.asdict`` output goes to ``json.dumps``
as is and the table and the JSON can never disagree. Each is also a ``Value``
(``catkeeper/values.py``): kept out of the cycle collector's walks, which that rule makes safe.
Times are Unix epoch seconds (UTC).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from catkeeper.values import Value


class HostState(StrEnum):
    CONNECTING = "connecting"
    UP = "up"
    DEGRADED = "degraded"
    UNREACHABLE = "unreachable"


class VmState(StrEnum):
    """libvirt's virDomainState, under the names ``virsh list`` uses."""

    NOSTATE = "nostate"
    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SHUTDOWN = "shutdown"  # in the middle of shutting down
    SHUTOFF = "shutoff"
    CRASHED = "crashed"
    PMSUSPENDED = "pmsuspended"

    @classmethod
    def from_libvirt(cls, code: int) -> VmState:
        order = list(cls)
        return order[code] if 0 <= code < len(order) else cls.NOSTATE

    @property
    def is_active(self) -> bool:
        return self not in (VmState.SHUTOFF, VmState.CRASHED, VmState.NOSTATE)


@dataclass(frozen=True)
class Capacity(Value):
    cpus: int
    memory_kib: int
    free_memory_kib: int | None = None


@dataclass(frozen=True)
class Host(Value):
    name: str
    uri: str
    state: HostState = HostState.CONNECTING
    error: str | None = None
    error_since: float | None = None
    last_ok_at: float | None = None
    latency_ms: float | None = None
    capacity: Capacity | None = None
    vm_count: int = 0
    readonly: bool = False
    tags: tuple[str, ...] = ()
    hypervisor: str | None = None
    libvirt_version: str | None = None


@dataclass(frozen=True)
class Nic(Value):
    mac: str
    type: str  # network, bridge, direct, user, ...
    source: str | None = None  # network or bridge name
    model: str | None = None
    target: str | None = None  # host-side device, e.g. vnet3


@dataclass(frozen=True)
class Graphics(Value):
    type: str  # vnc, spice, ...
    port: int | None = None  # None while autoport has not assigned one
    listen: str | None = None
    autoport: bool = False
    # None: unknown (a read-only connection cannot read the secure XML). The password
    # itself never leaves the backend.
    has_password: bool | None = None
    socket: str | None = None
    tls_port: int | None = None


@dataclass(frozen=True)
class Disk(Value):
    target: str
    device: str  # disk, cdrom, floppy, lun
    type: str  # file, block, volume, network
    source: str | None = None
    bus: str | None = None
    format: str | None = None


@dataclass(frozen=True)
class Reservation(Value):
    owner: str
    note: str = ""
    since: float | None = None
    until: float | None = None
    contact: str | None = None
    revision: int = 0

    def is_expired(self, now: float) -> bool:
        return self.until is not None and self.until <= now

    def keeps_from(self, me: str, now: float) -> bool:
        """Someone other than ``me`` holds it and it has not expired: the holder rule of
        the command table (``Holder.ASK``) asks first, naming ``owner``."""
        return self.owner != me and not self.is_expired(now)


@dataclass(frozen=True)
class IpSighting(Value):
    mac: str
    ip: str
    prefix: int | None
    source: str  # agent, lease, arp, sweep-arp, sweep-icmp, neigh, ...
    seen_at: float


@dataclass(frozen=True)
class VM(Value):
    host: str
    name: str
    uuid: str
    state: VmState
    vcpus: int
    memory_kib: int
    max_memory_kib: int
    autostart: bool
    persistent: bool
    title: str | None = None
    description: str | None = None
    nics: tuple[Nic, ...] = ()
    graphics: tuple[Graphics, ...] = ()
    disks: tuple[Disk, ...] = ()
    reservation: Reservation | None = None
    ips: tuple[IpSighting, ...] = ()
    # The live XML shows the qemu guest agent's channel connected: only then is the agent
    # asked for addresses (backend/ipscan/bulk.py); False when shut off or without a channel.
    agent_connected: bool = False
    stale: bool = False  # its host is unreachable; this is the last known view
    updated_at: float = field(default=0.0, compare=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.host, self.uuid)

    @property
    def ref(self) -> str:
        """The ``HOST/VM`` form the CLI takes."""
        return f"{self.host}/{self.name}"


def best_ip(vm: VM) -> str | None:
    """The one address for the VM's IP column: IPv4 before IPv6, global before link-local,
    then in the VM's own order (NIC order, then numerically), so it does not flicker.

    Here, not in the IP book, because the table shows it and widgets import only the model."""
    best: tuple[int, int, str] | None = None
    for index, sighting in enumerate(vm.ips):
        try:
            addr = ipaddress.ip_address(sighting.ip)
        except ValueError:
            continue
        if addr.is_loopback:
            continue
        rank = (0 if addr.version == 4 else 2) + (1 if addr.is_link_local else 0)
        if best is None or (rank, index) < best[:2]:
            best = (rank, index, sighting.ip)
    return best[2] if best else None


# A graceful stop's stages (backend/actions/graceful.py): here because the table shows them.
Stage = Literal["acpi", "ctrl-alt-del", "destroy", "stopped", "cancelled", "failed"]
FINAL_STAGES: frozenset[str] = frozenset({"stopped", "cancelled", "failed"})


@dataclass(frozen=True)
class StopProgress(Value):
    ref: str
    stage: Stage
    deadline: float | None  # the stop's monotonic clock when the current wait ends; None: none
    message: str

    @property
    def final(self) -> bool:
        return self.stage in FINAL_STAGES


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def to_jsonable(obj: Any) -> Any:
    """A model object (or list of them) as plain JSON types.

    Hand-rolled rather than ``dataclasses.asdict``, which deep-copies every leaf and took
    four of the ten seconds of a 10,000-VM ``--json`` run.
    """
    if obj is None or isinstance(obj, str | int | float):
        return obj
    cls = type(obj)
    names = _FIELD_NAMES.get(cls)
    if names is None and dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(obj))
    if names is not None:
        return {name: to_jsonable(getattr(obj, name)) for name in names}
    if isinstance(obj, list | tuple):
        return [to_jsonable(o) for o in obj]
    return obj


def memory_taken_kib(vm: VM) -> int:
    """What a VM takes of its host's memory: the larger of its current and maximum memory
    (a guest ballooned down can take the rest back at any time). ``backend.capacity`` counts
    the same way; here because the host strip adds it up and widgets import only the model."""
    return max(vm.memory_kib, vm.max_memory_kib)
