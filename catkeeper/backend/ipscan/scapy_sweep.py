"""ARP and ICMP sweeps of one subnet with scapy (raw sockets), blocking.

ICMP goes out at layer 2 as well (``srp(Ether()/IP(dst=[…])/ICMP())``): scapy's layer-3
``sr`` resolves each destination's MAC one at a time, minutes for a /24. On-link, the
frames go to the Ethernet broadcast address, so the reply's source MAC names the guest;
through a router a reply only says the address is alive. Importing scapy costs ~1.5 s: it
is imported on first use (``load``), on the sweep's own thread or in the child process.

Each sweep's socket takes only the answers it waits for (a kernel filter compiled by
libpcap): a packet socket otherwise gets every frame on the interface for the whole wait
(our own requests, the other sweep's, whatever else the bridge carries), each read and
dissected in Python. Without libpcap the sweep still runs, unfiltered.
"""

from __future__ import annotations

import argparse
import functools
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from catkeeper.backend.ipscan.netinfo import SweepTarget
from catkeeper.backend.ipscan.results import SWEEP_ARP, SWEEP_ICMP, SourceResult
from catkeeper.model import IpSighting

log = logging.getLogger(__name__)


BROADCAST = "ff:ff:ff:ff:ff:ff"
ARP_REPLIES = "arp[6:2] = 2"  # opcode 2: is-at


def echo_replies(ident: int) -> str:
    """Echo replies to our requests only (a concurrent sweep uses another id)."""
    return f"icmp[icmptype] = icmp-echoreply and icmp[4:2] = {ident}"


_scapy_lock = threading.Lock()
scapy_import_s: float | None = None  # how long the import took in this process, once done


@functools.cache
def load() -> Any:
    """The scapy names we use, imported once (~1.5 s), quietly."""
    global scapy_import_s
    with _scapy_lock:
        t0 = time.perf_counter()
        # scapy logs warnings (no IPv6 route, ...) to stderr at import: keep them off the TUI.
        logging.getLogger("scapy").setLevel(logging.ERROR)
        from scapy.config import conf
        from scapy.error import Scapy_Exception
        from scapy.layers.inet import ICMP, IP
        from scapy.layers.l2 import ARP, Ether, getmacbyip
        from scapy.sendrecv import srp

        conf.verb = 0
        scapy_import_s = round(time.perf_counter() - t0, 3)
        return argparse.Namespace(
            conf=conf,
            ICMP=ICMP,
            IP=IP,
            ARP=ARP,
            Ether=Ether,
            srp=srp,
            getmacbyip=getmacbyip,
            Scapy_Exception=Scapy_Exception,
        )


def _srp(s: Any, packets: Any, iface: str | None, timeout: float, bpf: str) -> Any:
    """``srp`` with the kernel filter ``bpf``, or without when it cannot be compiled."""
    try:
        answered, _ = s.srp(packets, iface=iface, timeout=timeout, verbose=0, filter=bpf)
    except s.Scapy_Exception as exc:
        if "filter" not in str(exc):
            raise
        log.info("sweep of %s unfiltered (%s): every frame is read", iface, exc)
        answered, _ = s.srp(packets, iface=iface, timeout=timeout, verbose=0)
    return answered


def _prefix(target: SweepTarget) -> int:
    return int(target.subnet.rsplit("/", 1)[1])


def arp_sweep(
    host: str,
    target: SweepTarget,
    timeout: float = 1.0,
    clock: Callable[[], float] = time.time,
) -> SourceResult:
    """ARP who-has for every address of an on-link subnet, in one ``srp``."""
    started, t0 = clock(), time.perf_counter()
    try:
        s = load()
        t0 = time.perf_counter()  # the import is not the sweep
        own = set(target.own)
        answered = _srp(
            s,
            s.Ether(dst=BROADCAST) / s.ARP(pdst=target.subnet),
            target.iface,
            timeout,
            ARP_REPLIES,
        )
        seen_at = clock()
        sightings = tuple(
            IpSighting(
                mac=str(reply.hwsrc).lower(),
                ip=str(reply.psrc),
                prefix=_prefix(target),
                source=SWEEP_ARP,
                seen_at=seen_at,
            )
            for _sent, reply in answered
            if str(reply.psrc) not in own
        )
        error = None
    except Exception as exc:  # a sweep failure is a result, never a crash
        sightings, error = (), f"{type(exc).__name__}: {exc}"
    return SourceResult(
        host=host,
        source=SWEEP_ARP,
        scope=target.subnet,
        sightings=sightings,
        error=error,
        started_at=started,
        elapsed_s=round(time.perf_counter() - t0, 3),
        privileged=True,
        note=f"via {target.iface}",
    )


def icmp_sweep(
    host: str,
    target: SweepTarget,
    timeout: float = 1.0,
    clock: Callable[[], float] = time.time,
) -> SourceResult:
    """ICMP echo to every address, sent at layer 2 (see the module docstring for why)."""
    started, t0 = clock(), time.perf_counter()
    sightings: tuple[IpSighting, ...] = ()
    alive: tuple[str, ...] = ()
    note = f"via {target.iface}"
    try:
        s = load()
        t0 = time.perf_counter()
        if target.onlink:
            dst_mac = BROADCAST
        else:
            gateway_mac = s.getmacbyip(target.gateway) if target.gateway else None
            if not gateway_mac:
                raise RuntimeError(f"no MAC for the router {target.gateway}")
            dst_mac = str(gateway_mac)
            note += f", routed via {target.gateway}: MACs unknown"
        addresses = target.addresses()
        # A random id keeps concurrent sweeps from taking each other's replies.
        ident = random.randrange(1, 0xFFFF)
        echo = s.ICMP(type=8, id=ident, seq=1)
        answered = _srp(
            s,
            s.Ether(dst=dst_mac) / s.IP(dst=addresses) / echo,
            target.iface,
            timeout,
            echo_replies(ident),
        )
        seen_at = clock()
        if target.onlink:
            sightings = tuple(
                IpSighting(
                    mac=str(reply[s.Ether].src).lower(),
                    ip=str(reply[s.IP].src),
                    prefix=_prefix(target),
                    source=SWEEP_ICMP,
                    seen_at=seen_at,
                )
                for _sent, reply in answered
            )
        else:
            alive = tuple(sorted({str(reply[s.IP].src) for _sent, reply in answered}))
        error = None
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    return SourceResult(
        host=host,
        source=SWEEP_ICMP,
        scope=target.subnet,
        sightings=sightings,
        error=error,
        started_at=started,
        elapsed_s=round(time.perf_counter() - t0, 3),
        privileged=True,
        note=note,
        alive=alive,
    )
