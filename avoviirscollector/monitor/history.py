"""monitor's memory: what the suite did in the last 24 hours, rebuilt from the journals the programs write.

Pure: fed records and snapshots, no files or sockets (``sources.py`` reads them, ``server.py`` drives it).

What it keeps (bounded: about 24 hours plus one hour of margin; a day of passes is a few thousand files)
    - every file placed (from ``state/mirror_gina.journal``, or only seen in ``sdr/``), with its placement time,
      size, download seconds and, when known, when GINA's listing first showed it and the receiving station it
      came from;
    - the granules that went into a task (and when the task was put, when its record says), were handed out (with
      the worker) or dropped (from ``state/task_queue.journal``);
    - the other stations' copies mirror_gina left alone (``state/mirror_gina.copies.json``: each copy's station,
      the station of the file kept instead and the lead between their listings; ``stations.py``), and from files
      and copies the stations' figures of the day (:meth:`History.station_stats`);
    - latency samples of the last 24 hours in legs, per satellite and station (``latency.py``: created -> listed
      -> placed -> tasked -> handed out), for the page's medians, and the same legs as histograms;
    - the queue length, one sample a minute (the maximum of that minute), from task_broker's status stream, and
      after monitor's own downtime rebuilt from the broker's journal (new tasks and hand-outs);
    - monotonic counters and histograms for ``/metrics`` (files, bytes, delays, latency legs, hand-outs, bad
      requests, recoveries, program starts, files by station, copies left alone by station) that continue across
      restarts (a copy is counted once: it is kept while it is in the window, and one noted earlier is not taken).

Each journal is read from where the last read stopped (file identity and offset are part of the saved state); a
journal that was rewritten meanwhile (compaction) is read again from its start, and records at or before the
newest time already taken from it are skipped, so nothing is counted twice. Records older than the window are
ignored. :meth:`History.to_json` / :meth:`History.from_json` save and restore all of it (``state/monitor.json``).
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from avoviirscollector import isotime
from avoviirscollector.granules import GranuleKey, GranuleMap, keys_of
from avoviirscollector.isotime import epoch
from avoviirscollector.monitor.latency import LATENCY_BUCKETS, Samples, key_text
from avoviirscollector.monitor.stations import CopyNote, StationRow, copy_notes, label, station_rows
from avoviirscollector.ondisk.journal import DROPPED, HANDED_OUT, Event, Put, Record, Take
from avoviirscollector.ondisk.state import PlacedRecord, Source  # noqa: F401 - Source: also ours
from avoviirscollector.viirs import PRODUCTS, NotASdrName, SdrName, parse_name

VERSION = 1
WINDOW = 24 * 3600.0
KEEP = WINDOW + 3600.0  # what is kept: the window plus an hour of margin
SAMPLE_SECONDS = 60.0
#: histogram bucket upper bounds (seconds)
DOWNLOAD_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
ACQUISITION_BUCKETS = (300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0, 5400.0, 7200.0, 10800.0, 21600.0)
LISTING_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)
#: task_broker's journal event kinds and the counter each feeds
EVENT_COUNTERS = {"recovered": "recovered", "in doubt": "in_doubt", "duplicate": "duplicate",
                  "bad request": "bad_requests", "handed out twice": "handed_out_twice"}


def utc_epoch(naive: dt.datetime) -> float:
    return isotime.parse(naive).timestamp()


class Histogram:
    """A cumulative-bucket histogram that can be saved (Prometheus semantics: ``le`` buckets, sum, count)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket (not cumulative); the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative (le, count) pairs, +Inf last, as prometheus_client's HistogramMetricFamily takes them."""
        out, total = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return out

    def to_json(self) -> dict:
        return {"counts": self.counts, "sum": self.sum}

    def load(self, data: Mapping) -> None:
        counts = list(data.get("counts", []))
        if len(counts) == len(self.counts) and all(isinstance(c, int) for c in counts):
            self.counts = counts
            self.sum = float(data.get("sum", 0.0))


