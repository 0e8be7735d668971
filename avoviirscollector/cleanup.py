"""cleanup: keep ``$VIIRS_BASE`` from filling the disk (the nightly job of ``crontab``).

What it does
    Removes every regular file under ``$VIIRS_BASE`` (all subfolders: sdr/, tmp/, log/, elements/, state/ and any
    other) whose modification time is more than ``VIIRS_RETENTION`` days old, then the folders left empty, and logs
    one summary line: files and bytes removed, files kept, seconds. ``VIIRS_RETENTION`` unset: removes nothing by
    age and says so. Then the free-space sweep (space.py): below ``VIIRS_MIN_FREE`` free, the oldest granule files
    of ``sdr/`` go first (never those of queued tasks, recent hand-outs or the recovery window).

What it never does
    - Follow a symbolic link: links are neither removed nor followed (files and folders are opened relative to
      their parent folder's descriptor with ``O_NOFOLLOW``, so a folder swapped for a link mid-run is not entered).
    - Leave ``$VIIRS_BASE``: it does not cross into another filesystem mounted below it either (like ``find -xdev``).
    - Remove a file that a process has open or holds a lock on (``/proc/*/fd``, ``/proc/locks``, read once at
      start): log files supervisord is writing, lock files of a running mirror_gina, the task queue being written.
    - Remove the live state files: the files directly in ``state/`` (task queue, download journal, mail spool) and
      in ``run/`` (supervisord's pid file and socket) are kept whatever their age; files in folders below
      ``state/`` follow the retention like everything else.
    - Remove a file being written: a partial download in ``tmp/`` is rewritten continually, so its modification
      time is recent and it is kept. With ``VIIRS_RETENTION=0`` files in ``tmp/`` must still be
      untouched for an hour (``TMP_GRACE``) before they go, so a download that pauses a few seconds is safe.
    - Remove ``$VIIRS_BASE`` itself or its top-level folders (trollstalker watches sdr/), nor a folder modified
      in the last hour (a download may be about to use it).
    Everything else ages out, including ``elements/tle.txt`` if tle_refresh has not replaced it for longer than
    the retention (it is then too old to be of use), and files an operator left directly in ``state/`` are kept.

Settings (environment, see config.py): ``VIIRS_BASE``, ``VIIRS_RETENTION`` (whole days >= 0; anything else stops
the program at start with one line naming the variable, exit 2).

Usage: ``cleanup [--dry-run] [-v]``. Exit status 0, or 1 when some file could not be removed (each logged).
Signals: none handled; a run takes seconds. Interrupting it leaves the tree consistent (each removal is atomic).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from avoviirscollector.config import Settings, settings_or_exit
from avoviirscollector.formatting import human_bytes
from avoviirscollector.logs import setup_logging

PROGRAM = "cleanup"
LOG = logging.getLogger(PROGRAM)
DAY = 86400.0
TMP_GRACE = 3600.0  # a file in tmp/ untouched for less than this is a download in progress
DIR_GRACE = 3600.0  # a folder modified more recently than this may be about to receive a file
LIVE_TOP = ("state", "run")  # files directly in these folders are live: queue, journal, pid file, socket
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class RetentionPolicy:
    """Which files and folders go: pure rules, no file access.

    ``top`` is the name of the top-level folder of ``$VIIRS_BASE`` an entry lives under ("" for entries directly
    in ``$VIIRS_BASE``), ``depth`` how many folders below ``$VIIRS_BASE`` it is (1 = directly in a top-level
    folder).
    """

    def __init__(self, now: float, retention_days: int) -> None:
        if retention_days < 0:
            raise ValueError("retention_days must be >= 0")
        self.now = now
        self.cutoff = now - retention_days * DAY
        self.tmp_cutoff = min(self.cutoff, now - TMP_GRACE)
        self.dir_cutoff = now - DIR_GRACE

    def file_expired(self, top: str, depth: int, mtime: float) -> bool:
        if depth == 1 and top in LIVE_TOP:
            return False  # live state files: task queue, journal, mail spool, supervisord's pid file
        if top == "tmp":
            return mtime < self.tmp_cutoff
        return mtime < self.cutoff

    def folder_removable(self, depth: int, mtime_before: float) -> bool:
        """An emptied folder goes unless it is a top-level folder or was modified recently before this run."""
        return depth >= 2 and mtime_before < self.dir_cutoff


def files_in_use(base: Path, proc: Path = Path("/proc")) -> tuple[set[str], set[tuple[int, int]]]:
    """Paths under ``base`` that some process has open, and (device, inode) pairs of locked files.

    Only what this user may see is seen (in the image every program runs as the same user). Errors reading one
    process are ignored: it has exited, or it is not ours.
    """
    prefix = str(base).rstrip("/") + "/"
    try:
        pids = [name for name in os.listdir(proc) if name.isdigit()]
    except OSError:
        pids = []
    open_paths: set[str] = set()
    for pid in pids:
        open_paths |= _open_under(f"{proc}/{pid}/fd", prefix)
    locked: set[tuple[int, int]] = set()
    try:
        with open(proc / "locks", encoding="ascii", errors="replace") as locks:
            locked = {ident for ident in map(_locked_file, locks) if ident is not None}
    except OSError:
        pass
    return open_paths, locked


def _open_under(fd_dir: str, prefix: str) -> set[str]:
    """The paths starting with ``prefix`` that one process (its ``/proc/<pid>/fd``) has open."""
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return set()
    found = set()
    for fd in fds:
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith(prefix):
            found.add(target)
    return found


def _locked_file(line: str) -> tuple[int, int] | None:
    """The (device, inode) of one line of ``/proc/locks``: ``1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF``
    (major:minor:inode, the device in hexadecimal); None when the line has none."""
    for part in line.split():
        bits = part.split(":")
        if len(bits) != 3 or not all(bits):
            continue
        try:
            major, minor, inode = int(bits[0], 16), int(bits[1], 16), int(bits[2])
        except ValueError:
            continue
        return os.makedev(major, minor), inode
    return None


@dataclass
class Summary:
    files: int = 0
    bytes: int = 0
    folders: int = 0
    kept: int = 0
    in_use: int = 0
    links: int = 0
    errors: int = 0
    seconds: float = 0.0
    error_lines: list[str] = field(default_factory=list)


class Cleaner:
    """Walks ``base`` with descriptors (no path re-resolution, no symlink following) and applies the policy."""

    def __init__(self, base: Path, policy: RetentionPolicy, dry_run: bool = False,
                 open_paths: Iterable[str] = (), locked: Iterable[tuple[int, int]] = ()) -> None:
        self.base = base
        self.policy = policy
        self.dry_run = dry_run
        self.open_paths = set(open_paths)
        self.locked = set(locked)
        self.summary = Summary()

    def run(self) -> Summary:
        started = time.monotonic()
        try:
            fd = os.open(self.base, _DIR_FLAGS)
        except OSError as err:
            self._error(f"cannot open {self.base}: {err.strerror}")
        else:
            try:
                self._device = os.fstat(fd).st_dev
                self._walk(fd, str(self.base), "", 0)
            finally:
                os.close(fd)
        self.summary.seconds = time.monotonic() - started
        return self.summary

    def _error(self, line: str) -> None:
        self.summary.errors += 1
        if len(self.summary.error_lines) < 20:
            self.summary.error_lines.append(line)

    def _walk(self, dir_fd: int, path: str, top: str, depth: int) -> bool:
        """Process one open folder; return True when it is (or in a dry run would be) empty afterwards."""
        summary = self.summary
        remaining = 0
        try:
            entries = list(os.scandir(dir_fd))
        except OSError as err:
            self._error(f"cannot list {path}: {err.strerror}")
            return False
        for entry in entries:
            name = entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile
            mode = st.st_mode
            if stat.S_ISREG(mode):
                remaining += self._file(dir_fd, path, name, st, top, depth)
            elif stat.S_ISDIR(mode):
                if st.st_dev != self._device:
                    remaining += 1  # another filesystem mounted here: not ours to clean
                    continue
                if self._folder(dir_fd, path, name, top or name, depth + 1, st.st_mtime):
                    continue
                remaining += 1
            else:
                if stat.S_ISLNK(mode):
                    summary.links += 1
                remaining += 1  # links, sockets, fifos, devices: never touched
        return remaining == 0

    def _file(self, dir_fd: int, path: str, name: str, st: os.stat_result, top: str, depth: int) -> int:
        """One regular file: kept (not expired, or in use), removed (or counted as such in a dry run), or not
        removable; 1 when it is still there afterwards, 0 when it is gone."""
        summary = self.summary
        if not self.policy.file_expired(top, depth, st.st_mtime):
            summary.kept += 1
            return 1
        if (st.st_dev, st.st_ino) in self.locked or (self.open_paths and f"{path}/{name}" in self.open_paths):
            summary.in_use += 1
            return 1
        if not self.dry_run:
            try:
                os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                return 0
            except OSError as err:
                self._error(f"cannot remove {path}/{name}: {err.strerror}")
                return 1
        summary.files += 1
        summary.bytes += st.st_size
        return 0

    def _folder(self, parent_fd: int, parent: str, name: str, top: str, depth: int, mtime: float) -> bool:
        """Clean one subfolder; return True when it was removed (or would be in a dry run)."""
        path = f"{parent}/{name}"
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError as err:
            if err.errno not in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                self._error(f"cannot open {path}: {err.strerror}")
            return False
        try:
            empty = self._walk(fd, path, top, depth)
        finally:
            os.close(fd)
        if not (empty and self.policy.folder_removable(depth, mtime)):
            return False
        if not self.dry_run:
            try:
                os.rmdir(name, dir_fd=parent_fd)
            except OSError:
                return False  # something arrived meanwhile, or not permitted: leave it
        self.summary.folders += 1
        return True


def run_cleanup(settings: Settings, dry_run: bool = False, now: float | None = None) -> int:
    """Apply the retention, then the free-space sweep (``VIIRS_MIN_FREE``, see space.py; not in a dry run); log
    the summaries; return the exit status."""
    status = _retention(settings, dry_run, now)
    if dry_run or not settings.viirs_base.is_dir():
        return status
    from avoviirscollector.space import sweep

    try:
        if sweep(settings, LOG).short:
            status = 1
    except OSError as err:
        LOG.error("free-space sweep of %s failed: %s", settings.sdr_dir, err)
        status = 1
    return status


def _retention(settings: Settings, dry_run: bool, now: float | None) -> int:
    if settings.retention_days is None:
        LOG.info("VIIRS_RETENTION is not set: keeping everything under %s until free space runs low (VIIRS_MIN_FREE "
                 "%s), nothing removed by age", settings.viirs_base, settings.min_free)
        return 0
    # /proc shows open files by their real path: compare with the real path of the base (which may be a link)
    base = settings.viirs_base.resolve()
    if not base.is_dir():
        LOG.error("%s is not a folder: nothing to clean", base)
        return 1
    policy = RetentionPolicy(time.time() if now is None else now, settings.retention_days)
    open_paths, locked = files_in_use(base)
    summary = Cleaner(base, policy, dry_run=dry_run, open_paths=open_paths, locked=locked).run()
    for line in summary.error_lines:
        LOG.error("%s", line)
    verb = "would remove" if dry_run else "removed"
    LOG.info(
        "%s%s %d files (%s) and %d empty folders older than %d days under %s; kept %d files, %d in use, "
        "%d links untouched, %d errors; %.2f s",
        "dry run: " if dry_run else "", verb, summary.files, human_bytes(summary.bytes), summary.folders,
        settings.retention_days, base, summary.kept, summary.in_use, summary.links, summary.errors, summary.seconds,
    )
    return 1 if summary.errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROGRAM, description="Remove files older than VIIRS_RETENTION days.")
    parser.add_argument("--dry-run", action="store_true", help="report what would be removed, remove nothing")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(PROGRAM, args.verbose)
    settings = settings_or_exit(PROGRAM)
    return run_cleanup(settings, dry_run=args.dry_run)


if __name__ == "__main__":
    raise SystemExit(main())
