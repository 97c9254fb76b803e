"""The create-VM form: every field checked by the same ``create.validate`` the CLI uses.

The form only builds a ``CreateSpec``; the caller runs ``create.create_vm`` with it (in a
worker, showing its progress) and, for a network install, keeps a
``netinstall.InstallWatcher``. Nothing the user typed is lost on an error: the form stays
open with the fields as they were and the problems listed under them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from catkeeper.backend.vm import create, netinstall
from catkeeper.backend.vm.create import (
    CloudInitSource,
    CreateSpec,
    ImageSource,
    IsoSource,
    NetInstallSource,
    Source,
)
from catkeeper.screens.placement import BestFit, Place

_KINDS: list[tuple[str, str]] = [
    ("Disk image on the host (overlay)", "image"),
    ("Cloud image + cloud-init", "cloud-init"),
    ("Network install (http repo)", "netinstall"),
    ("Blank disk + installer ISO", "iso"),
]
_SOURCE_LABEL = {
    "image": "Image",
    "cloud-init": "Cloud image",
    "netinstall": "Repo URL",
    "iso": "ISO",
}
_SOURCE_HINT = {
    "image": "/path/on/host or POOL/VOLUME",
    "cloud-init": "/path/on/host or POOL/VOLUME",
    "netinstall": "http://mirror/distribution/leap/15.6/repo/oss/",
    "iso": "/path/on/host or POOL/VOLUME",
}
# Rows shown only for some sources: (row id, kinds).
_ONLY_FOR = {
    "row-copy": ("image",),
    "row-keys": ("cloud-init",),
    "row-user": ("cloud-init",),
    "row-distro": ("netinstall",),
    "row-auto": ("netinstall",),
    "row-args": ("netinstall",),
}
# Which input shows an error for which CreateSpec field.
_FIELD_INPUT = {
    "host": "host",
    "name": "name",
    "vcpus": "vcpus",
    "memory_mib": "memory",
    "disk_gib": "disk",
    "pool": "pool",
    "network": "network",
    "source.image": "source",
    "source.iso": "source",
    "source.url": "source",
    "source.ssh_keys": "keys",
    "source.user": "user",
    "source.distro": "distro",
    "source.autoinstall": "auto",
    "source.extra_args": "args",
}


class CreateFormScreen(ModalScreen[CreateSpec | None]):
    """``ctrl+s`` (or the Create button) checks and returns the spec; ``esc`` cancels."""

    DEFAULT_CSS = """
    CreateFormScreen { align: center middle; }
    CreateFormScreen > Vertical {
        width: 90; max-width: 100%; height: auto; max-height: 100%;
        border: thick $accent; background: $surface; padding: 0 1;
    }
    CreateFormScreen #title { text-style: bold; width: 100%; margin: 0 0 1 0; }
    CreateFormScreen VerticalScroll { height: auto; max-height: 70vh; }
    CreateFormScreen .row { height: 1; }
    CreateFormScreen .row Label { width: 14; }
    CreateFormScreen .row Input, CreateFormScreen .row Select { width: 1fr; }
    CreateFormScreen .invalid { background: $error 30%; }
    CreateFormScreen #errors { color: $error; height: auto; width: 100%; }
    CreateFormScreen #buttons { height: auto; align-horizontal: right; margin: 1 0 0 0; }
    CreateFormScreen Button { margin: 0 0 0 2; min-width: 10; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "submit", "Create"),
    ]

    def __init__(
        self,
        hosts: Sequence[str],
        *,
        host: str | None = None,
        ssh_keys: Sequence[str] = (),
        pool: str = "",
        network: str = "network:default",
        memory: str = "2G",
        vcpus: int = 2,
        place: Place | None = None,
        host_chosen: bool = False,
    ) -> None:
        """``place``: ranks the hosts for the memory and vCPUs typed; the host field follows
        its best fit until the user picks a host (``host_chosen``: ``host`` is picked)."""
        super().__init__()
        self.hosts = list(hosts)
        self.default_host = host if host in self.hosts else (self.hosts[0] if self.hosts else None)
        self.default_memory, self.default_vcpus = memory, vcpus
        self._place = place
        self._auto_host = None if host_chosen else self.default_host  # None: the user's choice
        self.default_keys = list(ssh_keys)
        self.default_pool = pool
        self.default_network = network
        self.errors: list[create.FieldError] = []

    # ---- layout ---------------------------------------------------------------------

    def _row(self, label: str, widget: Input | Select[str] | Checkbox, row_id: str) -> Horizontal:
        return Horizontal(Label(label), widget, classes="row", id=row_id)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Create a VM", id="title")
            with VerticalScroll():
                yield self._row(
                    "Host",
                    Select(
                        [(h, h) for h in self.hosts],
                        value=self.default_host if self.default_host else Select.NULL,
                        allow_blank=self.default_host is None,
                        id="host",
                        compact=True,
                    ),
                    "row-host",
                )
                yield self._row(
                    "Name", Input(placeholder="e.g. web-07", id="name", compact=True), "row-name"
                )
                yield self._row(
                    "vCPUs",
                    Input(str(self.default_vcpus), id="vcpus", type="integer", compact=True),
                    "row-vcpus",
                )
                yield self._row(
                    "Memory", Input(self.default_memory, id="memory", compact=True), "row-memory"
                )
                if self._place is not None:
                    yield BestFit(self._place, self.hosts, id="best-fit")
                yield self._row(
                    "Disk size",
                    Input(placeholder="image size / 20G", id="disk", compact=True),
                    "row-disk",
                )
                yield self._row(
                    "Pool",
                    Input(
                        self.default_pool,
                        placeholder="the image's pool, else default",
                        id="pool",
                        compact=True,
                    ),
                    "row-pool",
                )
                yield self._row(
                    "Network",
                    Input(self.default_network, placeholder="network:NAME, bridge:NAME, user, none",
                          id="network", compact=True),
                    "row-network",
                )  # fmt: skip
                yield self._row(
                    "Graphics",
                    Select(
                        [("VNC on 127.0.0.1", "vnc"), ("None (serial console)", "none")],
                        value="vnc",
                        allow_blank=False,
                        id="graphics",
                        compact=True,
                    ),
                    "row-graphics",
                )
                yield self._row(
                    "Source",
                    Select(_KINDS, value="image", allow_blank=False, id="kind", compact=True),
                    "row-kind",
                )
                yield self._row(
                    "Image",
                    Input(placeholder=_SOURCE_HINT["image"], id="source", compact=True),
                    "row-source",
                )
                yield self._row(
                    "Full copy",
                    Checkbox(
                        "copy the image instead of an overlay", False, id="copy", compact=True
                    ),
                    "row-copy",
                )
                yield self._row(
                    "SSH key",
                    Input(
                        self.default_keys[0] if self.default_keys else "",
                        placeholder="ssh-ed25519 AAAA… you@host",
                        id="keys",
                        compact=True,
                    ),
                    "row-keys",
                )
                yield self._row(
                    "User",
                    Input(placeholder="(the image's default user)", id="user", compact=True),
                    "row-user",
                )
                yield self._row(
                    "Distro",
                    Select(
                        [("detect from the repo", "auto")] + [(d, d) for d in netinstall.DISTROS],
                        value="auto",
                        allow_blank=False,
                        id="distro",
                        compact=True,
                    ),
                    "row-distro",
                )
                yield self._row(
                    "Autoinstall",
                    Input(
                        placeholder="AutoYaST / kickstart / preseed URL", id="auto", compact=True
                    ),
                    "row-auto",
                )
                yield self._row(
                    "Kernel args",
                    Input(placeholder="e.g. console=ttyS0", id="args", compact=True),
                    "row-args",
                )
            yield Static("", id="errors")
            with Horizontal(id="buttons"):
                yield Button("Cancel (esc)", id="cancel", variant="default")
                yield Button("Create (ctrl+s)", id="create", variant="primary")

    def on_mount(self) -> None:
        self._show_kind("image")
        self.query_one("#name", Input).focus()
        self._propose()

    # ---- the best host for the size typed -------------------------------------------------

    def _propose(self) -> None:
        for hint in self.query(BestFit):
            hint.propose(self._text("memory"), self._text("vcpus"))

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id in ("memory", "vcpus"):
            self._propose()

    def on_best_fit_proposed(self, message: BestFit.Proposed) -> None:
        select = self.query_one("#host", Select)
        if message.host is not None and self._auto_host is not None:
            self._auto_host = message.host
            select.value = message.host

    # ---- source kind ------------------------------------------------------------------

    def _kind(self) -> str:
        value = self.query_one("#kind", Select).value
        return value if isinstance(value, str) else "image"

    def _show_kind(self, kind: str) -> None:
        for row_id, kinds in _ONLY_FOR.items():
            self.query_one(f"#{row_id}").display = kind in kinds
        self.query_one("#row-source Label", Label).update(_SOURCE_LABEL[kind])
        self.query_one("#source", Input).placeholder = _SOURCE_HINT[kind]

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "host" and event.value != self._auto_host:
            self._auto_host = None  # the user picked a host: proposals no longer move it
        if event.select.id == "kind":
            self._show_kind(self._kind())

    # ---- reading the form ----------------------------------------------------------------

    def _text(self, widget_id: str) -> str:
        return self.query_one(f"#{widget_id}", Input).value.strip()

    def _source(self) -> Source:
        kind, where = self._kind(), self._text("source")
        if kind == "cloud-init":
            keys = tuple(k for k in self._text("keys").split("\n") if k.strip())
            return CloudInitSource(where, ssh_keys=keys, user=self._text("user") or None)
        if kind == "netinstall":
            distro = self.query_one("#distro", Select).value
            return NetInstallSource(
                where,
                distro=distro if isinstance(distro, str) and distro != "auto" else None,
                autoinstall=self._text("auto") or None,
                extra_args=self._text("args"),
            )
        if kind == "iso":
            return IsoSource(where)
        return ImageSource(where, copy=self.query_one("#copy", Checkbox).value)

    def read_spec(self) -> tuple[CreateSpec | None, list[create.FieldError]]:
        """The spec the form describes and its problems (spec None if it cannot be built)."""
        errors: list[create.FieldError] = []
        host = self.query_one("#host", Select).value
        graphics = self.query_one("#graphics", Select).value
        try:
            vcpus = int(self._text("vcpus") or "0")
        except ValueError:
            vcpus = 0
        memory_mib = 0
        try:
            memory_mib = create.parse_size(self._text("memory") or "0", "M") // create.MIB
        except ValueError as exc:
            errors.append(create.FieldError("memory_mib", str(exc)))
        disk_gib: float | None = None
        if self._text("disk"):
            try:
                disk_gib = create.parse_size(self._text("disk"), "G") / create.GIB
            except ValueError as exc:
                errors.append(create.FieldError("disk_gib", str(exc)))
        spec = CreateSpec(
            host=host if isinstance(host, str) else "",
            name=self._text("name"),
            source=self._source(),
            vcpus=vcpus,
            memory_mib=memory_mib,
            disk_gib=disk_gib,
            pool=self._text("pool") or None,  # None: the image's pool (CreateSpec)
            network=self._text("network"),
            graphics=graphics if isinstance(graphics, str) else "vnc",
        )
        seen = {e.field for e in errors}
        errors += [e for e in create.validate(spec) if e.field not in seen]
        return spec, errors

    def _show_errors(self, errors: list[create.FieldError]) -> None:
        self.errors = errors
        bad = {_FIELD_INPUT.get(e.field, "") for e in errors}
        for widget_id in set(_FIELD_INPUT.values()):
            self.query_one(f"#{widget_id}").set_class(widget_id in bad, "invalid")
        self.query_one("#errors", Static).update("\n".join(f"• {e.message}" for e in errors))
        if errors:
            first = _FIELD_INPUT.get(errors[0].field)
            if first:
                self.query_one(f"#{first}").focus()

    # ---- actions ------------------------------------------------------------------------

    def action_submit(self) -> None:
        spec, errors = self.read_spec()
        self._show_errors(errors)
        if spec is not None and not errors:
            self.dismiss(spec)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "create":
            self.action_submit()
        else:
            self.action_cancel()
