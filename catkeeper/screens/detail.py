"""``enter`` on a row: everything about one VM, live, and its domain XML on ``x``.

Guest addresses are listed as every source reported them (agent, lease, sweeps, …) with
their age, and addresses or MACs that look claimed twice are flagged, never hidden."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import ClassVar

from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import Worker, WorkerState

from catkeeper.backend.ipscan.book import MAC_ON_TWO_HOSTS, IpConflict
from catkeeper.backend.ipscan.results import normalize_mac
from catkeeper.backend.stale import Staleness
from catkeeper.model import VM, Host, IpSighting, VmState
from catkeeper.screens.messages import FleetUpdated, StopProgressed, WorkerFailed
from catkeeper.widgets import format as fmt
from catkeeper.widgets.audit_view import AuditHistory
from catkeeper.widgets.stats_cells import STALE_MARK
from catkeeper.widgets.stats_plots import Source as StatsSource
from catkeeper.widgets.stats_plots import StatsPlots

XmlFetcher = Callable[[VM], Awaitable[str]]
SightingsOf = Callable[[str], Sequence[IpSighting]]  # MAC → every source's sightings
Conflicts = Callable[[], Sequence[IpConflict]]


def _section(title: str, body: RenderableType) -> Group:
    return Group(Text(title, style="bold underline"), body, Text(""))


def _grid() -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", min_width=12)
    table.add_column(overflow="fold")
    return table


def _mine(conflict: IpConflict, vm: VM, macs: set[str]) -> bool:
    if conflict.kind == MAC_ON_TWO_HOSTS:
        return conflict.key in macs
    if conflict.host is not None and conflict.host != vm.host:
        return False  # the same private address on another host's network is no clash
    return any(claim.split(" ", 1)[0] in macs for claim in conflict.claims)


def addresses_table(
    vm: VM, sightings: Sequence[IpSighting], conflicts: Sequence[IpConflict], now: float
) -> RenderableType:
    """Every address of the VM, per source, with its age; conflicts flagged in red."""
    macs = {m for nic in vm.nics if (m := normalize_mac(nic.mac))}
    mine = [c for c in conflicts if _mine(c, vm, macs)]
    clashing = {c.key for c in mine}
    if not sightings and not mine:
        return Text("none seen yet (i looks now, I scans the host)", "dim")
    table = Table(box=None, padding=(0, 2), show_edge=False, header_style="bold")
    for col in ("IP", "MAC", "SOURCE", "SEEN"):
        table.add_column(col)
    for s in sightings:
        ip = f"{s.ip}/{s.prefix}" if s.prefix is not None else s.ip
        flagged = s.ip in clashing or s.mac in clashing
        table.add_row(
            Text(ip, style="bold red" if flagged else ""),
            s.mac,
            s.source,
            f"{fmt.duration(now - s.seen_at)} ago",
        )
    if not mine:
        return table
    warn = Text()
    for c in mine:
        if c.kind == MAC_ON_TWO_HOSTS:
            warn.append(f"! MAC {c.key} is on VMs of two hosts: {', '.join(c.claims)}\n", "red")
        else:
            where = f" on {c.host}" if c.host else ""
            warn.append(f"! {c.key} is claimed by two MACs{where}: {', '.join(c.claims)}\n", "red")
    warn.rstrip()
    return Group(table, warn) if sightings else warn


def last_used(staleness: Staleness | None, vm: VM, now: float) -> Text | None:
    """The reservation's "Last used" line: the evidence, marked when it counts as stale."""
    if staleness is None or vm.reservation is None:
        return None
    text = Text(staleness.evidence(vm, now).text(lambda t: fmt.moment(t, now)))
    if staleness.stale(vm, now):
        after = fmt.duration(staleness.settings.stale_after)
        text.append(f"  {STALE_MARK} stale: unused for {after} or more", "yellow")
    return text


