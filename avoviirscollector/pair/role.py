"""The pair role of this host, as keepalived last said it: ``$VIIRS_BASE/run/pair.role``.

The file is one JSON object, written atomically (a temp file in ``run/``, then one rename), so a reader sees a
whole one or none::

    {"role": "MASTER", "since": "2026-12-03T14:31:58.123456Z", "previous": "BACKUP", "priority": 100,
     "boot_id": "5b0c...", "note": ""}

``role`` is keepalived's state of the instance: MASTER (this host holds ``PAIR_ADDRESS``: the active), BACKUP (the
standby), FAULT (the interface is down or the witness cannot be reached: holds nothing), STOP (keepalived stopped,
or ended without a word, see below). ``since`` is when this host learnt it (UTC); ``boot_id`` the kernel's boot id
then, so a file left from before a reboot is told apart (:meth:`Role.active`). Only MASTER of this boot is active.

keepalived runs ``avoviirscollector pair notify`` (:class:`Notifier`) as its notify FIFO script: it reads one line a
change of state, in order, writes the file and logs one line in ``$VIIRS_BASE/log/pair.log``. keepalived killed
with SIGKILL says nothing and leaves its address on the interface; the reader then sees its parent gone (the
kernel sends it the SIGTERM keepalived asked for at its death), writes STOP with a note and, given ``--release``,
deletes the address itself, so this host does not answer for it while the other host takes it over.

While keepalived runs, the reader touches the file every :data:`HEARTBEAT_SECONDS`. A file untouched for
:data:`STALE_SECONDS` is no word from keepalived (:attr:`RoleWatch.stale`): MASTER in it then makes nobody active.
That is keepalived's container killed whole (``docker kill``: SIGKILL to its first process takes every process of
the container with it, the reader too): nobody says STOP and the address stays on the interface until the
container starts again (keepalived, starting as BACKUP, takes it off; measured by tests/e2e/test_pair_container_e2e.py),
and this host's task_broker must not go on serving beside the other host's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from avoviirscollector import isotime
from avoviirscollector.log_format import line_formatter

ROLE_FILE = Path("run") / "pair.role"
LOG_FILE = Path("log") / "pair.log"
STATES = ("MASTER", "BACKUP", "FAULT", "STOP", "DELETED")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
#: after keepalived's SIGTERM, the reader goes on reading this long for the lines keepalived sends as it stops
DRAIN_SECONDS = 1.0
#: once keepalived (the reader's parent) is gone, what it wrote before is read for this long
GONE_SECONDS = 0.2
#: while keepalived runs, its reader touches the role file this often ...
HEARTBEAT_SECONDS = 1.0
#: ... and a role file untouched this long is no word from keepalived: MASTER in it makes nobody active
STALE_SECONDS = 3.0


def boot_id() -> str | None:
    """The kernel's boot id (the same in every container of the host), or None where there is none."""
    try:
        return BOOT_ID.read_text().strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class Role:
    """One role of this host as the role file holds it."""

    role: str
    since: str
    previous: str | None = None
    priority: int | None = None
    boot_id: str | None = None
    note: str = ""

    def active(self, current_boot: str | None) -> bool:
        """True only for MASTER written since the current boot (a file from before a reboot says nothing)."""
        return self.role == "MASTER" and self.boot_id is not None and self.boot_id == current_boot


def parse_fifo_line(line: str, instance: str) -> tuple[str, int | None] | None:
    """``INSTANCE "avo_pair" MASTER 100`` -> ("MASTER", 100); None for another instance, a group or a line that is
    not a state change."""
    parts = line.split()
    if len(parts) < 3 or parts[0] != "INSTANCE" or parts[1].strip('"') != instance or parts[2] not in STATES:
        return None
    priority = int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else None
    return parts[2], priority


def role_path(viirs_base: Path) -> Path:
    return viirs_base / ROLE_FILE


