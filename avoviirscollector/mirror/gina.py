"""GINA NRT: the queue file (YAML) and the ``products.json`` listing.

The queue file (``MIRROR_GINA_CONFIG``, default ``etc/mirror_gina.yaml`` in the package)::

    queues:
      - name: snpp-moderate        # unique; also names the lock file
        satellite: snpp            # snpp, noaa20 or noaa21
        match: '^(GMTCO|SVM(03|04|05|15|16))_'   # regex on the file name
        # optional: sensor (viirs), level (level1), facility, connections, backfill_days, disabled (false)

A queue key wins; otherwise ``facility``, ``connections`` and ``backfill_days`` come from the settings
(``VIIRS_FACILITY``, ``NUM_GINA_CONNECTIONS``, ``GINA_BACKFILL_DAYS``, or their defaults). One run fetches the
files of all its queues over one set of connections: the largest ``connections`` of those queues.

Nothing in a listing is trusted: a record needs string ``url`` and ``md5sum`` (32 hex digits); the URL must be
http(s); the local name is the URL path's basename and must be a VIIRS SDR granule name, so no listing can make
a path outside ``sdr/`` or ``tmp/``. Bad records are skipped with a log line, never a crash.

The listing is fetched with pycurl (:class:`ListingClient`, one handle kept alive across a run's listings), the
library the downloads use: at most ``MAX_LISTING_BYTES``, within 60 s, redirects over http(s) only.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import posixpath
import re
from collections.abc import Container, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit

import pycurl
import yaml

from avoviirscollector.config import FACILITIES, Settings
from avoviirscollector.mirror.download import FileJob
from avoviirscollector.viirs import SATELLITE_TO_SHORT, NotASdrName, SdrName, parse_name

log = logging.getLogger("mirror_gina")

MAX_LISTING_BYTES = 64 * 1024 * 1024
_MD5 = re.compile(r"^[0-9a-fA-F]{32}$")
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_QUEUE_KEYS = {"name", "satellite", "sensor", "level", "facility", "match", "connections", "backfill_days",
               "disabled"}


class QueueConfigError(ValueError):
    """The queue file is unusable; the message names the file and the problem."""


class ListingError(Exception):
    """The listing could not be had; the message says why."""


@dataclass(frozen=True)
class Queue:
    name: str
    satellite: str
    match: str
    sensor: str = "viirs"
    level: str = "level1"
    facility: str = "gilmore"
    connections: int = 4
    backfill_days: int = 2
    disabled: bool = False

    @property
    def listing_key(self) -> tuple[str, str, str, str, int]:
        """Queues with the same key share one listing request."""
        return (self.satellite, self.sensor, self.level, self.facility, self.backfill_days)

    def wants(self, name: str) -> bool:
        return re.search(self.match, name) is not None


def load_queues(path: Path, settings: Settings) -> list[Queue]:
    """Read and validate the queue file."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise QueueConfigError(f"{path}: cannot read ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise QueueConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    items = doc.get("queues") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not items:
        raise QueueConfigError(f"{path}: expected a top-level 'queues:' list")
    queues: list[Queue] = []
    for i, item in enumerate(items):
        where = f"{path}: queue #{i + 1}"
        if not isinstance(item, dict):
            raise QueueConfigError(f"{where}: expected a mapping")
        unknown = set(item) - _QUEUE_KEYS
        if unknown:
            raise QueueConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        name = str(item.get("name", ""))
        if not _QUEUE_NAME.match(name):
            raise QueueConfigError(f"{where}: 'name' must be letters, digits, '-', '_' or '.' (got {name!r})")
        where = f"{path}: queue {name}"
        sat = item.get("satellite")
        if sat not in SATELLITE_TO_SHORT:
            raise QueueConfigError(f"{where}: satellite must be one of {', '.join(SATELLITE_TO_SHORT)}")
        match = item.get("match")
        try:
            re.compile(match)
        except (re.error, TypeError):
            raise QueueConfigError(f"{where}: 'match' must be a regular expression") from None
        facility = item.get("facility", settings.facility)
        if facility not in FACILITIES:
            raise QueueConfigError(f"{where}: facility must be one of {', '.join(FACILITIES)}")
        conns = item.get("connections", settings.num_gina_connections)
        days = item.get("backfill_days", settings.gina_backfill_days)
        if not isinstance(conns, int) or not 1 <= conns <= 16:
            raise QueueConfigError(f"{where}: connections must be a whole number 1..16")
        if not isinstance(days, int) or not 0 <= days <= 30:
            raise QueueConfigError(f"{where}: backfill_days must be a whole number 0..30")
        disabled = item.get("disabled", False)
        if not isinstance(disabled, bool):
            raise QueueConfigError(f"{where}: disabled must be true or false")
        queues.append(Queue(name, sat, match, str(item.get("sensor", "viirs")), str(item.get("level", "level1")),
                            facility, conns, days, disabled))
    names = [q.name for q in queues]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise QueueConfigError(f"{path}: queue names must be unique (repeated: {', '.join(dupes)})")
    return queues


