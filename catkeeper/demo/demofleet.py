"""The embedded demo fleet: which hosts, how many VMs of which profile, and the
reservations that make the demo look lived-in. ``write_demo`` rewrites the committed files
next to this module (``python -m catkeeper.demo.fleetgen --demo``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from catkeeper.demo.nodes import Decorator, node_xml, write_text


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
    return [write_text(target / name, text) for name, text in demo_documents().items()]
