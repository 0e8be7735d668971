"""The files of ``$VIIRS_BASE/state``: their names, their record formats, and the read-only readers.

Each file has one writer (named below; the README's table says what each holds and how long); every other program
only reads it, through the readers here, which never write, move, lock or copy a file of another program.

- :data:`BROKER_JOURNAL`: task_broker (``broker/store.py``); JSON lines, a header then ``put``, ``take``,
  ``forget``, ``event``, ``sent``, ``mark`` and ``stop`` records, each one type of ``ondisk/journal.py`` (which
  says what each means, and encodes and decodes them); :func:`read_broker_journal` replays it.
- :data:`MIRROR_JOURNAL`: mirror_gina (``mirror/place.py``); JSON lines, one per placed file (:class:`PlacedRecord`).
- :data:`MIRROR_FAILURES`, :data:`MIRROR_HEALTH`, :data:`MIRROR_LISTINGS`, :data:`MIRROR_SKIPPED`,
  :data:`MIRROR_COPIES`: mirror_gina (``mirror/backoff.py``, ``health.py``, ``state_files.py``); one JSON object
  each (:func:`read_json`).
- :data:`MONITOR_STATE`: monitor (its history); ``mail-<program>.json``: the mail handler (mailer.py);
  ``refused-<program>.json``: access.py; ``mirror_gina.<queue>.lock`` (``mirror/engine.py``) and
  :data:`FREE_SPACE_LOCK`: mirror_gina and the free-space sweep.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avoviirscollector.isotime import epoch
from avoviirscollector.ondisk.journal import (
    HANDED_OUT,
    Event,
    Forget,
    Put,
    Record,
    Sent,
    Stop,
    Take,
    decode,
    decode_header,
)

BROKER_JOURNAL = "task_queue.journal"
MIRROR_JOURNAL = "mirror_gina.journal"
MIRROR_FAILURES = "mirror_gina.failures.json"
MIRROR_HEALTH = "mirror_gina.health.json"
MIRROR_LISTINGS = "mirror_gina.listings.json"
MIRROR_SKIPPED = "mirror_gina.skipped.json"
MIRROR_COPIES = "mirror_gina.copies.json"
MONITOR_STATE = "monitor.json"
FREE_SPACE_LOCK = "free_space.lock"

#: hand-outs written this close to the last record of a journal cut by a kill are in doubt
DOUBT_SECONDS = 1.0
#: a growing file is read at most this much at a time (a journal read in one go never holds more in memory)
MAX_READ = 64 * 1024 * 1024


def read_json(path: Path) -> dict:
    """The JSON object in ``path``; an empty one when it is missing or damaged."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# -- growing files --------------------------------------------------------------------------------------------------
@dataclass
class Source:
    """Where reading one growing file stopped: the file's identity (device, inode), offset, newest record time."""

    ident: tuple[int, int] | None = None
    offset: int = 0
    newest: float = 0.0

    def to_json(self) -> list:
        return [list(self.ident) if self.ident else None, self.offset, self.newest]

    @classmethod
    def from_json(cls, value: list) -> Source:
        return cls(tuple(value[0]) if value[0] else None, int(value[1]), float(value[2]))


def new_lines(path: Path, source: Source) -> tuple[list[bytes], bool]:
    """The complete lines appended to ``path`` since ``source`` (updated in place), and whether the file was
    replaced or cut meanwhile (then it is read from its start). A missing file gives nothing."""
    try:
        handle = open(path, "rb")
    except OSError:
        return [], False
    with handle:
        st = os.fstat(handle.fileno())
        ident = (st.st_dev, st.st_ino)
        rewritten = False
        if source.ident != ident or st.st_size < source.offset:
            rewritten = source.ident is not None
            source.ident, source.offset = ident, 0
        if st.st_size == source.offset:
            return [], rewritten
        handle.seek(source.offset)
        data = handle.read(min(st.st_size - source.offset, MAX_READ))
    end = data.rfind(b"\n")
    if end < 0:
        return [], rewritten  # a line being written: next time
    source.offset += end + 1
    return data[: end + 1].splitlines(), rewritten


def json_records(lines: list[bytes]) -> Iterator[dict]:
    """The JSON objects among ``lines`` (anything else is skipped)."""
    for line in lines:
        try:
            record = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(record, dict):
            yield record


def tail_lines(path: Path, max_bytes: int = 256 * 1024) -> list[str]:
    """The complete lines in the last ``max_bytes`` of a file (never the whole of a big file)."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        start = max(0, size - max_bytes)
        handle.seek(start)
        data = handle.read(max_bytes)
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[1:] if start > 0 and lines else lines


# -- the download journal -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlacedRecord:
    """One line of :data:`MIRROR_JOURNAL`: a file mirror_gina placed in sdr/.

    On disk: ``{"time": "<ISO, Z>", "name": ..., "bytes": N, "md5": ..., "seconds": S, "connections": N,
    "listed": "<ISO, when GINA's listing first showed it>", "station": "<receiving station>"}`` (``listed`` and
    ``station`` only when known; ``placed_at`` is read as ``time`` too)."""

    name: str
    time: float | None  # epoch seconds placed
    size: int | None = None
    md5: str | None = None
    seconds: float | None = None
    connections: int | None = None
    listed: float | None = None  # epoch seconds GINA's listing first showed it
    station: str = ""  # the receiving station it came from ("" unknown)

    @classmethod
    def of(cls, record: Mapping) -> PlacedRecord | None:
        """The record a journal line's JSON object holds; None when it names no file."""
        name = record.get("name")
        if not isinstance(name, str):
            return None
        size = record.get("bytes")
        seconds = record.get("seconds")
        connections = record.get("connections")
        listed = next((t for key in ("listed", "first_listed", "first_seen") if (t := epoch(record.get(key)))
                       is not None), None)
        station = record.get("station")
        return cls(name, epoch(record.get("time", record.get("placed_at"))),
                   size if isinstance(size, int) and not isinstance(size, bool) else None,
                   record.get("md5") if isinstance(record.get("md5"), str) else None,
                   float(seconds) if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else None,
                   connections if isinstance(connections, int) else None, listed,
                   station if isinstance(station, str) else "")


