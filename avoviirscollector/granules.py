"""Product granules as files: which granule a file belongs to, when a granule is complete, and what is in sdr/.

Pure: no sockets, no files, no clock; the view of sdr/ (:class:`Inventory`) is fed names and placement times by
``ondisk.sdr.SdrWatch``, so it is tested directly.

A **granule** is (product, platform, granule start time) (SPEC section 10): the files of one product that share a
platform and a start time within :data:`START_TOLERANCE` (two receiving stations' copies of a granule start about
0.1 s apart, consecutive granules 85.35 s apart). A reissued file (new creation time in its name) or another
station's copy of a file is the same granule's file; of several copies of one segment the newest creation time is
used. Keys that are compared or looked up go through :class:`GranuleMap` (or :class:`Starts`), which match starts
within the tolerance, so a granule is one granule whichever copy's start a program saw first. A granule is
**complete** when every segment its product needs (``viirs.PRODUCTS``) has a file; it became complete when the last
of those segments got its first copy (files are placed by one rename, so a file's placement time is its inode
change time).

Used by task_broker for three things: to check that a ``dataset`` message from a segment_gatherer holds whole
granules of one platform and start time (:func:`split_dataset`; a gatherer slot keyed by start time alone can mix
platforms), to know which granules a task holds (:func:`keys_of`, for the hand-out ledger), and to reconcile the
queue with ``sdr/`` (:class:`Inventory`).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from avoviirscollector import isotime
from avoviirscollector.viirs import PRODUCTS, NotASdrName, SdrName, parse_name, start_key, start_key_of

#: starts closer than this (seconds) are one granule's: segment_gatherer's ``time_tolerance`` (etc/segment_gatherer.ini)
START_TOLERANCE = 1.0
_EPOCH = dt.datetime(1970, 1, 1)


def same_start(a: dt.datetime, b: dt.datetime) -> bool:
    """Whether two granule starts (naive UTC) are one granule's."""
    return abs((a - b).total_seconds()) < START_TOLERANCE


