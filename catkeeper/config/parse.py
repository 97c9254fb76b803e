"""YAML text → a validated ``Config``; every error names the file, the line and the key."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import string
from typing import Any, TypeVar

import yaml
from yaml.nodes import Node, ScalarNode

from catkeeper.config.settings import (
    LIBVIRT_TRANSPORTS,
    Config,
    ConfigError,
    GracefulStop,
    HostConfig,
    IpScan,
    LibvirtTransport,
    SshSettings,
    StaleSettings,
    Timing,
)
from catkeeper.config.views import parse_views
from catkeeper.config.yamlreader import Reader, join

# ---------------------------------------------------------------------------------------
# Parsing: walk the composed node tree (not safe_load's plain objects) so that every
# error can point at a line, and duplicate keys, which safe_load silently merges, are seen.

_TOP_KEYS = (
    "hosts",
    "timing",
    "graceful_stop",
    "ipscan",
    "viewer",
    "owner",
    "readonly",
    "views",
    "stale",
)
# Numbers for which 0 means "off" rather than nonsense.
_ZERO_MEANS_OFF = frozenset(
    (
        "refresh_interval",
        "stats_interval",
        "libvirt_interval",
        "sweep_interval",
        "per_vm_calls",
        "shared_workers",
        "backoff_jitter",
    )
    # 0: off/auto/none
)
# Shares of something, 0 to 1.
_FRACTIONS = frozenset(("backoff_jitter",))
_HOST_KEYS = ("name", "uri", "ssh", "tags", "subnets", "readonly", "libvirt_transport")
_SSH_KEYS = ("host", "user", "port", "key", "known_hosts", "accept_unknown_host_key")

_NAME = re.compile(r"[A-Za-z0-9._-]+")
_HOSTNAME = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)"  # name, IPv4 or [IPv6]
_SSH_TARGET = re.compile(rf"(?:(?P<user>[^@\s:/\[\]]+)@)?(?P<host>{_HOSTNAME})(?::(?P<port>\d+))?")
_URI = re.compile(
    rf"(?P<scheme>[a-z][a-z0-9]*(?:\+[a-z0-9]+)?)://"
    rf"(?:(?:[^@/\s?#]+@)?{_HOSTNAME}(?::\d{{1,5}})?)?"  # empty authority: the local daemon
    r"/[^\s?#]*(?:\?\S*)?"
)
_DRIVERS = frozenset(
    ("qemu", "test", "lxc", "xen", "libxl", "ch", "bhyve", "vz", "openvz", "vbox", "esx", "vpx")
)
_TRANSPORTS = frozenset(("ssh", "libssh", "libssh2", "tcp", "tls", "unix", "ext"))
_URI_HINT = "expected e.g. qemu+ssh://user@host/system"

_D = TypeVar("_D", Timing, GracefulStop, IpScan, StaleSettings)


def parse_config(text: str, path: str) -> Config:
    """Validate ``text`` (the contents of ``path``) into a Config or raise ConfigError."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = "; ".join(str(s) for s in (e.context, e.problem) if s)
        line = mark.line + 1 if mark else None
        raise ConfigError(path, line, None, f"YAML syntax error: {what}") from None
    except yaml.reader.ReaderError as e:  # bad characters carry an offset, not a mark
        line = text.count("\n", 0, e.position) + 1
        raise ConfigError(path, line, None, f"character #x{e.character:04x} not allowed") from None
    if root is None:
        raise ConfigError(path, 1, None, "empty file; expected a mapping with a 'hosts' list")
    r = Reader(path)
    top = r.mapping(root, "", _TOP_KEYS, required=("hosts",))
    viewer = _viewer(r, top["viewer"]) if "viewer" in top else None
    return Config(
        hosts=_hosts(r, top["hosts"]),
        source=path,
        timing=_numbers(r, top.get("timing"), "timing", Timing()),
        graceful_stop=_numbers(r, top.get("graceful_stop"), "graceful_stop", GracefulStop()),
        ipscan=_numbers(r, top.get("ipscan"), "ipscan", IpScan()),
        stale=_numbers(r, top.get("stale"), "stale", StaleSettings()),
        viewer=viewer,
        owner=r.string(top["owner"], "owner") if "owner" in top else None,
        readonly=r.boolean(top["readonly"], "readonly") if "readonly" in top else False,
        views=parse_views(r, top["views"]) if "views" in top else (),
    )


def _numbers(r: Reader, node: Node | None, key: str, default: _D) -> _D:
    """A section of positive numbers whose keys and int/float kinds come from the dataclass."""
    if node is None:
        return default
    kinds = {f.name: f.type for f in dataclasses.fields(default)}
    values: dict[str, Any] = {}  # Any: each int/float kind was checked above
    given = r.mapping(node, key, tuple(kinds))
    for name, vnode in given.items():
        where = join(key, name)
        v = r.number(vnode, where, integer=kinds[name] == "int")
        if name in _ZERO_MEANS_OFF:
            if v < 0:
                r.fail(vnode, where, f"must be >= 0, got {v}")
        elif v <= 0:
            r.fail(vnode, where, f"must be > 0, got {v}")
        if name in _FRACTIONS and v > 1:
            r.fail(vnode, where, f"must be between 0 and 1, got {v}")
        values[name] = v if kinds[name] == "int" else float(v)
    result = dataclasses.replace(default, **values)
    if isinstance(result, Timing) and result.backoff_max < result.backoff_initial:
        name = "backoff_max" if "backoff_max" in given else "backoff_initial"
        r.fail(given[name], f"{key}.{name}", "backoff_max must be >= backoff_initial")
    return result


