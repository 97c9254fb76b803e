"""Create VMs: from a disk image, a cloud image with cloud-init, a network install, or a
blank disk with an ISO. Shared by the create form and ``catkeeper create``.

Everything reaches the host through libvirt (storage volumes for disks, seed images and
installer files, upload streams for their content), so a remote host needs nothing else.

A creation is a list of steps. All the input is checked first, locally (``validate``) and
then against the host (pool, names, source volume, network), before anything is made. Each
step that makes something registers how to undo it; when a later step fails, everything
made so far is removed again and ``CreateError`` says which step failed and what was
removed. Progress goes to a callback as ``CreateProgress``. New volumes go to the spec's
pool, or when it names none, to the image's own pool (else the pool called "default").

Modules: ``spec`` (what to create, checked without the host), ``domain`` (the domain XML),
``preflight`` (checked against the host), ``run`` (progress, errors, undo), ``steps`` (the
creation itself). This package re-exports what callers use.
"""

from __future__ import annotations

from catkeeper.backend.vm.create.domain import domain_xml
from catkeeper.backend.vm.create.run import Created, CreateError, CreateProgress
from catkeeper.backend.vm.create.spec import (
    DEFAULT_BLANK_GIB,
    DEFAULT_POOL,
    GIB,
    MIB,
    SOURCE_KINDS,
    CloudInitSource,
    CreateSpec,
    FieldError,
    ImageSource,
    IsoSource,
    NetInstallSource,
    Source,
    parse_size,
    validate,
)
from catkeeper.backend.vm.create.steps import create_vm

__all__ = [
    "DEFAULT_BLANK_GIB",
    "DEFAULT_POOL",
    "GIB",
    "MIB",
    "SOURCE_KINDS",
    "CloudInitSource",
    "CreateError",
    "CreateProgress",
    "CreateSpec",
    "Created",
    "FieldError",
    "ImageSource",
    "IsoSource",
    "NetInstallSource",
    "Source",
    "create_vm",
    "domain_xml",
    "parse_size",
    "validate",
]
