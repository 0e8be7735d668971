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

MERGE_WINDOW = dt.timedelta(minutes=30)
DIRECTIONS = ("ascending", "descending", "unknown")
REQUIRED_KEYS = ("platform_name", "orbit_number", "start_time", "end_time")


class NotAGranule(ValueError):
    """A bus message that cannot become a task (the text says why)."""


def product_of(subject: str) -> str:
    """The product named by a granule subject: its last path element."""
    return subject.rstrip("/").rsplit("/", 1)[-1]


def _utc(value: Any, key: str) -> dt.datetime:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise NotAGranule(f"{key} is not an ISO datetime: {value!r}") from None
    if not isinstance(value, dt.datetime):
        raise NotAGranule(f"{key} is not a datetime: {value!r}")
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


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


def merge_dataset(queued: list[dict], new: list[dict]) -> list[dict]:
    """Union by ``uid``: queued entries first (unchanged), then new uids in arrival order."""
    seen = {item.get("uid") for item in queued}
    out = list(queued)
    for item in new:
        uid = item.get("uid")
        if uid not in seen:
            seen.add(uid)
            out.append(item)
    return out


class TaskQueue:
    """The queue. Every operation is O(products) or O(tasks of one identity), not O(queue length)."""

    def __init__(self, tasks: Iterable[Task] = (), next_id: int = 1) -> None:
        self._tasks: dict[int, Task] = {}
        self._by_product: dict[str, dict[int, None]] = {}
        self._by_identity: dict[tuple, list[int]] = {}
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

    def _remove(self, task: Task) -> None:
        del self._tasks[task.id]
        ids = self._by_product[task.product]
        del ids[task.id]
        if not ids:
            del self._by_product[task.product]
        same = self._by_identity[task.identity]
        same.remove(task.id)
        if not same:
            del self._by_identity[task.identity]

    def offer(self, granule: Granule, pass_direction: str) -> tuple[Task, bool]:
        """Queue a granule: merge it into a matching task (returns it, True) or append a new task (it, False)."""
        if pass_direction not in DIRECTIONS:
            raise ValueError(f"pass direction must be one of {DIRECTIONS}: {pass_direction!r}")
        identity = (granule.subject, granule.platform_name, granule.orbit_number, pass_direction)
        for task_id in self._by_identity.get(identity, ()):
            task = self._tasks[task_id]
            if abs(task.start_time - granule.start_time) <= MERGE_WINDOW:
                data = task.data
                data["start_time"] = min(data["start_time"], granule.start_time)
                data["end_time"] = max(data["end_time"], granule.end_time)
                data["dataset"] = merge_dataset(data.get("dataset", []), granule.data.get("dataset", []))
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

    def take(self, desired: Iterable[str], just_testing: bool = False) -> Task | None:
        """The oldest task whose product is desired; removed from the queue unless ``just_testing``."""
        task = self.peek(desired)
        if task is not None and not just_testing:
            self._remove(task)
        return task

    def restore(self, task: Task) -> None:
        """Put a taken task back at its old position (its hand-out could not be delivered)."""
        self._insert(task)
        self.next_id = max(self.next_id, task.id + 1)

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
            return dt.datetime.fromisoformat(value["$datetime"])
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
