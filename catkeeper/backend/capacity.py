"""Host capacity and placement: how much of each host the fleet's VMs take, and where a new VM
of a given size still fits.

Computed from the model the bulk refresh already keeps (``Host.capacity`` and every VM's
vCPUs, memory and state), so ``catkeeper hosts``/``place`` and the TUI cost no libvirt call
beyond the ordinary refresh. Pure: no libvirt, no textual.

Counting rules, and why:

* "Running" means active (running, paused, blocked, shutting down, pm-suspended): a paused
  VM keeps its memory, so it takes room from a new one just the same.
* A VM's memory is the larger of its current and maximum memory: a guest ballooned down can
  take the rest back at any time, so placing into that gap would overcommit.
* A host's free memory (``virNodeGetFreeMemory``) of 0 is "unknown": libvirt-python answers
  0 rather than raising when a driver cannot tell (the test driver), and a real host never
  has no free memory at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from catkeeper.backend.vm.create.spec import parse_size
from catkeeper.model import VM, Host, HostState, memory_taken_kib

KIB = 1024
_REACHABLE = (HostState.UP, HostState.DEGRADED)


@dataclass(frozen=True)
class HostLoad:
    """One host: what it has, what its VMs take, and the overcommit ratios.

    The physical fields are None while the host has not been read (unreachable, connecting).
    """

    host: str
    state: HostState
    error: str | None
    tags: tuple[str, ...]
    cpus: int | None
    memory_kib: int | None
    free_memory_kib: int | None
    vms_running: int
    vms_defined: int
    vcpus_running: int
    vcpus_defined: int
    memory_running_kib: int
    memory_defined_kib: int
    cpu_overcommit: float | None  # vCPUs of running VMs per physical CPU
    memory_overcommit: float | None  # memory of all defined VMs per physical memory

    @property
    def memory_left_kib(self) -> int | None:
        """Physical memory not taken by running VMs (negative when overcommitted)."""
        if self.memory_kib is None:
            return None
        return self.memory_kib - self.memory_running_kib


@dataclass(frozen=True)
class Fit:
    """A host where the VM fits, with what would be left after placing it."""

    host: str
    memory_left_kib: int  # physical memory - running VMs - the new VM
    free_after_kib: int | None  # the host's free memory - the new VM (None: unknown)
    cpu_overcommit: float  # (vCPUs of running VMs + the new VM's) per physical CPU


@dataclass(frozen=True)
class Misfit:
    host: str
    reason: str  # "unreachable (…)", "no tag gpu", "12 GiB free after running VMs, needs 16 GiB"


@dataclass(frozen=True)
class Placement:
    memory_kib: int
    vcpus: int
    tags: tuple[str, ...]
    fits: tuple[Fit, ...]  # best first
    misfits: tuple[Misfit, ...]  # in the fleet's host order


def _ratio(part: int, whole: int | None) -> float | None:
    return round(part / whole, 2) if whole else None


def host_load(host: Host, vms: Iterable[VM]) -> HostLoad:
    """The load of ``host`` from the VMs (only those on ``host`` are counted)."""
    running = defined = vcpus_running = vcpus_defined = mem_running = mem_defined = 0
    for vm in vms:
        if vm.host != host.name:
            continue
        taken = memory_taken_kib(vm)
        defined += 1
        vcpus_defined += vm.vcpus
        mem_defined += taken
        if vm.state.is_active:
            running += 1
            vcpus_running += vm.vcpus
            mem_running += taken
    cap = host.capacity
    cpus = cap.cpus if cap is not None and cap.cpus > 0 else None
    memory = cap.memory_kib if cap is not None and cap.memory_kib > 0 else None
    free = cap.free_memory_kib if cap is not None and cap.free_memory_kib else None
    return HostLoad(
        host=host.name,
        state=host.state,
        error=host.error,
        tags=host.tags,
        cpus=cpus,
        memory_kib=memory,
        free_memory_kib=free,
        vms_running=running,
        vms_defined=defined,
        vcpus_running=vcpus_running,
        vcpus_defined=vcpus_defined,
        memory_running_kib=mem_running,
        memory_defined_kib=mem_defined,
        cpu_overcommit=_ratio(vcpus_running, cpus),
        memory_overcommit=_ratio(mem_defined, memory),
    )


def loads(hosts: Sequence[Host], vms: Iterable[VM]) -> list[HostLoad]:
    """Every host's load, in the order of ``hosts``."""
    by_host: dict[str, list[VM]] = {h.name: [] for h in hosts}
    for vm in vms:
        if vm.host in by_host:
            by_host[vm.host].append(vm)
    return [host_load(h, by_host[h.name]) for h in hosts]


