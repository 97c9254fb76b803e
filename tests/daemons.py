"""Real daemons for tests: the system libvirtd, a private sshd, and a latency relay.

Project rule: tests drive real parts on loopback, never mocks. Everything here ends only
processes the test suite itself started, by PID (checked against the process start time, so
a recycled PID is never hit).

Sharing libvirtd between concurrent pytest sessions (several people work on one machine):
every session holds a shared flock on ``/run/catkeeper-tests/libvirtd.users`` while it uses
the daemon, and one on ``libvirtd.keep`` until it is done with it; the PIDs of a
libvirtd/virtlogd started by a test session are recorded in
``/run/catkeeper-tests/libvirtd.json``. The last session out (the one that gets both locks
exclusively) removes leaked ``ckt-`` domains, ends the recorded daemons and puts back the
``qemu.conf`` the suite edited. A libvirtd the suite did not start (a developer's own service)
is reused and never ended, and its configuration is not touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import libvirt

URI = "qemu:///system"
LIBVIRT_SOCKET = Path("/run/libvirt/libvirt-sock")
LIBVIRTD_PIDFILE = Path("/run/libvirtd.pid")
VIRTLOGD_PIDFILE = Path("/run/virtlogd.pid")
QEMU_CONF = Path("/etc/libvirt/qemu.conf")
STATE_DIR = Path("/run/catkeeper-tests")
QEMU_CONF_SAVED = STATE_DIR / "qemu.conf.orig"  # as it was before the suite first edited it
DOMAIN_PREFIX = "ckt-"
SSHD = "/usr/sbin/sshd"  # sshd re-executes itself per connection, so it needs an absolute path


class DaemonError(RuntimeError):
    """A daemon could not be started, stopped or reached."""


class DaemonNotOwnedError(DaemonError):
    """The operation would end a daemon the test suite did not start."""


class DaemonBusyError(DaemonError):
    """Another test session is using the daemon, so it cannot be restarted under it."""


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class Proc:
    """A process identified by PID *and* start time, so a recycled PID is never signalled."""

    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> Proc | None:
        stat = _stat(pid)
        return None if stat is None or stat[0] == "Z" else cls(pid, stat[1])

    def alive(self) -> bool:
        stat = _stat(self.pid)
        return stat is not None and stat[0] != "Z" and stat[1] == self.start

    def exe_name(self) -> str:
        try:
            return os.path.basename(os.readlink(f"/proc/{self.pid}/exe")).split(" ")[0]
        except OSError:
            return ""

    def terminate(self, timeout: float = 15.0) -> None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; no-op if it is already gone."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if not self.alive():
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            deadline = time.monotonic() + wait
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.02)
        if self.alive():
            raise DaemonError(f"pid {self.pid} survived SIGKILL")


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, start time in clock ticks, ppid) from /proc/PID/stat, or None."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = data[data.rindex(")") + 2 :].split()
    return rest[0], int(rest[19]), int(rest[1])


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            children.setdefault(stat[2], []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _read_pidfile(path: Path, exe: str) -> Proc | None:
    try:
        proc = Proc.of(int(path.read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return None
    return proc if proc is not None and proc.exe_name() == exe else None


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (callers retry on a lost race)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _flock(path: Path, mode: int, timeout: float) -> Iterator[IO[str]]:
    """Hold an flock on ``path`` (polling, because flock itself has no timeout)."""
    f = open(path, "a+")  # noqa: SIM115 - closed below; closing is what releases the lock
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    msg = f"timed out after {timeout:.0f} s waiting for {path}"
                    raise DaemonError(msg) from None
                time.sleep(0.05)
        yield f
    finally:
        f.close()


# --------------------------------------------------------------------------- libvirtd


def libvirtd_answers(timeout: float = 5.0) -> bool:
    """True if the system libvirtd answers an RPC within ``timeout``.

    virsh in a subprocess rather than libvirt.open here: a wedged daemon can block a libvirt
    call forever, and a subprocess can be killed.
    """
    if not LIBVIRT_SOCKET.exists():
        return False
    try:
        r = subprocess.run(
            ["virsh", "-c", URI, "version"], capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0


def ensure_qemu_runs_as_root(conf: Path = QEMU_CONF, saved: Path | None = None) -> bool:
    """Put ``user = "root"`` / ``group = "root"`` in qemu.conf; True if the file changed.

    Without them libvirtd re-probes /dev/kvm access on every call and ``define`` takes ~40 s.
    Other active ``user``/``group`` lines are commented out (libvirt would take the last one,
    but two conflicting lines mislead the next reader). The original goes to ``saved``
    (unless a copy is there already) for ``restore_qemu_conf``.
    """
    text = conf.read_text()
    active = {
        key: re.findall(rf'^\s*{key}\s*=\s*"([^"]*)"', text, flags=re.M)
        for key in ("user", "group")
    }
    if all(v == ["root"] for v in active.values()):
        return False
    lines = [
        f"# {line}  # disabled by catkeeper tests"
        if re.match(r"^\s*(user|group)\s*=", line)
        else line
        for line in text.splitlines()
    ]
    lines += [
        "# catkeeper tests: run guests as root (no KVM re-probing)",
        'user = "root"',
        'group = "root"',
        "",
    ]
    if saved is not None and not saved.exists():
        shutil.copy2(conf, saved)
    tmp = conf.with_name(conf.name + ".catkeeper-tmp")
    tmp.write_text("\n".join(lines))
    os.chmod(tmp, conf.stat().st_mode & 0o7777)
    os.replace(tmp, conf)
    return True


def restore_qemu_conf(conf: Path = QEMU_CONF, saved: Path | None = None) -> bool:
    """Put back the qemu.conf that ``ensure_qemu_runs_as_root`` saved; True if it did."""
    saved = saved or QEMU_CONF_SAVED
    if not saved.exists():
        return False
    tmp = conf.with_name(conf.name + ".catkeeper-tmp")
    shutil.copy2(saved, tmp)
    os.replace(tmp, conf)
    saved.unlink()
    return True


def _load_state() -> dict[str, Proc]:
    """Daemons a test session started and that are still the same processes."""
    try:
        raw = json.loads((STATE_DIR / "libvirtd.json").read_text())
    except (OSError, ValueError):
        return {}
    procs = {name: Proc(int(v["pid"]), int(v["start"])) for name, v in raw.items() if v}
    return {name: p for name, p in procs.items() if p.alive()}


def _save_state(procs: Mapping[str, Proc]) -> None:
    path = STATE_DIR / "libvirtd.json"
    if not procs:
        path.unlink(missing_ok=True)
        return
    path.write_text(json.dumps({n: {"pid": p.pid, "start": p.start} for n, p in procs.items()}))


@dataclass
class LibvirtDaemon:
    """The system libvirtd as the test session sees it.

    ``started``: this session started it. ``owned``: a catkeeper test session (this one or a
    concurrent one) started it, so ``restart()`` may end it. ``libvirtd``/``virtlogd``: the
    processes the suite started (None when reused from elsewhere).
    """

    uri: str = URI
    started: bool = False
    owned: bool = False
    libvirtd: Proc | None = None
    virtlogd: Proc | None = None
    start_seconds: float = 0.0
    log_path: Path = STATE_DIR / "libvirtd.log"
    _users: IO[str] | None = field(default=None, repr=False)
    _keep: IO[str] | None = field(default=None, repr=False)

    def open(self) -> libvirt.virConnect:
        import libvirt

        return libvirt.open(self.uri)

    def restart(self, timeout: float = 60.0, busy_timeout: float = 1800.0) -> float:
        """End our libvirtd by PID, start it again, return seconds until it answered.

        Running guests survive (libvirtd reconnects to them); open connections and domain
        handles do not: reopen them.

        Choices: a daemon the suite did not start is never killed (end only what we started):
        ``DaemonNotOwnedError``. Restarting under a concurrent test session would break its
        connections mid-test, so this waits until this session is the only one using the
        daemon (up to ``busy_timeout``, then ``DaemonBusyError``). While it waits it stops
        counting as a user (it holds no connection that must survive), so two sessions that
        both want to restart take turns instead of waiting for each other; its ``keep`` lock
        stops the other session, should it finish meanwhile, from ending the daemon.
        """
        if self._users is None:
            raise DaemonNotOwnedError("this handle was stopped; refusing to restart libvirtd")
        users = self._users
        mutex = STATE_DIR / "libvirtd.mutex"
        deadline = time.monotonic() + busy_timeout
        with _flock(mutex, fcntl.LOCK_EX, timeout=120):
            fcntl.flock(users, fcntl.LOCK_UN)
        # Every change of our users lock happens under the mutex, and we never leave the mutex
        # holding it exclusively: sessions that take the mutex and then a shared lock never wait.
        try:
            while True:
                with _flock(mutex, fcntl.LOCK_EX, timeout=120):
                    # Re-read: another session may have restarted it since we looked.
                    ours = _load_state().get("libvirtd")
                    if ours is None:
                        raise DaemonNotOwnedError(
                            "libvirtd was not started by the test suite; refusing to kill it"
                        )
                    if self._try_exclusive():
                        try:
                            ours.terminate(timeout=30)
                            t0 = time.monotonic()
                            self.libvirtd = _start_libvirtd(self.log_path, timeout)
                            _save_state({**_load_state(), "libvirtd": self.libvirtd})
                            return time.monotonic() - t0
                        finally:
                            fcntl.flock(users, fcntl.LOCK_SH)
                if time.monotonic() > deadline:
                    raise DaemonBusyError(
                        f"another test session kept using libvirtd for {busy_timeout:.0f} s"
                    )
                time.sleep(0.2)
        except BaseException:
            with _flock(mutex, fcntl.LOCK_EX, timeout=120):
                fcntl.flock(users, fcntl.LOCK_SH)  # a user again (taking it twice is harmless)
            raise

    def _try_exclusive(self) -> bool:
        """Take the users lock exclusively if no other session uses the daemon.

        Caller holds the mutex and holds no lock on the users file.
        """
        assert self._users is not None
        try:
            fcntl.flock(self._users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def stop(self) -> None:
        """Leave; the last test session out ends the daemons the suite started."""
        if self._users is None:
            return
        with _flock(STATE_DIR / "libvirtd.mutex", fcntl.LOCK_EX, timeout=120):
            for held in (self._users, self._keep):
                if held is not None:
                    held.close()  # drops our shared lock
            self._users = self._keep = None
            try:
                with (
                    _flock(STATE_DIR / "libvirtd.users", fcntl.LOCK_EX, timeout=0),
                    _flock(STATE_DIR / "libvirtd.keep", fcntl.LOCK_EX, timeout=0),
                ):
                    last = True
            except DaemonError:
                last = False  # another session still uses the daemon; it will clean up
            if not last:
                return
            _sweep_test_domains(self.uri)
            state = _load_state()
            for name in ("libvirtd", "virtlogd"):  # libvirtd first: it talks to virtlogd
                if (proc := state.get(name)) is not None:
                    proc.terminate()
            _save_state({})
            restore_qemu_conf()


def _sweep_test_domains(uri: str) -> None:
    """Destroy and undefine leaked ``ckt-`` domains (a crashed test skipped its cleanup)."""
    if not libvirtd_answers():
        return
    import libvirt

    with contextlib.closing(libvirt.open(uri)) as conn:
        for dom in conn.listAllDomains():
            if dom.name().startswith(DOMAIN_PREFIX):
                _remove_domain(dom)


def _start_libvirtd(log_path: Path, timeout: float) -> Proc:
    """Run ``libvirtd -d`` and wait until it answers; the caller holds the mutex."""
    env = dict(os.environ, LIBVIRT_LOG_OUTPUTS=f"3:file:{log_path}")
    out = STATE_DIR / "libvirtd.out"
    # Output to a file, not a pipe: the daemonized child could keep a pipe open forever.
    with open(out, "w") as f:
        r = subprocess.run(
            ["libvirtd", "-d"],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=timeout,
            check=False,
        )
    deadline = time.monotonic() + timeout
    proc = None
    while time.monotonic() < deadline:
        proc = proc or _read_pidfile(LIBVIRTD_PIDFILE, "libvirtd")
        if proc is not None and libvirtd_answers(timeout=max(1.0, deadline - time.monotonic())):
            return proc
        if r.returncode != 0 or (proc is not None and not proc.alive()):
            break
        time.sleep(0.1)
    if proc is not None:
        proc.terminate()  # we started it and nobody will record it: do not leak it
    raise DaemonError(
        f"libvirtd did not come up (libvirtd -d exited {r.returncode}; waited up to "
        f"{timeout:.0f} s for an answer)\n"
        f"--- {out}:\n{_tail(out)}\n--- {log_path}:\n{_tail(log_path)}"
    )


def _start_virtlogd(log_path: Path) -> Proc | None:
    """Start virtlogd unless one runs; return it only if we started it."""
    if _read_pidfile(VIRTLOGD_PIDFILE, "virtlogd") is not None:
        return None
    env = dict(os.environ, LIBVIRT_LOG_OUTPUTS=f"3:file:{log_path}")
    r = subprocess.run(
        ["virtlogd", "-d"], capture_output=True, text=True, env=env, timeout=30, check=False
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (proc := _read_pidfile(VIRTLOGD_PIDFILE, "virtlogd")) is not None:
            return proc
        time.sleep(0.05)
    raise DaemonError(
        f"virtlogd did not start (exit {r.returncode}): {r.stderr.strip()}\n{_tail(log_path)}"
    )


def ensure_libvirtd(timeout: float = 60.0) -> LibvirtDaemon:
    """Make sure a real system libvirtd answers on /run/libvirt/libvirt-sock.

    Reuses a daemon that already answers; otherwise fixes qemu.conf, starts virtlogd (if
    needed) and libvirtd, and waits (first start ~10 s). Call ``stop()`` when done.
    """
    for tool in ("libvirtd", "virtlogd", "virsh"):
        if shutil.which(tool) is None:
            raise DaemonError(f"{tool} not found (apt-get install libvirt-daemon-system)")
    STATE_DIR.mkdir(mode=0o700, exist_ok=True)
    daemon = LibvirtDaemon()
    new_virtlogd: Proc | None = None
    with _flock(STATE_DIR / "libvirtd.mutex", fcntl.LOCK_EX, timeout=timeout + 60):
        users = open(STATE_DIR / "libvirtd.users", "a+")  # noqa: SIM115 - held until stop()
        fcntl.flock(users, fcntl.LOCK_SH)  # never blocks: exclusive holders hold the mutex too
        keep = open(STATE_DIR / "libvirtd.keep", "a+")  # noqa: SIM115 - held until stop()
        fcntl.flock(keep, fcntl.LOCK_SH)  # never blocks: a last one out holds it under the mutex
        daemon._users, daemon._keep = users, keep
        try:
            state = _load_state()
            if libvirtd_answers():
                daemon.libvirtd, daemon.virtlogd = state.get("libvirtd"), state.get("virtlogd")
                daemon.owned = daemon.libvirtd is not None
                return daemon
            if (ours := state.pop("libvirtd", None)) is not None:
                ours.terminate()  # a test session started it and it stopped answering
            elif (other := _read_pidfile(LIBVIRTD_PIDFILE, "libvirtd")) is not None:
                raise DaemonError(
                    f"libvirtd pid {other.pid} (not started by the tests) "
                    "runs but does not answer; not touching it"
                )
            t0 = time.monotonic()
            ensure_qemu_runs_as_root(saved=QEMU_CONF_SAVED)
            daemon.log_path.unlink(missing_ok=True)
            daemon.virtlogd = state.get("virtlogd")
            if daemon.virtlogd is None:
                daemon.virtlogd = new_virtlogd = _start_virtlogd(STATE_DIR / "virtlogd.log")
            daemon.libvirtd = _start_libvirtd(daemon.log_path, timeout)
            daemon.started = daemon.owned = True
            daemon.start_seconds = time.monotonic() - t0
            _save_state(
                {
                    k: v
                    for k, v in (("libvirtd", daemon.libvirtd), ("virtlogd", daemon.virtlogd))
                    if v
                }
            )
            return daemon
        except BaseException:
            if new_virtlogd is not None:
                new_virtlogd.terminate()
            users.close()
            keep.close()
            daemon._users = daemon._keep = None
            raise


# --------------------------------------------------------------------------- domains


def tcg_domain_xml(
    name: str,
    *,
    vnc: bool = True,
    uuid: str | None = None,
    mac: str | None = None,
    nic: bool = True,
    memory_mib: int = 64,
) -> str:
    """A tiny diskless TCG domain: starts in ~0.5 s and does nothing (no OS, so ACPI shutdown
    is ignored, which suits escalation tests).

    The NIC is ``type='user'`` (qemu's slirp): no libvirt network and no host bridge needed,
    and no packet leaves qemu. Its option ROM is disabled so the guest needs no iPXE images and
    does not PXE-boot. ``mac`` None lets libvirt pick one (52:54:00:…).
    """
    uuid_xml = f"<uuid>{uuid}</uuid>" if uuid else ""
    devices = ["<controller type='usb' model='none'/>", "<memballoon model='none'/>"]
    if vnc:
        devices.append("<graphics type='vnc' autoport='yes' listen='127.0.0.1'/>")
    if nic:
        mac_xml = f"<mac address='{mac}'/>" if mac else ""
        devices.append(
            f"<interface type='user'>{mac_xml}<model type='e1000'/><rom enabled='no'/></interface>"
        )
    dev = "\n    ".join(devices)
    return f"""<domain type='qemu'>
  <name>{name}</name>
  {uuid_xml}
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    {dev}
  </devices>
</domain>
"""


def unique_domain_name(prefix: str = DOMAIN_PREFIX) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


def _remove_domain(dom: libvirt.virDomain) -> None:
    """Destroy (if running) and undefine with everything attached; tolerate it being gone."""
    import libvirt

    with contextlib.suppress(libvirt.libvirtError):
        if dom.isActive():
            dom.destroy()
    flags = (
        libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
        | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    )
    with contextlib.suppress(libvirt.libvirtError):
        dom.undefineFlags(flags)


@contextlib.contextmanager
def temp_domain(
    conn: libvirt.virConnect, *, start: bool = False, name: str | None = None, **xml: Any
) -> Iterator[libvirt.virDomain]:
    """Define a uniquely named (``ckt-…``) TCG domain, optionally start it; on exit destroy
    and undefine it, even if the test already did part of that."""
    dom = conn.defineXML(tcg_domain_xml(name or unique_domain_name(), **xml))
    try:
        if start:
            dom.create()
        yield dom
    finally:
        _remove_domain(dom)


class DomainFactory:
    """Makes ``ckt-`` TCG domains on demand and removes them all in ``close()``.

    Teardown runs in parallel threads: on these machines each destroy takes ~1.3 s, because
    PID 1 reaps orphaned qemu processes only every second or two and libvirt waits for the
    PID to vanish.
    """

    def __init__(self, daemon: LibvirtDaemon) -> None:
        self._daemon = daemon
        self._conn: libvirt.virConnect | None = None
        self.domains: list[libvirt.virDomain] = []

    @property
    def conn(self) -> libvirt.virConnect:
        if self._conn is None:
            self._conn = self._daemon.open()
        return self._conn

    def __call__(
        self, *, start: bool = False, name: str | None = None, **xml: Any
    ) -> libvirt.virDomain:
        dom = self.conn.defineXML(tcg_domain_xml(name or unique_domain_name(), **xml))
        self.domains.append(dom)
        if start:
            dom.create()
        return dom

    def close(self) -> None:
        if self._conn is None:
            return
        # Domain handles die with a restarted daemon: look them up again by UUID.
        import libvirt

        with contextlib.closing(self._daemon.open()) as conn:
            doms = []
            for d in self.domains:
                with contextlib.suppress(libvirt.libvirtError):
                    doms.append(conn.lookupByUUIDString(d.UUIDString()))
            threads = [threading.Thread(target=_remove_domain, args=(d,)) for d in doms]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        with contextlib.suppress(libvirt.libvirtError):
            self._conn.close()
        self._conn = None
        self.domains.clear()


def vnc_port(dom: libvirt.virDomain) -> int:
    """The VNC port of a running domain (autoport fills it in at start)."""
    graphics = ET.fromstring(dom.XMLDesc()).find("devices/graphics[@type='vnc']")
    if graphics is None or int(graphics.get("port", "-1")) <= 0:
        raise DaemonError(f"{dom.name()} has no live VNC port")
    return int(graphics.get("port", "-1"))


def rfb_banner(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> bytes:
    """The 12-byte RFB protocol version a VNC server sends first (b'RFB 003.008\\n')."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        data = b""
        while len(data) < 12 and (chunk := s.recv(12 - len(data))):
            data += chunk
        return data


# --------------------------------------------------------------------------- sshd


def stop_sshd_tree(proc: subprocess.Popen[bytes]) -> None:
    """End an sshd we started and every per-connection child it forked.

    Those children call setsid(), so a process-group kill misses them: collect the
    listener's descendants (all started by us) before ending it.
    """
    procs = [p for pid in [proc.pid, *_descendants(proc.pid)] if (p := Proc.of(pid)) is not None]
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    for p in procs:
        p.terminate(timeout=2)


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )


