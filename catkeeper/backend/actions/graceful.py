"""``GracefulStop``: the escalating stop (ACPI, then ctrl-alt-del, then force off) with
progress reports for a countdown. Its progress type lives in the model, because the VM
table shows it and widgets import only the model."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import libvirt

from catkeeper.backend.actions.simple import ActionError, _on_domain, _refresh
from catkeeper.backend.errors import BackendError, describe, error_code
from catkeeper.backend.events import DomainEvent, FleetEvent, VmRemoved
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.host import HostSession
from catkeeper.backend.timeouts import cancel_and_wait, within
from catkeeper.model import VM, Stage, StopProgress, VmState

log = logging.getLogger(__name__)
T = TypeVar("T")

# Linux input keycodes (linux/input-event-codes.h) for VIR_KEYCODE_SET_LINUX.
KEY_LEFTCTRL = 29
KEY_LEFTALT = 56
KEY_DELETE = 111
_CTRL_ALT_DEL = [KEY_LEFTCTRL, KEY_LEFTALT, KEY_DELETE]
_KEY_HOLD_MS = 3  # how long the guest sees the keys held; long enough for any guest

# libvirt error codes meaning "this driver/guest cannot do that at all": graceful stop
# escalates past such a stage instead of giving up.
_UNSUPPORTED = frozenset(
    {
        libvirt.VIR_ERR_NO_SUPPORT,
        libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
        libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
    }
)


class _Outcome(Exception):
    """Internal: ends the escalation with this final progress."""

    def __init__(self, stage: Stage, message: str) -> None:
        super().__init__(message)
        self.stage: Stage = stage
        self.message = message


class GracefulStop:
    """ACPI shutdown → wait → ctrl-alt-del → wait → destroy, stopping as soon as it is off.

    "Off" is seen from lifecycle events and from polling ``state()`` every ``poll`` s,
    whichever comes first: some drivers' events never reach us. A stage the driver or guest
    cannot do at all (unsupported) is reported and skipped. ``cancel()`` stops escalating and
    leaves the VM as it is; ``force()`` skips to destroy. Both may be called at any time,
    from the event loop's thread. ``run()`` raises only before touching libvirt
    (``ReadOnlyError``, ``NotFound`` for an unknown host); every later failure ends in a
    ``"failed"`` progress, which it returns like any final progress.
    """

    def __init__(
        self,
        fleet: Fleet,
        vm: VM,
        *,
        acpi_wait: float,
        ctrl_alt_del_wait: float,
        on_progress: Callable[[StopProgress], None],
        poll: float = 0.5,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fleet = fleet
        # Deadlines are on this clock; the screen that counts them down must use the same one.
        self.monotonic = monotonic
        self.vm = vm
        self.acpi_wait = acpi_wait
        self.ctrl_alt_del_wait = ctrl_alt_del_wait
        self.poll = poll
        self._on_progress = on_progress
        self._wake = asyncio.Event()
        self._stopped = False
        self._cancelled = False
        self._forced = False
        self._started = False
        self._stage: Stage | None = None
        self._began = 0.0
        self.progress: StopProgress | None = None  # the last progress reported

    # The request each stage sends, as static methods so that a subclass can substitute
    # one (the tests do, to meet real "unsupported" errors on the test driver, whose guests
    # otherwise obey ACPI at once).

    @staticmethod
    def acpi_request(dom: Any) -> object:
        return dom.shutdown()

    @staticmethod
    def ctrl_alt_del_request(dom: Any) -> object:
        return dom.sendKey(
            libvirt.VIR_KEYCODE_SET_LINUX, _KEY_HOLD_MS, _CTRL_ALT_DEL, len(_CTRL_ALT_DEL), 0
        )

    # ---- control ---------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop escalating; the VM stays as it is (a request already sent is not undone)."""
        if self.progress is None or not self.progress.final:
            self._cancelled = True
            self._wake.set()

    def force(self) -> None:
        """Skip the remaining waits and force the VM off now."""
        if self.progress is None or not self.progress.final:
            self._forced = True
            self._wake.set()

    # ---- running -----------------------------------------------------------------------

    async def run(self) -> StopProgress:
        if self._started:
            raise RuntimeError("a GracefulStop runs once")
        self._started = True
        session = self.fleet.writable(self.vm.host, f"stop {self.vm.ref}")
        self._began = self.monotonic()
        unsubscribe = self.fleet.subscribe(self._on_fleet_event)
        poller = asyncio.create_task(self._poll_loop(session), name=f"stop-poll-{self.vm.ref}")
        try:
            try:
                await self._escalate(session)
                raise AssertionError("escalation ended without an outcome")  # pragma: no cover
            except _Outcome as outcome:
                final = self._report(outcome.stage, None, outcome.message)
        finally:
            unsubscribe()
            await cancel_and_wait(poller)
        await _refresh(session, self.vm)
        return final

    async def _escalate(self, session: HostSession) -> None:
        """Walks the stages; always ends by raising ``_Outcome``."""
        self._check_cancel("before it began")
        why = ""  # why we are escalating, carried into the next stage's message
        if not self._forced:
            why = await self._stage_call(session, "shut down", self.acpi_request, "ACPI shutdown")
            if not why:
                self._report(
                    "acpi",
                    self.monotonic() + self.acpi_wait,
                    f"asked the guest to shut down (ACPI); ctrl-alt-del in {self.acpi_wait:g} s",
                )
                await self._wait(self.acpi_wait, "after ACPI shutdown")
                why = f"ACPI shutdown ignored for {self.acpi_wait:g} s"
        if not self._forced:
            skipped = await self._stage_call(
                session, "send ctrl-alt-del to", self.ctrl_alt_del_request, "ctrl-alt-del"
            )
            if not skipped:
                self._report(
                    "ctrl-alt-del",
                    self.monotonic() + self.ctrl_alt_del_wait,
                    f"{why}: sent ctrl-alt-del; forcing off in {self.ctrl_alt_del_wait:g} s",
                )
                await self._wait(self.ctrl_alt_del_wait, "after ctrl-alt-del")
                why = f"ctrl-alt-del ignored for {self.ctrl_alt_del_wait:g} s"
            else:
                why = f"{why}; {skipped}"
        if self._forced:
            why = "forced by the user"
        self._report("destroy", None, f"{why}: forcing off")
        try:
            await _on_domain(session, self.vm, "force off", lambda d: d.destroy())
        except ActionError as exc:
            # It may have gone off on its own meanwhile: that is success, not failure.
            if await self._is_off(session):
                self._stopped = True
                self._check_stopped("before it was forced off")
            raise _Outcome("failed", str(exc)) from exc
        except BackendError as exc:
            raise _Outcome("failed", str(exc)) from exc
        raise _Outcome("stopped", f"{self.vm.ref} forced off ({self._elapsed()})")

    async def _stage_call(
        self, session: HostSession, verb: str, fn: Callable[[Any], object], label: str
    ) -> str:
        """Send one stage's request. Returns "" when sent, or why the stage was skipped."""
        self._check_stopped("before " + label)
        self._check_cancel("before " + label)
        try:
            await _on_domain(session, self.vm, verb, fn)
        except ActionError as exc:
            if exc.code in _UNSUPPORTED:
                cause = exc.__cause__
                note = f"{label} not possible ({describe(cause) if cause else exc})"
                log.info("%s: %s", self.vm.ref, note)
                return note
            # e.g. "domain is not running": it may have gone off in the meantime.
            if await self._is_off(session):
                self._stopped = True
                self._check_stopped("before " + label)
            raise _Outcome("failed", str(exc)) from exc
        except BackendError as exc:
            raise _Outcome("failed", str(exc)) from exc
        return ""

    async def _wait(self, seconds: float, after: str) -> None:
        """Until the deadline, or earlier when it stopped / was cancelled / forced."""
        deadline = self.monotonic() + seconds
        while True:
            self._wake.clear()
            self._check_stopped(after)
            self._check_cancel(after)
            remaining = deadline - self.monotonic()
            if self._forced or remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await within(self._wake.wait(), remaining)

    def _check_stopped(self, when: str) -> None:
        if not self._stopped:
            return
        if self._stage is None:  # nothing was sent yet: it was off before we began
            raise _Outcome("stopped", f"{self.vm.ref} was already shut off")
        raise _Outcome("stopped", f"{self.vm.ref} shut off {when} ({self._elapsed()})")

    def _check_cancel(self, when: str) -> None:
        if self._cancelled:
            raise _Outcome("cancelled", f"stop of {self.vm.ref} cancelled {when}; left as it is")

    def _elapsed(self) -> str:
        return f"{self.monotonic() - self._began:.1f} s"

    def _report(self, stage: Stage, deadline: float | None, message: str) -> StopProgress:
        progress = StopProgress(self.vm.ref, stage, deadline, message)
        self._stage = stage
        self.progress = progress
        try:
            self._on_progress(progress)
        except Exception:  # a broken progress display must not leave a VM half-stopped
            log.exception("graceful stop progress callback failed")
        return progress

    # ---- noticing that it is off ----------------------------------------------------------

    def _mark_stopped(self) -> None:
        self._stopped = True
        self._wake.set()

    def _on_fleet_event(self, event: FleetEvent) -> None:
        if isinstance(event, DomainEvent):
            if (
                event.host == self.vm.host
                and event.uuid == self.vm.uuid
                and event.event_id == libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE
                and event.args
                and event.args[0] == libvirt.VIR_DOMAIN_EVENT_STOPPED
            ):
                self._mark_stopped()
        elif (
            isinstance(event, VmRemoved)
            and event.host == self.vm.host
            and event.uuid == self.vm.uuid
        ):
            self._mark_stopped()  # a transient domain vanishes once it is off

    async def _is_off(self, session: HostSession) -> bool:
        def state(dom: Any) -> int:
            return int(dom.state()[0])

        try:
            code = await session.call_domain(self.vm.uuid, state, what=f"polling {self.vm.ref}")
        except libvirt.libvirtError as exc:
            gone: bool = error_code(exc) == libvirt.VIR_ERR_NO_DOMAIN
            return gone  # a transient domain that shut off no longer exists
        except BackendError:
            return False
        # CRASHED with on_crash=preserve is still active and needs the destroy; only SHUTOFF
        # means there is nothing left to stop.
        return VmState.from_libvirt(code) is VmState.SHUTOFF

    async def _poll_loop(self, session: HostSession) -> None:
        while not self._stopped:
            await asyncio.sleep(self.poll)
            # Poll only while waiting: during a stage's own call the answer is moot.
            if self._stage not in ("acpi", "ctrl-alt-del"):
                continue
            try:
                off = await self._is_off(session)
            except Exception as exc:  # e.g. the host's threads shut down on a reconnect
                log.debug("polling %s: %s", self.vm.ref, describe(exc))
                continue
            if off:
                self._mark_stopped()


async def graceful_stop(
    fleet: Fleet, vm: VM, on_progress: Callable[[StopProgress], None] | None = None
) -> StopProgress:
    """A ``GracefulStop`` with the waits from the configuration; returns the final progress."""
    cfg = fleet.config.graceful_stop
    stop = GracefulStop(
        fleet,
        vm,
        acpi_wait=cfg.acpi_wait,
        ctrl_alt_del_wait=cfg.ctrl_alt_del_wait,
        on_progress=on_progress or (lambda _p: None),
    )
    return await stop.run()


async def _stop_action(fleet: Fleet, vm: VM) -> None:
    final = await graceful_stop(fleet, vm)
    if final.stage != "stopped":
        raise ActionError(final.message)
