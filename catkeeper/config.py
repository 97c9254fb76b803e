"""YAML configuration → typed, validated settings.

Search order: ``--config PATH``, ``$CATKEEPER_CONFIG``,
``$XDG_CONFIG_HOME/catkeeper/config.yaml`` (``~/.config`` when unset), then the embedded
demo fleet. Every error names the file, the line and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import getpass
import ipaddress
import math
import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

DEMO_DIR = Path(__file__).parent / "demo"
DEMO_SOURCE = "<demo>"


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


@dataclass(frozen=True)
class Timing:
    connect_timeout: float = 10.0  # seconds for one connection attempt
    call_timeout: float = 30.0  # seconds for one libvirt call
    refresh_interval: float = 10.0  # seconds between warm refreshes (0: events only)
    backoff_initial: float = 1.0  # first reconnect delay
    backoff_max: float = 60.0  # reconnect delays double up to this
    keepalive_interval: int = 5  # libvirt keepalive, where the driver supports it
    keepalive_count: int = 3
    workers_per_host: int = 8  # most threads one host may use for parallel calls (bench/remote)
    shared_workers: int = 56  # threads beyond each host's first, shared by all hosts (0: none)
    worker_idle: float = 30.0  # seconds an idle worker thread lives before it ends


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
    viewer: tuple[str, ...] | None = None  # argv template; None: first viewer found on PATH
    owner: str | None = None  # reservation owner; None: the login name
    readonly: bool = False

    @property
    def is_demo(self) -> bool:
        return self.source == DEMO_SOURCE


# ---------------------------------------------------------------------------------------
# Locating and loading


def find_config_path(explicit: str | None, env: Mapping[str, str]) -> str | None:
    """The config file to use, or None when there is none (the caller falls back to demo).

    A path the user named (``--config``, ``$CATKEEPER_CONFIG``) must exist: silently
    showing the demo fleet instead of a mistyped file would hide the mistake.
    """
    if explicit is not None:
        if not os.path.exists(explicit):
            raise ConfigError(explicit, None, "--config", "no such file")
        return explicit
    named = env.get("CATKEEPER_CONFIG")
    if named:
        if not os.path.exists(named):
            raise ConfigError(named, None, "$CATKEEPER_CONFIG", "no such file")
        return named
    base = env.get("XDG_CONFIG_HOME")
    if not base or not os.path.isabs(base):  # the XDG spec says to ignore relative values
        home = env.get("HOME") or os.path.expanduser("~")
        base = os.path.join(home, ".config")
    candidate = os.path.join(base, "catkeeper", "config.yaml")
    return candidate if os.path.exists(candidate) else None


def load_config(
    explicit: str | None = None,
    env: Mapping[str, str] | None = None,
    *,
    demo: bool = False,
    demo_dir: Path | None = None,
) -> Config:
    """The validated config from the search order, or the demo fleet when none is found."""
    if demo:
        return demo_config(demo_dir)
    path = find_config_path(explicit, os.environ if env is None else env)
    if path is None:
        return demo_config(demo_dir)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(path, None, None, f"cannot read: {e.strerror or e}") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(path, line, None, "not UTF-8 text") from e
    return parse_config(text, path)


def demo_config(demo_dir: Path | None = None) -> Config:
    """One test-driver host per shipped XML file, so a fresh install has something to show."""
    folder = (demo_dir or DEMO_DIR).resolve()
    files = sorted(folder.glob("*.xml"), key=lambda p: p.name)
    if not files:
        raise ConfigError(DEMO_SOURCE, None, None, f"no demo fleet: no *.xml in {folder}")
    hosts = tuple(HostConfig(name=p.stem, uri=f"test://{p.as_posix()}") for p in files)
    return Config(hosts=hosts, source=DEMO_SOURCE)


# ---------------------------------------------------------------------------------------
# Parsing: walk the composed node tree (not safe_load's plain objects) so that every
# error can point at a line, and duplicate keys, which safe_load silently merges, are seen.

_TOP_KEYS = ("hosts", "timing", "graceful_stop", "ipscan", "viewer", "owner", "readonly")
# Numbers for which 0 means "off" rather than nonsense.
_ZERO_MEANS_OFF = frozenset(
    ("refresh_interval", "libvirt_interval", "sweep_interval", "per_vm_calls", "shared_workers")
    # 0: off/auto/none
)
_HOST_KEYS = ("name", "uri", "ssh", "tags", "subnets", "readonly")
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

_D = TypeVar("_D", Timing, GracefulStop, IpScan)


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
    r = _Reader(path)
    top = r.mapping(root, "", _TOP_KEYS, required=("hosts",))
    viewer = _viewer(r, top["viewer"]) if "viewer" in top else None
    return Config(
        hosts=_hosts(r, top["hosts"]),
        source=path,
        timing=_numbers(r, top.get("timing"), "timing", Timing()),
        graceful_stop=_numbers(r, top.get("graceful_stop"), "graceful_stop", GracefulStop()),
        ipscan=_numbers(r, top.get("ipscan"), "ipscan", IpScan()),
        viewer=viewer,
        owner=r.string(top["owner"], "owner") if "owner" in top else None,
        readonly=r.boolean(top["readonly"], "readonly") if "readonly" in top else False,
    )


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


class _Reader:
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
            where = _join(key, name)
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
                self.fail(node, _join(key, name), "required key is missing")
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


def _numbers(r: _Reader, node: Node | None, key: str, default: _D) -> _D:
    """A section of positive numbers whose keys and int/float kinds come from the dataclass."""
    if node is None:
        return default
    kinds = {f.name: f.type for f in dataclasses.fields(default)}
    values: dict[str, Any] = {}  # Any: each int/float kind was checked above
    given = r.mapping(node, key, tuple(kinds))
    for name, vnode in given.items():
        where = _join(key, name)
        v = r.number(vnode, where, integer=kinds[name] == "int")
        if name in _ZERO_MEANS_OFF:
            if v < 0:
                r.fail(vnode, where, f"must be >= 0, got {v}")
        elif v <= 0:
            r.fail(vnode, where, f"must be > 0, got {v}")
        values[name] = v if kinds[name] == "int" else float(v)
    result = dataclasses.replace(default, **values)
    if isinstance(result, Timing) and result.backoff_max < result.backoff_initial:
        name = "backoff_max" if "backoff_max" in given else "backoff_initial"
        r.fail(given[name], f"{key}.{name}", "backoff_max must be >= backoff_initial")
    return result


def _hosts(r: _Reader, node: Node) -> tuple[HostConfig, ...]:
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
            )
        )
    return tuple(hosts)


def _uri(r: _Reader, node: Node, key: str) -> str:
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


def _subnets(r: _Reader, node: Node, key: str) -> tuple[str, ...]:
    out: list[str] = []
    for i, n in enumerate(r.sequence(node, key)):
        text = r.string(n, f"{key}[{i}]")
        try:
            # strict=False: people write the host's own address with its prefix length.
            out.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError as e:
            r.fail(n, f"{key}[{i}]", f"{text!r} is not a CIDR subnet ({e})")
    return tuple(out)


def _ssh(r: _Reader, node: Node, key: str) -> SshSettings:
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


def _viewer(r: _Reader, node: Node) -> tuple[str, ...]:
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
