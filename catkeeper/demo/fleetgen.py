"""Generate libvirt test-driver node files: the embedded demo fleet and synthetic fleets.

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

Run ``python -m catkeeper.demo.fleetgen --demo`` to rewrite the committed demo files, or
``--hosts N --vms M --out DIR`` for a synthetic fleet (benchmarks).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

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
class _Role:
    pattern: str  # str.format with distro, n (series counter) and user
    distros: tuple[str, ...]
    vcpus: tuple[int, ...]
    memory_mib: tuple[int, ...]
    service: bool = False  # long-lived services run more often than throwaway VMs
    titles: tuple[str, ...] = ()
    descriptions: tuple[str, ...] = ()


_GIB = 1024
_BUILD_DISTROS = ("sles15-sp5", "sles15-sp6", "fedora40", "rhel9", "opensuse-tw", "debian12")
_CI_DISTROS = ("fedora40", "fedora41", "ubuntu2404", "debian12", "rocky9")
_TEST_DISTROS = (
    "sles15-sp6",
    "fedora41",
    "rhel9",
    "rhel8",
    "ubuntu2204",
    "ubuntu2404",
    "debian12",
    "alma9",
    "centos-stream9",
    "opensuse-leap15",
    "freebsd14",
)
_USERS = ("alice", "bogdan", "chen", "dana", "emeka", "farah", "gustav", "hiro", "ines")

_BUILD = _Role(
    "{distro}-build-{n:02d}",
    _BUILD_DISTROS,
    (8, 12, 16),
    (16 * _GIB, 24 * _GIB, 32 * _GIB),
    titles=("Package build box", "Nightly build worker", "OBS worker"),
    descriptions=(
        "Nightly builds run 01:00-05:00 UTC; do not reboot then.",
        "Build cache on /srv/ccache survives reboots; wipe it with make distclean-cache.",
    ),
)
_CI_RUNNER = _Role(
    "{distro}-ci-runner-{n:02d}",
    _CI_DISTROS,
    (2, 4, 8),
    (4 * _GIB, 8 * _GIB, 16 * _GIB),
    titles=("GitLab CI runner", "Jenkins agent", "GitHub Actions self-hosted runner"),
    descriptions=("Registered with tags: kvm, linux. Re-register after a reinstall.",),
)
_TEST = _Role(
    "{distro}-test-{n:02d}",
    _TEST_DISTROS,
    (1, 2, 2, 4),
    (512, 1 * _GIB, 2 * _GIB, 4 * _GIB),
    titles=("Install test", "Upgrade test from previous release", "Regression test VM"),
    descriptions=("Snapshot 'clean' is the freshly installed state.",),
)
_DEV = _Role(
    "{distro}-dev-{user}",
    ("fedora41", "ubuntu2404", "debian12", "opensuse-tw"),
    (4, 8),
    (8 * _GIB, 16 * _GIB),
    titles=("Personal dev box",),
)
_K8S_WORKER = _Role(
    "{distro}-k8s-worker-{n}",
    ("ubuntu2404", "rocky9"),
    (4, 8),
    (8 * _GIB, 16 * _GIB),
    service=True,
    titles=("Lab Kubernetes worker",),
)
_K8S_CP = _Role(
    "{distro}-k8s-cp-{n}",
    ("ubuntu2404", "rocky9"),
    (2, 4),
    (4 * _GIB, 8 * _GIB),
    service=True,
    titles=("Lab Kubernetes control plane",),
    descriptions=("kubeadm cluster 'lab'; kubeconfig in the team vault.",),
)
_WIN_TEST = _Role(
    "{distro}-test-{n:02d}",
    ("win11", "win2022", "win2019"),
    (2, 4),
    (4 * _GIB, 8 * _GIB),
    titles=("Windows driver test",),
)


def _service(name: str, vcpus: int, memory_mib: int, title: str, description: str = "") -> _Role:
    return _Role(
        name,
        ("",),
        (vcpus,),
        (memory_mib,),
        service=True,
        titles=(title,),
        descriptions=(description,) if description else (),
    )


# One-off infrastructure VMs. A host gets the ones named in ``services`` (its profile's list by
# default) first, then a weighted random mix of the series roles below: drawing services at
# random would put two firewalls on one host.
_SERVICE_ROLES = (
    _service(
        "rhel9-db",
        8,
        32 * _GIB,
        "PostgreSQL 16 for the results dashboard",
        "Backups nightly to nfs:/backup/db. Ask #lab-infra before stopping.",
    ),
    _service("debian12-mirror", 2, 4 * _GIB, "Local apt mirror (apt-cacher-ng)"),
    _service(
        "win2022-ad",
        4,
        8 * _GIB,
        "Active Directory DC for lab.example.com",
        "Domain admin credentials are in the team vault.",
    ),
    _service("sles15-sp6-rmt", 2, 4 * _GIB, "SUSE RMT repository mirror"),
    _service("ubuntu2404-gitlab", 8, 16 * _GIB, "GitLab CE for the lab"),
    _service("debian12-grafana", 2, 2 * _GIB, "Grafana + Prometheus for host metrics"),
    _service("rocky9-nfs", 2, 4 * _GIB, "NFS exports: /srv/images, /backup"),
    _service("freebsd14-pf", 1, 1 * _GIB, "pf firewall between lab VLANs"),
    _service(
        "fedora41-kernel-bisect",
        4,
        8 * _GIB,
        "Bisecting the virtio-net regression",
        "git bisect in ~/linux; do not reset.",
    ),
    _service("debian12-sccache", 4, 8 * _GIB, "sccache/ccache server for the build farm"),
    _service("ubuntu2404-artifactory", 4, 16 * _GIB, "Artifact store (Artifactory OSS)"),
    _service("win2022-build", 8, 16 * _GIB, "MSVC build box for the Windows installer"),
    _service("rocky9-jupyterhub", 8, 32 * _GIB, "JupyterHub for the ML team"),
    _service("ubuntu2404-mlflow", 2, 4 * _GIB, "MLflow tracking server"),
)
_SERVICES: dict[str, _Role] = {role.pattern: role for role in _SERVICE_ROLES}
SERVICES: tuple[str, ...] = tuple(_SERVICES)

_GPU_ROLES = (
    _Role(
        "{distro}-cuda-train-{n:02d}",
        ("ubuntu2204", "ubuntu2404"),
        (8, 16),
        (16 * _GIB, 32 * _GIB),
        titles=("CUDA training box (GPU passthrough)",),
        descriptions=("Datasets on /data (NFS); checkpoints are not backed up.",),
    ),
    _Role(
        "{distro}-llm-eval-{n:02d}",
        ("ubuntu2404", "fedora41"),
        (8, 16),
        (32 * _GIB,),
        titles=("LLM evaluation harness",),
    ),
    _Role(
        "{distro}-cad-{n:02d}", ("win11",), (4, 8), (16 * _GIB,), titles=("CAD workstation (vGPU)",)
    ),
    _Role("{distro}-rocm-test-{n:02d}", ("fedora40", "fedora41"), (4,), (8 * _GIB,)),
)


@dataclass(frozen=True)
class _Profile:
    mix: tuple[tuple[_Role, float], ...]  # (series role, weight)
    services: tuple[str, ...]


_PROFILES: dict[str, _Profile] = {
    "lab": _Profile(
        (
            (_BUILD, 2.0),
            (_CI_RUNNER, 3.0),
            (_TEST, 6.0),
            (_DEV, 2.0),
            (_K8S_WORKER, 2.0),
            (_K8S_CP, 0.7),
            (_WIN_TEST, 1.0),
        ),
        ("rhel9-db", "debian12-mirror", "win2022-ad", "rocky9-nfs"),
    ),
    "build": _Profile(
        ((_BUILD, 6.0), (_CI_RUNNER, 6.0), (_TEST, 1.5)),
        ("debian12-sccache", "ubuntu2404-artifactory", "win2022-build"),
    ),
    "gpu": _Profile(
        ((_GPU_ROLES[0], 3.0), (_GPU_ROLES[1], 2.0), (_GPU_ROLES[2], 1.0), (_GPU_ROLES[3], 1.0)),
        ("rocky9-jupyterhub",),
    ),
}
PROFILES: tuple[str, ...] = tuple(_PROFILES)


@dataclass(frozen=True)
class _Vm:
    index: int
    name: str
    role: _Role
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


def _pick_name(rng: random.Random, role: _Role, used: set[str], series: dict[str, int]) -> str:
    distro = rng.choice(role.distros)
    if "{n" in role.pattern:
        key = f"{role.pattern}|{distro}"
        while True:
            series[key] = series.get(key, 0) + 1
            name = role.pattern.format(distro=distro, n=series[key])
            if name not in used:
                break
    else:
        candidates = [role.pattern.format(distro=distro, user=user) for user in _USERS]
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
    profile: _Profile,
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
            role = _SERVICES[services[index]]
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
    if profile not in _PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    chosen_services = _PROFILES[profile].services if services is None else tuple(services)
    unknown = [name for name in chosen_services if name not in _SERVICES]
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
        host, start_index + vms, seed, _PROFILES[profile], chosen_services, running_fraction
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


def _write(path: Path, text: str) -> Path:
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
        _write(
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


@dataclass(frozen=True)
class DemoHost:
    name: str
    vms: int
    profile: str
    host_id: int
    services: tuple[str, ...]
    paused: int = 0
    running_fraction: float = 0.4


DEMO_SEED = 0
DEMO_FLEET: tuple[DemoHost, ...] = (
    DemoHost(
        "lab1", 20, "lab", 11, ("rhel9-db", "win2022-ad", "rocky9-nfs", "freebsd14-pf"), paused=1
    ),
    DemoHost(
        "lab2",
        18,
        "lab",
        12,
        ("debian12-mirror", "ubuntu2404-gitlab", "debian12-grafana", "fedora41-kernel-bisect"),
        paused=1,
    ),
    DemoHost("build3", 14, "build", 13, ("debian12-sccache", "win2022-build", "sles15-sp6-rmt")),
    DemoHost("gpu4", 8, "gpu", 14, ("rocky9-jupyterhub", "ubuntu2404-mlflow")),
)


# (owner, note, since, until) in UTC ISO form; the expired ones show how catkeeper marks them.
DEMO_RESERVATIONS: dict[tuple[str, str], tuple[str, str, str, str | None]] = {
    ("lab1", "debian12-dev-chen"): ("chen", "personal dev box", "2026-09-01T08:00:00Z", None),
    ("lab1", "rhel9-db"): (
        "dba-team",
        "release-test database, please do not reboot",
        "2026-10-12T09:30:00Z",
        "2027-06-30T17:00:00Z",
    ),
    ("lab1", "opensuse-tw-dev-hiro"): (
        "hiro",
        "systemd 257 regression repro",
        "2026-11-18T10:00:00Z",
        "2026-12-05T17:00:00Z",
    ),
    ("lab1", "sles15-sp6-test-01"): (
        "farah",
        "paused mid live-migration test",
        "2026-11-10T13:00:00Z",
        "2026-11-20T17:00:00Z",
    ),
    ("lab2", "fedora41-kernel-bisect"): (
        "ines",
        "bisecting 6.12 NVMe timeout, ~9 steps left",
        "2026-11-21T16:20:00Z",
        "2026-11-27T18:00:00Z",
    ),
    ("lab2", "ubuntu2404-gitlab"): (
        "infra",
        "shared GitLab, ask #infra",
        "2026-03-02T08:00:00Z",
        None,
    ),
    ("gpu4", "ubuntu2404-cuda-train-02"): (
        "ml-team",
        "training run 17, ETA Thursday",
        "2026-11-22T07:45:00Z",
        "2026-11-26T12:00:00Z",
    ),
    ("build3", "sles15-sp5-build-03"): (
        "ci",
        "pinned for the SP5 maintenance update build",
        "2026-10-01T00:00:00Z",
        "2026-10-31T00:00:00Z",
    ),
}
_RESERVATION_NS = "https://catkeeper.dev/xmlns/reservation/1"


def _demo_reservation(host: str) -> Decorator:
    """Adds the demo's reservations in the format of catkeeper.backend.reservations.metadata."""

    def decorate(name: str, domain: ET.Element) -> None:
        entry = DEMO_RESERVATIONS.get((host, name))
        if entry is None:
            return
        owner, note, since, until = entry
        metadata = domain.find("metadata")
        if metadata is None:
            metadata = ET.SubElement(domain, "metadata")
        res = ET.SubElement(metadata, "catkeeper:reservation", revision="1")
        res.set("xmlns:catkeeper", _RESERVATION_NS)
        for tag, text in (("owner", owner), ("note", note), ("since", since), ("until", until)):
            if text is not None:
                ET.SubElement(res, f"catkeeper:{tag}").text = text
        changed = ET.SubElement(res, "catkeeper:changed", by=owner, action="reserved")
        changed.text = since

    return decorate


