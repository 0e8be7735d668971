"""Months of files in sdr/, for the tests and benchmarks that must show the suite does not care how many there are.

:func:`fill` creates empty files with real VIIRS SDR names, as the default settings leave them after months (every
file kept until space runs low): the 12 segments the default queues fetch, three satellites on granule grids of
their own (85.35 s apart, 150 granules a day each: about 5,400 files a day), the newest granule starting at
``newest`` (the archive lies before it) and each file's modification time set to its granule's creation time. Their
inode change time cannot be set: it is the moment they are made, so make them before the suite's first start (task
and monitor then count them as placed before they were watching: the archive, not new work).

About 30 microseconds a file (100,000 files in 3 s, 600,000 in 20 s).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from avoviirscollector.viirs import PRODUCTS

SEGMENTS = sorted({segment for segments in PRODUCTS.values() for segment in segments})
GRANULE = dt.timedelta(seconds=85.35)
PER_DAY = 150  # granules a day per satellite
PLATFORMS = {"npp": (dt.timedelta(seconds=0), 1), "j01": (dt.timedelta(seconds=29.3), 40001),
             "j02": (dt.timedelta(seconds=57.1), 20001)}  # grid offset, orbit of the oldest granule
ORBITS_PER_DAY = 14.2
#: start times of archive granules lie at least this far before the newest one a test makes itself
DEFAULT_GAP = dt.timedelta(days=2)


def _names(platform: str, start: dt.datetime, orbit: int) -> tuple[list[str], float]:
    end = start + GRANULE
    created = start + dt.timedelta(minutes=10, microseconds=123456)
    middle = (f"_{platform}_d{start:%Y%m%d}_t{start:%H%M%S}{start.microsecond // 100000}"
              f"_e{end:%H%M%S}{end.microsecond // 100000}_b{orbit:05d}_c{created:%Y%m%d%H%M%S%f}_cspp_dev.h5")
    return [segment + middle for segment in SEGMENTS], created.replace(tzinfo=dt.UTC).timestamp()


def fill(sdr: Path, files: int, newest: dt.datetime | None = None) -> int:
    """Make ``files`` archive files (rounded up to whole granules) in ``sdr``, newest granule starting at ``newest``
    (naive UTC; default two days before now), older ones back from there. Returns how many were made."""
    sdr = Path(sdr)
    sdr.mkdir(parents=True, exist_ok=True)
    newest = newest or dt.datetime.now(dt.UTC).replace(tzinfo=None) - DEFAULT_GAP
    spacing = dt.timedelta(days=1) / PER_DAY  # one satellite's granules are spread over its passes: evenly here
    made = 0
    step = 0
    folder = os.open(sdr, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while made < files:
            for platform, (offset, first_orbit) in PLATFORMS.items():
                start = newest - step * spacing - offset
                start = start.replace(microsecond=start.microsecond // 100000 * 100000)
                orbit = first_orbit + int((start - dt.datetime(2020, 1, 1)).total_seconds() / 86400 * ORBITS_PER_DAY)
                names, created = _names(platform, start, orbit % 100000)
                for name in names:
                    os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=folder))
                    os.utime(name, (created, created), dir_fd=folder)
                made += len(names)
            step += 1
    finally:
        os.close(folder)
    return made
