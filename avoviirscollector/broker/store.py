"""Persistence of the task queue: an append-only journal in ``$VIIRS_BASE/state/task_queue.journal``.

File format: one JSON object per line. The first line is the header
``{"format": "avoviirscollector-task-queue", "version": 1, "next_id": N}``; then ``{"op": "put", "task": {...}}``
(a new or merged task, the full record) and ``{"op": "take", "id": N}`` (a task handed out). Replaying the lines
gives the queue. Every line is written with one ``os.write`` on an ``O_APPEND`` descriptor (so it outlives a kill
of the process at once); the caller decides when to ``fsync`` (the broker: queued tasks before they become
visible, hand-outs within a second).

Compaction writes the live tasks to ``task_queue.journal.tmp``, ``fsync``s it, renames it over the journal and
``fsync``s the directory: at any moment the journal on disk is either the old complete one or the new complete
one. The broker compacts at start and at exit (blocking), and when the journal holds more than 10,000 records
beyond three per live task (so a compaction, about 50 us of work per live task, is paid for by at least 10,000
operations): then in small steps between requests (serialising a few milliseconds at a time, the bulk fsync in a
thread), while appends go on to the old journal and are copied to the end of the new one before the rename.

Reading is forgiving but loud:

- a last line without its newline is a write cut short by a kill; it was never acknowledged, so it is dropped
  with a WARNING;
- a damaged line elsewhere is skipped with an ERROR and a copy of the file is kept as
  ``task_queue.journal.damaged-<UTC time>``;
- an empty file is a WARNING and an empty queue;
- a file that is not a task-queue journal at all (no or foreign header, not text) is moved aside as
  ``task_queue.journal.foreign-<UTC time>`` with an ERROR and the queue starts empty. The broker never refuses to
  start because of its state file, so supervisord never sees a crash loop.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from avoviirscollector.fsutil import fsync_dir

FORMAT = "avoviirscollector-task-queue"
VERSION = 1
JOURNAL_NAME = "task_queue.journal"

log = logging.getLogger("task_broker.store")


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def _line(obj: dict) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=True) + "\n").encode("ascii")


class JournalStore:
    """Reads, appends to and compacts the journal. Not thread-safe: one owner (the broker's main loop)."""

    def __init__(self, state_dir: Path, name: str = JOURNAL_NAME) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / name
        self._fd: int | None = None
        self.records_written = 0
        self.live = 0
        self._job: _Compaction | None = None

    # -- reading ---------------------------------------------------------------------------------------------

    def load(self, decode: Callable[[dict], Any] = lambda record: record) -> tuple[list[Any], int]:
        """The live tasks in queue order (each record passed through ``decode``) and the next task id.

        Reads the file one line at a time. Never raises for a bad file; a record that ``decode`` refuses
        (ValueError, KeyError, TypeError) counts as a damaged line."""
        try:
            handle = open(self.path, "rb")
        except FileNotFoundError:
            return [], 1
        with handle:
            first = handle.readline()
            header = self._header(first) if first.endswith(b"\n") else None
            if header is None:
                handle.close()
                if not first:
                    log.warning("state file %s is empty: starting with an empty queue", self.path)
                    return [], 1
                aside = self.path.with_name(f"{self.path.name}.foreign-{_stamp()}")
                os.replace(self.path, aside)
                log.error("state file %s is not a task queue journal: moved aside to %s, starting with an empty "
                          "queue", self.path, aside.name)
                return [], 1
            tasks: dict[int, Any] = {}
            next_id = int(header.get("next_id", 1))
            damaged = 0
            for number, line in enumerate(handle, start=2):
                if not line.endswith(b"\n"):
                    log.warning("state file %s ends with an incomplete record (%d bytes, a write cut short; it was "
                                "never acknowledged): dropped", self.path, len(line))
                    break
                try:
                    op = json.loads(line)
                    if op["op"] == "put":
                        task_id = int(op["task"]["id"])
                        tasks[task_id] = decode(op["task"])
                    elif op["op"] == "take":
                        task_id = int(op["id"])
                        tasks.pop(task_id, None)
                    else:
                        raise ValueError(f"unknown op {op['op']!r}")
                    next_id = max(next_id, task_id + 1)
                except (ValueError, KeyError, TypeError) as err:
                    damaged += 1
                    log.error("state file %s line %d is damaged (%s): skipped", self.path, number, str(err)[:200])
        if damaged:
            copy = self.path.with_name(f"{self.path.name}.damaged-{_stamp()}")
            shutil.copyfile(self.path, copy)
            log.error("state file %s had %d damaged lines: a copy is kept as %s", self.path, damaged, copy.name)
        return [tasks[key] for key in sorted(tasks)], next_id

    @staticmethod
    def _header(line: bytes) -> dict | None:
        try:
            header = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("version") != VERSION:
            return None
        return header

    # -- writing ---------------------------------------------------------------------------------------------

    def compact(self, records: Iterable[dict], next_id: int) -> None:
        """Atomically replace the journal by the header and one put per live task, then append to it (blocking)."""
        self.abort_compaction()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        count = 0
        with open(tmp, "wb") as out:
            out.write(_line({"format": FORMAT, "version": VERSION, "next_id": next_id}))
            for record in records:
                out.write(_line({"op": "put", "task": record}))
                count += 1
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        self.close()
        os.replace(tmp, self.path)
        fsync_dir(self.state_dir)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self.records_written = count
        self.live = count

    def _append(self, obj: dict, sync: bool) -> None:
        if self._fd is None:
            raise RuntimeError("journal is not open: compact() first")
        data = _line(obj)
        written = os.write(self._fd, data)
        if written != len(data):  # a regular file short write means the disk is full
            raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
        if sync:
            os.fsync(self._fd)
        if self._job is not None:
            self._job.pending.append(data)
        self.records_written += 1

    def put(self, record: dict, new: bool, sync: bool = True) -> None:
        """Record a new or updated task; durable on return when ``sync``."""
        self._append({"op": "put", "task": record}, sync)
        if new:
            self.live += 1

    def take(self, task_id: int, sync: bool = True) -> None:
        """Record that a task left the queue; durable on return when ``sync``."""
        self._append({"op": "take", "id": task_id}, sync)
        self.live -= 1

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)

    # -- compaction in small steps, for the daemon's loop ------------------------------------------------------

    @property
    def compacting(self) -> bool:
        return self._job is not None

    def start_compaction(self, items: list, to_record: Callable[[Any], dict], next_id: int) -> None:
        """Begin writing a compacted journal of ``items`` (a snapshot list) without blocking the caller.

        The caller keeps appending to the current journal; every line appended meanwhile is also kept and goes
        at the end of the new file before it replaces the old one, so the result is the snapshot plus all later
        operations. Items are serialised by :meth:`compaction_step` (call it often) at their state at that
        moment, which later lines then correct."""
        self.abort_compaction()
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, _line({"format": FORMAT, "version": VERSION, "next_id": next_id}))
        self._job = _Compaction(tmp, fd, iter(items), to_record)

    def compaction_step(self, budget: float = 0.002) -> bool:
        """Advance the compaction for about ``budget`` seconds; True when the new journal is in place."""
        try:
            return self._step(budget)
        except OSError:
            self.abort_compaction()
            raise

    def _step(self, budget: float) -> bool:
        import threading
        import time

        job = self._job
        if job is None:
            return True
        if job.syncing is None:
            deadline = time.perf_counter() + budget
            chunk = []
            for item in job.items:
                chunk.append(_line({"op": "put", "task": job.to_record(item)}))
                job.count += 1
                if len(chunk) >= 16 and time.perf_counter() >= deadline:
                    break
            else:
                job.syncing = threading.Thread(target=os.fsync, args=(job.fd,), name="journal-fsync", daemon=True)
            _write_all(job.fd, b"".join(chunk))
            if job.syncing is not None:
                job.syncing.start()  # the bulk fsync runs without the GIL, beside the daemon's loop
            return False
        if job.syncing.is_alive():
            return False
        _write_all(job.fd, b"".join(job.pending))
        os.fsync(job.fd)
        os.close(job.fd)
        os.replace(job.tmp, self.path)
        fsync_dir(self.state_dir)
        self._job = None
        self.close()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self.records_written = job.count + len(job.pending)
        return True

    def abort_compaction(self) -> None:
        job, self._job = self._job, None
        if job is None:
            return
        if job.syncing is not None and job.syncing.is_alive():
            job.syncing.join()
        os.close(job.fd)
        job.tmp.unlink(missing_ok=True)

    def needs_compaction(self) -> bool:
        """True when more than 10,000 records plus three times the live ones are in the file (mostly dead ones)."""
        return self.records_written > 3 * self.live + 10000

    def close(self) -> None:
        """Close the journal (a running compaction is left to ``abort_compaction``)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError("write returned 0")
        view = view[written:]


class _Compaction:
    def __init__(self, tmp: Path, fd: int, items, to_record) -> None:
        self.tmp, self.fd, self.items, self.to_record = tmp, fd, items, to_record
        self.pending: list[bytes] = []
        self.count = 0
        self.syncing = None
