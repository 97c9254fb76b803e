"""``catkeeper --json`` against a scripted virsh loop, on synthetic test-driver fleets.

The peer is what people script today: ``virsh list --all --name`` per host, then
``virsh domiflist`` and ``virsh dominfo`` per VM. Both sides run in this process's run, on
the same files, and the ratio is printed. Not a test: nothing here passes or fails.

    python bench/json_bench.py          # the virsh loop is timed on 20-25 VMs a host, extrapolated
    python bench/json_bench.py --full   # the virsh loop visits every VM (about 2 hours)

On the test driver the per-host cost is CPU (libvirt parses the node file), so hosts overlap
only as far as the cores allow; against remote hosts the cost is waiting on the network.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from catkeeper.demo.fleetgen import write_fleet


def _config(paths: list[Path], directory: Path) -> Path:
    lines = ["hosts:"]
    for p in paths:
        lines += [f"  - name: {p.stem}", f"    uri: test://{p}"]
    cfg = directory / "config.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def time_catkeeper(cfg: Path, repeat: int) -> tuple[float, int]:
    best, count = float("inf"), 0
    catkeeper = [sys.executable, "-m", "catkeeper"]
    for _ in range(repeat):
        started = time.perf_counter()
        out = subprocess.run(
            [*catkeeper, "--config", str(cfg), "--json", "--log", os.devnull],
            capture_output=True,
            text=True,
            check=True,
        )
        best = min(best, time.perf_counter() - started)
        count = len(json.loads(out.stdout)["vms"])
    return best, count


def _virsh(uri: str, *args: str) -> str:
    return subprocess.run(
        ["virsh", "-q", "-c", uri, *args], capture_output=True, text=True, check=True
    ).stdout


def time_virsh_loop(paths: list[Path], per_host_sample: int | None) -> tuple[float, int, int]:
    """Seconds for the loop (extrapolated when sampled), VMs visited, VMs in all."""
    total_vms = visited = 0
    elapsed = 0.0
    for p in paths:
        uri = f"test://{p}"
        started = time.perf_counter()
        names = [n for n in _virsh(uri, "list", "--all", "--name").splitlines() if n]
        list_time = time.perf_counter() - started
        chosen = names[:per_host_sample] if per_host_sample else names
        started = time.perf_counter()
        for name in chosen:
            _virsh(uri, "domiflist", name)
            _virsh(uri, "dominfo", name)
        per_vm = (time.perf_counter() - started) / max(1, len(chosen))
        elapsed += list_time + per_vm * len(names)
        visited += len(chosen)
        total_vms += len(names)
    return elapsed, visited, total_vms


def scenario(hosts: int, vms: int, *, sample: int | None, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="ck-bench-") as tmp:
        directory = Path(tmp)
        paths = write_fleet(directory, hosts=hosts, vms_per_host=vms, seed=1)
        cfg = _config(paths, directory)
        ck, count = time_catkeeper(cfg, repeat)
        one_dir = directory / "one"
        one_dir.mkdir()
        one_host, _ = time_catkeeper(_config(paths[:1], one_dir), repeat)
        virsh, visited, total = time_virsh_loop(paths, sample)
        how = "measured" if visited == total else f"{visited} VMs measured, rest extrapolated"
        print(f"{hosts} hosts x {vms} VMs ({count} VMs)")
        print(f"  catkeeper --json          {ck:8.2f} s   (best of {repeat})")
        print(f"  catkeeper --json, 1 host  {one_host:8.2f} s")
        print(
            f"  hosts in parallel         {hosts * one_host / ck:8.1f} x   "
            f"({hosts} x 1-host time / fleet time; {os.cpu_count()} cores)"
        )
        print(f"  virsh loop                {virsh:8.2f} s   ({how})")
        print(f"  ratio virsh / catkeeper   {virsh / ck:8.1f} x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--full", action="store_true", help="run the virsh loop over every VM (slow)"
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("virsh") is None:
        print("virsh is missing: apt-get install libvirt-clients", file=sys.stderr)
        return 1
    scenario(8, 250, sample=None if args.full else 25, repeat=args.repeat)
    scenario(20, 500, sample=None if args.full else 20, repeat=args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
