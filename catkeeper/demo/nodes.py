"""Node files for the libvirt test driver: one host's ``<node>`` with its domains, and
synthetic fleets of them (benchmarks, tests).

A *node file* is what ``test:///abs/path.xml`` opens: one ``<node>`` with the host's CPU and
memory, a NAT network named ``default`` (``interfaceAddresses`` needs it) and any number of
``<domain type='test'>`` elements. Everything is deterministic in ``(seed, host, index)``, so a
regenerated file is identical byte for byte and ``node_xml(h, n, start_index=k)`` yields the
same domains as the tail of ``node_xml(h, k + n)``.

Test-driver facts this module relies on (libvirt 9.0, checked against the real driver):

* The run state lives in ``<test:runstate>N</test:runstate>`` inside ``<domain>``, with the
  prefix bound to ``http://libvirt.org/schemas/domain/test/1.0`` (the ``/1.0`` matters: without
  it the element is silently ignored). N is a ``virDomainState``: 1 running, 3 paused,
  5 shut off. A domain **without** the element starts *running*, so shut-off domains must say 5.
* ``interfaceAddresses`` invents ``dhcp_start + 20 * (domain_id - 1) + nic + 1``; domain ids
  grow with every start, so a /24 overflows after a dozen starts. Each host therefore gets a
  /16 (``10.<host_id>.0.0/16``).
* The driver only knows ``i686`` guests, so ``<os><type>`` carries no ``arch``.
"""

from __future__ import annotations

import hashlib
import random
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from catkeeper.demo.roles import (
    PROFILE_MIX,
    PROFILES,
    SERVICE_ROLES,
    SERVICES,
    USERS,
    Profile,
    Role,
)

TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"
RUNSTATE_RUNNING = 1
RUNSTATE_PAUSED = 3
RUNSTATE_SHUTOFF = 5

IMAGE_DIR = "/var/lib/libvirt/images"
VNC_BASE_PORT = 5900
# 16 bits of the MAC belong to the NIC index and each VM may have two NICs; this also keeps
# fixed VNC ports (5900 + index) below 65536.
MAX_VMS_PER_HOST = 1 << 15

_UUID_NS = uuid.UUID("7c3a1f0e-5b2d-4c8e-9a61-3d0f2b7e4c59")
_KIB_PER_MIB = 1024

Decorator = Callable[[str, ET.Element], None]
"""Called with (domain name, ``<domain>`` element) before serialisation, e.g. to add
``<metadata>``. Elements in a new namespace get ``ns0``-style prefixes unless the caller
also sets an ``xmlns:PREFIX`` attribute and uses ``PREFIX:tag`` names, as this module does."""


@dataclass(frozen=True)
class _Vm:
    index: int
    name: str
    role: Role
    vcpus: int
    memory_mib: int
    nics: int
    wants_running: bool
    graphics: str  # "vnc", "vnc-auto", "spice" or "none"
    listen: str
    password: str | None
    title: str | None
    description: str | None


def _host_id(host: str) -> int:
    # A stable hash, not hash(): PYTHONHASHSEED must not change the output.
    return hashlib.sha256(host.encode()).digest()[0]


def _pick_name(rng: random.Random, role: Role, used: set[str], series: dict[str, int]) -> str:
    distro = rng.choice(role.distros)
    if "{n" in role.pattern:
        key = f"{role.pattern}|{distro}"
        while True:
            series[key] = series.get(key, 0) + 1
            name = role.pattern.format(distro=distro, n=series[key])
            if name not in used:
                break
    else:
        candidates = [role.pattern.format(distro=distro, user=user) for user in USERS]
        # Prefer a user who has no box on this distro yet; "-2" copies only once all have one.
        free = [candidate for candidate in candidates if candidate not in used]
        base = name = rng.choice(free or candidates)
        copy = 1
        while name in used:
            copy += 1
            name = f"{base}-{copy}"
    used.add(name)
    return name