@dataclass
class Placed:
    """One file in ``sdr/`` of the window."""

    placed: float
    size: int | None = None
    seconds: float | None = None
    listed: float | None = None
    journal: bool = False  # known from mirror_gina's journal (else only seen in sdr/)
    station: str = ""  # the receiving station it came from ("" unknown)
    present: bool = True  # still in sdr/ (False once removed by anyone: no longer counts for its granule)

    def to_json(self) -> list:
        return [self.placed, self.size, self.seconds, self.listed, self.journal, self.station, self.present]

    @classmethod
    def from_json(cls, value: list) -> Placed:
        return cls(float(value[0]), value[1], value[2], value[3], bool(value[4]),
                   str(value[5]) if len(value) > 5 else "", bool(value[6]) if len(value) > 6 else True)


@dataclass(frozen=True)
class GranuleTimes:
    """When a product granule's files came, from the files that completed it (per segment its first copy)."""

    complete_at: float  # the placement of its last file
    station: str  # the station of that last file ("" unknown)
    listed_last: float | None  # the first listing of its file listed last; None when any file's is unknown


@dataclass(frozen=True)
class GranuleRow:
    """One product granule of the window, for the page and the completeness figures."""

    key: GranuleKey
    have: int  # segments present
    need: int  # segments the product needs
    missing: tuple[str, ...]
    placed: float  # when its last file was placed
    tasked: bool
    handed_out: str | None  # the worker's address ("" when unknown) once handed out; None when not
    dropped: bool

    @property
    def complete(self) -> bool:
        return self.have >= self.need


@lru_cache(maxsize=65536)
def parsed_name(name: str) -> SdrName | None:
    """The parsed VIIRS SDR name (None when it is not one); cached: the views parse the same names again and again."""
    try:
        return parse_name(name)
    except NotASdrName:
        return None


def _satellite_band(name: str) -> tuple[str, str] | None:
    parsed = parsed_name(name)
    return None if parsed is None else (parsed.platform_name, parsed.segment)


