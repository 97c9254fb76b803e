"""The sweeps' kernel filters, compiled and run by libpcap itself on frames scapy builds.

A sweep's packet socket takes only the answers it waits for (scapy_sweep.py): these check
that the filters let exactly those through: not our own requests, not another sweep's
replies. No packet is sent; the netns tests (test_ipscan_netns.py) sweep for real with them.
"""

from __future__ import annotations

import ctypes
from typing import Any

import pytest

from catkeeper.backend.ipscan.scapy_sweep import ARP_REPLIES, echo_replies, load

DLT_EN10MB = 1  # Ethernet, the link type of the interfaces we sweep
GUEST_MAC, OUR_MAC = "52:54:00:00:00:07", "52:54:00:00:00:01"
GUEST_IP, OUR_IP = "198.18.5.7", "198.18.5.1"


@pytest.fixture(scope="module")
def scapy() -> Any:
    return load()


def passes(expr: str, frame: Any) -> bool:
    from scapy.arch.common import compile_filter, free_filter
    from scapy.libs.structures import bpf_program
    from scapy.libs.winpcapy import _lib, pcap_pkthdr

    run = _lib.pcap_offline_filter  # scapy declares it for Windows only
    run.restype = ctypes.c_int
    run.argtypes = [
        ctypes.POINTER(bpf_program),
        ctypes.POINTER(pcap_pkthdr),
        ctypes.c_char_p,
    ]
    program = compile_filter(expr, linktype=DLT_EN10MB)
    try:
        raw = bytes(frame)
        header = pcap_pkthdr()
        header.caplen = header.len = len(raw)
        return bool(run(ctypes.byref(program), ctypes.byref(header), raw))
    finally:
        free_filter(program)


def test_arp_filter_takes_replies_only(scapy: Any) -> None:
    request = scapy.Ether(src=OUR_MAC, dst="ff:ff:ff:ff:ff:ff") / scapy.ARP(
        op=1, hwsrc=OUR_MAC, psrc=OUR_IP, pdst=GUEST_IP
    )
    reply = scapy.Ether(src=GUEST_MAC, dst=OUR_MAC) / scapy.ARP(
        op=2, hwsrc=GUEST_MAC, psrc=GUEST_IP, hwdst=OUR_MAC, pdst=OUR_IP
    )
    ping = scapy.Ether(src=GUEST_MAC, dst=OUR_MAC) / scapy.IP(src=GUEST_IP, dst=OUR_IP)
    assert passes(ARP_REPLIES, reply)
    assert not passes(ARP_REPLIES, request)
    assert not passes(ARP_REPLIES, ping / scapy.ICMP(type=0))


def test_echo_filter_takes_replies_to_our_id_only(scapy: Any) -> None:
    def echo(kind: int, ident: int, src: str = GUEST_IP, options: bool = False) -> Any:
        from scapy.layers.inet import IPOption

        ip = scapy.IP(src=src, dst=OUR_IP, options=[IPOption(b"\x01" * 4)] if options else [])
        return scapy.Ether(src=GUEST_MAC, dst=OUR_MAC) / ip / scapy.ICMP(type=kind, id=ident)

    ours = echo_replies(4242)
    assert passes(ours, echo(0, 4242))
    assert passes(ours, echo(0, 4242, options=True))  # a longer IP header moves the ICMP
    assert not passes(ours, echo(0, 4243))  # another sweep's
    assert not passes(ours, echo(8, 4242))  # a request, ours or not
    unreachable = scapy.Ether() / scapy.IP(src=GUEST_IP, dst=OUR_IP) / scapy.ICMP(type=3, code=1)
    assert not passes(ours, unreachable)
