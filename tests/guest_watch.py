"""Seeing what a reboot or reset did to a real qemu guest.

A TCG guest with no OS ignores the ACPI power button, and libvirt's ``reboot`` of a qemu
guest without an agent *is* the power button (libvirt then resets the guest once it has shut
down: a "fake reboot"). So on such a guest a reboot changes nothing anyone can see.

``acpi_guest_disk`` makes a guest that obeys: a 47-byte boot sector that arms the PIIX4 power
button and, when it is pressed, powers the machine off through ACPI (S5), like an OS would.
With it, measured on libvirt 9.0 / qemu 7.2:

- ``reboot(0)``: qemu reports POWERDOWN (the button), SHUTDOWN guest-shutdown (the guest
  obeyed), RESET host-qmp-system-reset (libvirt's reset) and RESUME; libvirt sends a REBOOT
  event and the domain stays running.
- ``reset(0)``: RESET host-qmp-system-reset and a REBOOT event, with no POWERDOWN.
- ``shutdown()``: POWERDOWN, SHUTDOWN guest-shutdown, and the domain goes shut off.

(SeaBIOS resets the machine once itself while booting: RESET guest-reset. The tests look
for the host-initiated reset only.)

``GuestWatch`` records both kinds of events on a second connection of its own: libvirt's
domain events and qemu's QMP events (``libvirt_qemu.qemuMonitorEventRegister``, what
``virsh qemu-monitor-event`` shows).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import libvirt
import libvirt_qemu  # type: ignore[import-untyped]
import pytest

from catkeeper.backend.eventloop import ensure_event_loop
from tests.daemons import LibvirtDaemon
from tests.vmops_support import Lab

# as --32 (.code16), objcopy -O binary:
#     movl $0x80000B40, %eax ; PCI 00:01.3 (PIIX4 PM), register 0x40: PMBA (PM I/O base)
#     movw $0x0CF8, %dx ; outl %eax, %dx ; movw $0x0CFC, %dx ; inl %dx, %eax
#     andw $0xFFC0, %ax ; movw %ax, %bx
#     leaw 2(%bx), %dx ; movw $0x0100, %ax ; outw %ax, %dx     ; PM1_EN: PWRBTN_EN
#     sti                                                      ; BIOS timer wakes each hlt
# wait: hlt
#     movw %bx, %dx ; inw %dx, %ax ; testw $0x0100, %ax ; jz wait  ; PM1_STS: PWRBTN_STS
#     leaw 4(%bx), %dx ; movw $0x2000, %ax ; outw %ax, %dx     ; PM1_CNT: SLP_EN, S5 (off)
#     jmp wait
# It sleeps in hlt between timer ticks, so it costs the host next to no CPU.
ACPI_GUEST_BOOT_SECTOR = bytes.fromhex(
    "66b8400b0080baf80c66efbafc0c66ed83e0c089c38d5702b80001effbf489daeda9000174f78d5704b80020efebee"
)

# The reason qemu gives for a reset that the host asked for over QMP (system_reset).
HOST_RESET = "host-qmp-system-reset"


def acpi_guest_disk(lab: Lab, name: str = "acpi-guest.img") -> str:
    """A raw disk in the lab's pool that boots the ACPI-obeying boot sector above."""
    path = lab.image(name, size="1M", fmt="raw")
    with open(path, "r+b") as f:
        f.write(ACPI_GUEST_BOOT_SECTOR)
        f.seek(510)
        f.write(b"\x55\xaa")
    return path


# Offsets in the boot sector (loaded at 0x7c00) of the loop that runs once the button is armed.
_ARMED = range(0x7C00 + 0x1B, 0x7C00 + len(ACPI_GUEST_BOOT_SECTOR))
_EIP_RE = re.compile(r"^EIP=([0-9a-f]+)", re.M)
_CS_RE = re.compile(r"^CS =[0-9a-f]+ ([0-9a-f]+)", re.M)


def guest_linear_ip(dom: libvirt.virDomain) -> int:
    """Where the guest's CPU is now (CS base + EIP), from the qemu monitor."""
    out = libvirt_qemu.qemuMonitorCommand(
        dom, "info registers", libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP
    )
    eip, cs = _EIP_RE.search(out), _CS_RE.search(out)
    assert eip and cs, out
    return int(cs.group(1), 16) + int(eip.group(1), 16)


