"""The task queue of task_broker and its rules (SPEC section 6). Pure: no sockets, no files, no clock.

A task is one product granule (or several merged granules) waiting for a ``viirsprocessor`` worker. Its identity is
(subject, platform_name, orbit_number, pass direction); the subject ends in the product name
(``/AVO/viirs/granule/tir`` -> ``tir``).

Rules:

- **merge**: a granule whose identity is queued and whose start time is within :data:`MERGE_WINDOW` (30 minutes)
  of a queued task's start updates that task in place: the task keeps its queue position, start = min,
  end = max, ``dataset`` = union by ``uid`` (queued entries first, new uids appended in the order they came).
  Otherwise the granule becomes a new task at the back of the queue.
- **take**: the oldest task (queue position) whose product is one of the desired products; removed from the
  queue unless "just testing". Nothing matching -> ``None``.
- **status**: queue length, the products waiting (sorted), and the count per product.
- **one task per granule** (SPEC section 10): a granule is (product, platform, start time), known from the file
  names in ``dataset`` (see ``granules.py``). A granule already queued is merged into the task that holds it,
  whatever its identity; a granule handed out (or dropped by an operator) is in the **ledger** and an offer of it
  is refused as a duplicate (:meth:`TaskQueue.admit`). The ledger remembers each hand-out with its time and the
  worker's address until :meth:`TaskQueue.prune_ledger` forgets it (the broker keeps it for ``RECOVERY_HOURS``
  and an hour more).

Each task has an integer ``id`` that only grows; the queue order is the id order, which is what keeps the
position of a merged task and what lets a restored task (one whose reply could not be delivered) go back exactly
where it was.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from avoviirscollector import isotime
from avoviirscollector.granules import GranuleKey, GranuleMap, keys_of, merge_files, same_start
from avoviirscollector.ondisk.journal import DROPPED, HANDED_OUT, Take, as_json

MERGE_WINDOW = dt.timedelta(minutes=30)
DIRECTIONS = ("ascending", "descending", "unknown")
REQUIRED_KEYS = ("platform_name", "orbit_number", "start_time", "end_time")


class NotAGranule(ValueError):
    """A bus message that cannot become a task (the text says why)."""


def product_of(subject: str) -> str:
    """The product named by a granule subject: its last path element."""
    return subject.rstrip("/").rsplit("/", 1)[-1]


def _utc(value: Any, key: str) -> dt.datetime:
    try:
        return isotime.parse(value)
    except ValueError:
        kind = "an ISO datetime" if isinstance(value, str) else "a datetime"
        raise NotAGranule(f"{key} is not {kind}: {value!r}") from None


def _intern(value: Any) -> Any:
    """One shared copy of short strings that every task repeats (keys, platform, source), to keep memory small."""
    if isinstance(value, str) and len(value) <= 40:
        return sys.intern(value)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [_intern(item) for item in value]
    return value


@dataclass(slots=True)
class Granule:
    """A granule message as the queue needs it; build with :func:`parse_granule`."""

    subject: str
    atype: str
    sender: str
    time: dt.datetime
    data: dict
    platform_name: str
    orbit_number: int
    start_time: dt.datetime
    end_time: dt.datetime

    @property
    def product(self) -> str:
        return product_of(self.subject)


def parse_granule(subject: str, atype: str, sender: str, time: dt.datetime, data: Any) -> Granule:
    """Check a bus message and normalise its times to aware UTC; raise :class:`NotAGranule` if unusable."""
    if not isinstance(data, Mapping):
        raise NotAGranule(f"data is not an object: {type(data).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise NotAGranule(f"missing {', '.join(missing)}")
    platform = data["platform_name"]
    if not isinstance(platform, str) or not platform:
        raise NotAGranule(f"platform_name is not a name: {platform!r}")
    orbit = data["orbit_number"]
    if isinstance(orbit, bool) or not isinstance(orbit, int):
        raise NotAGranule(f"orbit_number is not an integer: {orbit!r}")
    dataset = data.get("dataset", [])
    if not isinstance(dataset, list) or not all(isinstance(item, Mapping) for item in dataset):
        raise NotAGranule("dataset is not a list of objects")
    start = _utc(data["start_time"], "start_time")
    end = _utc(data["end_time"], "end_time")
    copied = {_intern(key): _intern(value) for key, value in data.items()}
    copied["start_time"], copied["end_time"] = start, end
    copied["dataset"] = [{_intern(key): value for key, value in item.items()} for item in dataset]
    return Granule(subject, atype, sender, _utc(time, "time"), copied, platform, orbit, start, end)


@dataclass(slots=True)
class Task:
    """A queued task. ``data`` is the message data handed to the worker (with aware UTC datetimes)."""

    id: int
    subject: str
    atype: str
    sender: str
    time: dt.datetime
    pass_direction: str
    data: dict = field(default_factory=dict)

    @property
    def product(self) -> str:
        return product_of(self.subject)

    @property
    def identity(self) -> tuple[str, str, int, str]:
        return (self.subject, self.data["platform_name"], self.data["orbit_number"], self.pass_direction)

    @property
    def start_time(self) -> dt.datetime:
        return self.data["start_time"]

    @property
    def end_time(self) -> dt.datetime:
        return self.data["end_time"]

    def handout_data(self) -> dict:
        """The data of the message a worker receives: the granule data plus ``pass_direction``."""
        out = dict(self.data)
        out["pass_direction"] = self.pass_direction
        return out

    def describe(self) -> str:
        return (
            f"task {self.id} {self.product} {self.data['platform_name']} orbit {self.data['orbit_number']} "
            f"{self.pass_direction} {self.start_time:%Y-%m-%dT%H:%M:%S}..{self.end_time:%H:%M:%S} "
            f"({len(self.data.get('dataset', []))} files)"
        )


def granules_of(task: Task) -> set[GranuleKey]:
    return keys_of(task.product, task.data.get("dataset", []))


@dataclass(frozen=True, slots=True)
class HandOut:
    """A ledger entry: a task that left the queue, its granules, when, to whom and how."""

    task_id: int
    when: dt.datetime
    worker: str  # the worker's address ("" when unknown), or "operator" for a drop
    kind: str  # HANDED_OUT or DROPPED
    granules: tuple[GranuleKey, ...]
    what: str  # the task's description at that moment
    by: str = ""  # "": this host; else the pair's other host (its address) handed it out and replicated it here

    def to_take(self) -> Take:
        """The journal's record of this entry."""
        return Take(self.task_id, self.kind, self.worker, self.granules, self.what, self.when, self.by)

    @classmethod
    def from_take(cls, take: Take) -> HandOut:
        """The entry a journal's take with its granules records; ValueError for one without its time or granules
        (a version 1 take)."""
        if take.t is None or take.granules is None:
            raise ValueError(f"take of task {take.id} has no {'time' if take.t is None else 'granules'}")
        return cls(take.id, take.t, take.worker, take.kind, take.granules, take.what, take.by)

    def to_json(self) -> dict:
        """The entry as the operators' ``list`` shows it (the journal's take without its ``op``)."""
        return as_json(self.to_take(), with_op=False)


