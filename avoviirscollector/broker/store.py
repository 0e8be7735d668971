"""Persistence of the task queue and its hand-out ledger: an append-only journal, ``state/task_queue.journal``.

File format: one JSON object per line, the records of ``ondisk/journal.py`` (one type each, encoded and decoded
there only): a header, then ``put``, ``take``, ``forget``, ``event``, ``sent``, ``mark`` and ``stop``, each with
``t``, the UTC time it was written. A journal that does not end with ``stop`` was cut by a kill or a crash:
hand-outs written within :data:`DOUBT_SECONDS` of its last record and with no ``sent`` record are *in doubt* (the
reply may never have left) and :meth:`JournalStore.load` returns them so that the broker queues them again.

Every line is written with one ``os.write`` on an ``O_APPEND`` descriptor (so it outlives a kill of the process at
once); the caller decides when to ``fsync`` (the broker: queued tasks before they become visible, hand-outs within
a second).

Compaction writes the header, one put per live task, the ledger and the day's events to
``task_queue.journal.tmp``, ``fsync``s it, renames it over the journal and ``fsync``s the directory: at any moment
the journal on disk is either the old complete one or the new complete one. The broker compacts at start and at
exit (blocking), and when the journal holds more than 10,000 records beyond three per live entry: then in small
steps between requests (serialising a few milliseconds at a time, the bulk fsync in a thread), while appends go on
to the old journal and are copied to the end of the new one before the rename.

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
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from avoviirscollector.fsutil import fsync_dir
from avoviirscollector.ondisk.journal import Header, Record, encode, stamped
from avoviirscollector.ondisk.state import (  # noqa: F401 - DOUBT_SECONDS and Loaded are the store's API too
    BROKER_JOURNAL,
    DOUBT_SECONDS,
    Loaded,
    read_broker_journal,
)

JOURNAL_NAME = BROKER_JOURNAL

log = logging.getLogger("task_broker.store")


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class JournalStore:
    """Reads, appends to and compacts the journal. Not thread-safe: one owner (the broker's main loop).

    ``now`` gives the time written in each record (the broker's wall clock; a test's clock in tests)."""

    def __init__(self, state_dir: Path, name: str = JOURNAL_NAME, now: Callable[[], dt.datetime] = _now) -> None:
        self.state_dir = Path(state_dir)
        self.now = now
        self.path = self.state_dir / name
        self._fd: int | None = None
        self.records_written = 0
        self._job: _Compaction | None = None

    # -- reading ---------------------------------------------------------------------------------------------

    def load(self, decode_task: Callable[[Mapping], Any] = lambda record: record) -> Loaded:
        """Replay the journal (``ondisk.state.read_broker_journal``: the live tasks in queue order, each task
        record passed through ``decode_task``, the next task id, the ledger records, the events, and the hand-outs
        in doubt after an unclean stop), and deal with a bad file as the module docstring says: a foreign one is
        moved aside, a damaged one copied, and each is logged. Never raises for a bad file."""
        loaded = read_broker_journal(self.path, decode_task)
        if loaded.empty:
            log.warning("state file %s is empty: starting with an empty queue", self.path)
        elif loaded.foreign:
            aside = self.path.with_name(f"{self.path.name}.foreign-{_stamp()}")
            os.replace(self.path, aside)
            log.error("state file %s is not a task queue journal: moved aside to %s, starting with an empty "
                      "queue", self.path, aside.name)
            return Loaded()
        if loaded.cut:
            log.warning("state file %s ends with an incomplete record (%d bytes, a write cut short; it was "
                        "never acknowledged): dropped", self.path, loaded.cut)
        for number, why in loaded.damaged:
            log.error("state file %s line %d is damaged (%s): skipped", self.path, number, why)
        if loaded.damaged:
            copy = self.path.with_name(f"{self.path.name}.damaged-{_stamp()}")
            shutil.copyfile(self.path, copy)
            log.error("state file %s had %d damaged lines: a copy is kept as %s", self.path, len(loaded.damaged),
                      copy.name)
        return loaded

    # -- writing ---------------------------------------------------------------------------------------------

    def header(self, next_id: int, ledger_since: dt.datetime) -> Header:
        return Header(next_id, ledger_since, self.now())

    def begin(self, ledger_since: dt.datetime) -> bool:
        """Start an empty journal whose ledger begins at ``ledger_since`` unless there is one (a file of any kind):
        ``avoviirscollector supervise`` does this at the suite's first start, before any program can place a file,
        so that a granule completed before task_broker first came up is recovered. True when it was written."""
        if os.path.lexists(self.path):
            return False
        self.compact([], self.header(1, ledger_since))
        self.close()
        return True

    def compact(self, records: Iterable[Record], header: Header) -> None:
        """Atomically replace the journal by ``header`` and ``records``, then append to it (blocking).

        Raises OSError (the disk is full, say) with the old journal left whole and the new one removed."""
        self.abort_compaction()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        count = 0
        try:
            with open(tmp, "wb") as out:
                out.write(encode(header))
                for record in records:
                    out.write(encode(record))
                    count += 1
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)
            self.close()
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self.state_dir)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self.records_written = count

    def append(self, record: Record, sync: bool = False) -> None:
        """Append one record (its time ``t`` added, unless it has one); durable on return when ``sync``. OSError
        when it cannot be written (then the file may end with a torn line: the broker stops appending until a
        compaction has succeeded)."""
        if self._fd is None:
            raise OSError(f"{self.path} is not open for appending (no compaction has succeeded yet)")
        data = encode(stamped(record, self.now()))
        written = os.write(self._fd, data)
        if written != len(data):  # a regular file short write means the disk is full
            raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
        if sync:
            os.fsync(self._fd)
        if self._job is not None:
            self._job.pending.append(data)
        self.records_written += 1

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)

    # -- compaction in small steps, for the daemon's loop ------------------------------------------------------

    @property
    def compacting(self) -> bool:
        return self._job is not None

    def start_compaction(self, records: Iterator[Record], header: Header) -> None:
        """Begin writing a compacted journal of ``records`` (ops, made lazily) without blocking the caller.

        The caller keeps appending to the current journal; every line appended meanwhile is also kept and goes
        at the end of the new file before it replaces the old one, so the result is the snapshot plus all later
        operations. Records are serialised by :meth:`compaction_step` (call it often) as the iterator makes them
        (a task at its state at that moment, which later lines then correct)."""
        self.abort_compaction()
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, encode(header))
        except OSError:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        self._job = _Compaction(tmp, fd, records)

    def compaction_step(self, budget: float = 0.002) -> bool:
        """Advance the compaction for about ``budget`` seconds; True when the new journal is in place."""
        try:
            return self._step(budget)
        except OSError:
            self.abort_compaction()
            raise

    def _step(self, budget: float) -> bool:
        job = self._job
        if job is None:
            return True
        if job.syncing is None:
            deadline = time.perf_counter() + budget
            chunk = []
            for record in job.records:
                chunk.append(encode(record))
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

    def needs_compaction(self, live: int) -> bool:
        """True when more than 10,000 records plus three times the ``live`` ones are in the file (mostly dead)."""
        return self.records_written > 3 * live + 10000

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
    def __init__(self, tmp: Path, fd: int, records: Iterator[Record]) -> None:
        self.tmp, self.fd, self.records = tmp, fd, records
        self.pending: list[bytes] = []
        self.count = 0
        self.syncing = None