def _hosts(r: Reader, node: Node) -> tuple[HostConfig, ...]:
    items = r.sequence(node, "hosts")
    if not items:
        r.fail(node, "hosts", "is empty; list at least one host")
    first_line: dict[str, int] = {}
    hosts: list[HostConfig] = []
    for i, item in enumerate(items):
        key = f"hosts[{i}]"
        m = r.mapping(item, key, _HOST_KEYS, required=("name",))
        name = r.string(m["name"], f"{key}.name")
        if not _NAME.fullmatch(name):
            r.fail(m["name"], f"{key}.name", f"{name!r}: use only letters, digits, '.', '_', '-'")
        if name in first_line:
            r.fail(
                m["name"],
                f"{key}.name",
                f"duplicate host {name!r} (first on line {first_line[name]})",
            )
        first_line[name] = m["name"].start_mark.line + 1
        ssh = _ssh(r, m["ssh"], f"{key}.ssh") if "ssh" in m else None
        if "uri" in m:
            uri = _uri(r, m["uri"], f"{key}.uri")
        elif ssh is not None:
            uri = "qemu:///system"  # the remote system daemon, reached through the ssh tunnel
        else:
            r.fail(item, f"{key}.uri", "required unless ssh is given (e.g. ssh: root@lab1)")
        hosts.append(
            HostConfig(
                name=name,
                uri=uri,
                ssh=ssh,
                tags=r.strings(m["tags"], f"{key}.tags") if "tags" in m else (),
                subnets=_subnets(r, m["subnets"], f"{key}.subnets") if "subnets" in m else (),
                readonly=r.boolean(m["readonly"], f"{key}.readonly") if "readonly" in m else False,
                libvirt_transport=(
                    _libvirt_transport(r, m["libvirt_transport"], f"{key}.libvirt_transport", uri)
                    if "libvirt_transport" in m
                    else "catkeeper"
                ),
            )
        )
    return tuple(hosts)


def _uri(r: Reader, node: Node, key: str) -> str:
    uri = r.string(node, key)
    m = _URI.fullmatch(uri)
    if m is None:
        r.fail(node, key, f"{uri!r} is not a libvirt URI ({_URI_HINT})")
    driver, _, transport = m["scheme"].partition("+")
    if driver not in _DRIVERS or (transport and transport not in _TRANSPORTS):
        r.fail(
            node, key, f"{uri!r} is not a libvirt URI: unknown scheme {m['scheme']!r} ({_URI_HINT})"
        )
    return uri


def _libvirt_transport(r: Reader, node: Node, key: str, uri: str) -> LibvirtTransport:
    text = r.string(node, key)
    for choice in LIBVIRT_TRANSPORTS:
        if text == choice:
            break
    else:
        r.fail(node, key, f"{text!r}: expected one of {', '.join(LIBVIRT_TRANSPORTS)}")
    if choice == "libvirt" and "+" not in uri.partition("://")[0]:
        # Nothing for libvirt to carry: the URI names no transport of its own.
        r.fail(node, key, f"'libvirt' needs a uri with its own transport, got {uri!r}")
    return choice


def _subnets(r: Reader, node: Node, key: str) -> tuple[str, ...]:
    out: list[str] = []
    for i, n in enumerate(r.sequence(node, key)):
        text = r.string(n, f"{key}[{i}]")
        try:
            # strict=False: people write the host's own address with its prefix length.
            out.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError as e:
            r.fail(n, f"{key}[{i}]", f"{text!r} is not a CIDR subnet ({e})")
    return tuple(out)


def _ssh(r: Reader, node: Node, key: str) -> SshSettings:
    if isinstance(node, ScalarNode):
        text = r.string(node, key)
        m = _SSH_TARGET.fullmatch(text)
        if m is None:
            r.fail(node, key, f"{text!r} is not [user@]host[:port]")
        port = r.port(node, key, int(m["port"])) if m["port"] else None
        return SshSettings(host=m["host"].strip("[]"), user=m["user"], port=port)
    f = r.mapping(node, key, _SSH_KEYS, required=("host",))
    host = r.string(f["host"], f"{key}.host")
    if not re.fullmatch(_HOSTNAME, host) and not re.fullmatch(r"[0-9A-Fa-f:.]+", host):
        r.fail(f["host"], f"{key}.host", f"{host!r} is not a host name or address")

    def path(name: str) -> str | None:
        return os.path.expanduser(r.string(f[name], f"{key}.{name}")) if name in f else None

    port = None
    if "port" in f:
        port = r.port(
            f["port"], f"{key}.port", int(r.number(f["port"], f"{key}.port", integer=True))
        )
    return SshSettings(
        host=host.strip("[]"),
        user=r.string(f["user"], f"{key}.user") if "user" in f else None,
        port=port,
        key=path("key"),
        known_hosts=path("known_hosts"),
        accept_unknown_host_key=(
            r.boolean(f["accept_unknown_host_key"], f"{key}.accept_unknown_host_key")
            if "accept_unknown_host_key" in f
            else False
        ),
    )


def _viewer(r: Reader, node: Node) -> tuple[str, ...]:
    argv = r.strings(node, "viewer")
    if not argv:
        r.fail(node, "viewer", "is empty; e.g. [vncviewer, '{host}::{port}']")
    for i, (arg, n) in enumerate(zip(argv, r.sequence(node, "viewer"), strict=True)):
        try:
            list(string.Formatter().parse(arg))  # unbalanced braces fail at launch otherwise
        except ValueError as e:
            r.fail(n, f"viewer[{i}]", f"bad placeholder in {arg!r}: {e}")
    if not any("{port}" in arg for arg in argv):
        r.fail(node, "viewer", "no argument contains {port}; e.g. [vncviewer, '{host}::{port}']")
    return argv