def _vms(
    host: str,
    count: int,
    seed: int,
    profile: Profile,
    services: Sequence[str],
    running_fraction: float,
) -> list[_Vm]:
    """The first ``count`` VMs of the host's endless deterministic sequence."""
    rng = random.Random(f"catkeeper-fleetgen/{seed}/{host}")
    roles = [role for role, _ in profile.mix]
    weights = [weight for _, weight in profile.mix]
    used: set[str] = set()
    series: dict[str, int] = {}
    out: list[_Vm] = []
    for index in range(count):
        if index < len(services):
            role = SERVICE_ROLES[services[index]]
            name = role.pattern
            used.add(name)
        else:
            role = rng.choices(roles, weights)[0]
            name = _pick_name(rng, role, used, series)
        # Infrastructure is up most of the time; scaling (not a floor) keeps 0.0 meaning "all off".
        p_running = min(1.0, running_fraction * 2.5) if role.service else running_fraction
        # Draw everything for every VM, used or not: then running_fraction and paused change
        # only run states, never a name, size, MAC or port.
        wants_running = rng.random() < p_running
        vcpus = rng.choice(role.vcpus)
        memory_mib = rng.choice(role.memory_mib)
        nics = 2 if rng.random() < 0.2 else 1
        g = rng.random()
        if g < 0.04:
            graphics = "spice"
        elif g < 0.06:
            graphics = "none"
        elif g < 0.22:
            graphics = "vnc-auto"
        else:
            graphics = "vnc"
        listen = "0.0.0.0" if rng.random() < 0.15 else "127.0.0.1"
        password_draw = rng.random()
        password = f"{rng.getrandbits(32):08x}"
        has_password = graphics.startswith("vnc") and password_draw < 0.12
        title_draw, description_draw = rng.random(), rng.random()
        title = rng.choice(role.titles) if role.titles else None
        description = rng.choice(role.descriptions) if role.descriptions else None
        out.append(
            _Vm(
                index=index,
                name=name,
                role=role,
                vcpus=vcpus,
                memory_mib=memory_mib,
                nics=nics,
                wants_running=wants_running,
                graphics=graphics,
                listen=listen,
                password=password if has_password else None,
                # Services are the VMs people label; throwaway ones rarely are.
                title=title if title_draw < (0.9 if role.service else 0.3) else None,
                description=description if description_draw < 0.5 else None,
            )
        )
    return out


def _mac(host_id: int, nic_index: int, salt: int) -> str:
    # Multiplying by an odd constant permutes 16-bit values: unique per host like a counter,
    # but scattered like the random MACs libvirt hands out.
    low = (nic_index * 0x9E37 + salt) & 0xFFFF
    return f"52:54:00:{host_id:02x}:{low >> 8:02x}:{low & 0xFF:02x}"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def _node_element(host: str, host_id: int, rng: random.Random) -> ET.Element:
    root = ET.Element("node")
    # Declared once on the root by hand: ET.register_namespace would change a process-wide
    # prefix table, and the driver resolves the prefix from any ancestor.
    root.set("xmlns:test", TEST_NS)
    sockets = rng.choice((1, 2, 2))
    cores = rng.choice((8, 12, 16, 24, 32))
    cpu = _sub(root, "cpu")
    _sub(cpu, "nodes", str(sockets))
    _sub(cpu, "sockets", str(sockets))
    _sub(cpu, "cores", str(cores))
    _sub(cpu, "threads", "2")
    _sub(cpu, "active", str(sockets * cores * 2))
    _sub(cpu, "mhz", str(rng.choice((2100, 2400, 2600, 2900, 3100))))
    _sub(cpu, "model", "x86_64")
    memory_gib = rng.choice((128, 256, 384, 512, 768))
    _sub(root, "memory", str(memory_gib * 1024 * 1024), unit="KiB")

    network = _sub(root, "network")
    _sub(network, "name", "default")
    _sub(network, "uuid", str(uuid.uuid5(_UUID_NS, f"{host}/network/default")))
    _sub(network, "forward", mode="nat")
    _sub(network, "bridge", name="virbr0", stp="on", delay="0")
    ip = _sub(network, "ip", address=f"10.{host_id}.0.1", netmask="255.255.0.0")
    dhcp = _sub(ip, "dhcp")
    _sub(dhcp, "range", start=f"10.{host_id}.0.2", end=f"10.{host_id}.255.254")
    return root


def _domain_element(vm: _Vm, host: str, seed: int, host_id: int, runstate: int) -> ET.Element:
    domain = ET.Element("domain", type="test")
    _sub(domain, "name", vm.name)
    _sub(domain, "uuid", str(uuid.uuid5(_UUID_NS, f"{seed}/{host}/{vm.index}")))
    if vm.title is not None:
        _sub(domain, "title", vm.title)
    if vm.description is not None:
        _sub(domain, "description", vm.description)
    kib = str(vm.memory_mib * _KIB_PER_MIB)
    _sub(domain, "memory", kib, unit="KiB")
    _sub(domain, "currentMemory", kib, unit="KiB")
    _sub(domain, "vcpu", str(vm.vcpus), placement="static")
    os_element = _sub(domain, "os")
    _sub(os_element, "type", "hvm")
    _sub(os_element, "boot", dev="hd")

    devices = _sub(domain, "devices")
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2")
    _sub(disk, "source", file=f"{IMAGE_DIR}/{vm.name}.qcow2")
    _sub(disk, "target", dev="vda", bus="virtio")
    salt = (seed * 0x2545 + 0x5A3C) & 0xFFFF
    for nic in range(vm.nics):
        interface = _sub(devices, "interface", type="network")
        _sub(interface, "mac", address=_mac(host_id, vm.index * 2 + nic, salt))
        _sub(interface, "source", network="default")
        _sub(interface, "model", type="virtio")
    if vm.graphics == "vnc":
        attrs = {"port": str(VNC_BASE_PORT + vm.index), "autoport": "no", "listen": vm.listen}
    elif vm.graphics == "vnc-auto":
        attrs = {"port": "-1", "autoport": "yes", "listen": vm.listen}
    elif vm.graphics == "spice":
        attrs = {"autoport": "yes", "listen": vm.listen}
    else:
        attrs = {}
    if attrs:
        graphics = _sub(devices, "graphics", type=vm.graphics.removesuffix("-auto"), **attrs)
        if vm.password is not None:
            graphics.set("passwd", vm.password)
    _sub(domain, "test:runstate", str(runstate))
    return domain


