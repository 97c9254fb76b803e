"""Write and read back byte patterns in a disk image with ``qemu-io``, strictly.

``qemu-io -c 'read -P 0x11 0 64k'`` exits 1 and prints "Pattern verification failed at
offset 0, 65536 bytes" when the data differs (qemu 7.2), and 0 when it matches; a read of
never-written qcow2 clusters returns zeros, so ``reads_as(path, 0, …)`` checks that a range
is empty. Any other outcome (a locked image, a typo in the command) raises, so a check
cannot pass because qemu-io failed for some other reason.
"""

from __future__ import annotations

import subprocess


def _qemu_io(path: str, command: str) -> subprocess.CompletedProcess[str]:
    fmt = "qcow2" if path.endswith(".qcow2") else "raw"
    return subprocess.run(
        ["qemu-io", "-f", fmt, "-c", command, path],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_pattern(path: str, pattern: int, offset: int, length: int) -> None:
    command = f"write -P {pattern:#x} {offset} {length}"
    r = _qemu_io(path, command)
    if r.returncode != 0 or f"wrote {length}/{length} bytes at offset {offset}" not in r.stdout:
        raise AssertionError(
            f"qemu-io {command!r} on {path}: exit {r.returncode}\n{r.stdout}{r.stderr}"
        )


def reads_as(path: str, pattern: int, offset: int, length: int) -> bool:
    """Whether every byte in the range is ``pattern``."""
    command = f"read -P {pattern:#x} {offset} {length}"
    r = _qemu_io(path, command)
    read = f"read {length}/{length} bytes at offset {offset}" in r.stdout
    if r.returncode == 0 and read and "verification failed" not in r.stdout:
        return True
    if r.returncode == 1 and read and f"Pattern verification failed at offset {offset}" in r.stdout:
        return False
    raise AssertionError(
        f"qemu-io {command!r} on {path}: exit {r.returncode}\n{r.stdout}{r.stderr}"
    )
