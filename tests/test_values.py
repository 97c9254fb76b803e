"""Values (catkeeper/values.py) are out of the collector's sight, and every one of them
follows the rule that makes that safe: fields of atomic values, enum members, other values
and tuples of these, so no reference cycle can run through one."""

from __future__ import annotations

import dataclasses
import enum
import gc
import importlib
import pkgutil
import types
import typing
import weakref
from typing import Any

import pytest

import catkeeper
from catkeeper.backend.inventory import StaticInfo
from catkeeper.model import VM, Disk, Graphics, IpSighting, Nic, Reservation, VmState
from catkeeper.values import Value, is_untracking

pytestmark = pytest.mark.skipif(not is_untracking(), reason="needs CPython's collector API")

ATOMS = (str, int, float, bool, type(None))


def all_value_classes() -> list[type]:
    for info in pkgutil.walk_packages(catkeeper.__path__, "catkeeper."):
        if not info.name.endswith(".__main__"):  # that one runs the CLI
            importlib.import_module(info.name)
    found: list[type] = []
    todo = list(Value.__subclasses__())
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def rule_breaks(cls: type) -> list[str]:
    """What in ``cls`` breaks the rule, in words; empty when it follows it."""
    if not (dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen):  # type: ignore[attr-defined]
        return [f"{cls.__name__} is not a frozen dataclass"]
    hints = typing.get_type_hints(cls)
    return [
        f"{cls.__name__}.{f.name}: {bad!r}"
        for f in dataclasses.fields(cls)
        for bad in _bad_parts(hints[f.name])
    ]


def _bad_parts(hint: Any) -> list[Any]:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return [a for a in typing.get_args(hint) if not isinstance(a, ATOMS)]
    if origin in (typing.Union, types.UnionType):
        return [b for a in typing.get_args(hint) for b in _bad_parts(a)]
    if origin is tuple:
        return [b for a in typing.get_args(hint) if a is not Ellipsis for b in _bad_parts(a)]
    if isinstance(hint, type) and (
        hint in ATOMS or issubclass(hint, enum.Enum) or issubclass(hint, Value)
    ):
        return []
    return [hint]


def a_vm() -> VM:
    return VM(
        host="h1", name="web", uuid="u-1", state=VmState.RUNNING, vcpus=2,
        memory_kib=1024, max_memory_kib=2048, autostart=False, persistent=True,
        nics=(Nic(mac="52:54:00:00:00:01", type="network", source="default"),),
        graphics=(Graphics(type="vnc", port=5900),),
        disks=(Disk(target="vda", device="disk", type="file", source="/img/web.qcow2"),),
        reservation=Reservation(owner="ana", note="load test", until=1e9),
        ips=(IpSighting("52:54:00:00:00:01", "10.0.0.5", 24, "lease", 1.0),),
    )  # fmt: skip


def test_every_value_class_holds_only_values() -> None:
    classes = all_value_classes()
    assert {VM, Nic, Disk, Graphics, IpSighting, Reservation, StaticInfo} <= set(classes)
    assert [b for cls in classes for b in rule_breaks(cls)] == []


def test_the_rule_catches_a_field_that_could_close_a_cycle() -> None:
    @dataclasses.dataclass(frozen=True)
    class Leaky(Value):
        name: str
        peers: list[str]
        extra: tuple[dict[str, str], ...] = ()
        anything: object = None

    assert rule_breaks(Leaky) == [
        "Leaky.peers: list[str]",
        "Leaky.extra: dict[str, str]",
        "Leaky.anything: <class 'object'>",
    ]

    class NotADataclass(Value):
        pass

    assert rule_breaks(NotADataclass) == ["NotADataclass is not a frozen dataclass"]


def test_a_value_and_its_tuples_are_untracked_from_the_start() -> None:
    vm = a_vm()
    assert not gc.is_tracked(vm)
    for part in (vm.nics, vm.graphics, vm.disks, vm.ips, vm.nics[0], vm.reservation):
        assert not gc.is_tracked(part)
    assert gc.is_tracked(VmState.RUNNING)  # what it refers to is left as it was
    changed = dataclasses.replace(vm, state=VmState.SHUTOFF)
    assert not gc.is_tracked(changed)


def test_an_untracked_value_is_still_freed_when_dropped() -> None:
    gc.disable()  # reference counting alone must do it
    try:
        vm = a_vm()
        gone: list[weakref.ref[Any]] = [
            weakref.ref(vm),
            weakref.ref(vm.nics[0]),
            weakref.ref(vm.reservation),
        ]
        del vm
        assert [ref() for ref in gone] == [None, None, None]
    finally:
        gc.enable()


def test_a_tuple_field_holding_something_else_is_left_to_the_collector() -> None:
    # A caller that breaks the annotations (a list where a tuple belongs) must not get a
    # list the collector cannot see: only exact tuples are untracked.
    nics: Any = [Nic(mac="52:54:00:00:00:02", type="user")]
    vm = dataclasses.replace(a_vm(), nics=nics)
    assert gc.is_tracked(vm.nics)