class History:
    """See the module docstring. Not thread-safe: the caller holds a lock."""

    def __init__(self) -> None:
        self.files: dict[str, Placed] = {}
        self.tasked = GranuleMap()  # granule -> when it went into a task (starts matched within the tolerance)
        self.put_at = GranuleMap()  # granule -> when its task was put, from a put record with its time
        self.handed = GranuleMap()  # granule -> (when, kind, worker)
        self.queue_samples: list[list[float]] = []  # [minute start, max queue length], oldest first
        self.listed: dict[str, float] = {}  # name -> first seen listed (health record snapshots)
        self.sources: dict[str, Source] = {}
        self.counters: dict[str, dict[str, float]] = {}  # name -> label text ("a|b") -> value
        self.histograms: dict[str, dict[str, Histogram]] = {}
        self.task_ids: dict[int, float] = {}  # task ids seen in a put (for the queue rebuild), -> first put time
        self.changes: list[tuple[float, int]] = []  # queue changes (time, +1/-1) since the last sample
        self.version = 0  # changes whenever files, tasks or hand-outs change (the views are cached by it)
        self.watching_since: float | None = None  # when monitor first watched sdr/ (files placed before it count
        # only from the journals)
        self.copies: dict[str, CopyNote] = {}  # other stations' copies left alone, noted in the window
        self.samples = Samples()  # latency samples of the last 24 hours
        self._groups = GranuleMap()  # (platform name, start) -> names of the files (the granules' files, found fast)
        self._cache: dict[str, tuple[tuple[int, int], Any]] = {}  # the views, until the history or the minute changes
        self._samples_pruned = float("-inf")
        self._oldest_granule = float("inf")  # at most the oldest time of tasked, handed and put_at

    # -- counters -------------------------------------------------------------------------------------------------
    def count(self, name: str, labels: tuple[str, ...], value: float = 1.0) -> None:
        family = self.counters.setdefault(name, {})
        key = "|".join(labels)
        family[key] = family.get(key, 0.0) + value

    def counter(self, name: str) -> dict[tuple[str, ...], float]:
        return {tuple(k.split("|")) if k else (): v for k, v in self.counters.get(name, {}).items()}

    def observe(self, name: str, bounds: tuple[float, ...], label: str, value: float) -> None:
        self.histograms.setdefault(name, {}).setdefault(label, Histogram(bounds)).observe(value)

    def observe_leg(self, leg: str, satellite: str, station: str, when: float, seconds: float) -> None:
        """One latency sample (``latency.py``): the histogram and the day's samples; a negative leg (clock skew)
        counts as 0."""
        seconds = max(0.0, seconds)
        station = label(station)
        self.observe("latency", LATENCY_BUCKETS, key_text(leg, satellite, station), seconds)
        self.samples.add(leg, satellite, station, when, seconds)

    # -- mirror_gina ----------------------------------------------------------------------------------------------
    def placed_record(self, record: Mapping, now: float) -> bool:
        """One record of mirror_gina's journal; True when it was new (counted)."""
        placed = PlacedRecord.of(record)
        if placed is None or placed.time is None or placed.time < now - KEEP:
            return False
        name, when = placed.name, placed.time
        known = self.files.get(name)
        if known is not None and known.journal:
            return False
        which = _satellite_band(name)
        if which is None:
            return False
        satellite, band = which
        size, seconds = placed.size, placed.seconds
        listed = placed.listed if placed.listed is not None else self.listed.get(name)
        self.files[name] = Placed(min(when, known.placed) if known else when, size, seconds, listed, True,
                                  placed.station)
        self._index(name)
        self.version += 1
        self.count("files", (satellite, band))
        self.count("files_first", (label(placed.station),))
        if size is not None:
            self.count("bytes", (satellite, band), size)
        if seconds is not None:
            self.observe("download", DOWNLOAD_BUCKETS, satellite, float(seconds))
        start = utc_epoch(parsed_name(name).start_time)
        self.observe("acquisition", ACQUISITION_BUCKETS, satellite, max(0.0, when - start))
        if listed is not None:
            self.observe("listing", LISTING_BUCKETS, satellite, max(0.0, when - listed))
            created = utc_epoch(parsed_name(name).proctime)
            self.observe_leg("created_to_listed", satellite, placed.station, listed, listed - created)
            self.observe_leg("listed_to_placed", satellite, placed.station, when, when - listed)
        return True

    def seen_in_sdr(self, name: str, placed: float, now: float) -> None:
        """A file in ``sdr/`` (placed by anyone, or put back): counts for completeness, not as a download."""
        known = self.files.get(name)
        if known is not None:
            if not known.present:
                known.present = True
                self.version += 1
        elif placed >= now - KEEP and _satellite_band(name) is not None:
            self.files[name] = Placed(placed)
            self._index(name)
            self.version += 1

    def gone_from_sdr(self, name: str) -> None:
        """A file left ``sdr/`` (removed by anyone): its granule no longer counts it; what its download was (the
        counters, the latency samples, its station) stays history."""
        known = self.files.get(name)
        if known is not None and known.present:
            known.present = False
            self.version += 1

    def sdr_pass(self, exists: Callable[[str], bool]) -> None:
        """A complete pass over ``sdr/`` ended: the files of the history that ``exists`` says are not there were
        removed while nobody watched (one lookup each: a day's files, not the archive's)."""
        gone = [p for n, p in self.files.items() if p.present and not exists(n)]
        for placed in gone:
            placed.present = False
        if gone:
            self.version += 1

    def _index(self, name: str) -> None:
        parsed = parsed_name(name)
        self._groups.setdefault((parsed.platform_name, parsed.start_time), set()).add(name)

    def _unindex(self, name: str) -> None:
        parsed = parsed_name(name)
        key = (parsed.platform_name, parsed.start_time)
        names = self._groups.get(key)
        if names is not None:
            names.discard(name)
            if not names:
                del self._groups[key]

    def _reindex(self) -> None:
        self._groups = GranuleMap()
        for name in self.files:
            self._index(name)

    def granule_times(self, key: GranuleKey) -> GranuleTimes | None:
        """When the granule's files came; None unless each segment it needs has a file whose first copy is known
        from mirror_gina's journal (a file only seen in sdr/ has no listing time nor station)."""
        needed = PRODUCTS.get(key.product)
        names = self._groups.get((key.platform_name, key.start_time)) if needed else None
        if not names:
            return None
        first: dict[str, Placed] = {}
        for name in names:
            segment = parsed_name(name).segment
            held = first.get(segment)
            if segment in needed and (held is None or self.files[name].placed < held.placed):
                first[segment] = self.files[name]
        if len(first) < len(needed) or not all(p.journal for p in first.values()):
            return None
        last = max(first.values(), key=lambda p: p.placed)
        listed = [p.listed for p in first.values()]
        return GranuleTimes(last.placed, last.station, None if None in listed else max(listed))

    def copies_snapshot(self, data: Mapping, now: float) -> int:
        """mirror_gina's copies.json: take the copies noted in the window and not taken before, each counted once
        for its station (one noted before the window is never taken: it may have been counted and forgotten).
        Returns how many were new."""
        def listed_of(name: str) -> float | None:
            placed = self.files.get(name)
            return None if placed is None else placed.listed

        new = 0
        for note in copy_notes(data, listed_of, now - KEEP):
            if note.name in self.copies:
                continue
            self.copies[note.name] = note
            self.count("copies_skipped", (note.station,))
            new += 1
        if new:
            self.version += 1
        return new

    def listing_snapshot(self, pending: Mapping[str, Any]) -> None:
        """mirror_gina's health record: wanted files listed and not yet placed, each with when first listed."""
        for name, when in pending.items():
            first = epoch(when)
            if first is not None and name not in self.listed:
                self.listed[name] = first

    # -- task_broker ----------------------------------------------------------------------------------------------
    def broker_record(self, record: Record, now: float, rewritten_before: float | None = None) -> None:
        """One record of task_broker's journal. ``rewritten_before``: the journal was rewritten; records with a
        time at or before it were taken already."""
        when = record.t.timestamp() if record.t is not None else None
        if rewritten_before is not None and when is not None and when <= rewritten_before and \
                not isinstance(record, Put):
            return
        if when is not None and when < now - KEEP:
            return
        match record:
            case Put():  # a compaction's puts have no time: they tell which granules are tasked, not when
                self._put(record.task, when if when is not None else now, when is not None)
            case Take():
                self._take(record, when if when is not None else now)
            case Event():
                counter = EVENT_COUNTERS.get(record.kind)
                if counter is not None:
                    self.count(counter, (), float(record.count))

    def _put(self, task: Any, when: float, timed: bool = True) -> None:
        if not isinstance(task, Mapping):
            return
        subject = str(task.get("subject", ""))
        product = subject.rsplit("/", 1)[-1]
        data = task.get("data")
        if product not in PRODUCTS or not isinstance(data, Mapping):
            return
        try:
            task_id = int(task["id"])
        except (KeyError, TypeError, ValueError):
            return
        if task_id not in self.task_ids:
            self.task_ids[task_id] = when
            self.changes.append((when, 1))
        dataset = data.get("dataset") if isinstance(data.get("dataset"), list) else []
        self._oldest_granule = min(self._oldest_granule, when)
        for key in keys_of(product, [item for item in dataset if isinstance(item, Mapping)]):
            if key not in self.tasked:
                self.tasked[key] = when
                self.version += 1
                self.count("tasked", (product, key.platform_name))
                if timed:
                    self._tasked(key, when)

    def _tasked(self, key: GranuleKey, when: float) -> None:
        self.put_at[key] = when
        times = self.granule_times(key)
        if times is not None:
            self.observe_leg("placed_to_tasked", key.platform_name, times.station, when, when - times.complete_at)

    def _handed_out(self, key: GranuleKey, when: float) -> None:
        """The latency legs of a granule's first hand-out."""
        put = self.put_at.get(key)
        times = self.granule_times(key)
        station = times.station if times is not None else ""
        if put is not None:
            self.observe_leg("tasked_to_handed_out", key.platform_name, station, when, when - put)
        if times is not None and times.listed_last is not None:
            self.observe_leg("listed_to_handed_out", key.platform_name, station, when, when - times.listed_last)

    def _take(self, take: Take, when: float) -> None:
        kind, worker, keys = take.kind, take.worker, take.granules or ()
        if keys:
            product, satellite = keys[0].product, keys[0].platform_name
        else:
            product, satellite = "?", "?"
        self.count("handed_out" if kind == HANDED_OUT else "dropped", (product, satellite))
        self.changes.append((when, -1))
        self._oldest_granule = min(self._oldest_granule, when)
        for key in keys:
            before = self.handed.get(key)
            if kind == HANDED_OUT and (before is None or before[1] != HANDED_OUT):
                self._handed_out(key, when)
            self.handed[key] = (when, kind, worker)
            self.tasked.setdefault(key, when)
        self.version += 1

    def _oldest_of_granules(self) -> float:
        times = [*self.tasked.values(), *(v[0] for v in self.handed.values()), *self.put_at.values()]
        return min(times, default=float("inf"))

    # -- queue length ---------------------------------------------------------------------------------------------
    def queue_sample(self, when: float, length: int) -> None:
        minute = when - when % SAMPLE_SECONDS
        if self.queue_samples and self.queue_samples[-1][0] == minute:
            self.queue_samples[-1][1] = max(self.queue_samples[-1][1], length)
        elif not self.queue_samples or minute > self.queue_samples[-1][0]:
            self.queue_samples.append([minute, length])
            self.changes = [change for change in self.changes if change[0] >= minute]

    def fill_queue_gap(self, changes: Iterable[tuple[float, int]], length_now: int, now: float) -> int:
        """Rebuild the minutes since the last sample (monitor was down) from the broker journal's changes
        (time, +1 for a new task, -1 for a hand-out or drop), anchored at the queue length heard now. Returns the
        number of minutes filled."""
        last = self.queue_samples[-1][0] if self.queue_samples else now - WINDOW
        start = max(last + SAMPLE_SECONDS, now - WINDOW)
        start -= start % SAMPLE_SECONDS
        ordered = sorted((t, d) for t, d in changes if start <= t <= now)
        minutes = []
        minute = start
        while minute + SAMPLE_SECONDS <= now - now % SAMPLE_SECONDS:
            minutes.append(minute)
            minute += SAMPLE_SECONDS
        if not minutes:
            return 0
        # length at time x = length now - the changes after x; a minute's sample is the maximum within it
        after = sum(d for _, d in ordered)
        level = length_now - after
        index = 0
        filled = 0
        for minute in minutes:
            peak = level
            while index < len(ordered) and ordered[index][0] < minute + SAMPLE_SECONDS:
                level += ordered[index][1]
                peak = max(peak, level)
                index += 1
            self.queue_samples.append([minute, max(0, peak)])
            filled += 1
        self.changes = []
        return filled

    # -- programs -------------------------------------------------------------------------------------------------
    def program_started(self, program: str) -> None:
        self.count("starts", (program,))

    # -- upkeep ---------------------------------------------------------------------------------------------------
    def prune(self, now: float) -> None:
        horizon = now - KEEP
        old = [n for n, p in self.files.items() if p.placed < horizon]
        if old:
            for name in old:
                del self.files[name]
                self._unindex(name)
            self.version += 1
        if self._oldest_granule < horizon:  # a GranuleMap's items cost a lookup each: rebuilt when one expired
            self.tasked = GranuleMap((k, t) for k, t in self.tasked.items() if t >= horizon)
            self.handed = GranuleMap((k, v) for k, v in self.handed.items() if v[0] >= horizon)
            self.put_at = GranuleMap((k, t) for k, t in self.put_at.items() if t >= horizon)
            self._oldest_granule = self._oldest_of_granules()
        if any(note.noted < horizon for note in self.copies.values()):
            self.copies = {n: c for n, c in self.copies.items() if c.noted >= horizon}
            self.version += 1
        if now - self._samples_pruned >= SAMPLE_SECONDS:  # at most once a minute: the medians look at the window
            self.samples.prune(now - WINDOW)
            self._samples_pruned = now
        self.listed = {n: t for n, t in self.listed.items() if t >= horizon}
        self.task_ids = {i: t for i, t in self.task_ids.items() if t >= horizon}
        cut = bisect.bisect_left([s[0] for s in self.queue_samples], now - WINDOW)
        del self.queue_samples[:cut]

    # -- views ----------------------------------------------------------------------------------------------------
    def _cached(self, name: str, now: float, compute: Callable[[], Any]) -> Any:
        stamp = (self.version, int(now // SAMPLE_SECONDS))
        held = self._cache.get(name)
        if held is None or held[0] != stamp:
            held = self._cache[name] = (stamp, compute())
        return held[1]

    def granules(self, now: float, window: float = WINDOW) -> list[GranuleRow]:
        """Every product granule with at least one file of its (platform, start) group placed in the window
        (cached until the history changes or the minute turns; do not change the list)."""
        if window != WINDOW:
            return self._granules(now, window)
        return self._cached("granules", now, lambda: self._granules(now, window))

    def _granules(self, now: float, window: float) -> list[GranuleRow]:
        groups = GranuleMap()  # (platform name, start) -> [(parsed name, placed)]
        for name, placed in self.files.items():
            if placed.placed < now - window or not placed.present:
                continue
            parsed = parsed_name(name)
            groups.setdefault((parsed.platform_name, parsed.start_time), []).append((parsed, placed.placed))
        rows = []
        for (platform, start), members in groups.items():
            segments = {parsed.segment: when for parsed, when in members}
            for product, needed in PRODUCTS.items():
                key = GranuleKey(product, platform, start)
                present = [s for s in needed if s in segments]
                handed = self.handed.get(key)
                rows.append(GranuleRow(
                    key, len(present), len(needed), tuple(s for s in needed if s not in segments),
                    max((segments[s] for s in present), default=max(w for _, w in members)),
                    key in self.tasked, (handed[2] if handed[1] == HANDED_OUT else None) if handed else None,
                    bool(handed and handed[1] == DROPPED)))
        rows.sort(key=lambda row: (row.key.start_time, row.key.platform_name, row.key.product))
        return rows

    def completeness(self, now: float) -> dict[tuple[str, str], tuple[int, int]]:
        """(satellite, product) -> (complete granules, granules expected) over the window: a granule is expected
        of every product once any file of its platform and start time was placed."""
        out: dict[tuple[str, str], list[int]] = {}
        for row in self.granules(now):
            entry = out.setdefault((row.key.platform_name, row.key.product), [0, 0])
            entry[0] += row.complete
            entry[1] += 1
        return {k: (v[0], v[1]) for k, v in out.items()}

    def last_granule(self) -> dict[str, dict]:
        """Per satellite: the newest granule start placed, when its newest file was placed, and the delay."""
        out: dict[str, dict] = {}
        for name, placed in self.files.items():
            parsed = parsed_name(name)
            start = utc_epoch(parsed.start_time)
            held = out.get(parsed.platform_name)
            if held is None or (start, placed.placed) > (held["start"], held["placed"]):
                out[parsed.platform_name] = {"start": start, "placed": placed.placed,
                                             "delay": max(0.0, placed.placed - start)}
        return out

    def placed_since(self, since: float) -> int:
        return sum(1 for p in self.files.values() if p.journal and p.placed >= since)

    def station_stats(self, now: float) -> dict[str, StationRow]:
        """Per station over the window (``stations.py``): files placed from it, its copies left alone, by how much
        earlier it listed the files kept, passes seen at it only (cached like :meth:`granules`)."""
        since = now - WINDOW
        return self._cached("stations", now, lambda: station_rows(
            ((n, p.station) for n, p in self.files.items() if p.journal and p.placed >= since),
            (c for c in self.copies.values() if c.noted >= since)))

    def latency_medians(self, now: float) -> dict[tuple[str, str], dict[str, tuple[float, int]]]:
        """(satellite, station) -> leg -> (median seconds, samples) over the window (cached like :meth:`granules`)."""
        return self._cached("latency", now, lambda: self.samples.medians(now - WINDOW))

    # -- persistence ----------------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "version": VERSION,
            "files": {n: p.to_json() for n, p in self.files.items()},
            "tasked": [[*k.to_json(), t] for k, t in self.tasked.items()],
            "handed": [[*k.to_json(), *v] for k, v in self.handed.items()],
            "queue_samples": self.queue_samples,
            "listed": self.listed,
            "sources": {n: s.to_json() for n, s in self.sources.items()},
            "counters": self.counters,
            "histograms": {n: {label: h.to_json() for label, h in family.items()}
                           for n, family in self.histograms.items()},
            "task_ids": {str(i): t for i, t in self.task_ids.items()},
            "watching_since": self.watching_since,
            "put_at": [[*k.to_json(), t] for k, t in self.put_at.items()],
            "copies": {n: c.to_json() for n, c in self.copies.items()},
            "samples": self.samples.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping) -> History:
        """The saved history; a damaged or foreign save raises ValueError (the caller starts afresh)."""
        if not isinstance(data, Mapping) or data.get("version") != VERSION:
            raise ValueError("not a monitor history of this version")
        out = cls()
        try:
            out.files = {str(n): Placed.from_json(v) for n, v in data["files"].items()}
            out.tasked = GranuleMap((GranuleKey.from_json(v[:3]), float(v[3])) for v in data["tasked"])
            out.handed = GranuleMap((GranuleKey.from_json(v[:3]), (float(v[3]), str(v[4]), str(v[5])))
                                    for v in data["handed"])
            out.queue_samples = [[float(t), int(n)] for t, n in data["queue_samples"]]
            out.listed = {str(n): float(t) for n, t in data["listed"].items()}
            out.sources = {str(n): Source.from_json(v) for n, v in data["sources"].items()}
            out.counters = {str(n): {str(k): float(v) for k, v in fam.items()} for n, fam in data["counters"].items()}
            bounds = {"download": DOWNLOAD_BUCKETS, "acquisition": ACQUISITION_BUCKETS, "listing": LISTING_BUCKETS,
                      "latency": LATENCY_BUCKETS}
            for name, family in data["histograms"].items():
                for labels, saved in family.items():
                    hist = Histogram(bounds.get(name, DOWNLOAD_BUCKETS))
                    hist.load(saved)
                    out.histograms.setdefault(str(name), {})[str(labels)] = hist
            out.task_ids = {int(i): float(t) for i, t in data.get("task_ids", {}).items()}
            since = data.get("watching_since")
            out.watching_since = float(since) if since is not None else None
            # since stations and latency (absent from an older save)
            out.put_at = GranuleMap((GranuleKey.from_json(v[:3]), float(v[3])) for v in data.get("put_at", []))
            out._oldest_granule = out._oldest_of_granules()
            out.copies = {str(n): CopyNote.from_json(n, v) for n, v in data.get("copies", {}).items()}
            out.samples = Samples.from_json(data.get("samples", {}))
            out._reindex()
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
            raise ValueError(f"damaged monitor history: {err}") from None
        return out