def describe_vm(
    vm: VM,
    host: Host | None,
    history: Sequence[tuple[float, VmState]],
    now: float,
    stage: str | None = None,
    sightings: Sequence[IpSighting] | None = None,
    conflicts: Sequence[IpConflict] = (),
    last_used: Text | None = None,
) -> Group:
    """The detail page as one renderable (pure: easy to test and to snapshot).

    ``sightings``: every source's sightings of the VM's MACs (default: the freshest per
    address, as the VM carries them)."""
    ident = _grid()
    ident.add_row("Name", vm.name)
    ident.add_row("UUID", vm.uuid)
    if vm.title:
        ident.add_row("Title", vm.title)
    host_line = Text(vm.host)
    if host is not None:
        host_line.append(f"  {host.state.value}", "dim")
        host_line.append(f"  {host.uri}", "dim")
    ident.add_row("Host", host_line)
    state = Text(vm.state.value, style=fmt.STATE_COLOURS.get(vm.state, ""))
    if vm.stale:
        state.append("  (stale: host unreachable, last known state)", "italic dim")
    if stage:
        state.append(f"  {stage}", "bold yellow")
    ident.add_row("State", state)
    ident.add_row("vCPUs", str(vm.vcpus))
    mem = fmt.memory(vm.memory_kib)
    if vm.max_memory_kib != vm.memory_kib:
        mem += f" (max {fmt.memory(vm.max_memory_kib)})"
    ident.add_row("Memory", mem)
    ident.add_row("Autostart", "yes" if vm.autostart else "no")
    ident.add_row("Persistent", "yes" if vm.persistent else "no (transient)")
    if vm.description:
        ident.add_row("Description", vm.description)

    res = _grid()
    r = vm.reservation
    if r is None:
        res.add_row("Reserved", "no")
    else:
        res.add_row("Owner", r.owner)
        if r.note:
            res.add_row("Note", r.note)
        if r.since is not None:
            since = fmt.moment(r.since, now)
            res.add_row("Since", f"{since} ({fmt.duration(now - r.since)} ago)")
        until = fmt.until(r, now)
        if r.until is not None:
            until = f"{fmt.moment(r.until, now)} ({until})"
        res.add_row("Until", Text(until, style="red" if r.is_expired(now) else ""))
        if r.contact:
            res.add_row("Contact", r.contact)
        res.add_row("Revision", str(r.revision))
        if last_used is not None:  # stale-reservation evidence (backend/stale.py)
            res.add_row("Last used", last_used)

    hist = _grid()
    for at, st in history:
        hist.add_row(fmt.moment(at, now), Text(st.value, style=fmt.STATE_COLOURS.get(st, "")))
    if not history:
        hist.add_row("-", "no changes seen yet")

    nics = Table(box=None, padding=(0, 2), show_edge=False, header_style="bold")
    for col in ("MAC", "TYPE", "SOURCE", "MODEL", "TARGET", "IPS"):
        nics.add_column(col)
    for nic in vm.nics:
        seen = list(dict.fromkeys(s.ip for s in vm.ips if s.mac.lower() == nic.mac.lower()))
        nics.add_row(
            nic.mac,
            nic.type,
            nic.source or "-",
            nic.model or "-",
            nic.target or "-",
            "\n".join(seen) or "-",
        )

    gfx = _grid()
    for g in vm.graphics:
        where = g.socket or f"{g.listen or '*'}:{g.port if g.port is not None else 'auto'}"
        pw = {True: "password set", False: "no password", None: "password unknown"}[g.has_password]
        gfx.add_row(g.type, f"{where}  {'autoport  ' if g.autoport else ''}{pw}")
    if not vm.graphics:
        gfx.add_row("-", "no graphical console")

    disks = Table(box=None, padding=(0, 2), show_edge=False, header_style="bold")
    for col in ("TARGET", "DEVICE", "BUS", "FORMAT", "SOURCE"):
        disks.add_column(col)
    for d in vm.disks:
        disks.add_row(d.target, d.device, d.bus or "-", d.format or "-", d.source or "-")

    return Group(
        _section("VM", ident),
        _section("Reservation", res),
        _section("State history (since catkeeper started)", hist),
        _section("Network interfaces", nics if vm.nics else Text("none")),
        _section(
            "Addresses (every source, newest first)",
            addresses_table(vm, vm.ips if sightings is None else sightings, conflicts, now),
        ),
        _section("Graphics", gfx),
        _section("Disks", disks if vm.disks else Text("none")),
    )


