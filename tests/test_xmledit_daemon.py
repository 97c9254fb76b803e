"""Editing a VM's XML against a real libvirtd: libvirt's own validation decides, and a
refused edit leaves the definition exactly as it was."""

from __future__ import annotations

import libvirt
import pytest

from catkeeper.backend import audit
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.reservations import metadata
from catkeeper.backend.vm import xmledit
from catkeeper.backend.vm.xmledit import XmlEditError
from catkeeper.model import Reservation
from tests.vmops_support import (
    HOST,
    Lab,
    fleet_fixture,  # noqa: F401 - the fleet fixture
    inactive_xml,
    lab_fixture,  # noqa: F401 - the lab fixture
    vm_of,
)

pytestmark = pytest.mark.daemon


async def test_invalid_edit_is_refused_with_libvirts_message_and_changes_nothing(
    fleet: Fleet, lab: Lab
) -> None:
    dom = lab.domain(memory_mib=64)
    vm = await vm_of(fleet, dom)
    original = await xmledit.get_xml(fleet, vm)
    assert original == inactive_xml(dom)

    # Well-formed, but not a valid domain: only libvirt's schema check catches it.
    bad = original.replace("<vcpu placement='static'>1</vcpu>", "<vcpu>one</vcpu>")
    assert bad != original
    with pytest.raises(XmlEditError) as info:
        await xmledit.apply_xml(fleet, vm, bad, base=original)
    message = str(info.value)
    assert message.startswith(f"apply the edited XML of {HOST}/{dom.name()}: ")
    assert "failed to validate against schema" in message
    assert inactive_xml(dom) == original

    # Not even XML: refused before libvirt is asked, with the place of the error.
    with pytest.raises(XmlEditError, match="not well-formed at line 3"):
        await xmledit.apply_xml(
            fleet, vm, "<domain>\n<name>x</name>\n<oops></domain>", base=original
        )
    assert inactive_xml(dom) == original


async def test_valid_edit_applies_and_the_diff_shows_it(fleet: Fleet, lab: Lab) -> None:
    dom = lab.domain(memory_mib=64)
    vm = await vm_of(fleet, dom)
    original = await xmledit.get_xml(fleet, vm)
    edited = original.replace(
        "<vcpu placement='static'>1</vcpu>", "<vcpu placement='static'>2</vcpu>"
    )
    text = xmledit.diff(original, edited, vm.ref)
    assert "-  <vcpu placement='static'>1</vcpu>" in text
    assert "+  <vcpu placement='static'>2</vcpu>" in text
    assert xmledit.diff(original, original) == ""

    applied = await xmledit.apply_xml(fleet, vm, edited, base=original)
    assert applied.changed and not applied.running
    assert applied.after == edited
    # After it the edit was recorded in the audit ring; nothing else changed.
    assert audit.without_ring(inactive_xml(dom)) == audit.without_ring(edited)
    assert [e.action for e in await audit.read(fleet, vm)][:1] == ["edit-xml"]
    assert dom.info()[3] == 2
    assert fleet.session(HOST).vms[vm.uuid].vcpus == 2


async def test_a_change_recorded_while_editing_is_kept_not_a_refusal(
    fleet: Fleet, lab: Lab
) -> None:
    """Someone's action recorded in the audit ring after the editor opened (every start or
    reservation write adds an entry) does not refuse the edit, and stays in the ring."""
    dom = lab.domain(memory_mib=64)
    vm = await vm_of(fleet, dom)
    original = await xmledit.get_xml(fleet, vm)
    await audit.record(fleet, vm, "start", "by someone else, meanwhile")
    edited = original.replace(
        "<vcpu placement='static'>1</vcpu>", "<vcpu placement='static'>2</vcpu>"
    )
    applied = await xmledit.apply_xml(fleet, vm, edited, base=original)
    assert applied.changed and dom.info()[3] == 2
    actions = [(e.action, e.detail) for e in await audit.read(fleet, vm)]
    assert actions[1] == ("start", "by someone else, meanwhile")
    assert actions[0][0] == "edit-xml"


async def test_name_uuid_and_reservation_are_not_edited_here(fleet: Fleet, lab: Lab) -> None:
    dom = lab.domain()
    dom.setMetadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT,
        metadata.to_string(Reservation(owner="bob", note="mine", revision=1)),
        metadata.PREFIX,
        metadata.NAMESPACE,
        libvirt.VIR_DOMAIN_AFFECT_CONFIG,
    )
    vm = await vm_of(fleet, dom)
    original = await xmledit.get_xml(fleet, vm)
    uuid_line = f"<uuid>{vm.uuid}</uuid>"
    cases = {
        "use rename": original.replace(f"<name>{dom.name()}</name>", "<name>ckt-other</name>"),
        "UUID changed": original.replace(
            uuid_line, "<uuid>11111111-2222-3333-4444-555555555555</uuid>"
        ),
        "reservation": original.replace("<catkeeper:owner>bob<", "<catkeeper:owner>eve<"),
    }
    for expected, edited in cases.items():
        assert edited != original, expected
        with pytest.raises(XmlEditError, match=expected):
            await xmledit.apply_xml(fleet, vm, edited, base=original)
        assert inactive_xml(dom) == original

    # A deleted UUID is put back rather than refused: the VM keeps its identity.
    edited = original.replace(uuid_line, "").replace(
        "<vcpu placement='static'>1<", "<vcpu placement='static'>3<"
    )
    applied = await xmledit.apply_xml(fleet, vm, edited, base=original)
    assert dom.UUIDString() == vm.uuid and dom.info()[3] == 3
    assert uuid_line in applied.after


async def test_edit_is_refused_when_someone_else_changed_the_definition_meanwhile(
    fleet: Fleet, lab: Lab
) -> None:
    dom = lab.domain(start=True)
    vm = await vm_of(fleet, dom)
    original = await xmledit.get_xml(fleet, vm)
    # Someone else changes it between our read and our apply.
    lab.conn.defineXML(
        original.replace("<vcpu placement='static'>1<", "<vcpu placement='static'>2<")
    )
    theirs = inactive_xml(dom)
    mine = original.replace("<on_crash>destroy</on_crash>", "<on_crash>restart</on_crash>")
    with pytest.raises(XmlEditError, match="changed since you opened it"):
        await xmledit.apply_xml(fleet, vm, mine, base=original)
    assert inactive_xml(dom) == theirs

    # Applying to a running VM changes the next boot's definition and says so.
    applied = await xmledit.apply_xml(
        fleet, vm, theirs.replace("<on_crash>destroy<", "<on_crash>restart<"), base=theirs
    )
    assert applied.running
    assert "<on_crash>restart</on_crash>" in inactive_xml(dom)
    assert "<on_crash>destroy</on_crash>" in dom.XMLDesc(0)