def parse_memory(text: str) -> int:
    """A memory size as ``catkeeper create --memory`` takes it (``16G``, ``512M``, a bare
    number in MiB) → KiB. ``ValueError`` names what is wrong."""
    size = parse_size(text, "M") // KIB
    if size <= 0:
        raise ValueError(f"{text!r}: memory must be more than 0")
    return size


def format_kib(kib: int) -> str:
    """``16 GiB``, ``12.5 GiB``, ``512 MiB``: whole numbers without ``.0``."""
    for unit, factor in (("TiB", KIB**3), ("GiB", KIB**2), ("MiB", KIB)):
        if abs(kib) >= factor:
            return f"{kib / factor:.1f}".removesuffix(".0") + f" {unit}"
    return f"{kib} KiB"


def _misfit(load: HostLoad, memory_kib: int, tags: Sequence[str]) -> str | None:
    """Why a VM of ``memory_kib`` does not fit on the host, or None when it does."""
    if load.state not in _REACHABLE:
        why = load.error or ("still connecting" if load.state is HostState.CONNECTING else "")
        return f"unreachable ({why})" if why else "unreachable"
    missing = [t for t in tags if t not in load.tags]
    if missing:
        return f"no tag{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
    left = load.memory_left_kib
    if left is None or load.cpus is None:
        return "capacity unknown (libvirt did not report the host's CPUs and memory)"
    needs = format_kib(memory_kib)
    if left < memory_kib:
        return f"{format_kib(max(left, 0))} free after running VMs, needs {needs}"
    if load.free_memory_kib is not None and load.free_memory_kib < memory_kib:
        return f"{format_kib(load.free_memory_kib)} free on the host, needs {needs}"
    return None


def place(
    hosts: Sequence[Host],
    vms: Iterable[VM],
    memory_kib: int,
    vcpus: int,
    *,
    tags: Sequence[str] = (),
) -> Placement:
    """The hosts where a VM of ``memory_kib`` and ``vcpus`` fits, best first, and why each
    other host does not.

    Fits: the host answers, carries every tag in ``tags``, and the memory of its running VMs
    plus the new VM stays within its physical memory (and the new VM within its free memory,
    when known). Best: the most memory left after placing, then the lowest CPU overcommit,
    then the name, so the order is stable.
    """
    fits: list[Fit] = []
    misfits: list[Misfit] = []
    for load in loads(hosts, vms):
        reason = _misfit(load, memory_kib, tags)
        if reason is not None:
            misfits.append(Misfit(load.host, reason))
            continue
        assert load.memory_left_kib is not None and load.cpus is not None
        free = load.free_memory_kib
        fits.append(
            Fit(
                host=load.host,
                memory_left_kib=load.memory_left_kib - memory_kib,
                free_after_kib=None if free is None else free - memory_kib,
                cpu_overcommit=round((load.vcpus_running + vcpus) / load.cpus, 2),
            )
        )
    fits.sort(key=lambda f: (-f.memory_left_kib, f.cpu_overcommit, f.host))
    return Placement(memory_kib, vcpus, tuple(tags), tuple(fits), tuple(misfits))