class DetailScreen(Screen[None]):
    DEFAULT_CSS = """
    DetailScreen > #title { height: 1; background: $panel; padding: 0 1; text-style: bold; }
    DetailScreen > VerticalScroll { padding: 0 1; }
    DetailScreen #xml { display: none; }
    DetailScreen.-xml #xml { display: block; }
    DetailScreen.-xml #info { display: none; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("x", "toggle_xml", "Domain XML"),
    ]  # ^s (snapshots) and the VM actions are the command table's: app bindings

    def __init__(
        self,
        key: str,
        vm: VM,
        *,
        host: Host | None,
        history: Callable[[], Sequence[tuple[float, VmState]]],
        fetch_xml: XmlFetcher,
        clock: fmt.Clock = time.time,
        sightings: SightingsOf | None = None,
        conflicts: Conflicts | None = None,
        stats: StatsSource | None = None,
        staleness: Staleness | None = None,
        audit: AuditHistory | None = None,
    ) -> None:
        super().__init__()
        self.audit = audit  # the "History" section, below the rest
        self._stats = stats
        self._staleness = staleness
        self.key = key
        self.vm = vm
        self.host = host
        self.history = history  # read at each render: it grows as events arrive
        self._fetch_xml = fetch_xml
        self._clock = clock
        self._sightings = sightings
        self._conflicts = conflicts
        self._stage: str | None = None
        self._xml_worker: Worker[None] | None = None
        self._xml_loaded = False

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # Worker.StateChanged does not bubble: hand it to the app's one error router.
        if event.state is WorkerState.ERROR and event.worker.error is not None:
            self.post_message(WorkerFailed(event.worker.error, event.worker.name))

    def compose(self) -> ComposeResult:
        yield Static(id="title")
        with VerticalScroll(id="body"):
            yield StatsPlots(self._stats, self.vm.host, self.vm.uuid, id="plots")
            yield Static(id="info")
            if self.audit is not None:
                yield self.audit
            yield Static("fetching the domain XML…", id="xml")
        yield Footer()

    def on_mount(self) -> None:
        self.render_vm()

    def selected_vms(self) -> list[VM]:
        return [self.vm]

    def render_vm(self) -> None:
        title = Text()
        title.append(self.vm.ref, "bold")
        title.append(f"  {self.vm.state.value}", fmt.STATE_COLOURS.get(self.vm.state, ""))
        if self.vm.stale:
            title.append("  stale", "italic dim")
        self.query_one("#title", Static).update(title)
        seen: list[IpSighting] | None = None
        if self._sightings is not None:
            seen = [s for nic in self.vm.nics for s in self._sightings(nic.mac)]
            seen.sort(key=lambda s: (-s.seen_at, s.ip, s.source))
        conflicts = self._conflicts() if self._conflicts is not None else ()
        now = self._clock()
        used = last_used(self._staleness, self.vm, now)
        body = describe_vm(
            self.vm, self.host, self.history(), now, self._stage, seen, conflicts, used
        )
        self.query_one("#info", Static).update(body)

    def on_fleet_updated(self, message: FleetUpdated) -> None:
        changes = message.changes
        if self.vm.host in changes.hosts:
            self.host = changes.hosts[self.vm.host]
        vm = changes.upserts.get(self.key)
        if vm is not None:
            self.vm = vm
            if self.audit is not None:
                self.audit.reload(vm)  # a change brings its entry
        if self.key in changes.removed:
            self.notify(f"{self.vm.ref} no longer exists", severity="warning")
        if vm is not None or self.vm.host in changes.hosts:
            self.render_vm()
        if self.vm.host in changes.stats:
            self.query_one(StatsPlots).update_stats()
            if self.vm.reservation is not None:  # the evidence may have moved on
                self.render_vm()

    def on_stop_progressed(self, message: StopProgressed) -> None:
        if message.key == self.key:
            self._stage = message.progress.message if message.progress else None
            self.render_vm()

    def action_back(self) -> None:
        self.dismiss(None)

    def action_toggle_xml(self) -> None:
        self.toggle_class("-xml")
        if self.has_class("-xml") and not self._xml_loaded and self._xml_worker is None:
            self._xml_worker = self.run_worker(
                self._load_xml(), name=f"domain XML of {self.vm.ref}", exit_on_error=False
            )

    async def _load_xml(self) -> None:
        try:
            xml = await self._fetch_xml(self.vm)
        except Exception:
            self.query_one("#xml", Static).update(Text("could not fetch the domain XML", "red"))
            raise  # the app's error router tells the user why
        finally:
            self._xml_worker = None
        self._xml_loaded = True
        self.query_one("#xml", Static).update(
            Syntax(xml, "xml", theme="ansi_dark", word_wrap=True, background_color="default")
        )