def placed_records(lines: Iterator[str | bytes] | list) -> Iterator[PlacedRecord]:
    """The records among journal lines (torn or foreign lines are skipped)."""
    for line in lines:
        try:
            record = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(record, dict) and (placed := PlacedRecord.of(record)) is not None:
            yield placed


def read_placed(path: Path) -> Iterator[tuple[dict, PlacedRecord]]:
    """Every record of a download journal, oldest first, streaming: (the raw JSON object, the record)."""
    try:
        handle = open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    with handle:
        for line in handle:
            try:
                raw = json.loads(line)
            except ValueError:
                continue
            if isinstance(raw, dict) and (placed := PlacedRecord.of(raw)) is not None:
                yield raw, placed


# -- the broker's journal -------------------------------------------------------------------------------------------
@dataclass
class Loaded:
    """What a broker journal holds, replayed."""

    tasks: list[Any] = field(default_factory=list)  # the live tasks (decoded), in queue order
    next_id: int = 1
    ledger: list[Take | Forget] = field(default_factory=list)  # takes with their granules, and forgets, in order
    events: list[Event] = field(default_factory=list)
    ledger_since: dt.datetime | None = None  # None: no ledger yet (a new or version 1 journal)
    clean: bool = True  # the journal ends with a clean stop (or is new)
    last_time: dt.datetime | None = None  # the time of its last record
    in_doubt: list[tuple[Any, Take]] = field(default_factory=list)  # (task, its take), if not clean
    # how the file was (the store acts on these: it moves a foreign file aside, keeps a copy of a damaged one)
    empty: bool = False
    foreign: bool = False
    damaged: list[tuple[int, str]] = field(default_factory=list)  # (line number, why)
    cut: int = 0  # bytes of a last line without its newline (a write cut short by a kill), dropped


def read_broker_journal(path: Path, decode_task: Callable[[Mapping], Any] = lambda record: record) -> Loaded:
    """Replay task_broker's journal, read-only: the live tasks in queue order (each task record passed through
    ``decode_task``; a record it refuses with ValueError, KeyError or TypeError counts as a damaged line, as does
    a line that is no record of ``ondisk/journal.py``), the next task id, the ledger records, the events, and the
    hand-outs in doubt after an unclean stop. Streams the file one line at a time; never raises for a bad file
    (what is wrong with it is in the result); a missing file is empty."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return Loaded()
    with handle:
        first = handle.readline()
        header = decode_header(first) if first.endswith(b"\n") else None
        if header is None:
            return Loaded(empty=not first, foreign=bool(first))
        out = Loaded(next_id=header.next_id, ledger_since=header.ledger_since, last_time=header.t)
        tasks: dict[int, Any] = {}
        recent: list[tuple[dt.datetime, Any, Take]] = []  # hand-outs of the last DOUBT_SECONDS so far
        for number, line in enumerate(handle, start=2):
            if not line.endswith(b"\n"):
                out.cut = len(line)
                break
            try:
                _replay(decode(line), out, tasks, recent, decode_task)
            except (ValueError, KeyError, TypeError) as err:
                out.damaged.append((number, str(err)[:200]))
    out.tasks = [tasks[key] for key in sorted(tasks)]
    if not out.clean:
        out.in_doubt = [(task, take) for _, task, take in recent]
    return out


def _replay(record: Record, out: Loaded, tasks: dict[int, Any], recent: list,
            decode_task: Callable[[Mapping], Any]) -> None:
    match record:
        case Put():
            task_id = int(record.task["id"])
            tasks[task_id] = decode_task(record.task)
            out.next_id = max(out.next_id, task_id + 1)
        case Take():
            task = tasks.pop(record.id, None)
            out.next_id = max(out.next_id, record.id + 1)
            if record.granules is not None:
                out.ledger.append(record)
            if task is not None and record.t is not None and record.kind == HANDED_OUT and not record.by:
                recent.append((record.t, task, record))
        case Sent():  # the reply carrying that hand-out was written to its worker's connection: not in doubt
            recent[:] = [item for item in recent if item[2].id != record.id]
        case Forget():
            out.ledger.append(record)
        case Event():
            out.events.append(record)
    out.clean = isinstance(record, Stop)
    if record.t is not None:
        out.last_time = record.t
        recent[:] = [item for item in recent if item[0] >= record.t - dt.timedelta(seconds=DOUBT_SECONDS)]
