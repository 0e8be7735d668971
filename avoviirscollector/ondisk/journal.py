"""task_broker's journal records (``state/task_queue.journal``): one type per record, one encoder, one decoder.

Every program that writes or reads the journal goes through this module: the broker (``broker/store.py`` writes,
``broker/core.py`` makes the records), the read-only replay (``ondisk/state.py``), the free-space sweep
(``space.py``) and the monitor (``monitor/history.py``). The journal is one JSON object per line; the first is the
:class:`Header`, then one of the records below, each with ``op`` (its kind) and ``t`` (the UTC time it was written;
absent on the records a compaction copies without one, such as the puts of the live tasks):

- :class:`Put` ``{"op": "put", "task": {...}}``: a new or merged task, the full record (the task's own format is
  the queue's: ``broker/taskqueue.task_to_record``);
- :class:`Take` ``{"op": "take", "id": N, "kind": "handed out"|"dropped", "worker": "<address>", "granules": [...],
  "what": "..."}``: a task left the queue (a hand-out to a worker, or a drop); also the ledger entry that keeps its
  granules from being queued twice (a version 1 take carries only the id: ``granules`` None); with ``"by":
  "<address>"`` when the pair's other host handed it out and replicated it here (``broker/replication.py``): this
  host's task of those granules left its queue, or its granules are kept as taken;
- :class:`Forget` ``{"op": "forget", "granules": [...]}``: an operator re-queued these granules (they leave the
  ledger);
- :class:`Event` ``{"op": "event", "kind": "recovered"|"in doubt"|"duplicate"|"bad request", "count": N}``: what the
  broker recovered, re-queued in doubt or refused as a duplicate, and the bad requests it answered with an error
  (``count``, written when not 1, is how many one record stands for);
- :class:`Sent` ``{"op": "sent", "id": N}``: the reply carrying hand-out N was written to its worker's connection
  (so it is not in doubt after a kill);
- :class:`Mark` ``{"op": "mark"}``: written once a second after hand-outs (the last record tells when the broker
  was last alive);
- :class:`Stop` ``{"op": "stop"}``: the last line of a clean stop.

A granule in ``granules`` is ``[product, platform_name, start time]`` (``granules.GranuleKey``). :func:`decode` is
strict: a line that is not one of these records, whole, raises :class:`ValueError`; the readers decide what a bad
line costs (the replay counts it damaged, the monitor skips it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from avoviirscollector.granules import GranuleKey
from avoviirscollector.isotime import utc

FORMAT = "avoviirscollector-task-queue"
VERSION = 2
READABLE_VERSIONS = (1, 2)
HANDED_OUT, DROPPED = "handed out", "dropped"
TAKE_KINDS = (HANDED_OUT, DROPPED)


@dataclass(frozen=True, slots=True)
class Header:
    """The journal's first line: ``{"format": FORMAT, "version": 2, "t": ..., "next_id": N, "ledger_since": ...}``
    (``ledger_since``: since when the ledger is complete; a version 1 file, from before the ledger, has none)."""

    next_id: int = 1
    ledger_since: dt.datetime | None = None
    t: dt.datetime | None = None
    version: int = VERSION


@dataclass(frozen=True, slots=True)
class Put:
    task: Mapping[str, Any]
    t: dt.datetime | None = None
    op: ClassVar[str] = "put"


@dataclass(frozen=True, slots=True)
class Take:
    id: int
    kind: str = HANDED_OUT
    worker: str = ""
    granules: tuple[GranuleKey, ...] | None = None  # None: a version 1 take (no ledger entry)
    what: str = ""
    t: dt.datetime | None = None
    by: str = ""  # "": this host handed it out; else the pair's other host did (its address), and told this one
    op: ClassVar[str] = "take"


@dataclass(frozen=True, slots=True)
class Forget:
    granules: tuple[GranuleKey, ...]
    t: dt.datetime | None = None
    op: ClassVar[str] = "forget"


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    count: int = 1
    t: dt.datetime | None = None
    op: ClassVar[str] = "event"


@dataclass(frozen=True, slots=True)
class Sent:
    id: int
    t: dt.datetime | None = None
    op: ClassVar[str] = "sent"


@dataclass(frozen=True, slots=True)
class Mark:
    t: dt.datetime | None = None
    op: ClassVar[str] = "mark"


@dataclass(frozen=True, slots=True)
class Stop:
    t: dt.datetime | None = None
    op: ClassVar[str] = "stop"


Record = Put | Take | Forget | Event | Sent | Mark | Stop


def stamped[R: (Put, Take, Forget, Event, Sent, Mark, Stop)](record: R, when: dt.datetime) -> R:
    """``record`` with its time ``when``, unless it has one."""
    return record if record.t is not None else dataclasses.replace(record, t=when)


# -- encoding ----------------------------------------------------------------------------------------------------
def as_json(record: Record | Header, with_op: bool = True) -> dict:
    """The JSON object of a record (or the header); without its ``op`` when not ``with_op`` (the operators' list
    of hand-outs shows the takes so)."""
    if isinstance(record, Header):
        return _header_json(record)
    out: dict[str, Any] = {"op": record.op} if with_op else {}
    if record.t is not None:
        out["t"] = record.t.isoformat()
    match record:
        case Put():
            out["task"] = dict(record.task)
        case Take():
            out.update(id=record.id, worker=record.worker, kind=record.kind)
            if record.granules is not None:
                out["granules"] = [key.to_json() for key in record.granules]
            out["what"] = record.what
            if record.by:
                out["by"] = record.by
        case Forget():
            out["granules"] = [key.to_json() for key in record.granules]
        case Event():
            out["kind"] = record.kind
            if record.count != 1:
                out["count"] = record.count
        case Sent():
            out["id"] = record.id
    return out


def _header_json(header: Header) -> dict[str, Any]:
    out: dict[str, Any] = {"format": FORMAT, "version": header.version}
    if header.t is not None:
        out["t"] = header.t.isoformat()
    out["next_id"] = header.next_id
    if header.ledger_since is not None:
        out["ledger_since"] = header.ledger_since.isoformat()
    return out


def encode(record: Record | Header) -> bytes:
    """One journal line (ASCII, with its newline)."""
    return (json.dumps(as_json(record), separators=(",", ":"), ensure_ascii=True) + "\n").encode("ascii")


# -- decoding ----------------------------------------------------------------------------------------------------
def _time(value: Any, what: str) -> dt.datetime | None:
    if value is None:
        return None
    when = utc(value)
    if when is None:
        raise ValueError(f"{what} is not an ISO time: {value!r}")
    return when


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} is not an integer: {value!r}")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} is not a text: {value!r}")
    return value


def _keys(value: Any) -> tuple[GranuleKey, ...]:
    if not isinstance(value, list):
        raise ValueError(f"granules is not a list: {value!r}")
    try:
        return tuple(GranuleKey.from_json(key) for key in value)
    except TypeError as err:
        raise ValueError(f"a granule is not one: {err}") from None


def _load(line: bytes | str | Mapping) -> Mapping:
    if isinstance(line, Mapping):
        return line
    try:
        obj = json.loads(line)
    except UnicodeDecodeError as err:
        raise ValueError(f"not text: {err}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"not a JSON object: {type(obj).__name__}")
    return obj


def decode(line: bytes | str | Mapping) -> Record:
    """The record of one journal line (or of its JSON object already parsed); ValueError when it is not one."""
    obj = _load(line)
    op = obj.get("op")
    t = _time(obj.get("t"), "t")
    match op:
        case "put":
            task = obj.get("task")
            if not isinstance(task, Mapping):
                raise ValueError(f"a put without its task: {task!r}")
            return Put(task, t)
        case "take":
            kind = obj.get("kind", HANDED_OUT)
            if kind not in TAKE_KINDS:
                raise ValueError(f"unknown hand-out kind {kind!r}")
            granules = _keys(obj["granules"]) if "granules" in obj else None
            return Take(_int(obj.get("id"), "id"), kind, _str(obj.get("worker", ""), "worker"), granules,
                        _str(obj.get("what", ""), "what"), t, _str(obj.get("by", ""), "by"))
        case "forget":
            return Forget(_keys(obj.get("granules")), t)
        case "event":
            count = _int(obj.get("count", 1), "count")
            return Event(_str(obj.get("kind"), "kind"), count if count > 0 else 1, t)
        case "sent":
            return Sent(_int(obj.get("id"), "id"), t)
        case "mark":
            return Mark(t)
        case "stop":
            return Stop(t)
    raise ValueError(f"unknown op {op!r}")


def decode_header(line: bytes | str) -> Header | None:
    """The header of a journal this version reads, or None when ``line`` is not one."""
    try:
        obj = _load(line)
    except ValueError:
        return None
    if obj.get("format") != FORMAT or obj.get("version") not in READABLE_VERSIONS:
        return None
    try:
        return Header(int(obj.get("next_id", 1)), _time(obj.get("ledger_since"), "ledger_since"),
                      _time(obj.get("t"), "t"), obj["version"])
    except (TypeError, ValueError):
        return None


def records(lines: Iterable[bytes | str]) -> Iterator[Record]:
    """The records among ``lines`` (a header, a torn or a foreign line is skipped): for readers that follow the
    journal as it grows."""
    for line in lines:
        try:
            yield decode(line)
        except ValueError:
            continue
