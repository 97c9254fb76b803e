"""One bulk stats record → the counters catkeeper keeps; two counters → per-second rates.

Pure functions over ``getAllDomainStats`` records (plain dicts), so they run on the host's
worker thread and are tested without libvirt. Only the keys used are read: at 10,000 VMs
every key looked up per VM per poll costs the worker ~1 ms.

CPU % is **of the VM's own vCPUs** (100 % = every vCPU it has busy, whatever the host's
size), the figure a guest's ``top`` shows; virt-manager's "Guest CPU usage" is the same.
Memory in use is what the guest reports (``available - unused``, needs a balloon driver
with stats), else the qemu process's resident set (``rss``), else unknown.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import libvirt

# Asked for every stats poll (with the warm refresh's own groups when the two are folded).
STATS_GROUPS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_VCPU
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_INTERFACE
    | libvirt.VIR_DOMAIN_STATS_BLOCK
)
RUNNING = libvirt.VIR_DOMAIN_RUNNING


@dataclass(frozen=True, slots=True)
class Counters:
    """Cumulative counters of one domain at one moment (None: libvirt did not say)."""

    at: float  # monotonic seconds, from the clock the poll was given
    running: bool
    cpu_ns: int | None
    vcpus: int
    mem_used_kib: int | None
    net_rx: int | None
    net_tx: int | None
    disk_rd: int | None
    disk_wr: int | None


@dataclass(frozen=True, slots=True)
class Rates:
    """What one VM did between two polls, per second; ``at`` is the wall-clock time."""

    at: float
    running: bool
    cpu_pct: float | None  # of the VM's own vCPUs (100 = all of them busy)
    mem_used_kib: int | None
    net_rx: float | None  # bytes/s
    net_tx: float | None
    disk_rd: float | None
    disk_wr: float | None

    @property
    def figures(self) -> tuple[float | None, ...]:
        """CPU, memory, net rx, net tx, disk read, disk write: a stats ring's order."""
        mem, cpu = self.mem_used_kib, self.cpu_pct
        return (cpu, mem, self.net_rx, self.net_tx, self.disk_rd, self.disk_wr)

    @property
    def net(self) -> float | None:
        """Both directions together (the table's NET column)."""
        if self.net_rx is None and self.net_tx is None:
            return None
        return (self.net_rx or 0.0) + (self.net_tx or 0.0)


@functools.cache
def _keys(group: str, count: int, a: str, b: str) -> tuple[tuple[str, str], ...]:
    """The record keys of a group's devices, built once per shape, not per VM per poll."""
    return tuple((f"{group}.{i}.{a}", f"{group}.{i}.{b}") for i in range(count))


def _sum(record: dict[str, Any], group: str, a: str, b: str) -> tuple[int | None, int | None]:
    count = record.get(f"{group}.count")
    if not count:
        return (None, None)
    first = second = 0
    seen_first = seen_second = False
    for key_a, key_b in _keys(group, int(count), a, b):
        value = record.get(key_a)
        if value is not None:
            first += value
            seen_first = True
        value = record.get(key_b)
        if value is not None:
            second += value
            seen_second = True
    return (first if seen_first else None, second if seen_second else None)


def _memory(record: dict[str, Any]) -> int | None:
    available = record.get("balloon.available")
    unused = record.get("balloon.unused")
    if available is not None and unused is not None:
        return max(0, int(available) - int(unused))
    rss = record.get("balloon.rss")
    return int(rss) if rss is not None else None


def has_figures(record: dict[str, Any]) -> bool:
    """Whether the record carries any counter at all (the test driver's carry none: a poll
    then keeps nothing for that VM, so its cost stays a dict lookup or five)."""
    return (
        record.get("cpu.time") is not None
        or bool(record.get("net.count"))
        or bool(record.get("block.count"))
        or record.get("balloon.rss") is not None
        or record.get("balloon.available") is not None
    )


def counters(record: dict[str, Any], at: float) -> Counters:
    """The counters in one domain's stats record, taken at monotonic time ``at``."""
    running = record.get("state.state") == RUNNING
    cpu = record.get("cpu.time")
    net_rx, net_tx = _sum(record, "net", "rx.bytes", "tx.bytes")
    disk_rd, disk_wr = _sum(record, "block", "rd.bytes", "wr.bytes")
    return Counters(
        at=at,
        running=running,
        cpu_ns=int(cpu) if cpu is not None else None,
        vcpus=int(record.get("vcpu.current") or record.get("vcpu.maximum") or 1),
        mem_used_kib=_memory(record) if running else None,
        net_rx=net_rx,
        net_tx=net_tx,
        disk_rd=disk_rd,
        disk_wr=disk_wr,
    )


def _per_second(new: int | None, old: int | None, seconds: float) -> float | None:
    if new is None or old is None or new < old:  # a counter that went back: a restart
        return None
    return (new - old) / seconds


def rates(new: Counters, old: Counters | None, wall: float) -> Rates:
    """The rates between two samples; only the memory figure when there is no earlier one,
    or the VM was not running through both."""
    seconds = new.at - old.at if old is not None else 0.0
    if old is None or seconds <= 0 or not (new.running and old.running):
        return Rates(wall, new.running, None, new.mem_used_kib, None, None, None, None)
    cpu = _per_second(new.cpu_ns, old.cpu_ns, seconds)
    return Rates(
        at=wall,
        running=True,
        cpu_pct=None if cpu is None else cpu / 1e7 / max(1, new.vcpus),  # ns/s → % of vCPUs
        mem_used_kib=new.mem_used_kib,
        net_rx=_per_second(new.net_rx, old.net_rx, seconds),
        net_tx=_per_second(new.net_tx, old.net_tx, seconds),
        disk_rd=_per_second(new.disk_rd, old.disk_rd, seconds),
        disk_wr=_per_second(new.disk_wr, old.disk_wr, seconds),
    )