def listing_params(key: tuple[str, str, str, str, int], today: dt.date, days: int | None = None
                   ) -> list[tuple[str, str]]:
    """The query of SPEC section 4: end = tomorrow (UTC), start = end - backfill days (or ``days``: the runs
    between full listings ask only for the last day or two, see :func:`listing_days`)."""
    satellite, sensor, level, facility, backfill = key
    end = today + dt.timedelta(days=1)
    start = end - dt.timedelta(days=backfill if days is None else min(days, backfill))
    return [("start_date", start.isoformat()), ("end_date", end.isoformat()), ("sensors[]", sensor),
            ("processing_levels[]", level), ("facilities[]", facility), ("satellites[]", satellite)]


#: the whole backfill window is listed at most this often (and when never listed yet); runs between ask only for
#: what can have changed: today, and yesterday too during the first hours of the UTC day
FULL_LISTING_EVERY = dt.timedelta(hours=1)
YESTERDAY_UNTIL_HOUR = 3


def listing_days(now: dt.datetime, last_full: dt.datetime | None) -> int | None:
    """How many days a run lists: None for the full backfill window (due at start and hourly), else 1 (today) or
    2 (today and yesterday, near midnight UTC). Pure."""
    if last_full is None or now - last_full >= FULL_LISTING_EVERY or now < last_full:
        return None
    return 2 if now.hour < YESTERDAY_UNTIL_HOUR else 1


@dataclass(frozen=True)
class Record:
    """A listed file that passed every check."""

    name: str
    url: str
    md5: str
    sdr: SdrName


class _Unusable(Exception):
    """This record cannot be used; the message says why."""


def _shown(value: object, limit: int = 120) -> str:
    """A short, safe rendering of any listing value (deeply nested values cannot even be repr'd)."""
    try:
        text = repr(value)
    except RecursionError:
        return f"<{type(value).__name__} nested too deeply to show>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _curl_safe(url: str) -> bool:
    """Printable ASCII without spaces: what can go into a request line as it is."""
    return url.isascii() and all(32 < ord(c) < 127 for c in url)


def parse_record(item: object, base_url: str) -> Record:
    """One listing record, checked; raises :class:`_Unusable` (or ValueError etc.) when it cannot be used. Pure."""
    if not isinstance(item, dict):
        raise _Unusable("record is not an object")
    url, md5 = item.get("url"), item.get("md5sum")
    if not isinstance(url, str) or not isinstance(md5, str):
        raise _Unusable("record without string url and md5sum")
    if not _MD5.match(md5):
        raise _Unusable(f"bad md5sum {md5[:40]!r}")
    if not _curl_safe(url) or not _curl_safe(base_url):
        raise _Unusable("URL with spaces, control or non-ASCII characters")
    full = urljoin(base_url + "/", url)
    parts = urlsplit(full)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Unusable("not an http(s) URL")
    parts.port  # noqa: B018 -- raises ValueError on a port out of range
    name = posixpath.basename(parts.path)
    try:
        sdr = parse_name(name)
    except NotASdrName:
        raise _Unusable("not a VIIRS SDR granule name") from None
    return Record(name, full, md5.lower(), sdr)


