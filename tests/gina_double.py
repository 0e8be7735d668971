"""gina_double: a local stand-in for GINA NRT, for tests and offline demos (SPEC section 9).

It lives with the tests, not in the package: the production image ships no test double (SPEC section 8; the
image's .dockerignore leaves tests/ out). Run it from the repo root with ``python -m tests.gina_double``.

It serves ``/products.json`` (the query of SPEC section 4) for generated passes of small but real HDF5 files
(h5py) with VIIRS SDR names and groups, and the files themselves under ``/files/`` with true HTTP range semantics
(206 with Content-Range, 416, keep-alive), an optional per-connection bandwidth cap, and faults that can be
switched on and off while it runs.

The listing (``GET /products.json``) answers a JSON array of records ``url``, ``md5sum``, ``satellite``,
``sensor``, ``processing_level``, ``facility`` (the file's station) and ``size``, in file-name order (all of one
file type, then the next; never by station or fetch order). Of the query it reads:

- ``satellites[]`` (repeatable; none: every satellite). ``sensors[]`` and ``processing_levels[]`` are ignored
  (everything is VIIRS level1).
- ``facilities[]`` (repeatable): only those stations' files; without any, every station's (what GINA recommends).
  A station with nothing (or a name no file has, e.g. ``all``) lists nothing.
- ``start_date`` and ``end_date``, by granule start (the name's ``d`` and ``t`` fields). Each names a day,
  ``YYYY-MM-DD``, or a minute: ``YYYY-MM-DD HHMM`` (GINA's getGINAsat.py sends ``YYYY-MM-DD+HHMM``; ``+`` is a
  space in a query string), ``YYYY-MM-DD HH:MM``, ``YYYY-MM-DDTHHMM`` or ``YYYY-MM-DDTHH:MM`` (UTC; blanks around
  the value are ignored; no seconds, no zone). Both bounds include the whole day or minute they name: a granule is
  listed when ``start of start_date <= start < end of end_date`` (``end_date=2026-11-23 1001`` lists a granule
  starting at 10:01:59.9). A missing (or empty) bound does not limit its side; a malformed one is answered
  ``400`` with a one-line text.
- A file is listed from its ``listed_at`` on (epoch seconds or a datetime, naive is UTC; default: when it was
  added), as GINA lists a file some minutes after it was made: a file not listed yet is served under ``/files/``
  all the same. :meth:`GinaDouble.list_at` moves that time.

Every listing answer carries ``ETag``, a strong validator (a hash of the body); a request whose ``If-None-Match``
names it (or ``*``; ``W/`` prefixes are ignored, as RFC 9110 says) is answered ``304 Not Modified`` with the ETag
and no body. There is no ``Last-Modified`` and ``If-Modified-Since`` is ignored. GINA's own support for either is
unknown: the ``no_etag`` fault stands for a server without it.

Stations (GINA's facilities: ``gilmore``, ``uafgina``, ``barrow``, ``uaf5``; any lower-case name is accepted).
Every file belongs to one; a file added without one is at ``gilmore`` (:data:`DEFAULT_STATION`), so callers that
never name a station get what they always got. ``add_file``, ``add_existing``, ``add_granule``, ``add_scheduled``
and ``add_pass`` take ``station=`` (a pass at one station only) and ``listed_at=``.
:meth:`GinaDouble.add_granule_at_stations` adds one granule as several stations list it (``notes/gina.md``): each
further station's copy starts 0.1 s later (``t0953361``, ``t0953362``), ends at the same time, has the same orbit
and was made 3.5 minutes later (the ``c`` field), each station listed from its own ``listed_at``; with
``segments_at`` the granule's files are split between the stations (some segments at one, the others at another).

:meth:`GinaDouble.bytes_served` logs what was served, thread-safe: body bytes of listings and of file content
apart (``listing``, ``files``), their status lines and headers apart (``listing_headers``, ``file_headers``), the
answers (``listing_requests``, ``file_requests``), the 304s among the listings (``not_modified``), and file
content bytes per station (``stations``; e.g. to show that a pass listed at two stations was fetched once).

| fault | effect |
|---|---|
| drop | the connection is closed after half of the requested bytes |
| error5xx | 503 to range requests that do not start at byte 0 |
| ignore_ranges | 200 with the whole file to every request, no ``Accept-Ranges`` |
| short_body | Content-Length promises the whole range, half of it is sent, then the connection closes |
| wrong_md5 | every ``md5sum`` in the listing is wrong |
| slow_first_byte | the response starts after ``slow_seconds`` |
| slow_body | the response body is sent at ``slow_rate`` bytes/s (one slow connection among fast ones) |
| html | ``products.json`` answers an HTML error page (no ETag) |
| bad_json | ``products.json`` answers truncated JSON |
| no_etag | ``products.json`` answers carry no ``ETag`` and ``If-None-Match`` is ignored (never a 304) |

A fault is on for a number of occurrences (``set_fault(name, count)``) or until cleared (``count=None``).

Standalone (``make run`` with ``GINA_URL=http://127.0.0.1:PORT``)::

    .venv/bin/python -m tests.gina_double --port 8080 --dir /tmp/gina --granules 4 --every 60 --rate 4MB --fault drop

Files already in ``DIR/files`` (an earlier run, or made by a script) are served too (at the first station).
``--every N`` adds a new granule (all segments of every product, each satellite given) every N seconds, each one
starting where that satellite's previous granule ended, so the whole suite can be watched working without
internet. ``--latency M`` lists each granule M minutes after its end, made two minutes before that (GINA's own
delay, as the monitor's latency legs show it), on the clock: ``--every`` then only looks for the granules that are
due (one per satellite every 85.4 s); default 0: granules end now and are listed at once. SIGTERM or Ctrl-C stops
it.

Without ``--stations`` every file is at gilmore. ``--stations gilmore,uafgina`` puts every granule (those of the
start and those ``--every`` adds) at each station, as :meth:`GinaDouble.add_granule_at_stations` does: the second
station's copy 0.1 s later in start and 3.5 minutes later in creation, and listed ``--station-lag`` seconds
(default 30) after the first station's (the third's twice that, and so on); every ``--one-station-every``-th
granule of a satellite (default 4, 0: never) is at one station only, the stations taking turns.

The schedule (:class:`Schedule`) is a simple model of the real one: the three satellites share one sun-synchronous
orbit plane (inclination 98.7 degrees, ascending node at 13:30 local solar time, one orbit every 101.5 minutes),
NOAA-21 a quarter orbit behind NOAA-20 and Suomi-NPP half an orbit behind it (about 25 and 50 minutes). Each
satellite's granules (85.4 s) follow one another on a time grid of its own, so no two satellites' granules start
at the same time; orbit numbers count up at each ascending node. At start the double lists each satellite's
latest ``--granules`` granules, ending now: consecutive granules of one orbit and one direction form a pass, and
satellites half an orbit apart always fly in opposite directions, so both ascending and descending passes are
there. ``--same-start`` puts every satellite on one time grid instead (identical start times, as the double had
before; segment_gatherer keys its slots by start time alone, and the suite's guarantees must hold for that too).

Geolocation files (GITCO, GMTCO, GDNBO) hold small 2-D ``Latitude`` and ``Longitude`` arrays (48 scans x 32
pixels, scans in time order, 3040 km across) along the ground track the model gives for that satellite and time,
so the latitude at nadir rises over an ascending granule and falls over a descending one (:func:`geolocation`).
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import hashlib
import json
import logging
import math
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from avoviirscollector.signals import stop_on_signals
from avoviirscollector.viirs import (
    PLATFORMS,
    PRODUCTS,
    SATELLITE_TO_SHORT,
    NotASdrName,
    SdrName,
    format_name,
    parse_name,
)

log = logging.getLogger("gina_double")

FAULTS = ("drop", "error5xx", "ignore_ranges", "short_body", "wrong_md5", "slow_first_byte", "slow_body", "html",
          "bad_json", "no_etag")
ALL_SEGMENTS = tuple(sorted({seg for segs in PRODUCTS.values() for seg in segs}))
#: approximate sizes of real files, in MB (a scale factor shrinks them)
REAL_SIZES_MB = {"GITCO": 60, "GMTCO": 16, "GDNBO": 8, "SVDNB": 4}
_BAND_GROUP = re.compile(r"^SV([MI])(\d\d)$")
GRANULE_SECONDS = 85.4
GRANULE = dt.timedelta(seconds=GRANULE_SECONDS)
#: GINA's receiving stations (its ``facilities``); a file added without one is at the first
STATIONS = ("gilmore", "uafgina", "barrow", "uaf5")
DEFAULT_STATION = STATIONS[0]
_STATION_NAME = re.compile(r"[a-z][a-z0-9]*")
#: the copy of a granule at a further station: its start later by this (s; one step of the names' tenths) ...
COPY_OFFSET = 0.1
#: ... and made this much later (s; GINA's example: 3.5 minutes)
COPY_DELAY = 210.0

# -- the orbit model -----------------------------------------------------------------------------------------------
ORBIT_MINUTES = 101.5
ORBIT = dt.timedelta(minutes=ORBIT_MINUTES)
INCLINATION = math.radians(98.7)
EARTH_ROTATION = 2 * math.pi / 86164.1  # radians per second (sidereal day)
EARTH_RADIUS_KM = 6371.0
SWATH_KM = 3040.0
GEO_SHAPE = (48, 32)  # scans x pixels of the generated Latitude and Longitude
#: the model's time origin (naive UTC)
SCHEDULE_EPOCH = dt.datetime(2026, 1, 1)
#: per satellite: delay of its ascending nodes after NOAA-20's, and the number of its orbit that began then
NODE_DELAY: dict[str, dt.timedelta] = {"j01": dt.timedelta(0), "j02": ORBIT / 4, "npp": ORBIT / 2}
EPOCH_ORBIT: dict[str, int] = {"j01": 41500, "j02": 16200, "npp": 72600}
#: per satellite: where its granule time grid starts after the epoch (distinct: no two granules start together)
GRID_OFFSET: dict[str, dt.timedelta] = {"j01": dt.timedelta(0), "j02": dt.timedelta(seconds=28.5),
                                        "npp": dt.timedelta(seconds=57.0)}


def _node(platform: str, when: dt.datetime) -> tuple[int, float]:
    """(orbits since the epoch, seconds since that orbit's ascending node) of ``platform`` at ``when``."""
    seconds = (when - SCHEDULE_EPOCH - NODE_DELAY[platform]).total_seconds()
    orbits = math.floor(seconds / ORBIT.total_seconds())
    return orbits, seconds - orbits * ORBIT.total_seconds()


def orbit_number(platform: str, when: dt.datetime) -> int:
    """The model's orbit number of ``platform`` at ``when`` (it counts up at each ascending node)."""
    return EPOCH_ORBIT[platform] + _node(platform, when)[0]


def subsatellite(platform: str, when: dt.datetime) -> tuple[float, float]:
    """(latitude, longitude) in degrees of the point under ``platform`` at ``when`` (naive UTC), in the model."""
    orbits, since_node = _node(platform, when)
    node_time = when - dt.timedelta(seconds=since_node)
    hours = (node_time - node_time.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds() / 3600
    node_longitude = math.radians(15.0 * (13.5 - hours))  # the node is at 13:30 local solar time
    u = 2 * math.pi * since_node / ORBIT.total_seconds()  # argument of latitude
    latitude = math.asin(math.sin(INCLINATION) * math.sin(u))
    longitude = (node_longitude + math.atan2(math.cos(INCLINATION) * math.sin(u), math.cos(u))
                 - EARTH_ROTATION * since_node)
    return math.degrees(latitude), (math.degrees(longitude) + 180.0) % 360.0 - 180.0


def geolocation(platform: str, start: dt.datetime, shape: tuple[int, int] = GEO_SHAPE):
    """Latitude and Longitude arrays (float32, scans x pixels) of a granule of ``platform`` starting at ``start``.

    Scan ``r`` is the line across the track at ``start + 85.4 s * (r + 0.5) / scans``; its pixels are spread evenly
    over the swath, perpendicular to the ground track, nadir in the middle."""
    import numpy as np

    scans, pixels = shape
    lat = np.empty(shape, dtype="float64")
    lon = np.empty(shape, dtype="float64")
    across = (np.arange(pixels) - (pixels - 1) / 2) * SWATH_KM / max(1, pixels - 1) / EARTH_RADIUS_KM  # radians
    for row in range(scans):
        when = start + GRANULE * ((row + 0.5) / scans)
        lat0, lon0 = (math.radians(v) for v in subsatellite(platform, when))
        lat1, lon1 = (math.radians(v) for v in subsatellite(platform, when + dt.timedelta(seconds=1)))
        heading = math.atan2(math.sin(lon1 - lon0) * math.cos(lat1),
                             math.cos(lat0) * math.sin(lat1) - math.sin(lat0) * math.cos(lat1) * math.cos(lon1 - lon0))
        bearing = heading + math.pi / 2  # to the right of the track; negative distances go left
        point = np.arcsin(np.sin(lat0) * np.cos(across) + np.cos(lat0) * np.sin(across) * math.cos(bearing))
        lat[row] = np.degrees(point)
        lon[row] = (np.degrees(lon0 + np.arctan2(math.sin(bearing) * np.sin(across) * math.cos(lat0),
                                                 np.cos(across) - math.sin(lat0) * np.sin(point))) + 180) % 360 - 180
    return lat.astype("float32"), lon.astype("float32")


def nadir_direction(platform: str, start: dt.datetime) -> str:
    """ascending or descending: the sign of the nadir latitude's change from the first to the last scan of the
    granule (what a reader of its geolocation file sees)."""
    scans = GEO_SHAPE[0]
    first = subsatellite(platform, start + GRANULE * (0.5 / scans))[0]
    last = subsatellite(platform, start + GRANULE * ((scans - 0.5) / scans))[0]
    return "ascending" if last > first else "descending"


@dataclass(frozen=True)
class Granule:
    """One granule of the schedule. Times are naive UTC."""

    platform: str  # file-name short name: npp, j01, j02
    start: dt.datetime
    orbit: int
    direction: str  # ascending or descending

    @property
    def end(self) -> dt.datetime:
        return self.start + GRANULE


class Schedule:
    """When each satellite's granules start, their orbit numbers and pass directions (see the module docstring).

    Granules of one satellite are contiguous: each starts where the one before ended. With ``same_start`` every
    satellite uses one time grid, so granules of different satellites start at identical times."""

    def __init__(self, same_start: bool = False) -> None:
        self.same_start = same_start

    def _grid(self, platform: str) -> dt.datetime:
        return SCHEDULE_EPOCH + (dt.timedelta(0) if self.same_start else GRID_OFFSET[platform])

    def granule(self, platform: str, start: dt.datetime) -> Granule:
        """The granule of ``platform`` starting at ``start`` (a time of its grid, or any time: tests use both)."""
        return Granule(platform, start, orbit_number(platform, start), nadir_direction(platform, start))

    def containing(self, platform: str, when: dt.datetime) -> Granule:
        """The granule of ``platform`` during which ``when`` falls."""
        index = (when - self._grid(platform)) // GRANULE
        return self.granule(platform, self._grid(platform) + GRANULE * index)

    def following(self, granule: Granule) -> Granule:
        """The next granule of the same satellite: it starts where ``granule`` ended."""
        return self.granule(granule.platform, granule.end)

    def latest(self, platform: str, now: dt.datetime, count: int) -> list[Granule]:
        """The last ``count`` granules of ``platform`` that ended by ``now``, oldest first."""
        current = self.containing(platform, now)
        out: list[Granule] = []
        start = current.start
        for _ in range(count):
            start -= GRANULE
            out.append(self.granule(platform, start))
        return out[::-1]


def _groups(segment: str) -> tuple[str, str]:
    """HDF5 group names of a segment, as in CSPP/IDPS SDR files."""
    geo = {"GITCO": "VIIRS-IMG-GEO-TC", "GMTCO": "VIIRS-MOD-GEO-TC", "GDNBO": "VIIRS-DNB-GEO"}
    if segment in geo:
        return f"All_Data/{geo[segment]}_All", f"Data_Products/{geo[segment]}"
    if segment == "SVDNB":
        return "All_Data/VIIRS-DNB-SDR_All", "Data_Products/VIIRS-DNB-SDR"
    match = _BAND_GROUP.match(segment)
    band = f"{match[1]}{int(match[2])}" if match else segment
    return f"All_Data/VIIRS-{band}-SDR_All", f"Data_Products/VIIRS-{band}-SDR"


def make_sdr_file(path: Path, segment: str, size: int, seed: int = 0) -> None:
    """Write a real HDF5 file of about ``size`` bytes with the groups of a VIIRS SDR file of ``segment``.

    A geolocation file gets 2-D ``Latitude`` and ``Longitude`` (:func:`geolocation`, for the platform and start
    time of its name; a name that is not a VIIRS SDR name gets Suomi-NPP at the model's epoch) and random bytes
    make up the rest of the size; any other file gets random bytes as its ``Radiance``."""
    import h5py
    import numpy as np

    data_group, product_group = _groups(segment)
    payload = max(0, size - 8192)
    rng = np.random.default_rng(seed)
    tmp = path.with_name(path.name + ".writing")
    step = 4 << 20
    with h5py.File(tmp, "w") as h5:
        h5.attrs["Platform_Short_Name"] = np.bytes_(path.name.split("_")[1].upper() if "_" in path.name else "NPP")
        group = h5.create_group(data_group)
        if segment.startswith("G"):
            try:
                sdr = parse_name(path.name)
                platform, start = sdr.platform, sdr.start_time
            except NotASdrName:
                platform, start = "npp", SCHEDULE_EPOCH
            latitude, longitude = geolocation(platform, start)
            group.create_dataset("Latitude", data=latitude)
            group.create_dataset("Longitude", data=longitude)
            payload = max(0, payload - latitude.nbytes - longitude.nbytes)
            name = "QF2_VIIRSSDRGEO"  # quality flags in a real file; here the bytes that give the file its size
        else:
            name = "Radiance"
        dataset = group.create_dataset(name, shape=(payload,), dtype=np.uint8)
        for pos in range(0, payload, step):  # in slices: memory stays small whatever the size
            n = min(step, payload - pos)
            dataset[pos:pos + n] = np.frombuffer(rng.bytes(n), dtype=np.uint8)
        h5.create_group(product_group).attrs["Instrument_Short_Name"] = np.bytes_("VIIRS")
    os.replace(tmp, path)


@dataclass
class Served:
    """One served file: listed from ``listed_at`` (epoch seconds) on, as a file of ``station``."""

    name: str
    path: Path | None  # None: listed only (a record of a file the double does not serve: 404)
    size: int
    md5: str
    listed_at: float
    station: str = DEFAULT_STATION


def epoch(when: float | dt.datetime | None) -> float:
    """Epoch seconds of ``when``: None is now, a number is taken as it is, a naive datetime is UTC."""
    if when is None:
        return time.time()
    if isinstance(when, dt.datetime):
        return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()
    return float(when)


def check_station(station: str | None) -> str:
    """The station a file is added at: ``station``, or :data:`DEFAULT_STATION` when None. Any lower-case name is
    accepted (GINA added ``uaf5`` after the others), so a listing can hold a station the suite does not know."""
    station = DEFAULT_STATION if station is None else station
    if not isinstance(station, str) or not _STATION_NAME.fullmatch(station):
        raise ValueError(f"not a station name: {station!r} (lower-case letters and digits, e.g. {STATIONS[1]})")
    return station


class BadQuery(ValueError):
    """A ``products.json`` query the double answers with 400 (the message is the answer's text)."""


_BOUND = re.compile(r"(\d{4}-\d\d-\d\d)(?:[ T](\d\d):?(\d\d))?", re.ASCII)


def parse_bound(key: str, text: str) -> tuple[dt.datetime, dt.datetime]:
    """The span a ``start_date`` or ``end_date`` value names: a whole day (``YYYY-MM-DD``) or a whole minute
    (``YYYY-MM-DD HHMM``, ``YYYY-MM-DD HH:MM``, ``YYYY-MM-DDTHHMM`` or ``YYYY-MM-DDTHH:MM``; surrounding blanks
    are ignored), as (first instant, first instant after it), naive UTC. Raise :class:`BadQuery` otherwise."""
    match = _BOUND.fullmatch(text.strip())
    try:
        if not match:
            raise ValueError
        day = dt.date.fromisoformat(match[1])
        if match[2] is None:
            first, length = dt.datetime.combine(day, dt.time()), dt.timedelta(days=1)
        else:
            first, length = dt.datetime.combine(day, dt.time(int(match[2]), int(match[3]))), dt.timedelta(minutes=1)
    except ValueError:
        raise BadQuery(f"{key}={text!r}: expected YYYY-MM-DD, YYYY-MM-DD HHMM or YYYY-MM-DDTHH:MM") from None
    return first, first + length if dt.datetime.max - first >= length else dt.datetime.max


def time_bounds(query: dict[str, list[str]]) -> tuple[dt.datetime, dt.datetime]:
    """(first, after): a granule is listed when ``first <= start < after``. Both bounds are inclusive of the day
    or minute they name; a missing bound does not limit (:func:`parse_bound`)."""
    first, after = dt.datetime.min, dt.datetime.max
    if "start_date" in query:
        first = parse_bound("start_date", query["start_date"][0])[0]
    if "end_date" in query:
        after = parse_bound("end_date", query["end_date"][0])[1]
    return first, after


def parse_rate(text: str) -> float:
    """'4MB' -> 4e6 bytes/s, '512k' -> 512e3, '1000' -> 1000."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([kKmMgG]?)[bB]?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (e.g. 4MB, 512k)")
    return float(match[1]) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[match[2].lower()]


class GinaDouble:
    """The double. ``start()`` serves on ``url`` from a thread; ``stop()`` closes every connection."""

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0, rate: float | None = None,
                 slow_seconds: float = 2.0, slow_rate: float = 50e3) -> None:
        self.root = Path(root)
        self.files_dir = self.root / "files"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.rate = rate
        self.slow_seconds = slow_seconds
        self.slow_rate = slow_rate
        self._lock = threading.Lock()
        self._files: dict[str, Served] = {}
        self._parsed: dict[str, SdrName] = {}  # name -> its parsed name (listings at real volume parse nothing)
        self._by_start: list[tuple[dt.datetime, str]] = []  # (start, name), sorted: listings by time bounds
        self._extra_records: list[dict] = []
        self._raw_records: list[str] = []
        self._faults: dict[str, int | None] = {}
        self.listing_requests: list[dict[str, list[str]]] = []
        self.file_requests: list[tuple[str, str | None, int]] = []  # (name, Range header, status)
        self._connections: set[socket.socket] = set()
        self.connections_accepted = 0
        self._bytes = dict.fromkeys(("listing", "listing_headers", "listing_requests", "not_modified", "files",
                                     "file_headers", "file_requests"), 0)
        self._station_bytes: dict[str, int] = {}
        self._server = _Server((host, port), _make_handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- control -----------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> GinaDouble:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="gina-double", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()

    def __enter__(self) -> GinaDouble:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def set_fault(self, name: str, count: int | None = None) -> None:
        """Switch a fault on for ``count`` occurrences (None: until cleared)."""
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; faults: {', '.join(FAULTS)}")
        with self._lock:
            self._faults[name] = count

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _fault(self, name: str) -> bool:
        """True when the fault applies now (and count one occurrence)."""
        with self._lock:
            if name not in self._faults:
                return False
            left = self._faults[name]
            if left is None:
                return True
            if left <= 1:
                del self._faults[name]
            else:
                self._faults[name] = left - 1
            return True

    def fault_on(self, name: str) -> bool:
        with self._lock:
            return name in self._faults

    def bytes_served(self) -> dict:
        """What the double has served so far (a copy; thread-safe). Bytes are those handed to the socket.

        ``listing``: body bytes of ``products.json`` answers (200, 400; a 304 has none); ``listing_headers``: their
        status lines and headers; ``listing_requests``: ``products.json`` answers, 304s included;
        ``not_modified``: the 304s among them. ``files``: file content sent (200 and 206 bodies, cut ones as far
        as they went; the short texts of 404, 416 and 503 answers are not counted); ``file_headers``: the status
        lines and headers of every answer under ``/files/``; ``file_requests``: those answers (404s included,
        unlike the :attr:`file_requests` list). ``stations``: file content bytes per station."""
        with self._lock:
            return {**self._bytes, "stations": dict(self._station_bytes)}

    def _count(self, key: str, n: int = 1, station: str | None = None) -> None:
        with self._lock:
            self._bytes[key] += n
            if station is not None:
                self._station_bytes[station] = self._station_bytes.get(station, 0) + n

    # -- content -----------------------------------------------------------------------------------------
    def add_file(self, name: str, size: int, segment: str | None = None, seed: int | None = None,
                 station: str | None = None, listed_at: float | dt.datetime | None = None) -> Served:
        """Generate a real HDF5 file named ``name`` of about ``size`` bytes and list it (at ``station``, from
        ``listed_at`` on: see :meth:`add_existing`)."""
        station = check_station(station)
        path = self.files_dir / name
        segment = segment or name.split("_", 1)[0]
        if seed is None:
            seed = int(hashlib.md5(name.encode()).hexdigest()[:8], 16)
        make_sdr_file(path, segment, size, seed)
        return self.add_existing(path, station, listed_at)

    def add_existing(self, path: Path, station: str | None = None,
                     listed_at: float | dt.datetime | None = None) -> Served:
        """List an existing file (its name is its basename) as a file of ``station`` (default
        :data:`DEFAULT_STATION`), from ``listed_at`` on (epoch seconds or a datetime, naive is UTC; default now)."""
        station = check_station(station)
        md5 = hashlib.md5()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                md5.update(chunk)
        served = Served(path.name, path, path.stat().st_size, md5.hexdigest(), epoch(listed_at), station)
        self._keep(served)
        return served

    def add_listed(self, name: str, size: int, station: str | None = None,
                   listed_at: float | dt.datetime | None = None, md5: str | None = None) -> Served:
        """List a file the double does not serve (its URL answers 404): a record for listings at real volume, where
        only what a listing costs matters (``md5`` made up from the name unless given)."""
        parse_name(name)
        served = Served(name, None, size, md5 or hashlib.md5(name.encode()).hexdigest(), epoch(listed_at),
                        check_station(station))
        self._keep(served)
        return served

    def _keep(self, served: Served) -> None:
        parsed = parse_name(served.name)
        with self._lock:
            if served.name in self._files:
                self._by_start.remove((self._parsed[served.name].start_time, served.name))
            self._files[served.name] = served
            self._parsed[served.name] = parsed
            bisect.insort(self._by_start, (parsed.start_time, served.name))

    def list_at(self, names: list[str], when: float | dt.datetime | None = None) -> None:
        """Move the time from which the named files are listed (default: now, i.e. list them at once)."""
        at = epoch(when)
        with self._lock:
            for name in names:
                self._files[name].listed_at = at

    def add_granule(self, platform: str, orbit: int, start: dt.datetime, segments=ALL_SEGMENTS,
                    scale: float = 0.01, sizes: dict[str, int] | None = None,
                    created: dt.datetime | None = None, station: str | None = None,
                    listed_at: float | dt.datetime | None = None, end: dt.datetime | None = None) -> list[Served]:
        """One granule (85.4 s) of ``segments``; sizes are ``sizes[segment]`` or the real sizes times ``scale``.

        ``created`` (the names' creation time) defaults to 10 minutes after ``start``, ``end`` to ``start`` plus
        85.4 s; the files are at ``station`` and listed from ``listed_at`` on (see :meth:`add_existing`)."""
        end = end or start + dt.timedelta(seconds=GRANULE_SECONDS)
        created = created or start + dt.timedelta(minutes=10)
        out = []
        for segment in segments:
            name = format_name(segment, platform, start, end, orbit, created)
            if sizes and segment in sizes:
                size = sizes[segment]
            else:
                size = int(REAL_SIZES_MB.get(segment, 6) * 1e6 * scale)
            out.append(self.add_file(name, size, segment, station=station, listed_at=listed_at))
        return out

    def add_granule_at_stations(self, platform: str, orbit: int, start: dt.datetime,
                                stations: Sequence[str] = ("gilmore", "uafgina"), offset: float = COPY_OFFSET,
                                delays: Sequence[float] | None = None, segments=ALL_SEGMENTS,
                                segments_at: Mapping[str, Sequence[str]] | None = None,
                                listed_at: Sequence[float | dt.datetime | None] | None = None,
                                created: dt.datetime | None = None, **kwargs) -> list[Served]:
        """One granule received at several stations, as GINA lists it (``notes/gina.md``).

        The copy of ``stations[i]`` starts ``i * offset`` seconds after ``start`` (0.1 s: one step of the names'
        tenths), ends when the first copy ends (``start`` + 85.4 s), has the same orbit, and was made
        ``delays[i]`` seconds after ``created`` (default ``i * 210``: 3.5 minutes later at each further station).
        Each station has ``segments``, or ``segments_at[station]`` when given (a granule split between stations:
        a station left out of ``segments_at`` has none of it). ``listed_at[i]`` is when the copy of
        ``stations[i]`` is listed (default: now). Other keywords (``scale``, ``sizes``) as for :meth:`add_granule`.
        Returns every station's files, in the order of ``stations``."""
        if len(set(stations)) != len(stations) or not stations:
            raise ValueError(f"stations must be distinct and at least one: {stations!r}")
        unknown = set(segments_at or {}) - set(stations)
        if unknown:
            raise ValueError(f"segments_at names stations not in stations: {', '.join(sorted(unknown))}")
        delays = [COPY_DELAY * i for i in range(len(stations))] if delays is None else list(delays)
        listed = [None] * len(stations) if listed_at is None else list(listed_at)
        if len(delays) != len(stations) or len(listed) != len(stations):
            raise ValueError("delays and listed_at need one value per station")
        created = created or start + dt.timedelta(minutes=10)
        end = start + GRANULE
        out: list[Served] = []
        for i, station in enumerate(stations):
            own = segments if segments_at is None else tuple(segments_at.get(station, ()))
            out += self.add_granule(platform, orbit, start + dt.timedelta(seconds=offset * i), segments=own,
                                    created=created + dt.timedelta(seconds=delays[i]), station=station,
                                    listed_at=listed[i], end=end, **kwargs)
        return out

    def add_scheduled(self, granule: Granule, **kwargs) -> list[Served]:
        """The files of one granule of a :class:`Schedule` (keywords as for :meth:`add_granule`)."""
        return self.add_granule(granule.platform, granule.orbit, granule.start, **kwargs)

    def add_pass(self, platform: str, orbit: int, start: dt.datetime, granules: int = 3, **kwargs) -> list[Served]:
        """``granules`` consecutive granules of one orbit."""
        out = []
        for i in range(granules):
            out += self.add_granule(platform, orbit, start + dt.timedelta(seconds=GRANULE_SECONDS * i), **kwargs)
        return out

    def add_record(self, record: dict) -> None:
        """List a raw record as it is (hostile listings)."""
        with self._lock:
            self._extra_records.append(record)

    def add_raw_record(self, text: str) -> None:
        """List a record given as JSON text, written into the listing verbatim (JSON no encoder would write, e.g.
        nested deeper than a parser's stack)."""
        with self._lock:
            self._raw_records.append(text)

    def remove(self, name: str) -> None:
        with self._lock:
            if self._files.pop(name, None) is not None:
                self._by_start.remove((self._parsed.pop(name).start_time, name))

    def served(self) -> list[Served]:
        with self._lock:
            return sorted(self._files.values(), key=lambda s: s.name)

    def listing(self, query: dict[str, list[str]], now: float | None = None) -> list[dict]:
        """The records ``products.json`` answers for ``query``: the files listed by ``now`` (``listed_at``; default
        the clock) of the stations in ``facilities[]`` (every station without one) that match the satellites and the
        time bounds (:func:`time_bounds`, by granule start), in name order. Raise :class:`BadQuery` for a malformed
        bound."""
        sats = query.get("satellites[]", [])
        shorts = {SATELLITE_TO_SHORT.get(s) for s in sats}
        stations = set(query.get("facilities[]", []))
        now = time.time() if now is None else now
        first, after = time_bounds(query)
        wrong = self.fault_on("wrong_md5")
        records = []
        with self._lock:
            low = bisect.bisect_left(self._by_start, (first, ""))
            high = bisect.bisect_left(self._by_start, (after, ""))
            candidates = sorted(((self._files[name], self._parsed[name]) for _, name in self._by_start[low:high]),
                                key=lambda pair: pair[0].name)
        for served, parsed in candidates:
            if served.listed_at > now or (stations and served.station not in stations):
                continue
            if sats and parsed.platform not in shorts:
                continue
            md5 = hashlib.md5(served.md5.encode()).hexdigest() if wrong else served.md5
            records.append({
                "url": f"{self.url}/files/{served.name}",
                "md5sum": md5,
                "satellite": PLATFORMS[parsed.platform][1],
                "sensor": "viirs",
                "processing_level": "level1",
                "facility": served.station,
                "size": served.size,
            })
        with self._lock:
            records += self._extra_records
        return records


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """Clients that hang up mid-response are normal here (the mirror cuts transfers): no traceback."""
        log.debug("connection from %s ended abruptly", client_address, exc_info=True)


def etag(body: bytes) -> str:
    """The strong validator of a listing body: a quoted hash of its bytes."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def none_match(header: str | None, tag: str) -> bool:
    """True when an ``If-None-Match`` header names ``tag`` (or is ``*``): weak comparison, as RFC 9110 says for
    this header (``W/"x"`` matches ``"x"``)."""
    if not header:
        return False
    names = [name.strip() for name in header.split(",")]
    return "*" in names or tag in (name.removeprefix("W/") for name in names)


def _parse_range(header: str, size: int) -> tuple[int, int] | None | str:
    """``bytes=a-b`` -> (a, b+1); None when absent or not a single byte range; 'unsatisfiable' when out of range."""
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header or "")
    if not match or (not match[1] and not match[2]):
        return None
    if match[1]:
        start = int(match[1])
        end = int(match[2]) + 1 if match[2] else size
    else:
        start, end = max(0, size - int(match[2])), size
    end = min(end, size)
    if start >= size or end <= start:
        return "unsatisfiable"
    return start, end


class _Handler(BaseHTTPRequestHandler):
    """The HTTP side of a :class:`GinaDouble` (HTTP/1.1, keep-alive): ``/products.json``, the files under
    ``/files/`` with range semantics, the double's faults and its byte log. The double it serves is the class
    attribute :attr:`double`, set in the subclass :func:`_make_handler` makes for it."""

    protocol_version = "HTTP/1.1"
    server_version = "gina-double/1"
    double: GinaDouble  # set by _make_handler
    _kind: str | None = None  # what the answer being sent is, for the byte log: listing, file or None

    def log_message(self, fmt, *args):  # quiet: tests and demos read the mirror's log, not ours
        log.debug("%s " + fmt, self.address_string(), *args)

    def setup(self):
        super().setup()
        with self.double._lock:
            self.double._connections.add(self.connection)
            self.double.connections_accepted += 1

    def finish(self):
        try:
            super().finish()
        except (OSError, ValueError):
            pass
        finally:
            with self.double._lock:
                self.double._connections.discard(self.connection)

    def do_GET(self):
        parts = urlsplit(self.path)
        if self.double._fault("slow_first_byte"):
            time.sleep(self.double.slow_seconds)
        try:
            if parts.path == "/products.json":
                self._kind = "listing"
                self._listing(parse_qs(parts.query))
            elif parts.path.startswith("/files/"):
                self._kind = "file"
                self._file(parts.path[len("/files/"):])
            else:
                self._plain(404, "not found\n")
        finally:
            self._kind = None

    def flush_headers(self):
        if self._kind and hasattr(self, "_headers_buffer"):
            self.double._count(f"{self._kind}_headers", sum(len(line) for line in self._headers_buffer))
        super().flush_headers()

    def _plain(self, status: int, text: str, ctype: str = "text/plain", extra: dict | None = None):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)
        if self._kind == "listing":
            self.double._count("listing", len(body))

    # -- /products.json ----------------------------------------------------------------------------------
    def _listing(self, query):
        """The listing for ``query``: an HTML page with the html fault, 400 for a malformed bound, else the JSON
        array (:meth:`_listing_body`), with its ETag unless the no_etag fault is on (:meth:`_tagged`)."""
        double = self.double
        double.listing_requests.append(query)
        double._count("listing_requests")
        if double._fault("html"):
            self._plain(200, "<html><body><h1>502 Bad Gateway</h1></body></html>\n", "text/html")
            return
        try:
            records = double.listing(query)
        except BadQuery as err:
            self._plain(400, f"{err}\n")
            return
        body = self._listing_body(records)
        if double._fault("no_etag"):
            self._plain(200, body, "application/json")
            return
        self._tagged(body)

    def _listing_body(self, records: list[dict]) -> str:
        """The JSON text of ``records`` followed by the double's raw records; cut in half with the bad_json
        fault."""
        with self.double._lock:
            raw = list(self.double._raw_records)
        body = "[" + ",".join([json.dumps(r) for r in records] + raw) + "]" if raw else json.dumps(records)
        if self.double._fault("bad_json"):
            body = body[: max(1, len(body) // 2)]
        return body

    def _tagged(self, body: str) -> None:
        """200 with ``body`` and its ETag, or 304 (the ETag, no body) when ``If-None-Match`` names it."""
        tag = etag(body.encode())
        if none_match(self.headers.get("If-None-Match"), tag):
            self.double._count("not_modified")
            self.send_response(304)
            self.send_header("ETag", tag)
            self.end_headers()
            return
        self._plain(200, body, "application/json", extra={"ETag": tag})

    # -- /files/ -----------------------------------------------------------------------------------------
    def _file(self, name):
        """One file, or the part its ``Range`` header asks for: 404, 416, 503 (error5xx), 200 or 206."""
        double = self.double
        double._count("file_requests")
        with double._lock:
            served = double._files.get(name)
        if served is None or served.path is None:
            self._plain(404, "no such file\n")
            return
        size = served.size
        header = self.headers.get("Range")
        wanted, accept = self._wanted(header, size)
        if wanted == "unsatisfiable":
            double.file_requests.append((name, header, 416))
            self._plain(416, "", extra={"Content-Range": f"bytes */{size}"})
            return
        if wanted is not None and wanted[0] > 0 and double._fault("error5xx"):
            double.file_requests.append((name, header, 503))
            self._plain(503, "try later\n")
            return
        start, end = wanted if wanted else (0, size)
        status = 206 if wanted else 200
        double.file_requests.append((name, header, status))
        self._file_headers(status, start, end, size, accept)
        self._file_body(served, start, end)

    def _wanted(self, header: str | None, size: int) -> tuple[tuple[int, int] | None | str, bool]:
        """(the range ``header`` asks for, as :func:`_parse_range` reads it; whether the answer says
        ``Accept-Ranges``): with the ignore_ranges fault, a request with a ``Range`` header gets (None, False)."""
        wanted = _parse_range(header, size) if header else None
        if header and self.double._fault("ignore_ranges"):
            return None, False
        return wanted, True

    def _file_headers(self, status: int, start: int, end: int, size: int, accept: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/x-hdf5")
        self.send_header("Content-Length", str(end - start))
        if accept:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        self.wfile.flush()

    def _file_body(self, served: Served, start: int, end: int) -> None:
        """Bytes ``start`` to ``end`` of ``served``'s file at the double's rate (``slow_rate`` with the slow_body
        fault); with the drop or short_body fault, half of them, then the connection is cut."""
        double = self.double
        send_end = end
        drop = double._fault("drop")
        short = not drop and double._fault("short_body")
        if drop or short:
            send_end = start + (end - start) // 2
        rate = double.slow_rate if double._fault("slow_body") else double.rate
        with open(served.path, "rb") as fh:
            self._send(fh, start, send_end, rate, served.station)
        if drop:  # abortive close: the client sees a connection reset mid-piece
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        elif short:  # orderly close before Content-Length bytes were sent
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _send(self, fh, start: int, end: int, rate: float | None, station: str) -> None:
        """sendfile in steps, each counted as bytes of ``station``'s files; with a rate, each step waits for
        its turn on this connection's clock, which runs on across the responses of a keep-alive connection
        (a link cap: no idle gap, no burst)."""
        sock = self.connection
        pos = start
        step = 1 << 20 if not rate else max(16384, min(1 << 18, int(rate / 50)))
        while pos < end:
            n = min(step, end - pos)
            if rate:
                self._wait_turn(n, rate)
            try:
                n = os.sendfile(sock.fileno(), fh.fileno(), pos, n)
            except (BrokenPipeError, ConnectionResetError, OSError):
                self.close_connection = True
                return
            if n == 0:
                return
            self.double._count("files", n, station)
            pos += n

    def _wait_turn(self, n: int, rate: float) -> None:
        """Wait for the turn of the next ``n`` bytes on this connection's clock at ``rate`` bytes/s."""
        now = time.monotonic()
        # a late wake-up of this thread (up to 50 ms) is made up; idle time is not (no burst)
        clock = getattr(self, "_clock", 0.0)
        turn = clock if clock >= now - 0.05 else now
        if turn > now:
            time.sleep(turn - now)
        self._clock = turn + n / rate


def _make_handler(double: GinaDouble) -> type[_Handler]:
    """The handler class of ``double``'s server: :class:`_Handler` with ``double`` as its :attr:`_Handler.double`."""
    return type("Handler", (_Handler,), {"double": double})


def _fault_arg(text: str) -> tuple[str, int | None]:
    name, _, count = text.partition(":")
    if name not in FAULTS or (count and not count.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME or NAME:COUNT, NAME one of {', '.join(FAULTS)}")
    return name, int(count) if count else None


def _stations_arg(text: str) -> tuple[str, ...]:
    stations = tuple(s.strip() for s in text.split(",") if s.strip())
    try:
        for station in stations:
            check_station(station)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if not stations or len(set(stations)) != len(stations):
        raise argparse.ArgumentTypeError(f"{text!r}: expected distinct station names, e.g. gilmore,uafgina")
    return stations


def stations_of(stations: Sequence[str], index: int, one_every: int) -> list[str]:
    """The stations that have a satellite's granule number ``index`` (from 0) in the command line's demo: every
    one, except each ``one_every``-th granule (0: none), which one station alone has, the stations taking turns."""
    if len(stations) < 2 or not one_every or (index + 1) % one_every:
        return list(stations)
    return [stations[(index // one_every) % len(stations)]]


def _parser() -> argparse.ArgumentParser:
    """The command line's options (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="gina_double", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--dir", type=Path, default=Path("gina-double"), help="where the generated files live")
    parser.add_argument("--satellites", default="snpp,noaa20,noaa21")
    parser.add_argument("--granules", type=int, default=4,
                        help="granules per satellite generated at start: each satellite's latest, ending now")
    parser.add_argument("--every", type=float, default=0,
                        help="add one new granule per satellite every N s (the one after its latest)")
    parser.add_argument("--same-start", action="store_true",
                        help="every satellite's granules start at the same times (one time grid for all)")
    parser.add_argument("--scale", type=float, default=0.01, help="file size as a fraction of the real size")
    parser.add_argument("--rate", type=parse_rate, default=None, help="per-connection cap, e.g. 4MB")
    parser.add_argument("--fault", action="append", default=[], type=_fault_arg, metavar="NAME[:COUNT]",
                        help=f"switch a fault on (for COUNT occurrences; default until stopped): {', '.join(FAULTS)}")
    parser.add_argument("--slow-rate", type=parse_rate, default=50e3, help="bytes/s of the slow_body fault (50kB)")
    parser.add_argument("--stations", type=_stations_arg, default=None, metavar="A,B,...",
                        help="receiving stations (e.g. gilmore,uafgina): each granule is at every one, each further "
                             "station's copy 0.1 s later in start and 3.5 min later in creation; default: every "
                             f"file at {DEFAULT_STATION}")
    parser.add_argument("--station-lag", type=float, default=30.0, metavar="SECONDS",
                        help="with --stations: each further station's copies are listed SECONDS after the first's "
                             "(default 30)")
    parser.add_argument("--latency", type=float, default=0.0, metavar="MINUTES",
                        help="list each granule MINUTES after its end, made two minutes before that (GINA's part of "
                             "the delay), on the clock: --every then only looks for granules due (default 0: "
                             "granules end now and are listed at once, --every adds one each time)")
    parser.add_argument("--one-station-every", type=int, default=4, metavar="N",
                        help="with --stations: every Nth granule of a satellite is at one station only, the "
                             "stations taking turns (default 4; 0: never)")
    return parser


def _satellites(parser: argparse.ArgumentParser, text: str) -> list[str]:
    """The satellites of ``--satellites`` (comma-separated); an unknown one is an error of ``parser``."""
    sats = [s.strip() for s in text.split(",") if s.strip()]
    for sat in sats:
        if sat not in SATELLITE_TO_SHORT:
            parser.error(f"unknown satellite {sat!r}; known: {', '.join(SATELLITE_TO_SHORT)}")
    return sats


class _Feed:
    """The command line's granules: each satellite's latest at start, then those ``--every`` adds, at the
    ``--stations`` given (:meth:`add`)."""

    def __init__(self, double: GinaDouble, args: argparse.Namespace, sats: list[str], logger: logging.Logger):
        self.double = double
        self.args = args
        self.sats = sats
        self.logger = logger
        self.schedule = Schedule(same_start=args.same_start)
        self.now = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=args.latency)
        self.latest: dict[str, Granule] = {}
        self.added: dict[str, int] = {}  # granules added so far, per satellite

    def add_existing(self) -> None:
        """Serve the files already in the double's directory (of an earlier run or made by a script), at the first
        station."""
        for path in sorted(self.double.files_dir.glob("*.h5")):
            try:
                parse_name(path.name)
            except NotASdrName:
                continue
            self.double.add_existing(path, self.args.stations[0] if self.args.stations else None)

    def add_latest(self) -> None:
        """Each satellite's latest ``--granules`` granules, ending now (``--latency`` minutes ago)."""
        for sat in self.sats:
            for granule in self.schedule.latest(SATELLITE_TO_SHORT[sat], self.now, self.args.granules):
                self.add(granule)

    def add(self, granule: Granule) -> None:
        """List ``granule``: at every station of ``--stations`` (or those :func:`stations_of` gives it), each
        further station's copy listed ``--station-lag`` s after the one before, or at the default station."""
        args = self.args
        made = granule.end + dt.timedelta(minutes=max(0.0, args.latency - 2)) if args.latency else None
        if args.stations:
            index = self.added.get(granule.platform, 0)
            at = time.time()
            self.double.add_granule_at_stations(
                granule.platform, granule.orbit, granule.start, stations=args.stations, scale=args.scale,
                segments_at=dict.fromkeys(stations_of(args.stations, index, args.one_station_every), ALL_SEGMENTS),
                listed_at=[at + args.station_lag * i for i in range(len(args.stations))], created=made)
        else:
            self.double.add_scheduled(granule, scale=args.scale, created=made)
        self.added[granule.platform] = self.added.get(granule.platform, 0) + 1
        self.latest[granule.platform] = granule
        self.logger.debug("listed %s orbit %d %s %s", granule.platform, granule.orbit, granule.direction,
                          granule.start.isoformat(timespec="milliseconds"))

    def add_next(self) -> None:
        """The next granule of each satellite: it starts where that satellite's previous one ended. With
        ``--latency``, the granules of the clock instead: every one that ended ``--latency`` minutes ago or more and
        is not listed yet."""
        latest, schedule = self.latest, self.schedule
        for sat in self.sats:
            short = SATELLITE_TO_SHORT[sat]
            if not self.args.latency:
                self.add(schedule.following(latest[short]) if short in latest else schedule.containing(short, self.now))
                continue
            due = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=self.args.latency)
            while short in latest and schedule.following(latest[short]).end <= due:
                self.add(schedule.following(latest[short]))


def _build(args: argparse.Namespace, sats: list[str], logger: logging.Logger) -> tuple[GinaDouble, _Feed]:
    """The double of the command line, bound but not serving yet: its faults on, the files already in its
    directory and each satellite's latest granules listed."""
    double = GinaDouble(args.dir, args.host, args.port, rate=args.rate, slow_rate=args.slow_rate)
    for fault, count in args.fault:
        double.set_fault(fault, count)
    feed = _Feed(double, args, sats, logger)
    feed.add_existing()
    feed.add_latest()
    return double, feed


def _run(double: GinaDouble, feed: _Feed, args: argparse.Namespace, stop: threading.Event,
         logger: logging.Logger) -> None:
    """Serve until ``stop`` is set, listing the feed's next granules every ``--every`` seconds; then stop the
    double."""
    double.start()
    logger.info("serving %d files on %s/products.json (rate %s, faults %s, %s, %s)", len(double.served()),
                double.url, args.rate or "uncapped",
                ",".join(f"{f}:{c}" if c else f for f, c in args.fault) or "none",
                "same start times for every satellite" if args.same_start else "satellites a quarter orbit apart",
                f"stations {','.join(args.stations)} (listed {args.station_lag:g} s apart)" if args.stations
                else f"every file at {DEFAULT_STATION}")
    try:
        next_add = time.monotonic() + args.every
        while not stop.wait(0.5):
            if args.every and time.monotonic() >= next_add:
                next_add += args.every
                feed.add_next()
                logger.info("new granule listed; %d files served", len(double.served()))
    finally:
        double.stop()
        logger.info("stopped")


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring): serve until SIGTERM or Ctrl-C, then exit 0."""
    parser = _parser()
    args = parser.parse_args(argv)
    from avoviirscollector.logs import setup_logging

    logger = setup_logging("gina_double")
    sats = _satellites(parser, args.satellites)
    stop = threading.Event()
    stop_on_signals(stop.set)
    double, feed = _build(args, sats, logger)
    _run(double, feed, args, stop, logger)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
