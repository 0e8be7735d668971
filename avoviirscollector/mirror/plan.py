"""Which listed files mirror_gina fetches, and in what order. Pure: listings, queues and what is placed are passed in.

A file is fetched when a queue wants it (satellite and ``match``), it was not placed before (neither in sdr/ nor
remembered by the journal) and it is the one copy of its granule file to fetch: GINA receives passes at several
stations, and two stations' copies of one granule file (same segment and platform, starts 0.1 s apart, creation
times minutes apart) are one file to the suite. Of those copies the one listed first is fetched (ties: the one made
first, then the name); another station's copy of a file placed before or chosen now is left alone and returned as
a :class:`Copy` (counted, and shown by ``status`` and the monitor). A *reissue* (the same station's file again, a
later creation time, the same start) is fetched as ever: it is a newer copy, not another station's. Another
station's copy is told apart by the stations the listing names (when both are known), else by its start time (0.1 s
off: a reissue has the same start).

Order: newest granule first (by start time, across satellites), one granule's files together, geolocation first,
then the bands in the order that completes products soonest.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass

from avoviirscollector.granules import GranuleMap
from avoviirscollector.mirror.download import FileJob
from avoviirscollector.mirror.listing_records import Record
from avoviirscollector.mirror.queues import Queue
from avoviirscollector.viirs import (
    GEOLOCATION_SEGMENTS,
    PRODUCT_FETCH_ORDER,
    PRODUCTS,
    SATELLITE_TO_SHORT,
    SdrName,
    start_key,
)


def _segment_order() -> tuple[str, ...]:
    """The order inside a granule, from ``viirs.PRODUCTS``: geolocation first (as in SPEC section 4), then the bands
    product by product in ``viirs.PRODUCT_FETCH_ORDER`` (every product: tests/test_mirror_gina.py), so that the products
    complete in that order: btd (SVM15, SVM16), tir (SVI05), mir (SVI04), vis (SVM03-05, SVI01), dnb (SVDNB)."""
    segments = [segment for product in PRODUCT_FETCH_ORDER for segment in PRODUCTS[product]]
    geolocation = [segment for segment in segments if segment in GEOLOCATION_SEGMENTS]
    return tuple(dict.fromkeys(geolocation + [segment for segment in segments if segment not in geolocation]))


SEGMENT_ORDER = _segment_order()


@dataclass(frozen=True)
class Held:
    """The copy of a granule file that counts: placed before (from the journal) or chosen in this plan."""

    name: str
    station: str
    start: dt.datetime  # its granule start (naive UTC)


@dataclass(frozen=True)
class Copy:
    """A listed file not fetched: another station's copy of the granule file ``of`` (placed or chosen)."""

    name: str
    station: str
    of: str
    of_station: str


@dataclass(frozen=True)
class Plan:
    jobs: list[FileJob]  # what to fetch, in fetch order
    counts: dict[str, tuple[int, int]]  # queue -> (wanted files listed, placed before)
    copies: list[Copy]  # other stations' copies left alone
    stations: dict[str, str]  # name -> station of every job ("" unknown)
    waiting: dict[str, str]  # wanted files not fetched now -> why ("backoff", "given up")


def fetch_key(sdr: SdrName) -> tuple:
    """Newest granule first (by start time: orbit numbers are per satellite and cannot be compared across
    satellites; within one satellite the newest orbit is the newest start); one granule's files together;
    inside a granule geolocation first, then bands by product."""
    rank = SEGMENT_ORDER.index(sdr.segment) if sdr.segment in SEGMENT_ORDER else len(SEGMENT_ORDER)
    return (-sdr.start_time.timestamp(), sdr.platform, 0 if sdr.is_geolocation else 1, rank, sdr.segment)


def granule_file(sdr: SdrName) -> tuple:
    """The key of one granule file across stations (a :class:`~avoviirscollector.granules.GranuleMap` key)."""
    return (sdr.segment, sdr.platform, sdr.start_time)


def placed_file(name: str, station: str) -> tuple[tuple, Held] | None:
    """(:func:`granule_file`, :class:`Held`) of a file placed before, read from the name's fixed places (a run reads
    days of journal records: no full parse of each); None when the name is not shaped like a VIIRS SDR name."""
    key = start_key(name)
    if key is None:
        return None
    try:
        start = dt.datetime(int(key[:4]), int(key[4:6]), int(key[6:8]), int(key[8:10]), int(key[10:12]),
                            int(key[12:14]), int(key[14]) * 100000)
    except ValueError:
        return None
    return (name[:5], name[6:9], start), Held(name, station, start)


def another_station(name: SdrName, station: str, held: Held) -> bool:
    """Whether ``name`` (listed at ``station``) is another station's copy of ``held`` rather than a reissue."""
    if station and held.station:
        return station != held.station
    return name.start_time != held.start


def plan_jobs(records: Iterable[Record], queues: list[Queue], have: Container[str],
              placed: GranuleMap | None = None, first_listed: Mapping[str, str] | None = None,
              waiting_of: Callable[[str], str | None] = lambda name: None) -> Plan:
    """The plan for one listing round (see the module docstring). ``have``: names placed before (asked once per
    wanted name); ``placed``: :func:`granule_file` -> :class:`Held` of the files placed before; ``first_listed``:
    name -> when a listing first showed it (ISO, sortable); ``waiting_of(name)``: why a file is not to be fetched
    now (a backoff after failing, given up on), or None: such a file is not the copy that counts, so another
    station's copy of it is fetched instead."""
    placed = placed if placed is not None else GranuleMap()
    first_listed = first_listed or {}
    waiting: dict[str, str] = {}
    counts = {q.name: [0, 0] for q in queues}
    fresh: dict[str, Record] = {}
    for rec in records:
        for queue in queues:
            if SATELLITE_TO_SHORT[queue.satellite] != rec.sdr.platform or not queue.wants(rec.name):
                continue
            counts[queue.name][0] += 1
            if rec.name in have:
                counts[queue.name][1] += 1
            else:
                fresh.setdefault(rec.name, rec)
    groups = GranuleMap()
    for rec in fresh.values():
        groups.setdefault(granule_file(rec.sdr), []).append(rec)
    in_sdr = GranuleMap()  # the files of this listing placed before (the journal may not know them all)
    for rec in records:
        if rec.name not in fresh and granule_file(rec.sdr) in groups:
            in_sdr.setdefault(granule_file(rec.sdr), Held(rec.name, rec.station, rec.sdr.start_time))
    chosen: list[Record] = []
    copies: list[Copy] = []
    for key, listed in groups.items():
        listed.sort(key=lambda r: (first_listed.get(r.name) or "~", r.sdr.proctime, r.name))
        held = placed.get(key) or in_sdr.get(key)
        for rec in listed:
            if held is not None and another_station(rec.sdr, rec.station, held):
                copies.append(Copy(rec.name, rec.station, held.name, held.station))
                continue
            why = waiting_of(rec.name)
            if why is not None:
                waiting[rec.name] = why
                continue
            chosen.append(rec)
            held = held or Held(rec.name, rec.station, rec.sdr.start_time)
    chosen.sort(key=lambda r: fetch_key(r.sdr))
    return Plan([FileJob(r.name, r.url, r.md5) for r in chosen], {k: (v[0], v[1]) for k, v in counts.items()},
                copies, {r.name: r.station for r in chosen}, waiting)