class SshServer:
    """A private sshd on 127.0.0.1 (foreground child, so we own its PID), root by key only.

    Files live in ``dir``: host key, client key (``client_key``, authorized for root),
    ``known_hosts`` with ``[127.0.0.1]:PORT ssh-ed25519 …``, and a VERBOSE log (``log_path``)
    that tests read to count connections, authentications and sessions.
    """

    def __init__(
        self, directory: Path | None = None, extra_config: Mapping[str, str] | None = None
    ) -> None:
        self._own_dir = directory is None
        self.dir = Path(tempfile.mkdtemp(prefix="ckt-sshd-")) if directory is None else directory
        self.extra_config = dict(extra_config or {})
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.client_key = self.dir / "id_ed25519"
        self.authorized_keys = self.dir / "authorized_keys"
        self.known_hosts = self.dir / "known_hosts"
        self.config_path = self.dir / "sshd_config"
        self.log_path = self.dir / "sshd.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host_key_line(self) -> str:
        """``ssh-ed25519 AAAA…`` (no comment), for known_hosts files."""
        return " ".join(self.host_key.with_suffix(".pub").read_text().split()[:2])

    def _write_config(self) -> None:
        opts = {
            "Port": str(self.port),
            "ListenAddress": "127.0.0.1",
            "HostKey": str(self.host_key),
            "PidFile": str(self.dir / "sshd.pid"),
            "AuthorizedKeysFile": str(self.authorized_keys),
            "PermitRootLogin": "prohibit-password",
            "PubkeyAuthentication": "yes",
            "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no",
            "StrictModes": "no",  # the tmp dir's modes are not sshd's business here
            "UsePAM": "no",
            "LogLevel": "VERBOSE",  # logs "Starting session" per channel: tests count them
            "AllowTcpForwarding": "yes",
            "AllowStreamLocalForwarding": "yes",  # forward_local_path to libvirt-sock
            "PrintMotd": "no",
            "Subsystem": "sftp internal-sftp",
        } | self.extra_config
        self.config_path.write_text("".join(f"{k} {v}\n" for k, v in opts.items()))

    def start(self, timeout: float = 10.0) -> SshServer:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        if not self.host_key.exists():
            _keygen(self.host_key, "catkeeper-test-host")
            _keygen(self.client_key, "catkeeper-test-client")
            self.authorized_keys.write_text(self.client_key.with_suffix(".pub").read_text())
        for _attempt in range(3):  # another process may grab the free port first
            self.port = free_port()
            self._write_config()
            self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {self.host_key_line}\n")
            self.log_path.write_text("")
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-f", str(self.config_path), "-E", str(self.log_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                # Wait for the log line rather than probing the port: a probe would show up
                # in the log as a connection and skew the counts tests make.
                if f"Server listening on 127.0.0.1 port {self.port}" in self.log():
                    return self
                if self.proc.poll() is not None:
                    break
                time.sleep(0.01)
            self._end()
            if "Address already in use" not in self.log():
                break
        raise DaemonError(f"sshd did not start on port {self.port}:\n{_tail(self.log_path)}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def count(self, needle: str) -> int:
        """Occurrences of ``needle`` in the log, e.g. ``"Accepted publickey"``."""
        return self.log().count(needle)

    def connections(self) -> int:
        return self.count("Connection from 127.0.0.1")

    def authentications(self) -> int:
        return self.count("Accepted publickey for root")

    def sessions(self) -> int:
        """Exec/shell/subsystem channels opened (port forwards are not sessions)."""
        return self.count("Starting session:")

    def _end(self) -> None:
        if self.proc is None:
            return
        stop_sshd_tree(self.proc)
        self.proc = None

    def stop(self) -> None:
        self._end()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SshServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- relay


class DelayRelay:
    """A TCP relay on 127.0.0.1 in front of ``target``, adding latency or hanging.

    Each chunk is held ``delay`` seconds in each direction before it is forwarded (so a round
    trip gains at least 2x delay), pipelined: chunks in flight do not queue behind each
    other's delay, like a long link rather than a slow one. ``blackhole = True`` makes it
    behave like a hung host: connections are still accepted but nothing is forwarded either
    way (held, not dropped, so turning it off lets them resume). The kernel here has no
    sch_netem, so this is how tests get latency. It runs its own event loop in a thread so
    sync and async tests can use it alike.
    """

    CHUNK = 65536

    def __init__(
        self,
        target_port: int,
        *,
        delay: float = 0.0,
        target_host: str = "127.0.0.1",
        blackhole: bool = False,
    ) -> None:
        self.target = (target_host, target_port)
        self.delay = delay  # read per chunk: may be changed while running
        self.port = 0
        self._blackhole = blackhole
        self._loop = asyncio.new_event_loop()
        self._flowing = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread: threading.Thread | None = None
        self.accepted = 0  # connections accepted so far

    @property
    def blackhole(self) -> bool:
        return self._blackhole

    @blackhole.setter
    def blackhole(self, on: bool) -> None:
        self._blackhole = on
        self._loop.call_soon_threadsafe(self._flowing.clear if on else self._flowing.set)

    def start(self, timeout: float = 5.0) -> DelayRelay:
        ready = threading.Event()

        async def serve() -> None:
            if not self._blackhole:
                self._flowing.set()
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"DelayRelay->{self.target}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise DaemonError("relay did not start")
        return self

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(cw)
        self.accepted += 1
        tw: asyncio.StreamWriter | None = None
        try:
            await self._flowing.wait()  # a hung host: accepted, then silence
            tr, tw = await asyncio.open_connection(*self.target)
            self._writers.add(tw)
            pipes = [
                asyncio.ensure_future(self._pipe(cr, tw)),
                asyncio.ensure_future(self._pipe(tr, cw)),
            ]
            try:
                # One side failing (a reset) ends the connection: no orphaned pipe tasks.
                await asyncio.wait(pipes, return_when=asyncio.FIRST_EXCEPTION)
            finally:
                for p in pipes:
                    p.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        except OSError:
            pass
        finally:
            self._tasks.discard(task)
            for w in (cw, tw):
                if w is not None:
                    self._writers.discard(w)
                    w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - self._loop.time()))
                await self._flowing.wait()
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(send())
        try:
            while True:
                data = await reader.read(self.CHUNK)
                queue.put_nowait((self._loop.time() + self.delay, data))
                if not data or sender.done():
                    break
            await sender
        finally:
            sender.cancel()

    def close_connections(self) -> None:
        """Abort every relayed connection (a host that crashed or rebooted)."""

        def abort() -> None:
            for w in list(self._writers):
                w.transport.abort()

        self._loop.call_soon_threadsafe(abort)

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.transport.abort()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await asyncio.sleep(0)  # let aborted transports run connection_lost
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise DaemonError("relay thread did not stop")
        self._loop.close()
        self._thread = None

    def __enter__(self) -> DelayRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
