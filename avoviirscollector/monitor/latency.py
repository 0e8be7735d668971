"""Latency in legs, from a file's making to its granule's hand-out to a worker. Pure: samples are passed in.

The legs (seconds), each labelled with the satellite (platform name) and the receiving station (``unknown`` when
mirror_gina did not record it):

- ``created_to_listed``: GINA's part: the file's first listing minus its creation time (in its name);
- ``listed_to_placed``: the file placed in sdr/ minus its first listing;
- ``placed_to_tasked``: per product granule, its task put into task_broker's queue minus when the granule became
  complete (the placement of its last file); station: that last file's;
- ``tasked_to_handed_out``: per granule, its hand-out to a worker minus its task's put;
- ``listed_to_handed_out``: per granule, its hand-out minus the first listing of its file listed last: the figure
  end to end (the alert ``AvoSlowToWorkers`` watches its median).

A sample is taken only from what is known (a file with its listing time, a granule whose files are all known from
mirror_gina's journal, a task put with its time); clock skew between GINA and this host cannot make a leg negative
(it counts as 0). :class:`Samples` keeps the last 24 hours of them for the medians the page shows; the Prometheus
histograms (``avo_latency_seconds``) are kept by the history with its other histograms.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping

LEGS = ("created_to_listed", "listed_to_placed", "placed_to_tasked", "tasked_to_handed_out", "listed_to_handed_out")
LEG_TITLES = {"created_to_listed": "created -> listed", "listed_to_placed": "listed -> placed",
              "placed_to_tasked": "placed -> tasked", "tasked_to_handed_out": "tasked -> handed out",
              "listed_to_handed_out": "listed -> handed out"}
#: histogram bucket upper bounds (seconds): from seconds to hours
LATENCY_BUCKETS = (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
#: samples kept at most (a day of three satellites is about 15,000: two per file, three per product granule)
MAX_SAMPLES = 100_000


def key_text(leg: str, satellite: str, station: str) -> str:
    """The saved and histogram label key of one (leg, satellite, station)."""
    return f"{leg}|{satellite}|{station}"


class Samples:
    """Latency samples by (leg, satellite, station): (time the leg ended, seconds), oldest first per key."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[str, str, str], list[tuple[float, float]]] = {}

    def __len__(self) -> int:
        return sum(len(values) for values in self.by_key.values())

    def add(self, leg: str, satellite: str, station: str, when: float, seconds: float) -> None:
        """One sample (kept to the millisecond: as saved)."""
        self.by_key.setdefault((leg, satellite, station), []).append((round(when, 3), round(seconds, 3)))

    def prune(self, since: float) -> None:
        """Forget the samples of before ``since``, and the oldest beyond :data:`MAX_SAMPLES`."""
        for key in list(self.by_key):
            kept = [sample for sample in self.by_key[key] if sample[0] >= since]
            if kept:
                self.by_key[key] = kept
            else:
                del self.by_key[key]
        total = len(self)
        if total > MAX_SAMPLES:
            cutoff = sorted(t for values in self.by_key.values() for t, _ in values)[total - MAX_SAMPLES]
            self.prune(cutoff)

    def medians(self, since: float) -> dict[tuple[str, str], dict[str, tuple[float, int]]]:
        """(satellite, station) -> leg -> (median seconds, number of samples) of the samples since ``since``."""
        out: dict[tuple[str, str], dict[str, tuple[float, int]]] = {}
        for (leg, satellite, station), values in sorted(self.by_key.items()):
            recent = [seconds for when, seconds in values if when >= since]
            if recent:
                out.setdefault((satellite, station), {})[leg] = (statistics.median(recent), len(recent))
        return out

    def to_json(self) -> dict:
        return {key_text(*key): [list(sample) for sample in values] for key, values in self.by_key.items()}

    @classmethod
    def from_json(cls, data: Mapping) -> Samples:
        """Inverse of :meth:`to_json`; raises ValueError, TypeError or IndexError when ``data`` is not one."""
        out = cls()
        for text, values in data.items():
            leg, satellite, station = str(text).split("|")
            if leg not in LEGS:
                raise ValueError(f"unknown latency leg {leg!r}")
            out.by_key[(leg, satellite, station)] = [(float(t), float(v)) for t, v in values]
        return out
