"""VIIRS SDR file names: parse, validate, platform aliases and fetch ordering. Pure: no files, no sockets.

A VIIRS SDR granule file is named like
``SVM16_npp_d20190422_t1828348_e1829590_b38780_c20190422183926285541_cspp_dev.h5``:
segment (band or geolocation type), platform short name, start date and time (tenths of a second), end time,
orbit number, creation time (microseconds), and the producing system. The same layout is written as a trollsift
pattern: :data:`TROLLSIFT_PATTERN`. The ini files of trollstalker and the gatherers (``etc/``) use
:data:`INI_PATTERN`, the same layout with the start date read apart (``start_date``), and a test keeps them in step:
read in one piece, the end time (a clock only) comes out in 1900, and pytroll-collectors 0.22 (trollstalker's
``parse_file_info`` and every gatherer's ``fix_start_end_time``) then add one day at a time until it is after the
start: 46,000 steps, about 30 ms of CPU a file in each of the six programs, which was nearly all of their work (a
burst of 1,200 files kept trollstalker busy 2.5 minutes and the gatherers 2). With the date apart they join it to
the times themselves (the end on the next day past midnight). The messages are the same: both drop ``start_date``
once joined.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

#: file-name platform -> (platform_name in messages, satellite name in GINA's API)
PLATFORMS: dict[str, tuple[str, str]] = {
    "npp": ("Suomi-NPP", "snpp"),
    "j01": ("NOAA-20", "noaa20"),
    "j02": ("NOAA-21", "noaa21"),
}
SATELLITE_TO_SHORT = {sat: short for short, (_, sat) in PLATFORMS.items()}
#: file-name platform -> NORAD catalogue number (how TLE sets name the satellites)
NORAD_IDS: dict[str, int] = {"npp": 37849, "j01": 43013, "j02": 54234}

#: product -> the segments (file types) one granule of it needs (SPEC section 1)
PRODUCTS: dict[str, tuple[str, ...]] = {
    "tir": ("GITCO", "SVI05"),
    "mir": ("GITCO", "SVI04"),
    "btd": ("GMTCO", "SVM15", "SVM16"),
    "vis": ("GMTCO", "GITCO", "SVM03", "SVM04", "SVM05", "SVI01"),
    "dnb": ("GDNBO", "SVDNB"),
}

#: the order in which mirror_gina completes the products of one granule: after the geolocation, each product's bands
#: are fetched before those of the products after it (mirror/plan.py derives its segment order from this and
#: :data:`PRODUCTS`)
PRODUCT_FETCH_ORDER = ("btd", "tir", "mir", "vis", "dnb")

GEOLOCATION_SEGMENTS = ("GMTCO", "GITCO", "GDNBO", "GIMGO", "GMODO")

TROLLSIFT_PATTERN = (
    "{segment}_{platform_name}_d{start_time:%Y%m%d_t%H%M%S%f}_e{end_time:%H%M%S%f}"
    "_b{orbit_number:d}_c{proctime:%Y%m%d%H%M%S%f}_{source}.h5"
)

#: the pattern of the ini files: :data:`TROLLSIFT_PATTERN` with the start date a field of its own (module docstring)
INI_PATTERN = TROLLSIFT_PATTERN.replace("d{start_time:%Y%m%d_t%H%M%S%f}", "d{start_date:%Y%m%d}_t{start_time:%H%M%S%f}")

NAME_RE = re.compile(
    r"^(?P<segment>[A-Z][A-Z0-9]{4})_(?P<platform>npp|j01|j02)"
    r"_d(?P<date>\d{8})_t(?P<start>\d{7})_e(?P<end>\d{7})_b(?P<orbit>\d{5,6})"
    r"_c(?P<created>\d{20})_(?P<source>[a-z0-9]+(?:_[a-z0-9]+)*)\.h5$"
)


class NotASdrName(ValueError):
    """The string is not a VIIRS SDR granule file name."""


@dataclass(frozen=True, order=True)
class SdrName:
    """A parsed VIIRS SDR file name. Datetimes are naive UTC."""

    name: str
    segment: str
    platform: str
    start_time: dt.datetime
    end_time: dt.datetime
    orbit_number: int
    proctime: dt.datetime
    source: str

    @property
    def platform_name(self) -> str:
        return PLATFORMS[self.platform][0]

    @property
    def is_geolocation(self) -> bool:
        return self.segment in GEOLOCATION_SEGMENTS


def _hms_tenths(digits: str) -> dt.time:
    return dt.time(int(digits[0:2]), int(digits[2:4]), int(digits[4:6]), int(digits[6]) * 100000)


def parse_name(name: str) -> SdrName:
    """Parse a VIIRS SDR file name (a basename, no directories); raise :class:`NotASdrName` otherwise."""
    match = NAME_RE.match(name)
    if match is None:
        raise NotASdrName(f"not a VIIRS SDR granule name: {name!r}")
    try:
        date, made = match["date"], match["created"]  # digits only (the pattern): sliced, not strptime'd (10x)
        day = dt.date(int(date[0:4]), int(date[4:6]), int(date[6:8]))
        start = dt.datetime.combine(day, _hms_tenths(match["start"]))
        end = dt.datetime.combine(day, _hms_tenths(match["end"]))
        if end < start:  # the granule crosses midnight
            end += dt.timedelta(days=1)
        created = dt.datetime(int(made[0:4]), int(made[4:6]), int(made[6:8]), int(made[8:10]), int(made[10:12]),
                              int(made[12:14]), int(made[14:20]))
    except ValueError as err:
        raise NotASdrName(f"not a VIIRS SDR granule name: {name!r} ({err})") from None
    return SdrName(
        name=name,
        segment=match["segment"],
        platform=match["platform"],
        start_time=start,
        end_time=end,
        orbit_number=int(match["orbit"]),
        proctime=created,
        source=match["source"],
    )


def start_key(name: str) -> str | None:
    """The granule start of a VIIRS SDR file name as ``YYYYMMDDHHMMSSt`` (date, time, tenths: sorts like the time),
    read from its fixed places without parsing; None when the name does not have that shape. Cheap enough for every
    name of a folder of months of files; a name it accepts may still fail :func:`parse_name`."""
    if len(name) < 40 or name[5] != "_" or name[9:11] != "_d" or name[19:21] != "_t":
        return None
    key = name[11:19] + name[21:28]
    return key if key.isdigit() else None


def start_key_of(when: dt.datetime) -> str:
    """:func:`start_key` of a granule starting at ``when`` (naive UTC)."""
    return f"{when:%Y%m%d%H%M%S}{when.microsecond // 100000}"


def format_name(
    segment: str, platform: str, start: dt.datetime, end: dt.datetime, orbit: int, created: dt.datetime,
    source: str = "cspp_dev",
) -> str:
    """Build a file name in the layout :func:`parse_name` reads (used by the GINA double and tests)."""
    return (
        f"{segment}_{platform}_d{start:%Y%m%d}_t{start:%H%M%S}{start.microsecond // 100000}"
        f"_e{end:%H%M%S}{end.microsecond // 100000}_b{orbit:05d}_c{created:%Y%m%d%H%M%S%f}_{source}.h5"
    )
