"""Persistence of the task queue: an append-only journal in ``$VIIRS_BASE/state/task_queue.journal``.

File format: one JSON object per line. The first line is the header
``{"format": "avoviirscollector-task-queue", "version": 1, "next_id": N}``; then ``{"op": "put", "task": {...}}``
(a new or merged task, the full record) and ``{"op": "take", "id": N}`` (a task handed out). Replaying the lines
gives the queue. Every line is written with one ``os.write`` on an ``O_APPEND`` descriptor and ``fsync``'d before
the caller goes on.

Compaction writes the live tasks to ``task_queue.journal.tmp``, ``fsync``s it, renames it over the journal and
``fsync``s the directory: at any moment the journal on disk is either the old complete one or the new complete
one. The broker compacts at start, at exit, and when the journal has grown to more than twice the live tasks.

Reading is forgiving but loud:

- a last line without its newline is a write cut short by a kill; it was never acknowledged, so it is dropped
  with a WARNING;
- a damaged line elsewhere is skipped with an ERROR and a copy of the file is kept as
  ``task_queue.journal.damaged-<UTC time>``;
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
from collections.abc import Iterable
from pathlib import Path

FORMAT = "avoviirscollector-task-queue"
VERSION = 1
JOURNAL_NAME = "task_queue.journal"

log = logging.getLogger("task_broker.store")


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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

    # -- reading ---------------------------------------------------------------------------------------------

    def load(self) -> tuple[list[dict], int]:
        """The live task records in queue order and the next task id. Never raises for a bad file."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return [], 1
        if not raw:
            log.warning("state file %s is empty (interrupted first write?): starting with an empty queue", self.path)
            return [], 1
        lines = raw.split(b"\n")
        torn = lines.pop()  # after the last newline: b"" when the file ends cleanly
        header = self._header(lines[0] if lines else torn)
        if header is None:
            aside = self.path.with_name(f"{self.path.name}.foreign-{_stamp()}")
            os.replace(self.path, aside)
            log.error("state file %s is not a task queue journal: moved aside to %s, starting with an empty queue",
                      self.path, aside.name)
            return [], 1
        tasks: dict[int, dict] = {}
        next_id = int(header.get("next_id", 1))
        damaged = 0
        for number, line in enumerate(lines[1:], start=2):
            try:
                op = json.loads(line)
                if op["op"] == "put":
                    record = op["task"]
                    task_id = int(record["id"])
                    tasks[task_id] = record
                elif op["op"] == "take":
                    task_id = int(op["id"])
                    tasks.pop(task_id, None)
                else:
                    raise ValueError(f"unknown op {op['op']!r}")
                next_id = max(next_id, task_id + 1)
            except (ValueError, KeyError, TypeError) as err:
                damaged += 1
                log.error("state file %s line %d is damaged (%s): skipped", self.path, number, err)
        if torn:
            log.warning("state file %s ends with an incomplete record (%d bytes, a write cut short; it was never "
                        "acknowledged): dropped", self.path, len(torn))
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
        """Atomically replace the journal by the header and one put per live task, then append to it."""
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
        _fsync_dir(self.state_dir)
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

    def needs_compaction(self) -> bool:
        return self.records_written > 1000 and self.records_written > 2 * self.live

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
