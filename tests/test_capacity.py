"""catkeeper.backend.capacity on model objects: what counts as taken, the fit rules, the order.

The same numbers through libvirt's test driver and the installed script: test_cli_hosts.py.
"""

from __future__ import annotations

import pytest

from catkeeper.backend.capacity import (
    Fit,
    Misfit,
    format_kib,
    host_load,
    loads,
    parse_memory,
    place,
)
from catkeeper.model import VM, Capacity, Host, HostState, VmState

GIB = 1024 * 1024  # in KiB


def host(
    name: str,
    cpus: int = 8,
    gib: int = 32,
    *,
    free_gib: float | None = None,
    state: HostState = HostState.UP,
    tags: tuple[str, ...] = (),
    error: str | None = None,
) -> Host:
    free = None if free_gib is None else int(free_gib * GIB)
    return Host(
        name=name,
        uri=f"test:///{name}",
        state=state,
        error=error,
        capacity=Capacity(cpus, gib * GIB, free) if state is not HostState.UNREACHABLE else None,
        tags=tags,
    )


def vm(
    on: str, name: str, state: VmState, vcpus: int, gib: float, max_gib: float | None = None
) -> VM:
    return VM(
        host=on,
        name=name,
        uuid=f"{on}-{name}",
        state=state,
        vcpus=vcpus,
        memory_kib=int(gib * GIB),
        max_memory_kib=int((max_gib if max_gib is not None else gib) * GIB),
        autostart=False,
        persistent=True,
    )


R, P, OFF = VmState.RUNNING, VmState.PAUSED, VmState.SHUTOFF


def test_running_paused_and_defined_vms_are_counted_apart() -> None:
    vms = [
        vm("a", "run", R, 4, 8),
        vm("a", "paused", P, 2, 4),  # keeps its memory: counted as running
        vm("a", "off", OFF, 8, 16),
        vm("b", "elsewhere", R, 16, 30),
    ]
    load = host_load(host("a", cpus=8, gib=32), vms)
    assert (load.vms_running, load.vms_defined) == (2, 3)
    assert (load.vcpus_running, load.vcpus_defined) == (6, 14)
    assert (load.memory_running_kib, load.memory_defined_kib) == (12 * GIB, 28 * GIB)
    assert (load.cpus, load.memory_kib, load.memory_left_kib) == (8, 32 * GIB, 20 * GIB)
    assert (load.cpu_overcommit, load.memory_overcommit) == (0.75, 0.88)  # 28/32 = 0.875


def test_a_ballooned_guest_counts_with_its_maximum() -> None:
    load = host_load(host("a"), [vm("a", "balloon", R, 1, 2, max_gib=6)])
    assert load.memory_running_kib == 6 * GIB


def test_a_host_never_read_has_no_numbers_and_free_zero_is_unknown() -> None:
    down = host_load(host("a", state=HostState.UNREACHABLE), [])
    assert (down.cpus, down.memory_kib, down.cpu_overcommit, down.memory_left_kib) == (
        None,
        None,
        None,
        None,
    )
    # libvirt-python answers 0 for a driver that cannot tell (the test driver)
    assert host_load(host("a", free_gib=0), []).free_memory_kib is None
    assert host_load(host("a", free_gib=3), []).free_memory_kib == 3 * GIB


def test_loads_keep_the_host_order() -> None:
    hosts = [host("z"), host("a"), host("m")]
    assert [load.host for load in loads(hosts, [vm("a", "x", R, 1, 1)])] == ["z", "a", "m"]


def test_place_ranks_by_memory_left_then_cpu_overcommit_then_name() -> None:
    hosts = [host("busy-cpu", cpus=4), host("roomy", gib=64), host("idle"), host("idle2")]
    vms = [vm("busy-cpu", "x", R, 8, 4), vm("idle", "y", R, 4, 4), vm("idle2", "y", R, 4, 4)]
    got = place(hosts, vms, 16 * GIB, 4)
    assert got.fits == (
        Fit("roomy", 48 * GIB, None, 0.5),
        Fit("idle", 12 * GIB, None, 1.0),  # same memory left as busy-cpu, less overcommit
        Fit("idle2", 12 * GIB, None, 1.0),  # a tie: by name
        Fit("busy-cpu", 12 * GIB, None, 3.0),
    )
    assert got.misfits == ()


def test_every_host_that_does_not_fit_says_why() -> None:
    hosts = [
        host("lab1", gib=64, tags=("gpu",)),
        host("lab2", state=HostState.UNREACHABLE, error="connection refused"),
        host("lab3", gib=28),
        host("lab4", gib=64),
        host("lab5", gib=64, tags=("gpu",), free_gib=10),
        host("lab6", state=HostState.CONNECTING),
        Host(name="lab7", uri="test:///lab7", state=HostState.UP, tags=("gpu",)),
    ]
    vms = [vm("lab3", "big", R, 2, 16), vm("lab3", "off", OFF, 2, 16)]
    got = place(hosts, vms, 16 * GIB, 8, tags=["gpu"])
    assert got.fits == (Fit("lab1", 48 * GIB, None, 1.0),)
    assert got.misfits == (
        Misfit("lab2", "unreachable (connection refused)"),
        Misfit("lab3", "no tag gpu"),
        Misfit("lab4", "no tag gpu"),
        Misfit("lab5", "10 GiB free on the host, needs 16 GiB"),
        Misfit("lab6", "unreachable (still connecting)"),
        Misfit("lab7", "capacity unknown (libvirt did not report the host's CPUs and memory)"),
    )
    nowhere = place(hosts[2:3], vms, 16 * GIB, 8)
    assert nowhere.fits == ()
    assert nowhere.misfits == (Misfit("lab3", "12 GiB free after running VMs, needs 16 GiB"),)
    assert place(hosts[:1], [], GIB, 1, tags=["gpu", "ssd", "nvme"]).misfits == (
        Misfit("lab1", "no tags ssd, nvme"),
    )


def test_a_degraded_host_still_takes_vms_and_free_memory_is_checked_when_known() -> None:
    hosts = [host("d", state=HostState.DEGRADED, free_gib=20), host("tight", free_gib=17)]
    got = place(hosts, [], 16 * GIB, 2)
    assert got.fits == (
        Fit("d", 16 * GIB, 4 * GIB, 0.25),
        Fit("tight", 16 * GIB, 1 * GIB, 0.25),
    )


def test_an_overcommitted_host_reports_nothing_left() -> None:
    got = place([host("a", gib=8)], [vm("a", "x", R, 1, 12)], GIB, 1)
    assert got.misfits == (Misfit("a", "0 KiB free after running VMs, needs 1 GiB"),)


@pytest.mark.parametrize(
    ("text", "kib"),
    [("16G", 16 * GIB), ("512M", 512 * 1024), ("512", 512 * 1024), ("1.5GiB", 3 * GIB // 2)],
)
def test_memory_sizes_as_create_takes_them(text: str, kib: int) -> None:
    assert parse_memory(text) == kib


@pytest.mark.parametrize("text", ["", "lots", "16X", "0", "-1G"])
def test_bad_memory_sizes(text: str) -> None:
    with pytest.raises(ValueError, match=repr(text)):
        parse_memory(text)


def test_format_kib() -> None:
    assert [format_kib(k) for k in (16 * GIB, 12 * GIB + GIB // 2, 512 * 1024, 3 * GIB * 1024)] == [
        "16 GiB",
        "12.5 GiB",
        "512 MiB",
        "3 TiB",
    ]
