"""What a scan asked, and what each request cost: every libvirt call and remote command a
scan makes becomes a ``Call``, so ``catkeeper scan`` can say what was asked and how long it
took (``summarize_calls``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import libvirt

from catkeeper.values import Value

LIST_NETWORKS = "networks"  # scope of the lease source's listing call
DOMAINS = "domains"  # the listAllDomains a pass makes when it has per-VM calls to make
# "No such call here" (the test driver, a daemon older than the call): not a failure.
_UNSUPPORTED = frozenset({libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_OPERATION_UNSUPPORTED})


@dataclass(frozen=True)
class Call(Value):
    """One request a scan made: a libvirt call or a remote command."""

    source: str  # lease, neigh, agent, arp, sweep-…, or "domains" (handles for per-VM calls)
    scope: str  # "networks", "network:NAME", a VM's UUID, "*", a subnet
    elapsed_s: float
    ok: bool = True
    per_vm: bool = False  # one VM's interfaceAddresses, not a bulk call


def unsupported(exc: BaseException) -> bool:
    return isinstance(exc, libvirt.libvirtError) and exc.get_error_code() in _UNSUPPORTED


def summarize_calls(calls: Iterable[Call]) -> dict[str, dict[str, Any]]:
    """Per source: how many calls (how many of them per VM), how many failed, each one's
    seconds, total and slowest."""
    out: dict[str, dict[str, Any]] = {}
    for c in calls:
        entry = out.setdefault(c.source, {"calls": 0, "per_vm": 0, "failed": 0, "seconds": []})
        entry["calls"] += 1
        entry["per_vm"] += 1 if c.per_vm else 0
        entry["failed"] += 0 if c.ok else 1
        entry["seconds"].append(c.elapsed_s)
    for entry in out.values():
        entry["total_s"] = round(sum(entry["seconds"]), 4)
        entry["max_s"] = max(entry["seconds"], default=0.0)
    return out