ADMIT_QUEUED, ADMIT_MERGED, ADMIT_DUPLICATE = "queued", "merged", "duplicate"


@dataclass(frozen=True, slots=True)
class Withdrawn:
    """What a hand-out made by the pair's other host did to this queue (:meth:`TaskQueue.withdraw`)."""

    entries: tuple[HandOut, ...] = ()  # new ledger entries: tasks that left whole, granules kept as taken
    changed: tuple[Task, ...] = ()  # tasks that held some of those granules: they stay, with their other files
    known: tuple[HandOut, ...] = ()  # entries that held some of those granules already (nothing new for them)


class TaskQueue:
    """The queue. Every operation is O(products) or O(tasks of one identity), not O(queue length)."""

    def __init__(self, tasks: Iterable[Task] = (), next_id: int = 1) -> None:
        self._tasks: dict[int, Task] = {}
        self._by_product: dict[str, dict[int, None]] = {}
        self._by_identity: dict[tuple, list[int]] = {}
        self._by_granule = GranuleMap()  # granule -> the task holding it (starts matched within the tolerance)
        self._ledger: dict[int, HandOut] = {}  # task id -> hand-out, oldest first
        self._ledger_keys = GranuleMap()  # granule -> the hand-out it left in
        self.next_id = next_id
        for task in sorted(tasks, key=lambda t: t.id):
            self._insert(task)
            self.next_id = max(self.next_id, task.id + 1)

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[Task]:
        """Tasks in queue order (oldest first)."""
        return iter(sorted(self._tasks.values(), key=lambda t: t.id))

    def get(self, task_id: int) -> Task | None:
        return self._tasks.get(task_id)

    def _insert(self, task: Task) -> None:
        if task.id in self._tasks:
            raise ValueError(f"task {task.id} is queued already")
        self._tasks[task.id] = task
        ids = self._by_product.setdefault(task.product, {})
        if ids and task.id < next(reversed(ids)):
            ids[task.id] = None
            self._by_product[task.product] = dict.fromkeys(sorted(ids))
        else:
            ids[task.id] = None
        self._by_identity.setdefault(task.identity, []).append(task.id)
        self._by_identity[task.identity].sort()
        for key in granules_of(task):
            self._by_granule[key] = task.id

    def _remove(self, task: Task) -> set[GranuleKey]:
        """Take ``task`` out of the queue and its indexes; its granules (parsed from its file names once)."""
        del self._tasks[task.id]
        ids = self._by_product[task.product]
        del ids[task.id]
        if not ids:
            del self._by_product[task.product]
        same = self._by_identity[task.identity]
        same.remove(task.id)
        if not same:
            del self._by_identity[task.identity]
        keys = granules_of(task)
        for key in keys:
            if self._by_granule.get(key) == task.id:
                del self._by_granule[key]
        return keys

    def offer(self, granule: Granule, pass_direction: str) -> tuple[Task, bool]:
        """Queue a granule: merge it into a matching task (returns it, True) or append a new task (it, False).

        A task that holds one of the granule's granules already is the matching task, whatever its identity;
        otherwise a task of the same identity whose start is within the merge window."""
        if pass_direction not in DIRECTIONS:
            raise ValueError(f"pass direction must be one of {DIRECTIONS}: {pass_direction!r}")
        product = product_of(granule.subject)
        keys = keys_of(product, granule.data.get("dataset", []))
        holders = [self._by_granule[key] for key in keys if key in self._by_granule]
        identity = (granule.subject, granule.platform_name, granule.orbit_number, pass_direction)
        candidates = holders[:1] or self._by_identity.get(identity, ())
        for task_id in candidates:
            task = self._tasks[task_id]
            if holders or abs(task.start_time - granule.start_time) <= MERGE_WINDOW:
                data = task.data
                data["start_time"] = min(data["start_time"], granule.start_time)
                data["end_time"] = max(data["end_time"], granule.end_time)
                data["dataset"] = merge_files(product, data.get("dataset", []), granule.data.get("dataset", []))
                for key in keys:
                    self._by_granule.setdefault(key, task.id)
                return task, True
        task = Task(
            id=self.next_id, subject=granule.subject, atype=granule.atype, sender=granule.sender,
            time=granule.time, pass_direction=pass_direction, data=granule.data,
        )
        self.next_id += 1
        self._insert(task)
        return task, False

    def peek(self, desired: Iterable[str]) -> Task | None:
        """The oldest task whose product is desired, left in the queue."""
        best = None
        for product in set(desired):
            ids = self._by_product.get(product)
            if ids:
                head = next(iter(ids))
                if best is None or head < best:
                    best = head
        return None if best is None else self._tasks[best]

    def take(self, desired: Iterable[str], just_testing: bool = False, *, when: dt.datetime | None = None,
             worker: str = "") -> Task | None:
        """The oldest task whose product is desired; removed from the queue unless ``just_testing``.

        With ``when``, the hand-out goes into the ledger (see :meth:`ledger_entry`)."""
        task = self.peek(desired)
        if task is not None and not just_testing:
            keys = self._remove(task)
            if when is not None:
                self.record(HandOut(task.id, when, worker, HANDED_OUT, tuple(sorted(keys)), task.describe()))
        return task

    def drop(self, task_id: int, when: dt.datetime, who: str = "operator") -> HandOut | None:
        """Take a queued task out for good (an operator's decision); its granules go into the ledger as dropped."""
        task = self._tasks.get(task_id)
        if task is None:
            return None
        entry = HandOut(task.id, when, who, DROPPED, tuple(sorted(self._remove(task))), task.describe())
        self.record(entry)
        return entry

    def restore(self, task: Task) -> None:
        """Put a taken task back at its old position (its hand-out could not be delivered, or is in doubt)."""
        self.unrecord(task.id)
        self._insert(task)
        self.next_id = max(self.next_id, task.id + 1)

    # -- the ledger ----------------------------------------------------------------------------------------------

    def record(self, entry: HandOut) -> None:
        """Remember a hand-out (or drop): its granules are never queued again while the entry is kept."""
        self.unrecord(entry.task_id)
        self._ledger[entry.task_id] = entry
        for key in entry.granules:
            self._ledger_keys[key] = entry.task_id

    def unrecord(self, task_id: int) -> HandOut | None:
        entry = self._ledger.pop(task_id, None)
        if entry is not None:
            for key in entry.granules:
                if self._ledger_keys.get(key) == task_id:
                    del self._ledger_keys[key]
        return entry

    def forget(self, keys: Iterable[GranuleKey]) -> list[GranuleKey]:
        """Take granules out of the ledger (an operator re-queues them); the ones that were in it."""
        forgotten = []
        for key in keys:
            task_id = self._ledger_keys.pop(key, None)
            if task_id is None:
                continue
            forgotten.append(key)
            entry = self._ledger[task_id]
            left = tuple(k for k in entry.granules if k[:2] != key[:2] or not same_start(k[2], key[2]))
            if left:
                self._ledger[task_id] = HandOut(entry.task_id, entry.when, entry.worker, entry.kind, left, entry.what,
                                                entry.by)
            else:
                del self._ledger[task_id]
        return forgotten

    def ledger_entry_of(self, task_id: int) -> HandOut | None:
        return self._ledger.get(task_id)

    def ledger_entry(self, key: GranuleKey) -> HandOut | None:
        task_id = self._ledger_keys.get(key)
        return None if task_id is None else self._ledger[task_id]

    def knows(self, key: GranuleKey) -> bool:
        """True when the granule is queued, handed out or dropped (within the ledger's memory)."""
        return key in self._by_granule or key in self._ledger_keys

    @property
    def ledger_size(self) -> int:
        return len(self._ledger)

    def ledger(self) -> list[HandOut]:
        """The ledger, oldest hand-out first."""
        return sorted(self._ledger.values(), key=lambda entry: (entry.when, entry.task_id))

    def prune_ledger(self, before: dt.datetime) -> int:
        """Forget hand-outs older than ``before``; how many were forgotten."""
        old = [entry.task_id for entry in self._ledger.values() if entry.when < before]
        for task_id in old:
            self.unrecord(task_id)
        return len(old)

    def admit(self, granule: Granule, pass_direction: str) -> tuple[Task | None, str, HandOut | None]:
        """Offer one granule under the one-task-per-granule rule.

        Returns (task, ``"queued"`` or ``"merged"``, None), or (None, ``"duplicate"``, the ledger entry) when the
        granule was handed out or dropped already."""
        for key in keys_of(product_of(granule.subject), granule.data.get("dataset", [])):
            entry = self.ledger_entry(key)
            if entry is not None:
                return None, ADMIT_DUPLICATE, entry
        task, merged = self.offer(granule, pass_direction)
        return task, ADMIT_MERGED if merged else ADMIT_QUEUED, None

    def withdraw(self, keys: Iterable[GranuleKey], when: dt.datetime, worker: str, kind: str, what: str,
                 by: str) -> Withdrawn:
        """The pair's other host (``by``) handed these granules out (or dropped them): a task that holds only them
        leaves the queue as that hand-out; a task that holds other granules too keeps those (its files of the
        granules taken leave it); granules this queue has not seen are kept as taken (a new ledger entry), so that
        they are refused when they come. Granules the ledger holds already are left as they are (``known``)."""
        wanted = GranuleMap((key, None) for key in keys)
        known: dict[int, HandOut] = {}
        held: dict[int, list[GranuleKey]] = {}
        loose: list[GranuleKey] = []
        for key in wanted:
            entry = self.ledger_entry(key)
            if entry is not None:
                known[entry.task_id] = entry
            elif (task_id := self._by_granule.get(key)) is not None:
                held.setdefault(task_id, []).append(key)
            else:
                loose.append(key)
        entries, changed = [], []
        for task_id, taken in held.items():
            task = self._tasks[task_id]
            own = self._remove(task)
            if all(key in wanted for key in own):
                entries.append(HandOut(task.id, when, worker, kind, tuple(sorted(own)), what, by))
                self.record(entries[-1])
                continue
            task.data["dataset"] = [item for item in task.data.get("dataset", [])
                                    if not any(key in wanted for key in keys_of(task.product, [item]))]
            self._insert(task)
            changed.append(task)
            loose.extend(taken)
        if loose:
            entries.append(HandOut(self.next_id, when, worker, kind, tuple(sorted(loose)), what, by))
            self.next_id += 1
            self.record(entries[-1])
        return Withdrawn(tuple(entries), tuple(changed), tuple(known.values()))

    def products_waiting(self) -> list[str]:
        return sorted(self._by_product)

    def status(self) -> dict:
        """What the status stream publishes."""
        return {
            "queue length": len(self._tasks),
            "products waiting": self.products_waiting(),
            "tasks by product": {product: len(ids) for product, ids in sorted(self._by_product.items())},
        }


# Records: the JSON-able form of a task, used by the state file. Datetimes are tagged so that no string is ever
# mistaken for one.

def _encode(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dict):
        return {key: _encode(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(item) for item in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and "$datetime" in value:
            return isotime.parse(value["$datetime"])
        return {key: _decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value


def task_to_record(task: Task) -> dict:
    return {
        "id": task.id, "subject": task.subject, "type": task.atype, "sender": task.sender,
        "time": _encode(task.time), "pass_direction": task.pass_direction, "data": _encode(task.data),
    }


def task_from_record(record: Mapping) -> Task:
    """Inverse of :func:`task_to_record`; raises ValueError (or KeyError/TypeError) on a malformed record."""
    task = Task(
        id=int(record["id"]), subject=str(record["subject"]), atype=str(record["type"]),
        sender=str(record["sender"]), time=_decode(record["time"]), pass_direction=str(record["pass_direction"]),
        data=_decode(record["data"]),
    )
    if task.pass_direction not in DIRECTIONS or not isinstance(task.data, dict):
        raise ValueError(f"malformed task record {task.id}")
    granule = parse_granule(task.subject, task.atype, task.sender, task.time, task.data)
    task.data = granule.data
    task.time = granule.time
    return task