def read_role(viirs_base: Path) -> Role | None:
    """The role file's content, or None when there is none or it is not one."""
    try:
        data = json.loads(role_path(viirs_base).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("role") not in STATES or not isinstance(data.get("since"), str):
        return None
    priority = data.get("priority")
    return Role(data["role"], data["since"], data.get("previous"), priority if isinstance(priority, int) else None,
                data.get("boot_id"), str(data.get("note") or ""))


class RoleWatch:
    """This host's role as the role file says it, read again only when the file changed (one ``stat`` a look):
    what task_broker asks before it hands out a task. ``clock`` gives the time the file's modification time is
    compared with (the same kernel's clock in every container of the host)."""

    def __init__(self, viirs_base: Path, boot: str | None = None, stale_after: float = STALE_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self.viirs_base = viirs_base
        self.path = role_path(viirs_base)
        self.boot = boot_id() if boot is None else boot
        self.stale_after = stale_after
        self.clock = clock
        self.role: Role | None = None
        self.touched: float | None = None  # the file's modification time: its writer's last touch
        self._stamp: tuple[int, int, int] | None = None

    def read(self) -> Role | None:
        try:
            info = os.stat(self.path)
            stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        except OSError:
            stamp = None
        if stamp != self._stamp:
            self._stamp = stamp
            self.role = None if stamp is None else read_role(self.viirs_base)
            self.touched = None if stamp is None else info.st_mtime
        return self.role

    def age(self) -> float | None:
        """Seconds since the role file was last written or touched (None: no file)."""
        self.read()
        return self._age()

    @property
    def stale(self) -> bool:
        """The file has not been touched for ``stale_after`` s: keepalived's reader is gone without a word."""
        self.read()
        return self._stale()

    @property
    def active(self) -> bool:
        """MASTER since this boot (:meth:`Role.active`), in a file keepalived's reader still touches (one ``stat``)."""
        role = self.read()
        return role is not None and role.active(self.boot) and not self._stale()

    def _age(self) -> float | None:
        return None if self.touched is None else max(0.0, self.clock() - self.touched)

    def _stale(self) -> bool:
        age = self._age()
        return age is not None and age > self.stale_after


def _make_dir_like_base(viirs_base: Path, folder: Path) -> None:
    """``folder`` under ``viirs_base``, made (if missing) with the owner of ``viirs_base``: the reader runs as root
    in its own container, and a root-owned ``run/`` or ``log/`` would lock the suite's own user out."""
    if folder.is_dir():
        return
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    owner = viirs_base.stat()
    if os.geteuid() == 0 and (owner.st_uid, owner.st_gid) != (0, 0):
        os.chown(folder, owner.st_uid, owner.st_gid)


def write_role(viirs_base: Path, role: Role) -> None:
    """Write the role file atomically (mode 0644: the suite's user reads it)."""
    path = role_path(viirs_base)
    _make_dir_like_base(viirs_base, path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(role)) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def pair_logger(viirs_base: Path) -> logging.Logger:
    """The reader's logger: one line a change in ``$VIIRS_BASE/log/pair.log`` (the suite's line format)."""
    path = viirs_base / LOG_FILE
    _make_dir_like_base(viirs_base, path.parent)
    handler = logging.FileHandler(path)
    handler.setFormatter(line_formatter())
    log = logging.getLogger("pair")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


class Notifier:
    """keepalived's notify FIFO script: each state change of :data:`INSTANCE` becomes the role file and a log line.

    keepalived starts it with the FIFO's path and sends it SIGTERM when it stops or reloads (then the STOP lines
    follow, read for :data:`DRAIN_SECONDS`). The FIFO is opened for reading and writing, so it never reads an end
    of file while keepalived restarts it; the end is told by SIGTERM or by the parent (keepalived) being gone."""

    def __init__(self, viirs_base: Path, fifo: Path, instance: str, release: tuple[str, str] | None = None,
                 ip: str = "ip") -> None:
        self.viirs_base = viirs_base
        self.fifo = fifo
        self.instance = instance
        self.release = release
        self.ip = ip
        self.log = pair_logger(viirs_base)
        self.parent = os.getppid()
        self.stop_at: float | None = None
        self.last = read_role(viirs_base)
        self.boot = boot_id()
        self.buffer = b""

    def _on_term(self, signum: int, frame: object) -> None:
        if self.stop_at is None:
            self.stop_at = time.monotonic() + DRAIN_SECONDS

    def run(self) -> int:
        """Read the FIFO until keepalived is gone or asked it to stop; returns 0."""
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        fd = os.open(self.fifo, os.O_RDWR | os.O_NONBLOCK)
        touched = 0.0
        try:
            while self.stop_at is None or time.monotonic() < self.stop_at:
                if os.getppid() != self.parent:  # keepalived is gone: read what it wrote, then end
                    self.stop_at = min(self.stop_at or float("inf"), time.monotonic() + GONE_SECONDS)
                elif time.monotonic() - touched >= HEARTBEAT_SECONDS:
                    touched = time.monotonic()
                    self._touch()
                ready, _, _ = select.select([fd], [], [], 0.2)
                if ready:
                    self._take(os.read(fd, 65536))
        finally:
            os.close(fd)
        if os.getppid() != self.parent:
            self._gone()
        return 0

    def _touch(self) -> None:
        """The heartbeat: the role file's modification time set to now (keepalived still runs)."""
        with contextlib.suppress(OSError):
            os.utime(role_path(self.viirs_base))

    def _take(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            change = parse_fifo_line(line.decode("utf-8", "replace"), self.instance)
            if change is not None:
                self.record(*change)

    def record(self, state: str, priority: int | None, note: str = "") -> None:
        """Write ``state`` as the role and log one line (WARNING for FAULT and STOP, INFO otherwise)."""
        before = self.last
        now = time.time()
        role = Role(state, isotime.stamp(now, micro=True), before.role if before else None, priority, self.boot, note)
        try:
            write_role(self.viirs_base, role)
        except OSError as err:
            self.log.error("cannot write the role file %s: %s", role_path(self.viirs_base), err)
        self.last = role
        held = ""
        if before is not None and (since := isotime.epoch(before.since)) is not None:
            held = f" after {now - since:.1f} s"
        level = logging.INFO if state in ("MASTER", "BACKUP") else logging.WARNING
        self.log.log(level, "role %s (was %s%s; priority %s)%s", state, before.role if before else "none", held,
                     priority, f": {note}" if note else "")

    def _gone(self) -> None:
        """keepalived ended: if it said nothing (SIGKILL), say STOP and give its address up."""
        if self.last is not None and self.last.role == "STOP":
            return
        released = ""
        if self.release is not None:
            address, interface = self.release
            result = subprocess.run([self.ip, "addr", "del", address, "dev", interface], capture_output=True,
                                    text=True, check=False)
            released = f"; {address} released from {interface}" if result.returncode == 0 else \
                f"; {address} not on {interface} ({result.stderr.strip() or result.returncode})"
        with contextlib.suppress(Exception):
            self.record("STOP", self.last.priority if self.last else None,
                        f"keepalived ended without a word{released}")
