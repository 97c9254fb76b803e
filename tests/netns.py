"""Network namespaces for IP-discovery tests: a "host" with a bridge, "guests" on veths.

Project rule: tests send packets only to loopback or to addresses inside namespaces they
create themselves. Everything here lives in namespaces named ``ckip-<pytest pid>-<token>-…``:
the guests' subnet exists only inside them, and the one address the root namespace gets (the
uplink to the host namespace, for ssh) is a /30 that belongs to our own veth pair. The
addresses come from 198.18.0.0/15, the range RFC 2544 sets aside for test networks, so they
never collide with a lab's real 10.x or 192.168.x networks.

Clean-up: ``Topology.destroy()`` (fixtures call it in a finalizer) ends the sshd we started
(by PID), deletes the namespaces (which takes their veths with them) and the uplink.
``reap_stale()`` removes namespaces left by a test process that no longer exists (killed
with SIGKILL, so no finalizer ran); namespaces of live processes are never touched.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import re
import secrets
import shlex
import shutil
import subprocess
import time
import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.daemons import SSHD, _keygen, stop_sshd_tree
from tests.environment import unavailable

PREFIX = "ckip"
GUEST_NET = ipaddress.IPv4Network("198.18.0.0/16")  # only ever inside our namespaces
UPLINK_NET = ipaddress.IPv4Network("198.19.0.0/16")  # /30s between root and a host namespace
_NAME = re.compile(rf"{PREFIX}-(\d+)-[0-9a-f]+-")

ANSWERS = "answers"  # ARP and ping
NO_ICMP = "no-icmp"  # ARP, but ignores echo requests (icmp_echo_ignore_all=1)
SILENT = "silent"  # has the address, answers neither ARP (arp_ignore=8) nor ping


def require_netns() -> None:
    """Skip (or, with CATKEEPER_REQUIRE_DAEMONS=1, fail) unless we can build namespaces."""
    reason = None
    if os.geteuid() != 0:
        reason = "network namespaces need root"
    elif missing := [t for t in ("ip", "capsh") if shutil.which(t) is None]:
        reason = f"not installed: {', '.join(missing)} (scripts/bootstrap test)"
    if reason:
        unavailable(reason)


def run(*argv: str, timeout: float = 10.0) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def list_netns() -> list[str]:
    out = run("ip", "-j", "netns", "list").strip()
    return [n["name"] for n in json.loads(out or "[]")]


def reap_stale() -> list[str]:
    """Delete ``ckip-PID-…`` namespaces whose PID is gone; returns what was deleted."""
    gone = []
    for name in list_netns():
        m = _NAME.match(name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            with contextlib.suppress(RuntimeError):
                run("ip", "netns", "del", name)
                gone.append(name)
    return gone


@dataclass(frozen=True)
class Guest:
    ns: str
    mac: str
    ip: str
    behaviour: str
    name: str  # the VM name the libvirt fleet gives it
    uuid: str


@dataclass
class Topology:
    """A host namespace with bridge ``br0`` (first address of ``subnet``) and guests on it."""

    behaviours: Sequence[str] = (ANSWERS, ANSWERS, NO_ICMP, SILENT)
    subnet: str = "198.18.5.0/24"
    token: str = field(default_factory=lambda: secrets.token_hex(3))
    guests: list[Guest] = field(default_factory=list)
    # A second subnet behind a router namespace (at the last address of ``subnet``), with
    # one answering guest: what an ICMP sweep through a router sees.
    routed_subnet: str | None = None
    router_ip: str | None = None
    routed_guest: Guest | None = None
    uplink: tuple[str, str] | None = None  # (root side IP, host side IP)
    built: list[str] = field(default_factory=list)
    sshds: list[NetnsSshd] = field(default_factory=list)
    build_s: float = 0.0
    _uplink_dev: str | None = None

    @property
    def host_ns(self) -> str:
        return f"{PREFIX}-{os.getpid()}-{self.token}-host"

    @property
    def host_ip(self) -> str:
        return str(next(ipaddress.ip_network(self.subnet).hosts()))

    def guest_ns(self, i: int) -> str:
        return f"{PREFIX}-{os.getpid()}-{self.token}-g{i}"

    def in_host(self, *argv: str) -> list[str]:
        """argv run inside the host namespace."""
        return ["ip", "netns", "exec", self.host_ns, *argv]

    def build(self) -> Topology:
        t0 = time.monotonic()
        net = ipaddress.IPv4Network(self.subnet)
        assert net.subnet_of(GUEST_NET), "guest subnets stay inside 198.18.0.0/16"
        h = self.host_ns
        run("ip", "netns", "add", h)
        self.built.append(h)
        run("ip", "-n", h, "link", "set", "lo", "up")
        run("ip", "-n", h, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", h, "link", "set", "br0", "up")
        run("ip", "-n", h, "addr", "add", f"{self.host_ip}/{net.prefixlen}", "dev", "br0")
        addresses = list(net.hosts())
        for i, behaviour in enumerate(self.behaviours):
            g = self.guest_ns(i)
            run("ip", "netns", "add", g)
            self.built.append(g)
            mac = (
                f"52:54:00:{int(self.token[:2], 16):02x}:{int(self.token[2:4], 16):02x}:{i + 1:02x}"
            )
            ip = str(addresses[10 + i])
            port = f"ck{self.token}{i}"
            run("ip", "-n", g, "link", "set", "lo", "up")
            run("ip", "link", "add", port, "netns", h, "type", "veth",
                "peer", "name", "eth0", "netns", g, "address", mac)  # fmt: skip
            run("ip", "-n", h, "link", "set", port, "master", "br0", "up")
            run("ip", "-n", g, "link", "set", "eth0", "up")
            run("ip", "-n", g, "addr", "add", f"{ip}/{net.prefixlen}", "dev", "eth0")
            sysctls = []
            if behaviour in (NO_ICMP, SILENT):
                sysctls.append("net.ipv4.icmp_echo_ignore_all=1")
            if behaviour == SILENT:
                sysctls.append("net.ipv4.conf.all.arp_ignore=8")
            for kv in sysctls:
                run("ip", "netns", "exec", g, "sysctl", "-qw", kv)
            name = f"guest{i}-{behaviour}"
            vm_uuid = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"catkeeper-test/{g}"))
            self.guests.append(Guest(g, mac, ip, behaviour, name, vm_uuid))
        if self.routed_subnet is not None:
            self._build_router(net)
        self.build_s = time.monotonic() - t0
        return self

    def _build_router(self, net: ipaddress.IPv4Network) -> None:
        assert self.routed_subnet is not None
        far = ipaddress.IPv4Network(self.routed_subnet)
        assert far.subnet_of(GUEST_NET) and not far.overlaps(net)
        h, r, g = self.host_ns, self.guest_ns(90), self.guest_ns(91)
        for ns in (r, g):
            run("ip", "netns", "add", ns)
            self.built.append(ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        self.router_ip = str(net.broadcast_address - 1)
        far_hosts = list(far.hosts())
        router_far_ip, guest_ip = str(far_hosts[0]), str(far_hosts[10])
        mac = f"52:54:00:{int(self.token[:2], 16):02x}:{int(self.token[2:4], 16):02x}:5b"
        port = f"ck{self.token}r"
        run("ip", "link", "add", port, "netns", h, "type", "veth",
            "peer", "name", "eth0", "netns", r)  # fmt: skip
        run("ip", "-n", h, "link", "set", port, "master", "br0", "up")
        run("ip", "-n", r, "addr", "add", f"{self.router_ip}/{net.prefixlen}", "dev", "eth0")
        run("ip", "-n", r, "link", "set", "eth0", "up")
        run("ip", "link", "add", "eth1", "netns", r, "type", "veth",
            "peer", "name", "eth0", "netns", g, "address", mac)  # fmt: skip
        run("ip", "-n", r, "addr", "add", f"{router_far_ip}/{far.prefixlen}", "dev", "eth1")
        run("ip", "-n", r, "link", "set", "eth1", "up")
        run("ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        run("ip", "-n", g, "addr", "add", f"{guest_ip}/{far.prefixlen}", "dev", "eth0")
        run("ip", "-n", g, "link", "set", "eth0", "up")
        run("ip", "-n", g, "route", "add", "default", "via", router_far_ip)
        run("ip", "-n", h, "route", "add", str(far), "via", self.router_ip)
        vm_uuid = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"catkeeper-test/{g}"))
        self.routed_guest = Guest(g, mac, guest_ip, ANSWERS, "routed-guest", vm_uuid)

    def answering(self, *behaviours: str) -> dict[str, str]:
        """IP → MAC of the guests with these behaviours."""
        return {g.ip: g.mac for g in self.guests if g.behaviour in behaviours}

    def flush_neighbours(self) -> None:
        run(*self.in_host("ip", "neigh", "flush", "all"))

    # ---- uplink + sshd: the host namespace as a remote host ----------------------------

    def add_uplink(self) -> tuple[str, str]:
        """A veth pair root ↔ host namespace with a free /30 of 198.19.0.0/16."""
        used = [
            ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False)
            for link in json.loads(run("ip", "-j", "-4", "addr", "show") or "[]")
            for a in link.get("addr_info", ())
        ]
        routes = json.loads(run("ip", "-j", "-4", "route", "show") or "[]")
        for r in routes:
            if r.get("dst", "default") != "default":
                used.append(ipaddress.ip_network(r["dst"], strict=False))
        blocks = list(UPLINK_NET.subnets(new_prefix=30))
        for block in random.sample(blocks, 64):
            if not any(block.overlaps(u) for u in used):
                break
        else:
            raise RuntimeError("no free /30 in 198.19.0.0/16 for the uplink")
        root_ip, host_ip = (str(a) for a in block.hosts())
        dev = f"ck{self.token}up"
        run("ip", "link", "add", dev, "type", "veth", "peer", "name", "uplink", "netns",
            self.host_ns)  # fmt: skip
        self._uplink_dev = dev
        run("ip", "addr", "add", f"{root_ip}/30", "dev", dev)
        run("ip", "link", "set", dev, "up")
        run("ip", "-n", self.host_ns, "addr", "add", f"{host_ip}/30", "dev", "uplink")
        run("ip", "-n", self.host_ns, "link", "set", "uplink", "up")
        self.uplink = (root_ip, host_ip)
        return self.uplink

    def start_sshd(self, directory: Path, timeout: float = 10.0) -> NetnsSshd:
        if self.uplink is None:
            self.add_uplink()
        assert self.uplink is not None
        sshd = NetnsSshd(self, directory, self.uplink[1])
        self.sshds.append(sshd)  # before start: a failed start is still stopped in destroy
        sshd.start(timeout)
        return sshd

    def destroy(self) -> None:
        """Undo everything; safe to call twice and after a half-done build."""
        for sshd in self.sshds:
            sshd.stop()
        for name in reversed(self.built):
            with contextlib.suppress(RuntimeError):
                run("ip", "netns", "del", name)
        self.built.clear()
        if self._uplink_dev is not None:
            # Gone with its peer's namespace already, normally; this covers the rest.
            if Path(f"/sys/class/net/{self._uplink_dev}").exists():
                with contextlib.suppress(RuntimeError):
                    run("ip", "link", "del", self._uplink_dev)
            self._uplink_dev = None


class NetnsSshd:
    """sshd inside the host namespace, port 22 on its uplink address, root by key only."""

    def __init__(self, topo: Topology, directory: Path, listen: str) -> None:
        self.topo = topo
        self.dir = directory
        self.listen = listen
        self.port = 22  # the namespace has every port to itself
        self.host_key = directory / "ssh_host_ed25519_key"
        self.client_key = directory / "id_ed25519"
        self.known_hosts = directory / "known_hosts"
        self.log_path = directory / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        _keygen(self.host_key, "catkeeper-netns-host")
        _keygen(self.client_key, "catkeeper-netns-client")
        authorized = self.dir / "authorized_keys"
        authorized.write_text(self.client_key.with_suffix(".pub").read_text())
        host_pub = " ".join(self.host_key.with_suffix(".pub").read_text().split()[:2])
        self.known_hosts.write_text(f"{self.listen} {host_pub}\n")
        config = self.dir / "sshd_config"
        opts = {
            "Port": "22",
            "ListenAddress": self.listen,
            "HostKey": str(self.host_key),
            "PidFile": str(self.dir / "sshd.pid"),
            "AuthorizedKeysFile": str(authorized),
            "PermitRootLogin": "prohibit-password",
            "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no",
            "StrictModes": "no",
            "UsePAM": "no",
            "LogLevel": "VERBOSE",
            "PrintMotd": "no",
        }
        config.write_text("".join(f"{k} {v}\n" for k, v in opts.items()))
        self.log_path.write_text("")
        # `ip netns exec` enters the namespace and execs sshd: the PID we hold is sshd's.
        self.proc = subprocess.Popen(
            self.topo.in_host(SSHD, "-D", "-f", str(config), "-E", str(self.log_path)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if f"Server listening on {self.listen} port 22" in self.log_path.read_text():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        log = self.log_path.read_text()[-2000:]
        self.stop()
        raise RuntimeError(f"sshd in {self.topo.host_ns} did not start:\n{log}")

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_sshd_tree(self.proc)
        self.proc = None


# ---- a libvirt test-driver fleet whose NICs are the guests' -----------------------------

TEST_NS_URI = "http://libvirt.org/schemas/domain/test/1.0"


def node_xml(guests: Sequence[Guest], extra_macs: Sequence[str] = ()) -> str:
    """A test-driver node: one running domain per guest (its MAC on its NIC), plus a
    shut-off domain per ``extra_macs`` entry. The NICs are on the ``default`` network: the
    driver's ``interfaceAddresses`` then invents a distinct address per domain in its DHCP
    range (10.250/16, far from the guests' real subnet); for other NIC types it answers
    192.168.0.1 for every domain."""
    domains = []
    rows = [(g.name, g.uuid, g.mac, 1) for g in guests]
    rows += [
        (f"off{i}", str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"ckip-off/{m}")), m, 5)
        for i, m in enumerate(extra_macs)
    ]
    for name, vm_uuid, mac, runstate in rows:
        domains.append(
            f"""  <domain type='test'>
    <name>{name}</name>
    <uuid>{vm_uuid}</uuid>
    <memory unit='MiB'>64</memory>
    <vcpu>1</vcpu>
    <os><type>hvm</type></os>
    <devices>
      <interface type='network'><mac address='{mac}'/><source network='default'/></interface>
    </devices>
    <test:runstate>{runstate}</test:runstate>
  </domain>"""
        )
    net_uuid = uuidlib.uuid5(uuidlib.NAMESPACE_URL, "ckip-net/" + "/".join(r[1] for r in rows))
    return f"""<node xmlns:test='{TEST_NS_URI}'>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads>
    <active>2</active><mhz>2000</mhz><model>x86_64</model></cpu>
  <memory unit='KiB'>8388608</memory>
  <network>
    <name>default</name>
    <uuid>{net_uuid}</uuid>
    <bridge name='virbr9'/>
    <ip address='10.250.0.1' netmask='255.255.0.0'>
      <dhcp><range start='10.250.0.2' end='10.250.255.254'/></dhcp>
    </ip>
  </network>
{chr(10).join(domains)}
</node>
"""