class Starts:
    """Canonical granule starts: a start within :data:`START_TOLERANCE` of one met before (with the same ``prefix``,
    e.g. the platform) is taken for that one. Lookups cost O(1) (buckets of the tolerance's width)."""

    def __init__(self) -> None:
        self._buckets: dict[tuple, list[dt.datetime]] = {}

    @staticmethod
    def _bucket(start: dt.datetime) -> int:
        return int((start - _EPOCH).total_seconds() // START_TOLERANCE)

    def find(self, prefix: tuple, start: dt.datetime) -> dt.datetime | None:
        """The canonical start that ``start`` matches, or None."""
        bucket = self._bucket(start)
        for near in (bucket, bucket - 1, bucket + 1):
            for known in self._buckets.get((prefix, near), ()):
                if same_start(known, start):
                    return known
        return None

    def canonical(self, prefix: tuple, start: dt.datetime) -> dt.datetime:
        """The canonical start of ``start``; it becomes one itself when it matches none."""
        known = self.find(prefix, start)
        if known is None:
            self._buckets.setdefault((prefix, self._bucket(start)), []).append(start)
            known = start
        return known

    def forget(self, prefix: tuple, start: dt.datetime) -> None:
        """Forget a canonical start (its last user has gone)."""
        key = (prefix, self._bucket(start))
        known = self._buckets.get(key)
        if known and start in known:
            known.remove(start)
            if not known:
                del self._buckets[key]


class GranuleMap(MutableMapping):
    """A dict whose keys are tuples ending in a granule start (a :class:`GranuleKey`, or (platform, start)): a key
    whose start is within :data:`START_TOLERANCE` of a key held, the rest equal, is that key. Iterates the keys as
    first stored."""

    def __init__(self, items: Iterable[tuple[tuple, Any]] = ()) -> None:
        self._data: dict[tuple, Any] = {}
        self._starts = Starts()
        for key, value in items:
            self[key] = value

    def held(self, key: tuple) -> tuple | None:
        """The key held that ``key`` matches, or None."""
        start = self._starts.find(tuple(key[:-1]), key[-1])
        if start is None:
            return None
        held = (*key[:-1], start)
        return GranuleKey(*held) if isinstance(key, GranuleKey) else held

    def __getitem__(self, key: tuple) -> Any:
        held = self.held(key)
        if held is None:
            raise KeyError(key)
        return self._data[held]

    def __setitem__(self, key: tuple, value: Any) -> None:
        held = self.held(key)
        if held is None:
            self._starts.canonical(tuple(key[:-1]), key[-1])
            held = key
        self._data[held] = value

    def __delitem__(self, key: tuple) -> None:
        held = self.held(key)
        if held is None:
            raise KeyError(key)
        del self._data[held]
        self._starts.forget(tuple(held[:-1]), held[-1])

    def __iter__(self) -> Iterator[tuple]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"GranuleMap({self._data!r})"


class GranuleKey(NamedTuple):
    """One product granule: product, platform name (``Suomi-NPP``...), start time (naive UTC, from the name)."""

    product: str
    platform_name: str
    start_time: dt.datetime

    def describe(self) -> str:
        return f"{self.product} {self.platform_name} {self.start_time:%Y-%m-%dT%H:%M:%S.%f}"[:-5]

    def to_json(self) -> list:
        return [self.product, self.platform_name, self.start_time.isoformat()]

    @classmethod
    def from_json(cls, value: Any) -> GranuleKey:
        """Inverse of :meth:`to_json`; ValueError or TypeError when ``value`` is not one."""
        product, platform, start = value
        if not isinstance(product, str) or not isinstance(platform, str):
            raise TypeError(f"not a granule key: {value!r}")
        return cls(product, platform, isotime.naive(start))


def key_of(product: str, name: SdrName) -> GranuleKey:
    return GranuleKey(product, name.platform_name, name.start_time)


def _parse_item(item: Mapping) -> SdrName | None:
    uid = item.get("uid") or os.path.basename(str(item.get("uri", "")))
    try:
        return parse_name(str(uid))
    except NotASdrName:
        return None


def keys_of(product: str, dataset: Iterable[Mapping]) -> set[GranuleKey]:
    """The granules whose files a dataset list holds, one key per granule (two stations' copies' starts are one;
    entries that are not VIIRS SDR names are ignored)."""
    keys = GranuleMap()
    for item in dataset:
        name = _parse_item(item)
        if name is not None:
            keys.setdefault(key_of(product, name), None)
    return set(keys)


def newest_per_segment(names: Iterable[SdrName]) -> dict[str, SdrName]:
    """Of several copies of a segment keep the one created last (ties: the greater name, so the choice is stable)."""
    best: dict[str, SdrName] = {}
    for name in names:
        held = best.get(name.segment)
        if held is None or (name.proctime, name.name) > (held.proctime, held.name):
            best[name.segment] = name
    return best


def merge_files(product: str, queued: list[dict], new: list[dict]) -> list[dict]:
    """Dataset union for a task: new uids appended in arrival order, but a granule keeps one file per segment.

    When a new entry is another copy of a segment the task holds for the same granule, the newer creation time
    wins (it takes the old entry's place); entries that are not VIIRS SDR names are kept by uid only."""
    out = list(queued)
    index = GranuleMap()  # (segment, platform, start) -> position
    seen = set()
    for position, item in enumerate(out):
        seen.add(item.get("uid"))
        name = _parse_item(item)
        if name is not None:
            index[(name.segment, name.platform, name.start_time)] = position
    for item in new:
        uid = item.get("uid")
        if uid in seen:
            continue
        seen.add(uid)
        name = _parse_item(item)
        slot = None if name is None else (name.segment, name.platform, name.start_time)
        if slot is not None and slot in index:
            held = _parse_item(out[index[slot]])
            if held is not None and (name.proctime, name.name) > (held.proctime, held.name):
                out[index[slot]] = item
            continue
        if slot is not None:
            index[slot] = len(out)
        out.append(item)
    return out


def _aware(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC)


def granule_data(product: str, files: Iterable[SdrName], uri_of: Callable[[str], str],
                 base: Mapping | None = None) -> dict:
    """Message data for one granule made of ``files`` (one platform and start time), shaped like a gatherer's.

    ``base`` (a gatherer's message data) gives keys this function does not set; every key that describes the
    granule is taken from the file names, so a dataset that mixed platforms can never leak into a task."""
    chosen = newest_per_segment(files)
    names = [chosen[segment] for segment in PRODUCTS[product] if segment in chosen]
    if not names:
        raise ValueError("no files")
    first = names[0]
    data = dict(base or {})
    data.update(
        platform_name=first.platform_name, orig_platform_name=first.platform, platform_shortname=first.platform,
        orbit_number=first.orbit_number, start_time=_aware(first.start_time),
        end_time=_aware(max(name.end_time for name in names)), proctime=_aware(max(n.proctime for n in names)),
        source=first.source, sensor=list(data.get("sensor") or ["viirs"]),
        dataset=[{"uri": uri_of(name.name), "uid": name.name} for name in names],
    )
    return data


@dataclass(frozen=True)
class Split:
    """A dataset message's files sorted into granules: the complete ones and what is left over."""

    complete: list[dict]  # message data per complete granule (see :func:`granule_data`)
    incomplete: list[GranuleKey]  # granules of which the message holds only some files
    foreign: int  # entries that are not VIIRS SDR names


def split_dataset(product: str, data: Mapping) -> Split:
    """Sort a ``dataset`` message's files by (platform, start time within the tolerance); one data dict per
    complete granule."""
    groups = GranuleMap()
    uris: dict[str, str] = {}
    foreign = 0
    for item in data.get("dataset", []):
        name = _parse_item(item)
        if name is None:
            foreign += 1
            continue
        groups.setdefault(key_of(product, name), []).append(name)
        uris[name.name] = str(item.get("uri") or name.name)
    needed = set(PRODUCTS.get(product, ()))
    complete, incomplete = [], []
    for key in sorted(groups):
        names = groups[key]
        if needed and needed <= {name.segment for name in names}:
            complete.append(granule_data(product, names, uris.__getitem__, data))
        else:
            incomplete.append(key)
    return Split(complete, incomplete, foreign)


@dataclass(frozen=True)
class OnDisk:
    """A complete granule found in sdr/."""

    key: GranuleKey
    files: tuple[SdrName, ...]  # one per segment (the newest copy)
    complete_at: float  # when it became complete (epoch seconds): the latest of its segments' first placements
    first_at: float  # when its first file was placed

    @property
    def spread(self) -> float:
        """Seconds between its first file and the file that completed it."""
        return self.complete_at - self.first_at


class _Entry:
    """One file the inventory keeps: its parsed name, placement time and the full pass that last saw it."""

    __slots__ = ("parsed", "placed", "seen_in", "group")

    def __init__(self, parsed: SdrName, placed: float, seen_in: int, group: tuple[str, dt.datetime]) -> None:
        self.parsed, self.placed, self.seen_in, self.group = parsed, placed, seen_in, group


class Inventory:
    """The VIIRS SDR files of sdr/ that matter now, with their placement times; an ``ondisk.sdr.Sink``, fed by an
    ``SdrWatch`` (one full pass, then a report for each change).

    It keeps the files placed at or after ``placed_since`` (the recovery window) and the files of granules that
    started at or after ``start_since`` (the listing window: the granules a late file can still complete), and
    nothing else: its size follows the recent window, not the months of files behind it, and a name outside both
    is dismissed from its fixed places (``viirs.start_key``) without being parsed. :meth:`bounds` moves the two
    limits on and forgets what fell behind them. Pure: times are passed in; not thread-safe (one owner).

    Memory: about 500 bytes a file kept (a day of files: about 3 MB)."""

    def __init__(self, placed_since: float = float("-inf"), start_since: dt.datetime = dt.datetime.min) -> None:
        self._files: dict[str, _Entry] = {}
        self._groups: dict[tuple[str, dt.datetime], dict[str, _Entry]] = {}  # (platform, start) -> name -> entry
        self._starts = Starts()  # the groups' canonical starts (stations' copies 0.1 s apart are one group)
        self._pass = 0
        self.placed_since = placed_since
        self.start_since = start_since
        self._start_key = start_key_of(start_since) if start_since > dt.datetime.min else ""

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, name: str) -> bool:
        return name in self._files

    def bounds(self, placed_since: float, start_since: dt.datetime) -> int:
        """Keep from now on what was placed at or after ``placed_since`` or started at or after ``start_since``;
        forget the rest. Returns how many files were forgotten."""
        self.placed_since, self.start_since = placed_since, start_since
        self._start_key = start_key_of(start_since)
        old = [name for name, entry in self._files.items()
               if entry.placed < placed_since and entry.parsed.start_time < start_since]
        for name in old:
            self.gone(name)
        return len(old)

    def _wanted(self, name: str, placed: float) -> bool:
        if placed >= self.placed_since:
            return True
        key = start_key(name)
        return key is not None and key >= self._start_key

    # -- the Sink of ondisk.sdr ------------------------------------------------------------------------------------
    def begin_pass(self) -> None:
        self._pass += 1

    def seen(self, name: str, placed: float) -> None:
        """``name`` is in sdr/, placed at ``placed``; a file seen again keeps the placement it was first seen with."""
        entry = self._files.get(name)
        if entry is not None:
            entry.seen_in = self._pass
            return
        if not self._wanted(name, placed):
            return
        try:
            parsed = parse_name(name)
        except NotASdrName:
            return
        group = (parsed.platform, self._starts.canonical((parsed.platform,), parsed.start_time))
        entry = self._files[name] = _Entry(parsed, placed, self._pass, group)
        self._groups.setdefault(group, {})[name] = entry

    def gone(self, name: str) -> None:
        entry = self._files.pop(name, None)
        if entry is None:
            return
        group = self._groups[entry.group]
        del group[name]
        if not group:
            del self._groups[entry.group]
            self._starts.forget(entry.group[:1], entry.group[1])

    def end_pass(self, complete: bool) -> None:
        """After a complete pass, what it did not see is gone."""
        if complete:
            for name in [name for name, entry in self._files.items() if entry.seen_in < self._pass]:
                self.gone(name)

    # -- what is complete ------------------------------------------------------------------------------------------
    def complete(self, since: float = float("-inf")) -> Iterator[OnDisk]:
        """Every complete product granule that became complete at or after ``since``."""
        for group in self._groups.values():
            if max(entry.placed for entry in group.values()) < since:
                continue
            first_copy: dict[str, float] = {}
            for entry in group.values():
                segment = entry.parsed.segment
                if segment not in first_copy or entry.placed < first_copy[segment]:
                    first_copy[segment] = entry.placed
            for product, segments in PRODUCTS.items():
                if not all(segment in first_copy for segment in segments):
                    continue
                complete_at = max(first_copy[segment] for segment in segments)
                if complete_at < since:
                    continue
                chosen = newest_per_segment(e.parsed for e in group.values() if e.parsed.segment in segments)
                files = tuple(chosen[segment] for segment in segments)
                yield OnDisk(key_of(product, files[0]), files, complete_at,
                             min(first_copy[segment] for segment in segments))
