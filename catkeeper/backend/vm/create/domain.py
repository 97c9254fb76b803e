"""The libvirt domain XML of a new VM, built from its ``CreateSpec``.

Kept apart from the steps so the definition can be read (and tested) as one piece of text.
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from catkeeper.backend.vm.create.spec import CreateSpec


def _graphics_xml(spec: CreateSpec) -> str:
    if spec.graphics == "none":
        return ""
    listen = quoteattr(spec.vnc_listen)
    return (
        f"<graphics type='vnc' autoport='yes' listen={listen}>"
        f"<listen type='address' address={listen}/></graphics>"
    )


def _interface_xml(spec: CreateSpec) -> str:
    if spec.network == "none":
        return ""
    if spec.network == "user":
        return "<interface type='user'><model type='virtio'/></interface>"
    kind, name = spec.network.split(":", 1)
    return (
        f"<interface type='{kind}'><source {kind}={quoteattr(name)}/>"
        "<model type='virtio'/></interface>"
    )


def domain_xml(
    spec: CreateSpec,
    *,
    uuid: str,
    domain_type: str,
    disk: str,
    disk_format: str = "qcow2",
    cdrom: str | None = None,
    boot_cdrom: bool = False,
    metadata: str | None = None,
) -> str:
    """The persistent definition of a new VM."""
    machine = f" machine={quoteattr(spec.machine)}" if spec.machine else ""
    cd_bus = "sata" if spec.machine and "q35" in spec.machine else "ide"
    cd_dev = "sda" if cd_bus == "sata" else "hdc"
    boots = ("<boot dev='cdrom'/>" if boot_cdrom else "") + "<boot dev='hd'/>"
    devices = [
        f"<disk type='file' device='disk'><driver name='qemu' type={quoteattr(disk_format)}/>"
        f"<source file={quoteattr(disk)}/><target dev='vda' bus='virtio'/></disk>"
    ]
    if cdrom is not None:
        devices.append(
            "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>"
            f"<source file={quoteattr(cdrom)}/><target dev='{cd_dev}' bus='{cd_bus}'/>"
            "<readonly/></disk>"
        )
    devices += [
        _interface_xml(spec),
        _graphics_xml(spec),
        "<serial type='pty'/><console type='pty'/>",
        "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>",
    ]
    meta = f"<metadata>{metadata}</metadata>" if metadata else ""
    body = "\n    ".join(d for d in devices if d)
    return f"""<domain type='{domain_type}'>
  <name>{escape(spec.name)}</name>
  <uuid>{uuid}</uuid>
  {meta}
  <memory unit='MiB'>{spec.memory_mib}</memory>
  <vcpu>{spec.vcpus}</vcpu>
  <os><type arch='x86_64'{machine}>hvm</type>{boots}</os>
  <features><acpi/><apic/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    {body}
  </devices>
</domain>
"""
