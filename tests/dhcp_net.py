"""A real libvirt network with a real DHCP server, and real DHCP clients to take its leases.

``LeaseNetwork`` starts a *transient* libvirt network on the system libvirtd (libvirt runs
dnsmasq for it and records leases through its lease helper, which is what
``virNetworkGetDHCPLeases`` reads). Its name, bridge and subnet are the tests' own:
``ckt-net-<pid>-<token>``, bridge ``ckbr<token>``, an isolated /24 (no forwarding, no NAT)
taken from 198.19.240.0/20, part of the RFC 2544 test range tests/netns.py uses, and checked
against every address and route of the root namespace. Never libvirt's own ``default``
network: starting that would put 192.168.122.0/24 and NAT rules on the machine.

``plug(mac)`` makes a network namespace (``ckip-<pid>-…``, so tests/netns.py reaps it if we
die) with a veth whose far end is a port of the network's bridge, gives the namespace side
the MAC of a defined VM and runs busybox ``udhcpc`` there: dnsmasq hands out a real lease
for that MAC. No packet leaves the bridge. ``destroy()`` undoes everything (a transient
network is gone once destroyed); ``reap_stale_networks()`` destroys networks left by a test
process that no longer exists.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tests.environment import unavailable
from tests.netns import PREFIX, run

if TYPE_CHECKING:
    import libvirt

POOL = ipaddress.IPv4Network("198.19.240.0/20")  # /24s for lease networks, in the root ns
NET_PREFIX = "ckt-net-"
_NET_NAME = re.compile(rf"{NET_PREFIX}(\d+)-[0-9a-f]+$")
_LEASE = re.compile(r"lease of (\S+) obtained")


def require_dhcp_tools() -> None:
    missing = [t for t in ("busybox", "dnsmasq", "ip") if shutil.which(t) is None]
    if os.geteuid() != 0:
        unavailable("network namespaces and libvirt networks need root")
    if missing:
        unavailable(f"not installed: {', '.join(missing)} (scripts/bootstrap test)")


def reap_stale_networks(conn: libvirt.virConnect) -> list[str]:
    """Destroy ``ckt-net-PID-…`` networks whose PID is gone."""
    import libvirt

    gone = []
    for net in conn.listAllNetworks():
        m = _NET_NAME.match(net.name())
        if m and not Path(f"/proc/{m.group(1)}").exists():
            with contextlib.suppress(libvirt.libvirtError):
                if net.isActive():
                    net.destroy()
                if net.isPersistent():
                    net.undefine()
                gone.append(net.name())
    return gone


def _free_block() -> ipaddress.IPv4Network:
    used = [
        ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False)
        for link in json.loads(run("ip", "-j", "-4", "addr", "show") or "[]")
        for a in link.get("addr_info", ())
    ]
    for r in json.loads(run("ip", "-j", "-4", "route", "show") or "[]"):
        if r.get("dst", "default") != "default":
            used.append(ipaddress.ip_network(r["dst"], strict=False))
    blocks = list(POOL.subnets(new_prefix=24))
    for block in random.sample(blocks, len(blocks)):
        if not any(block.overlaps(u) for u in used):
            return block
    raise RuntimeError(f"no free /24 in {POOL} for a lease network")


@dataclass
class DhcpClient:
    ns: str
    port: str  # the veth end on the bridge (root namespace)
    mac: str
    ip: str


@dataclass
class LeaseNetwork:
    conn: libvirt.virConnect
    token: str = field(default_factory=lambda: secrets.token_hex(3))
    subnet: ipaddress.IPv4Network | None = None
    clients: list[DhcpClient] = field(default_factory=list)
    _net: libvirt.virNetwork | None = None

    @property
    def name(self) -> str:
        return f"{NET_PREFIX}{os.getpid()}-{self.token}"

    @property
    def bridge(self) -> str:
        return f"ckbr{self.token}"

    def xml(self) -> str:
        assert self.subnet is not None
        hosts = list(self.subnet.hosts())
        return f"""<network>
  <name>{self.name}</name>
  <bridge name='{self.bridge}' stp='off' delay='0'/>
  <ip address='{hosts[0]}' netmask='{self.subnet.netmask}'>
    <dhcp><range start='{hosts[9]}' end='{hosts[99]}'/></dhcp>
  </ip>
</network>
"""

    def start(self) -> LeaseNetwork:
        self.subnet = _free_block()
        self._net = self.conn.networkCreateXML(self.xml())  # transient: gone when destroyed
        return self

    def plug(self, mac: str, timeout: float = 60.0) -> DhcpClient:
        """A DHCP client with this MAC on the network's bridge; returns once it has a lease."""
        i = len(self.clients)
        ns = f"{PREFIX}-{os.getpid()}-{self.token}-dhcp{i}"
        port = f"ckd{self.token}{i}"
        run("ip", "netns", "add", ns)
        client = DhcpClient(ns, port, mac.lower(), "")
        self.clients.append(client)  # before the rest: destroy() removes half-made ones too
        run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "link", "add", port, "type", "veth",
            "peer", "name", "eth0", "netns", ns, "address", mac)  # fmt: skip
        run("ip", "link", "set", port, "master", self.bridge, "up")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        # -q: quit once leased; -n: fail rather than retry forever; -s /bin/true: take the
        # lease without configuring anything (the address only matters to dnsmasq).
        done = subprocess.run(
            ["ip", "netns", "exec", ns, "busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n",
             "-t", "20", "-T", "1", "-s", "/bin/true"],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        out = done.stdout + done.stderr  # udhcpc reports on stderr
        m = _LEASE.search(out)
        if m is None:
            raise RuntimeError(f"udhcpc in {ns} got no lease:\n{out}")
        client.ip = m.group(1)
        return client

    def destroy(self) -> None:
        import libvirt

        for c in self.clients:
            with contextlib.suppress(RuntimeError):
                run("ip", "netns", "del", c.ns)  # takes the veth pair with it
            if Path(f"/sys/class/net/{c.port}").exists():
                with contextlib.suppress(RuntimeError):
                    run("ip", "link", "del", c.port)
        self.clients.clear()
        if self._net is not None:
            with contextlib.suppress(libvirt.libvirtError):
                self._net.destroy()
            self._net = None


def network_nic_domain_xml(
    name: str, network: str, mac: str, *, agent_channel: bool = False
) -> str:
    """A tiny diskless TCG domain (as tests/daemons.py's) with its NIC on a libvirt network,
    and optionally the qemu guest agent's channel (which stays disconnected: no guest OS)."""
    channel = (
        "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
        if agent_channel
        else ""
    )
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
    <interface type='network'>
      <mac address='{mac}'/><source network='{network}'/>
      <model type='e1000'/><rom enabled='no'/>
    </interface>
    {channel}
  </devices>
</domain>
"""