def parse_records(items: object, base_url: str) -> tuple[list[Record], list[str]]:
    """Validate listing records. Returns the good ones and one problem string per skipped record. Pure.

    No record, whatever its JSON value, stops the others: each unusable one becomes one problem line naming it.
    """
    if not isinstance(items, list):
        return [], [f"listing is a {type(items).__name__}, not a JSON array"]
    good: dict[str, Record] = {}
    problems: list[str] = []
    for item in items:
        try:
            record = parse_record(item, base_url)
        except (_Unusable, ValueError, TypeError, RecursionError, UnicodeError) as err:
            url = item.get("url") if isinstance(item, dict) else None
            shown = _shown(url) if isinstance(url, str) else _shown(item)
            problems.append(f"{err or type(err).__name__}: {shown}")
            continue
        good.setdefault(record.name, record)
    return list(good.values()), problems


def split_array(body: bytes | str) -> tuple[list[object], list[str]]:
    """Decode a JSON array element by element (iteratively, so no element can exhaust the stack): the elements
    that decode, and one problem per element that does not. Used when the whole listing cannot be decoded at once.
    Raises ValueError when ``body`` is not a JSON array at all."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes | bytearray) else body
    start = text.find("[")
    if start < 0 or text[:start].strip():
        raise ValueError("not a JSON array")
    items: list[object] = []
    problems: list[str] = []
    depth, begin, in_string, escape = 0, start + 1, False, False
    for i in range(start + 1, len(text)):
        c = text[i]
        if in_string:
            if escape:
                escape = False
            elif c == "\\":
                escape = True
            elif c == '"':
                in_string = False
            continue
        if c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
        elif c in "]}" and depth > 0:
            depth -= 1
        elif c in ",]" and depth == 0:
            chunk = text[begin:i].strip()
            if chunk:
                try:
                    items.append(json.loads(chunk))
                except (ValueError, RecursionError) as err:
                    kind = "nested too deeply" if isinstance(err, RecursionError) else "not valid JSON"
                    problems.append(f"record {kind}: {chunk[:60]!r}...")
            begin = i + 1
            if c == "]":
                return items, problems
    raise ValueError("unterminated JSON array")


class ListingClient:
    """GETs of products.json over one pycurl handle (kept alive between a run's listings). pycurl is the transfer
    library mirror_gina loads anyway: a second HTTP stack would only add its import time to every run."""

    def __init__(self) -> None:
        self._curl = pycurl.Curl()

    def get(self, url: str, params: list[tuple[str, str]], timeout: tuple[float, float]) -> tuple[int, str, bytes]:
        """Status, Content-Type and body (at most ``MAX_LISTING_BYTES``, within ``timeout[1]`` s in all). Raises
        :class:`ListingError`."""
        full = f"{url}?{urlencode(params)}" if params else url
        body = bytearray()

        def write(chunk: bytes) -> int | None:
            body.extend(chunk)
            return 0 if len(body) > MAX_LISTING_BYTES else None  # 0 ends the transfer (curl error 23)

        curl = self._curl
        curl.reset()
        curl.setopt(pycurl.URL, full)
        curl.setopt(pycurl.WRITEFUNCTION, write)
        curl.setopt(pycurl.NOSIGNAL, 1)
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, int(timeout[0] * 1000))
        curl.setopt(pycurl.TIMEOUT_MS, int(timeout[1] * 1000))
        curl.setopt(pycurl.FOLLOWLOCATION, 1)
        curl.setopt(pycurl.MAXREDIRS, 5)
        curl.setopt(pycurl.ACCEPT_ENCODING, "")  # gzip or deflate when the server offers it
        try:
            curl.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
            curl.setopt(pycurl.REDIR_PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        except (AttributeError, pycurl.error):
            pass
        try:
            curl.perform()
        except pycurl.error as err:
            code, message = (err.args + (None, ""))[:2]
            if len(body) > MAX_LISTING_BYTES:
                raise ListingError(f"listing larger than {MAX_LISTING_BYTES // (1 << 20)} MB from {url}") from None
            if code == pycurl.E_OPERATION_TIMEDOUT and body:
                raise ListingError(f"listing took longer than {timeout[1]:.0f} s from {url}") from None
            raise ListingError(f"cannot get {url}: {str(message)[:200]} (curl {code})") from None
        return int(curl.getinfo(pycurl.RESPONSE_CODE)), curl.getinfo(pycurl.CONTENT_TYPE) or "", bytes(body)

    def close(self) -> None:
        self._curl.close()


def fetch_listing(client: ListingClient, gina_url: str, key: tuple[str, str, str, str, int], today: dt.date,
                  timeout: tuple[float, float] = (10.0, 60.0), days: int | None = None
                  ) -> tuple[list[Record], list[str]]:
    """GET products.json for ``key``. Raises :class:`ListingError` on HTTP errors, timeouts, non-JSON."""
    url = f"{gina_url}/products.json"
    status, ctype, body = client.get(url, listing_params(key, today, days), timeout)
    if status != 200:
        raise ListingError(f"HTTP {status} from {url}")
    extra: list[str] = []
    try:
        try:
            items = json.loads(body)
        except RecursionError:  # one record nested deeper than the parser's stack: decode record by record
            items, extra = split_array(bytes(body))
    except ValueError:
        head = bytes(body[:60]).decode("utf-8", "replace").replace("\n", " ")
        raise ListingError(f"listing from {url} is not JSON (Content-Type {ctype or 'none'}, starts {head!r})") \
            from None
    good, problems = parse_records(items, gina_url)
    return good, extra + problems


#: order inside a granule: geolocation first (as in SPEC section 4), then the bands in the order that completes
#: products soonest: btd (SVM15, SVM16), tir (SVI05), mir (SVI04), vis (SVM03-05, SVI01), dnb (SVDNB)
SEGMENT_ORDER = ("GMTCO", "GITCO", "GDNBO", "SVM15", "SVM16", "SVI05", "SVI04", "SVM03", "SVM04", "SVM05",
                 "SVI01", "SVDNB")


def fetch_key(sdr: SdrName) -> tuple:
    """Newest granule first (by start time: orbit numbers are per satellite and cannot be compared across
    satellites; within one satellite the newest orbit is the newest start); one granule's files together;
    inside a granule geolocation first, then bands by product."""
    rank = SEGMENT_ORDER.index(sdr.segment) if sdr.segment in SEGMENT_ORDER else len(SEGMENT_ORDER)
    return (-sdr.start_time.timestamp(), sdr.platform, 0 if sdr.is_geolocation else 1, rank, sdr.segment)


def plan_jobs(records: Iterable[Record], queues: list[Queue], have: Container[str]) -> tuple[list[FileJob], dict]:
    """Files wanted by some queue and not in ``have`` (placed before), in :func:`fetch_key` order. Pure, given
    ``have`` (asked once per wanted name).

    Returns the jobs and per-queue counts ``{queue: (wanted, already_have)}``.
    """
    chosen: dict[str, Record] = {}
    counts = {q.name: [0, 0] for q in queues}
    for rec in records:
        short = rec.sdr.platform
        for queue in queues:
            if SATELLITE_TO_SHORT[queue.satellite] != short or not queue.wants(rec.name):
                continue
            counts[queue.name][0] += 1
            if rec.name in have:
                counts[queue.name][1] += 1
            else:
                chosen.setdefault(rec.name, rec)
    ordered = sorted(chosen.values(), key=lambda r: fetch_key(r.sdr))
    return [FileJob(r.name, r.url, r.md5) for r in ordered], {k: tuple(v) for k, v in counts.items()}
