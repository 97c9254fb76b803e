"""Generate libvirt test-driver node files: the embedded demo fleet and synthetic fleets.

Run ``python -m catkeeper.demo.fleetgen --demo`` to rewrite the committed demo files, or
``--hosts N --vms M --out DIR`` for a synthetic fleet (benchmarks).

Modules: ``nodes`` (one host's node file, synthetic fleets; the test-driver facts they rely
on), ``roles`` (what a host holds), ``demofleet`` (the embedded demo). This module re-exports
what callers use and is the command line.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from catkeeper.demo.demofleet import (
    DEMO_FLEET,
    DEMO_RESERVATIONS,
    DEMO_SEED,
    DemoHost,
    demo_documents,
    write_demo,
)
from catkeeper.demo.nodes import (
    IMAGE_DIR,
    MAX_VMS_PER_HOST,
    RUNSTATE_PAUSED,
    RUNSTATE_RUNNING,
    RUNSTATE_SHUTOFF,
    TEST_NS,
    VNC_BASE_PORT,
    Decorator,
    node_xml,
    write_fleet,
)
from catkeeper.demo.roles import PROFILES, SERVICES

__all__ = [
    "DEMO_FLEET",
    "DEMO_RESERVATIONS",
    "DEMO_SEED",
    "IMAGE_DIR",
    "MAX_VMS_PER_HOST",
    "PROFILES",
    "RUNSTATE_PAUSED",
    "RUNSTATE_RUNNING",
    "RUNSTATE_SHUTOFF",
    "SERVICES",
    "TEST_NS",
    "VNC_BASE_PORT",
    "Decorator",
    "DemoHost",
    "demo_documents",
    "main",
    "node_xml",
    "write_demo",
    "write_fleet",
]


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