def demo_documents() -> dict[str, str]:
    """File name → text of every demo host's node file."""
    return {
        f"{spec.name}.xml": node_xml(
            spec.name,
            spec.vms,
            seed=DEMO_SEED,
            running_fraction=spec.running_fraction,
            paused=spec.paused,
            profile=spec.profile,
            services=spec.services,
            host_id=spec.host_id,
            decorate=_demo_reservation(spec.name),
        )
        for spec in DEMO_FLEET
    }


def write_demo(directory: Path | None = None) -> list[Path]:
    """Rewrite the demo fleet (by default the committed files next to this module)."""
    target = Path(__file__).resolve().parent if directory is None else directory
    target.mkdir(parents=True, exist_ok=True)
    return [_write(target / name, text) for name, text in demo_documents().items()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m catkeeper.demo.fleetgen",
        description="Write libvirt test-driver node files (demo fleet or synthetic fleet).",
    )
    parser.add_argument("--demo", action="store_true", help="rewrite the embedded demo fleet")
    parser.add_argument("--out", type=Path, help="output directory (demo: the package dir)")
    parser.add_argument("--hosts", type=int, default=4, help="synthetic fleet: host count")
    parser.add_argument("--vms", type=int, default=50, help="synthetic fleet: VMs per host")
    parser.add_argument("--seed", type=int, default=0, help="synthetic fleet: random seed")
    args = parser.parse_args(argv)
    if args.demo:
        paths = write_demo(args.out)
    elif args.out is None:
        parser.error("--out is required without --demo")
    else:
        paths = write_fleet(args.out, args.hosts, args.vms, seed=args.seed)
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