async def wait_armed(dom: libvirt.virDomain, timeout: float = 60.0) -> None:
    """Until the guest runs the boot sector's loop (its power button armed): a button
    pressed while the firmware still boots (~0.1 s here) would be lost."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while True:
        ip = await asyncio.to_thread(guest_linear_ip, dom)
        if ip in _ARMED:
            return
        seen.append(hex(ip))
        if time.monotonic() > deadline:
            raise AssertionError(f"the guest never reached its boot sector: at {seen[-5:]}")
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class Seen:
    at: float  # time.monotonic() when it arrived
    kind: str  # "libvirt" (a domain event) or "qmp" (qemu's own event)
    name: str  # REBOOT / LIFECYCLE, or the QMP event name (RESET, POWERDOWN, ...)
    detail: Any  # LIFECYCLE: (event, detail); QMP: the event's data as a dict


class GuestWatch:
    """Records one domain's libvirt events (REBOOT, LIFECYCLE) and QMP events, in order,
    on a connection of its own (not the fleet's: what it sees is what libvirt sends)."""

    def __init__(self, daemon: LibvirtDaemon, dom: libvirt.virDomain) -> None:
        ensure_event_loop()  # callbacks run on catkeeper's libvirt event thread
        self._lock = threading.Lock()
        self._seen: list[Seen] = []
        self.conn = daemon.open()
        target = self.conn.lookupByUUIDString(dom.UUIDString())
        self._ids = [
            self.conn.domainEventRegisterAny(
                target,
                libvirt.VIR_DOMAIN_EVENT_ID_REBOOT,
                lambda _c, _d, _o: self._add("libvirt", "REBOOT", None),
                None,
            ),
            self.conn.domainEventRegisterAny(
                target,
                libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                lambda _c, _d, event, detail, _o: self._add(
                    "libvirt", "LIFECYCLE", (event, detail)
                ),
                None,
            ),
        ]
        self._qmp_id = libvirt_qemu.qemuMonitorEventRegister(
            self.conn,
            target,
            None,  # every QMP event
            lambda _c, _d, event, _s, _us, details, _o: self._add(
                "qmp", event, json.loads(details) if details else {}
            ),
            None,
            0,
        )

    def _add(self, kind: str, name: str, detail: Any) -> None:
        with self._lock:
            self._seen.append(Seen(time.monotonic(), kind, name, detail))

    def seen(self, since: int = 0) -> list[Seen]:
        with self._lock:
            return list(self._seen[since:])

    def mark(self) -> int:
        """An index for ``seen(since=…)``: what arrives after this call."""
        with self._lock:
            return len(self._seen)

    def names(self, since: int = 0) -> list[str]:
        """Compact history for assertion messages: QMP names, RESET with its reason."""
        out = []
        for s in self.seen(since):
            if s.kind == "qmp" and s.name in ("RESET", "SHUTDOWN"):
                out.append(f"{s.name}({s.detail.get('reason', '?')})")
            elif s.kind == "libvirt" and s.name == "LIFECYCLE":
                out.append(f"LIFECYCLE{s.detail}")
            else:
                out.append(s.name if s.kind == "qmp" else f"libvirt:{s.name}")
        return out

    def in_order(self, *names: str, since: int = 0) -> bool:
        """Whether these ``names()`` entries all came, in this order (others between)."""
        rest = iter(self.names(since))
        return all(name in rest for name in names)

    def host_resets(self, since: int = 0) -> list[Seen]:
        return [
            s
            for s in self.seen(since)
            if s.kind == "qmp" and s.name == "RESET" and s.detail.get("reason") == HOST_RESET
        ]

    def libvirt_reboots(self, since: int = 0) -> list[Seen]:
        return [s for s in self.seen(since) if s.kind == "libvirt" and s.name == "REBOOT"]

    def qmp(self, name: str, since: int = 0) -> list[Seen]:
        return [s for s in self.seen(since) if s.kind == "qmp" and s.name == name]

    async def wait_for(
        self, condition: Callable[[], object], timeout: float = 30.0, what: str = "events"
    ) -> None:
        """Poll ``condition()`` without blocking the event loop; fail naming what came."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:g} s waiting for {what}; seen {self.names()}"
                )
            await asyncio.sleep(0.05)

    def close(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            libvirt_qemu.qemuMonitorEventDeregister(self.conn, self._qmp_id)
        for cb in self._ids:
            with contextlib.suppress(libvirt.libvirtError):
                self.conn.domainEventDeregisterAny(cb)
        with contextlib.suppress(libvirt.libvirtError):
            self.conn.close()


@pytest.fixture(name="guest_watch")
def guest_watch_fixture(
    libvirtd: LibvirtDaemon,
) -> Iterator[Callable[[libvirt.virDomain], GuestWatch]]:
    """``guest_watch(dom)`` starts recording; every watch is closed at the end."""
    watches: list[GuestWatch] = []

    def make(dom: libvirt.virDomain) -> GuestWatch:
        watch = GuestWatch(libvirtd, dom)
        watches.append(watch)
        return watch

    try:
        yield make
    finally:
        for w in watches:
            w.close()
