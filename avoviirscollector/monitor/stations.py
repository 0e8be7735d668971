"""Receiving stations: which station the files came first from, the other stations' copies left alone and by how
much earlier the kept file was listed, and the passes seen at one station only. Pure: fed names and records.

GINA receives a pass at one or more stations (gilmore, uafgina, barrow, uaf5); mirror_gina fetches each granule
file once, from the station that listed it first, and notes every other station's copy it left alone in
``state/mirror_gina.copies.json`` (``mirror/state_files.py`` class StationCopies): copy name -> ``{"station", "listed",
"of", "of_station", "of_listed", "noted"}``. Used by the monitor (its history keeps the window's copies) and by
``avoviirscollector status`` (the journal's tail and copies.json):

- **files first** of a station: files placed from it (the journal's ``station``);
- **copies left alone** of a station: its copies not downloaded because another station's copy of the same file
  was placed or being fetched;
- **lead** of a station that came first: a copy's first listing minus the first listing of the file kept instead,
  when both are known (the median is shown: by how much earlier that station had the file);
- **passes seen at one station only**: files placed and copies noted grouped by pass = (platform, orbit number);
  a pass all of whose files and copies come from one station counts for that station (a pass with a file of
  unknown station counts for none).

A station mirror_gina did not record (``""``, journals from before stations were recorded) is shown as
:data:`UNKNOWN`.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from avoviirscollector.isotime import epoch
from avoviirscollector.viirs import NAME_RE, PLATFORMS

UNKNOWN = "unknown"


def label(station: Any) -> str:
    """The station as shown and labelled: ``""`` (or anything not a name) is :data:`UNKNOWN`."""
    return station if isinstance(station, str) and station else UNKNOWN


@lru_cache(maxsize=65536)
def pass_of(name: str) -> tuple[str, int] | None:
    """The pass of a file: (platform name, orbit number) from its name; None when the name does not have the
    VIIRS SDR pattern (``viirs.NAME_RE``: matched without parsing its times, thousands of names cost little)."""
    match = NAME_RE.match(name)
    return None if match is None else (PLATFORMS[match["platform"]][0], int(match["orbit"]))


@dataclass(frozen=True)
class CopyNote:
    """One copy mirror_gina left alone: its name, its station, the station of the file kept instead, the lead
    (seconds the kept file was listed before the copy; None when either listing time is unknown), when noted."""

    name: str
    station: str
    of_station: str
    lead: float | None
    noted: float

    @classmethod
    def of(cls, name: str, entry: Any, listed_of: Callable[[str], float | None] = lambda name: None,
           since: float = float("-inf")) -> CopyNote | None:
        """The note of one copies.json entry; None when it is not one (no noted time, not a VIIRS SDR name) or
        was noted before ``since``. ``listed_of(name)``: when the kept file was first listed, used when the entry
        does not say (``of_listed`` null)."""
        if not isinstance(entry, Mapping):
            return None
        noted = epoch(entry.get("noted"))
        if noted is None or noted < since or pass_of(name) is None:
            return None
        listed = epoch(entry.get("listed"))
        of = entry.get("of")
        of_listed = epoch(entry.get("of_listed"))
        if of_listed is None and isinstance(of, str):
            of_listed = listed_of(of)
        lead = listed - of_listed if listed is not None and of_listed is not None else None
        return cls(name, label(entry.get("station")), label(entry.get("of_station")), lead, noted)

    def to_json(self) -> list:
        return [self.station, self.of_station, self.lead, self.noted]

    @classmethod
    def from_json(cls, name: str, value: list) -> CopyNote:
        lead = value[2]
        return cls(str(name), str(value[0]), str(value[1]), None if lead is None else float(lead), float(value[3]))


def copy_notes(data: Mapping, listed_of: Callable[[str], float | None] = lambda name: None,
               since: float = float("-inf")) -> Iterator[CopyNote]:
    """The notes of a copies.json object noted at or after ``since`` (entries that are not notes are skipped)."""
    for name, entry in data.items():
        note = CopyNote.of(str(name), entry, listed_of, since)
        if note is not None:
            yield note


@dataclass
class StationRow:
    """One station's figures over a window."""

    station: str
    files_first: int = 0  # files placed from it
    copies_skipped: int = 0  # its copies left alone
    leads: list[float] = field(default_factory=list)  # by how much earlier it listed a kept file than a copy
    one_station_passes: int = 0  # passes seen at it only

    @property
    def lead_median(self) -> float | None:
        return statistics.median(self.leads) if self.leads else None

    def to_json(self) -> dict:
        return {"station": self.station, "files": self.files_first, "copies": self.copies_skipped,
                "lead_median": self.lead_median, "leads": len(self.leads),
                "one_station_passes": self.one_station_passes}


def station_rows(files: Iterable[tuple[str, str]], copies: Iterable[CopyNote]) -> dict[str, StationRow]:
    """Per station (sorted by name): ``files`` are (name, station) of the files placed in the window, ``copies``
    the copies noted in it."""
    rows: dict[str, StationRow] = {}
    passes: dict[tuple[str, int], set[str]] = {}

    def row(station: str) -> StationRow:
        return rows.setdefault(station, StationRow(station))

    for name, station in files:
        station = label(station)
        row(station).files_first += 1
        if (key := pass_of(name)) is not None:
            passes.setdefault(key, set()).add(station)
    for note in copies:
        row(note.station).copies_skipped += 1
        if note.lead is not None:
            row(note.of_station).leads.append(note.lead)
        if (key := pass_of(note.name)) is not None:
            passes.setdefault(key, set()).add(note.station)
    for stations in passes.values():
        if len(stations) == 1 and UNKNOWN not in stations:
            row(next(iter(stations))).one_station_passes += 1
    return {station: rows[station] for station in sorted(rows)}
