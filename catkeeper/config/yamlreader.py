"""Typed accessors over composed YAML nodes, so that every error names its line and key."""

from __future__ import annotations

import difflib
import math
from typing import NoReturn

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from catkeeper.config.settings import ConfigError


def join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


class Reader:
    """Typed accessors over YAML nodes; each failure names the node's line and key path."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._ctor = SafeConstructor()

    def fail(self, node: Node, key: str, message: str) -> NoReturn:
        raise ConfigError(self.path, node.start_mark.line + 1, key or None, message)

    def value(self, node: ScalarNode, key: str) -> object:
        try:
            return self._ctor.construct_object(node)
        except yaml.YAMLError as e:  # unknown !tags, malformed !!binary, ...
            self.fail(node, key, f"cannot read value: {getattr(e, 'problem', e)}")

    def kind(self, node: Node) -> str:
        if not isinstance(node, ScalarNode):
            return "a mapping" if isinstance(node, MappingNode) else "a list"
        v = self.value(node, "")
        if v is None:
            return "nothing (empty value)"
        if isinstance(v, bool):
            return f"boolean {node.value!r}"
        if isinstance(v, int | float):
            return f"number {node.value!r}"
        return f"{'string' if isinstance(v, str) else type(v).__name__} {node.value!r}"

    def expected(self, node: Node, key: str, what: str) -> NoReturn:
        self.fail(node, key, f"expected {what}, got {self.kind(node)}")

    def mapping(
        self, node: Node, key: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> dict[str, Node]:
        if not isinstance(node, MappingNode):
            self.expected(node, key, "a mapping")
        seen: dict[str, Node] = {}
        out: dict[str, Node] = {}
        for knode, vnode in node.value:
            if knode.tag == "tag:yaml.org,2002:merge":
                self.fail(knode, key, "YAML merge keys (<<) are not supported")
            name = self.value(knode, key) if isinstance(knode, ScalarNode) else None
            if not isinstance(name, str):
                self.fail(knode, key, f"keys must be strings, got {self.kind(knode)}")
            where = join(key, name)
            if name in seen:
                first = seen[name].start_mark.line + 1
                self.fail(knode, where, f"duplicate key (first on line {first})")
            if name not in allowed:
                close = difflib.get_close_matches(name, allowed, n=1)
                hint = f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(allowed)
                self.fail(knode, where, f"unknown key ({hint})")
            seen[name] = knode
            out[name] = vnode
        for name in required:
            if name not in out:
                self.fail(node, join(key, name), "required key is missing")
        return out

    def sequence(self, node: Node, key: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            self.expected(node, key, "a list")
        return list(node.value)

    def string(self, node: Node, key: str) -> str:
        v = self.value(node, key) if isinstance(node, ScalarNode) else None
        if isinstance(v, bool):  # YAML 1.1 reads yes/no/on/off as booleans, to everyone's surprise
            self.fail(node, key, f"expected a string, got boolean {node.value!r} (quote it)")
        if not isinstance(v, str):
            self.expected(node, key, "a string")
        if not v.strip():
            self.fail(node, key, "must not be empty")
        return v

    def strings(self, node: Node, key: str) -> tuple[str, ...]:
        return tuple(self.string(n, f"{key}[{i}]") for i, n in enumerate(self.sequence(node, key)))

    def boolean(self, node: Node, key: str) -> bool:
        v = self.value(node, key) if isinstance(node, ScalarNode) else None
        if not isinstance(v, bool):
            self.expected(node, key, "true or false")
        return v

    def number(self, node: Node, key: str, *, integer: bool) -> int | float:
        v = self.value(node, key) if isinstance(node, ScalarNode) else None
        # bool is an int subclass; `timeout: yes` must not quietly become 1.
        ok = int if integer else (int, float)
        if isinstance(v, bool) or not isinstance(v, ok):
            self.expected(node, key, "a whole number" if integer else "a number")
        if not math.isfinite(v):
            self.fail(node, key, "must be a finite number")
        return v

    def port(self, node: Node, key: str, value: int) -> int:
        if not 1 <= value <= 65535:
            self.fail(node, key, f"port {value} is not in 1-65535")
        return value