def node_xml(
    host: str,
    vms: int,
    *,
    seed: int = 0,
    running_fraction: float = 0.4,
    paused: int = 0,
    start_index: int = 0,
    profile: str = "lab",
    services: Sequence[str] | None = None,
    host_id: int | None = None,
    decorate: Decorator | None = None,
) -> str:
    """A test-driver node file for ``host`` with ``vms`` domains, as text.

    ``start_index`` skips the first domains of the host's sequence, so several calls with the
    same host and seed never repeat a name, UUID, MAC or VNC port. ``paused`` domains (chosen
    deterministically) are paused, the others run with probability ``running_fraction``
    (2.5 times that for services). ``profile`` is one of :data:`PROFILES` and picks the random mix;
    ``services`` (names from :data:`SERVICES`; default: the profile's own) come first.
    ``host_id`` (0-255) is the fourth MAC octet and the second octet of the host's
    10.x.0.0/16; it defaults to a hash of the name, so pass distinct ids when MACs must be
    unique across hosts. ``decorate`` may add to each ``<domain>`` (see :data:`Decorator`).
    """
    if not host:
        raise ValueError("host must not be empty")
    if vms < 0 or start_index < 0:
        raise ValueError("vms and start_index must not be negative")
    if start_index + vms > MAX_VMS_PER_HOST:
        raise ValueError(f"at most {MAX_VMS_PER_HOST} VMs per host")
    if not 0.0 <= running_fraction <= 1.0:
        raise ValueError("running_fraction must be between 0 and 1")
    if not 0 <= paused <= vms:
        raise ValueError("paused must be between 0 and vms")
    if profile not in PROFILE_MIX:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    chosen_services = PROFILE_MIX[profile].services if services is None else tuple(services)
    unknown = [name for name in chosen_services if name not in SERVICE_ROLES]
    if unknown:
        raise ValueError(f"unknown services {unknown}; choose from {', '.join(SERVICES)}")
    if len(set(chosen_services)) != len(chosen_services):
        raise ValueError("services must not repeat")
    hid = _host_id(host) if host_id is None else host_id
    if not 0 <= hid <= 255:
        raise ValueError("host_id must be between 0 and 255")

    node_rng = random.Random(f"catkeeper-fleetgen/{seed}/{host}/node")
    root = _node_element(host, hid, node_rng)
    root.insert(
        0,
        ET.Comment(
            f" generated by catkeeper.demo.fleetgen (seed {seed});"
            " edit the generator, not this file "
        ),
    )
    chosen = _vms(
        host, start_index + vms, seed, PROFILE_MIX[profile], chosen_services, running_fraction
    )[start_index:]
    pause_rng = random.Random(f"catkeeper-fleetgen/{seed}/{host}/paused/{start_index}")
    paused_names = {vm.name for vm in pause_rng.sample(chosen, paused)}
    for vm in chosen:
        if vm.name in paused_names:
            runstate = RUNSTATE_PAUSED
        elif vm.wants_running:
            runstate = RUNSTATE_RUNNING
        else:
            runstate = RUNSTATE_SHUTOFF
        domain = _domain_element(vm, host, seed, hid, runstate)
        if decorate is not None:
            decorate(vm.name, domain)
        root.append(domain)
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode") + "\n"


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="\n")
    return path


def write_fleet(directory: Path, hosts: int, vms_per_host: int, *, seed: int = 0) -> list[Path]:
    """Write ``host01.xml`` … into ``directory`` (created if missing); MACs unique fleet-wide.

    About 40% of each host's VMs run and one in fifty is paused.
    """
    if not 1 <= hosts <= 255:
        raise ValueError("hosts must be between 1 and 255 (one MAC octet per host)")
    directory.mkdir(parents=True, exist_ok=True)
    width = max(2, len(str(hosts)))
    return [
        write_text(
            directory / f"host{number:0{width}d}.xml",
            node_xml(
                f"host{number:0{width}d}",
                vms_per_host,
                seed=seed,
                paused=vms_per_host // 50,
                host_id=number,
            ),
        )
        for number in range(1, hosts + 1)
    ]
