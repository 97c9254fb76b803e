"""The demo fleet and the node-file generator, checked against the real libvirt test driver."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest

from catkeeper.demo import DEMO_DIR, demo_files
from catkeeper.demo.fleetgen import (
    DEMO_FLEET,
    SERVICES,
    demo_documents,
    main,
    node_xml,
    write_fleet,
)

RESERVATION_NS = "https://catkeeper.dev/xmlns/reservation/1"


@pytest.fixture(autouse=True, scope="module")
def _quiet_libvirt() -> None:
    # libvirt prints every error to stderr unless a handler is installed.
    libvirt.registerErrorHandler(lambda *_: None, None)


def _open(path: Path) -> libvirt.virConnect:
    return libvirt.open(f"test://{path.resolve()}")


def _domains(conn: libvirt.virConnect) -> list[tuple[libvirt.virDomain, ET.Element]]:
    return [
        (dom, ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)))
        for dom in conn.listAllDomains()
    ]


def _states(conn: libvirt.virConnect) -> Counter[int]:
    return Counter(dom.state()[0] for dom in conn.listAllDomains())


def _macs(doms: list[tuple[libvirt.virDomain, ET.Element]]) -> list[str]:
    return [
        mac.get("address", "") for _, xml in doms for mac in xml.iterfind("devices/interface/mac")
    ]


@pytest.fixture(scope="module")
def demo() -> Iterator[dict[str, libvirt.virConnect]]:
    conns = {path.stem: _open(path) for path in demo_files()}
    yield conns
    for conn in conns.values():
        conn.close()


def test_demo_files_are_the_declared_fleet() -> None:
    assert [path.name for path in demo_files()] == sorted(f"{spec.name}.xml" for spec in DEMO_FLEET)
    assert sum(spec.vms for spec in DEMO_FLEET) >= 50


def test_demo_files_match_the_generator_byte_for_byte() -> None:
    for name, text in demo_documents().items():
        assert (DEMO_DIR / name).read_bytes() == text.encode(), (
            f"{name} is stale: run python -m catkeeper.demo.fleetgen --demo"
        )


def test_demo_hosts_load_with_the_declared_states(demo: dict[str, libvirt.virConnect]) -> None:
    for spec in DEMO_FLEET:
        conn = demo[spec.name]
        states = _states(conn)
        assert sum(states.values()) == spec.vms
        assert states[libvirt.VIR_DOMAIN_RUNNING] > 0, spec.name
        assert states[libvirt.VIR_DOMAIN_SHUTOFF] > 0, spec.name
        assert states[libvirt.VIR_DOMAIN_PAUSED] == spec.paused, spec.name
    paused = sum(_states(conn)[libvirt.VIR_DOMAIN_PAUSED] for conn in demo.values())
    assert paused >= 2


def test_demo_hosts_have_their_services(demo: dict[str, libvirt.virConnect]) -> None:
    for spec in DEMO_FLEET:
        names = {dom.name() for dom in demo[spec.name].listAllDomains()}
        assert set(spec.services) <= names
    everywhere = [name for spec in DEMO_FLEET for name in spec.services]
    assert len(everywhere) == len(set(everywhere)), "a service is on two demo hosts"


def test_demo_names_unique_per_host_and_disks_follow_names(
    demo: dict[str, libvirt.virConnect],
) -> None:
    for conn in demo.values():
        doms = _domains(conn)
        names = [dom.name() for dom, _ in doms]
        assert len(names) == len(set(names))
        for dom, xml in doms:
            source = xml.find("devices/disk/source")
            assert source is not None
            assert source.get("file") == f"/var/lib/libvirt/images/{dom.name()}.qcow2"


def test_demo_macs_unique_across_the_fleet(demo: dict[str, libvirt.virConnect]) -> None:
    macs = [mac for conn in demo.values() for mac in _macs(_domains(conn))]
    assert len(macs) > sum(spec.vms for spec in DEMO_FLEET), "expected some two-NIC VMs"
    assert len(macs) == len(set(macs))
    assert all(mac.startswith("52:54:00:") for mac in macs)


def test_demo_consoles(demo: dict[str, libvirt.virConnect]) -> None:
    kinds: Counter[str] = Counter()
    for conn in demo.values():
        ports: list[str] = []
        for _, xml in _domains(conn):
            graphics = xml.find("devices/graphics")
            if graphics is None:
                kinds["none"] += 1
                continue
            kind = graphics.get("type", "")
            if kind == "vnc" and graphics.get("autoport") == "no":
                ports.append(graphics.get("port", ""))
                kinds["vnc-fixed"] += 1
            elif kind == "vnc":
                assert graphics.get("port") == "-1"
                kinds["vnc-auto"] += 1
            else:
                kinds[kind] += 1
            if graphics.get("passwd"):
                kinds["password"] += 1
        assert len(ports) == len(set(ports)), "VNC ports collide on one host"
        assert all(5900 <= int(port) < 6000 for port in ports)
    # The console code needs every case the demo can show it.
    for kind in ("vnc-fixed", "vnc-auto", "password", "spice", "none"):
        assert kinds[kind] > 0, kind
    assert kinds["vnc-fixed"] > len(DEMO_FLEET) * 5


def test_demo_titles_and_descriptions(demo: dict[str, libvirt.virConnect]) -> None:
    titled = described = 0
    for conn in demo.values():
        for _, xml in _domains(conn):
            titled += xml.find("title") is not None
            described += xml.find("description") is not None
    assert titled >= 10
    assert described >= 3


def test_demo_networks_give_running_guests_addresses(
    demo: dict[str, libvirt.virConnect],
) -> None:
    subnets = set()
    for conn in demo.values():
        network = conn.networkLookupByName("default")
        ip = ET.fromstring(network.XMLDesc()).find("ip")
        assert ip is not None
        subnets.add(ip.get("address"))
        running = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_RUNNING)
        addresses = running[0].interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE)
        assert addresses
    assert len(subnets) == len(DEMO_FLEET), "hosts share a subnet"


def test_write_fleet(tmp_path: Path) -> None:
    paths = write_fleet(tmp_path / "fleet", 3, 60, seed=7)
    assert [path.name for path in paths] == ["host01.xml", "host02.xml", "host03.xml"]
    macs: list[str] = []
    for path in paths:
        conn = _open(path)
        states = _states(conn)
        assert sum(states.values()) == 60
        assert states[libvirt.VIR_DOMAIN_PAUSED] == 1
        assert states[libvirt.VIR_DOMAIN_RUNNING] > 0
        macs += _macs(_domains(conn))
        conn.close()
    assert len(macs) == len(set(macs))
    # Deterministic, and the seed matters.
    assert write_fleet(tmp_path / "again", 3, 60, seed=7)[0].read_bytes() == paths[0].read_bytes()
    assert write_fleet(tmp_path / "other", 1, 60, seed=8)[0].read_bytes() != paths[0].read_bytes()


def test_main_writes_a_synthetic_fleet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--hosts", "2", "--vms", "5", "--out", str(tmp_path)]) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["host01.xml", "host02.xml"]
    assert capsys.readouterr().out.count("\n") == 2


@pytest.mark.parametrize(
    ("fraction", "paused", "expected"),
    [
        (0.0, 0, {libvirt.VIR_DOMAIN_SHUTOFF: 12}),
        (1.0, 0, {libvirt.VIR_DOMAIN_RUNNING: 12}),
        (0.0, 3, {libvirt.VIR_DOMAIN_SHUTOFF: 9, libvirt.VIR_DOMAIN_PAUSED: 3}),
    ],
)
def test_runstates_reach_the_driver(
    tmp_path: Path, fraction: float, paused: int, expected: dict[int, int]
) -> None:
    path = tmp_path / "h.xml"
    path.write_text(node_xml("h", 12, running_fraction=fraction, paused=paused))
    conn = _open(path)
    assert dict(_states(conn)) == expected
    conn.close()


def test_start_index_continues_the_same_sequence() -> None:
    whole = ET.fromstring(node_xml("h", 30, seed=3)).findall("domain")
    tail = ET.fromstring(node_xml("h", 10, seed=3, start_index=20)).findall("domain")
    assert [ET.tostring(d) for d in whole[20:]] == [ET.tostring(d) for d in tail]


def test_running_fraction_changes_only_run_states() -> None:
    def without_runstate(text: str) -> list[bytes]:
        domains = ET.fromstring(text).findall("domain")
        for domain in domains:
            for runstate in domain.findall("{http://libvirt.org/schemas/domain/test/1.0}runstate"):
                domain.remove(runstate)
        return [ET.tostring(domain) for domain in domains]

    assert without_runstate(node_xml("h", 40, running_fraction=0.1)) == without_runstate(
        node_xml("h", 40, running_fraction=0.9, paused=4)
    )


def test_large_host_names_and_macs_stay_unique() -> None:
    root = ET.fromstring(node_xml("big", 2000, host_id=5))
    names = [d.findtext("name") for d in root.iter("domain")]
    macs = [m.get("address") for m in root.iter("mac")]
    uuids = [d.findtext("uuid") for d in root.iter("domain")]
    assert len(set(names)) == len(names) == 2000
    assert len(set(macs)) == len(macs)
    assert len(set(uuids)) == len(uuids)
    assert all(name is not None and name.count(" ") == 0 for name in names)


def test_services_parameter_and_profiles() -> None:
    root = ET.fromstring(node_xml("h", 3, services=["rhel9-db"], profile="gpu"))
    assert root.findtext("domain/name") == "rhel9-db"
    assert "rhel9-db" in SERVICES


def test_decorate_adds_metadata_the_driver_keeps(tmp_path: Path) -> None:
    def reserve(name: str, domain: ET.Element) -> None:
        metadata = ET.SubElement(domain, "metadata")
        ET.SubElement(
            metadata, f"{{{RESERVATION_NS}}}reservation", owner="alice", note=f"<{name}> & co"
        )

    path = tmp_path / "h.xml"
    path.write_text(node_xml("h", 2, decorate=reserve))
    conn = _open(path)
    for dom in conn.listAllDomains():
        element = ET.fromstring(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, RESERVATION_NS))
        assert element.get("note") == f"<{dom.name()}> & co"
    conn.close()


@pytest.mark.parametrize(
    ("call", "why"),
    [
        (lambda: node_xml("h", -1), "must not be negative"),
        (lambda: node_xml("", 1), "host must not be empty"),
        (lambda: node_xml("h", 10, running_fraction=1.5), "running_fraction must be between"),
        (lambda: node_xml("h", 10, paused=11), "paused must be between 0 and vms"),
        (lambda: node_xml("h", 10, profile="mainframe"), "unknown profile 'mainframe'"),
        (lambda: node_xml("h", 10, services=["nope"]), r"unknown services \['nope'\]"),
        (lambda: node_xml("h", 10, services=["rhel9-db", "rhel9-db"]), "must not repeat"),
        (lambda: node_xml("h", 10, host_id=256), "host_id must be between 0 and 255"),
        (lambda: node_xml("h", 10, start_index=1 << 15), "VMs per host"),
    ],
)
def test_bad_arguments_are_refused(call: Callable[[], str], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        call()
