"""Placement of a downloaded file: HDF5 check, one ``os.replace`` from ``tmp/`` into ``sdr/``, and the journal.

trollstalker announces every file that is closed after writing or renamed into ``sdr/``, so nothing is ever
written there: a file appears in ``sdr/`` only through the single rename done here, after its md5 (checked while
downloading) and its HDF5 structure are known to be good.

The download journal, ``state/mirror_gina.journal``, gets one JSON line per placed file (``time``, ``name``,
``bytes``, ``md5``, ``seconds``, ``connections``), appended with one ``write`` and ``fsync``: a kill at any moment
leaves at most one torn last line, which :func:`read_journal` skips and the next append isolates.

The journal is also mirror_gina's memory of what it placed: a file it names is not fetched again, even after
cleanup (or the free-space sweep) removed it from ``sdr/``, for as long as GINA can still list it. Records are kept
for the longer of the listing window (backfill days, plus one day) and ``RECOVERY_HOURS``, counted from the later
of the granule's start and the placement; :meth:`Journal.remembered` drops older ones by rewriting the file (at most
about once an hour). Appends hold a shared ``flock`` on the journal and compaction an exclusive one, and an append
that finds the file replaced under it appends to the new one, so no record is lost to a compaction.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
from collections.abc import Callable
from pathlib import Path

from avoviirscollector import isotime
from avoviirscollector.fsutil import fsync_dir
from avoviirscollector.ondisk.state import MIRROR_JOURNAL, PlacedRecord, placed_records, read_placed
from avoviirscollector.viirs import start_key, start_key_of

JOURNAL_NAME = MIRROR_JOURNAL


class PlacementError(Exception):
    """The file cannot be placed; the message says why."""


class AlreadyPlaced(PlacementError):
    """``sdr/`` has the file already (another run placed it meanwhile); it is never replaced."""


def warm_up() -> None:
    """Import h5py (about 0.1 s) ahead of the first placement, while the first file downloads: else the run's
    first file waits for it after its last byte (a run fetching one file: all of its placement time)."""
    try:
        import h5py  # noqa: F401
    except ImportError:
        pass  # check_hdf5 says so, file by file


def check_hdf5(path: Path) -> None:
    """Raise :class:`PlacementError` unless ``path`` is an HDF5 file h5py can open with at least one group."""
    import h5py

    try:
        if not h5py.is_hdf5(path):
            raise PlacementError("not an HDF5 file")
        with h5py.File(path, "r") as h5:
            if not list(h5.keys()):
                raise PlacementError("HDF5 file without any group")
    except PlacementError:
        raise
    except Exception as err:  # h5py raises OSError/KeyError/RuntimeError variants on damaged files
        raise PlacementError(f"unreadable HDF5 ({err})") from None


def place_file(temp: Path, sdr_dir: Path, name: str,
               before_rename: Callable[[], Callable[[], None]] | None = None) -> Path:
    """Check ``temp`` and rename it to ``sdr_dir/name`` (one ``os.replace``). The temp is removed on failure.

    ``before_rename`` (the journal entry) runs once the checks passed, just before the rename; it returns what undoes
    it, called when the rename fails. So a file is journalled exactly when it reached ``sdr/``, even on a full disk.
    """
    target = sdr_dir / name
    if os.sep in name or name in ("", ".", ".."):
        raise PlacementError(f"refusing local name {name!r}")
    try:
        check_hdf5(temp)
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if target.exists():
            raise AlreadyPlaced("already in sdr/")
        undo = before_rename() if before_rename is not None else None
        try:
            os.replace(temp, target)
        except BaseException:
            if undo is not None:
                undo()
            raise
    except BaseException:
        try:
            temp.unlink()
        except FileNotFoundError:
            pass
        raise
    fsync_dir(sdr_dir)
    return target


class Journal:
    """Append-only JSON-lines record of placed files in ``state/``."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / JOURNAL_NAME

    def append(self, name: str, size: int, md5: str, seconds: float, connections: int,
               listed: str | None = None, station: str = "") -> dict:
        """Append one record (one ``write``, ``fsync``). The record's place in the file is kept for
        :meth:`retract` under the private key ``_span`` of the returned dict (not written). ``listed``: when GINA's
        listing first showed the file (ISO time; written as ``listed`` when given, read by monitor); ``station``:
        the receiving station it came from (written when known)."""
        record = {
            "time": isotime.stamp(dt.datetime.now(dt.UTC), micro=True),
            "name": name,
            "bytes": size,
            "md5": md5,
            "seconds": round(seconds, 3),
            "connections": connections,
        }
        if listed:
            record["listed"] = listed
        if station:
            record["station"] = station
        line = json.dumps(record, separators=(",", ":")) + "\n"
        fd = self._open_locked(os.O_RDWR | os.O_APPEND | os.O_CREAT)
        try:
            size_now = os.fstat(fd).st_size
            if size_now and os.pread(fd, 1, size_now - 1) != b"\n":
                line = "\n" + line  # a torn last line from a killed run stays on a line of its own
            data = line.encode()
            written = os.write(fd, data)
            end = os.lseek(fd, 0, os.SEEK_CUR)  # with O_APPEND: the end of what this write added
            if written != len(data):
                raise OSError(errno.ENOSPC, "short write to the journal")
            os.fsync(fd)
        finally:
            os.close(fd)
        return {**record, "_span": (end - len(data), data)}

    def _open_locked(self, flags: int, lock: int = fcntl.LOCK_SH) -> int:
        """Open the journal and ``flock`` it; when a compaction replaced the file meanwhile, open the new one."""
        while True:
            fd = os.open(self.path, flags, 0o644)
            try:
                fcntl.flock(fd, lock)
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)

    def retract(self, record: dict) -> None:
        """Blank out a record written by :meth:`append` (its rename failed). Overwriting bytes in place needs no
        new space, so this works on a full disk; other runs' records around it are untouched."""
        start, data = record["_span"]
        fd = self._open_locked(os.O_RDWR)
        try:
            if os.pread(fd, len(data), start) != data:  # moved by a compaction: find it
                content = os.pread(fd, os.fstat(fd).st_size, 0)
                start = content.find(data.lstrip(b"\n"))
                data = data.lstrip(b"\n")
            if start >= 0:
                os.pwrite(fd, b" " * (len(data) - 1), start)
                os.fsync(fd)
        finally:
            os.close(fd)

    def remembered(self, keep: dt.timedelta, now: dt.datetime | None = None) -> set[str]:
        """Names of the files placed that are still to be remembered (see the module docstring); compacts the
        file when it holds records older than that by more than an hour. A journal that cannot be rewritten (full
        disk) is left as it is."""
        return set(self.placed(keep, now))

    def placed(self, keep: dt.timedelta, now: dt.datetime | None = None) -> dict[str, PlacedRecord]:
        """The records still to be remembered, by name (as :meth:`remembered`, which they are)."""
        now = now or dt.datetime.now(dt.UTC)
        horizon = now - keep
        records: dict[str, PlacedRecord] = {}
        compact = False
        limits, long_ago = _horizon(horizon), _horizon(horizon - dt.timedelta(hours=1))
        for _raw, record in read_placed(self.path):
            if _remembered(record, *limits):
                records[record.name] = record
            elif not _remembered(record, *long_ago):
                compact = True
        if compact:
            self._compact(horizon)
        return records

    def _compact(self, horizon: dt.datetime) -> None:
        try:
            fd = self._open_locked(os.O_RDWR, fcntl.LOCK_EX)
        except OSError:
            return
        new = self.path.with_name(self.path.name + ".new")
        limits = _horizon(horizon)
        try:
            with os.fdopen(os.dup(fd), "rb") as fh:  # under the exclusive lock: nothing is appended meanwhile
                lines = fh.read().splitlines(keepends=True)
            out = []
            for raw in lines:
                record = next(placed_records([raw]), None)
                if record is not None and _remembered(record, *limits):
                    out.append(raw if raw.endswith(b"\n") else raw + b"\n")
            with open(new, "wb") as fh:
                fh.write(b"".join(out))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(new, self.path)
            fsync_dir(self.path.parent)
        except OSError:
            try:
                new.unlink()
            except FileNotFoundError:
                pass
        finally:
            os.close(fd)


def _horizon(when: dt.datetime) -> tuple[float, str]:
    """A horizon as epoch seconds (for placement times) and as a start key (for the names)."""
    return when.timestamp(), start_key_of(when.astimezone(dt.UTC).replace(tzinfo=None))


def _remembered(record: PlacedRecord, horizon: float, horizon_key: str) -> bool:
    """Whether the later of the placement and the granule's start is at or after the horizon (a record whose time
    and name cannot be read is kept). Reads the start from the name's fixed places: no parsing."""
    key = start_key(record.name)
    if record.time is None and key is None:
        return True
    return (record.time is not None and record.time >= horizon) or (key is not None and key >= horizon_key)
