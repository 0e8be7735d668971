"""GINA NRT: the queue file (YAML) and the ``products.json`` listing.

The queue file (``MIRROR_GINA_CONFIG``, default ``etc/mirror_gina.yaml`` in the package)::

    queues:
      - name: snpp-moderate        # unique; also names the lock file
        satellite: snpp            # snpp, noaa20 or noaa21
        match: '^(GMTCO|SVM(03|04|05|15|16))_'   # regex on the file name
        # optional: sensor (viirs), level (level1), facility (all, a station, or a list of them), connections,
        # backfill_days, disabled (false)

A queue key wins; otherwise ``facility``, ``connections`` and ``backfill_days`` come from the settings
(``VIIRS_FACILITY``, ``NUM_GINA_CONNECTIONS``, ``GINA_BACKFILL_DAYS``, or their defaults). One run fetches the
files of all its queues over one set of connections: the largest ``connections`` of those queues.

Which stations: ``all`` (the default) asks with no ``facilities[]`` at all, as GINA recommends (passes may be
received at any station); names ask for those stations only. Each record's station is its ``facility`` key when
the record has one (GINA's records are not documented to), else the one station asked for, else unknown (``""``).

What a listing asks for (:class:`Window`, :func:`listing_window`): the whole backfill window, by days, when it was
not had for an hour (and at the suite's start: ``supervise`` forgets when it was); between those, with
``MIRROR_POLL_SECONDS`` set, the granules that started in the last :data:`LOOKBACK` (minute bounds,
``start_date=YYYY-MM-DD HHMM``, as GINA's own ``getGINAsat.py`` asks), which is what can have changed; with polling
off, today (and yesterday in the first hours of the UTC day), by days, as the original did. A listing whose query
was answered before is asked with ``If-None-Match`` when the server sent an ``ETag``: a ``304`` costs a few hundred
bytes instead of the listing.

Nothing in a listing is trusted: a record needs string ``url`` and ``md5sum`` (32 hex digits); the URL must be
http(s); the local name is the URL path's basename and must be a VIIRS SDR granule name, so no listing can make
a path outside ``sdr/`` or ``tmp/``. Bad records are skipped with a log line, never a crash.

The listing is fetched with pycurl (:class:`ListingClient`, one handle kept alive across a run's listings), the
library the downloads use: at most ``MAX_LISTING_BYTES``, within 60 s, redirects over http(s) only.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit

import pycurl
import yaml

from avoviirscollector.config import Settings, SettingsError, parse_facilities
from avoviirscollector.viirs import SATELLITE_TO_SHORT, NotASdrName, SdrName, parse_name

log = logging.getLogger("mirror_gina")

MAX_LISTING_BYTES = 64 * 1024 * 1024
_MD5 = re.compile(r"^[0-9a-fA-F]{32}$")
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_STATION = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
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
    facilities: tuple[str, ...] = ()  # (): every station
    connections: int = 4
    backfill_days: int = 2
    disabled: bool = False

    @property
    def listing_key(self) -> tuple[str, str, str, tuple[str, ...], int]:
        """Queues with the same key share one listing request."""
        return (self.satellite, self.sensor, self.level, self.facilities, self.backfill_days)

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
        try:
            facilities = parse_facilities(item["facility"], "facility") if "facility" in item else \
                settings.facilities
        except SettingsError as err:
            raise QueueConfigError(f"{where}: {err}") from None
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
                            facilities, conns, days, disabled))
    names = [q.name for q in queues]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise QueueConfigError(f"{path}: queue names must be unique (repeated: {', '.join(dupes)})")
    return queues


#: the whole backfill window is listed at most this often (and when never listed yet, or at the suite's start)
FULL_LISTING_EVERY = dt.timedelta(hours=1)
#: with polling, the listings between ask for the granules that started this recently (GINA's own getGINAsat.py
#: looks back 61 minutes); a file GINA lists later than that is found by the next full listing
LOOKBACK = dt.timedelta(minutes=61)
#: with polling off, the listings between ask for today, and yesterday too during the first hours of the UTC day
YESTERDAY_UNTIL_HOUR = 3


@dataclass(frozen=True)
class Window:
    """What one listing asks for: whole days (``start``, ``end`` dates, as SPEC section 4 says) or minutes (granule
    starts from ``start`` to ``end``, both minutes included)."""

    start: dt.date | dt.datetime
    end: dt.date | dt.datetime
    full: bool = False

    @property
    def by_minutes(self) -> bool:
        return isinstance(self.start, dt.datetime)

    def bounds(self) -> list[tuple[str, str]]:
        if self.by_minutes:
            return [("start_date", f"{self.start:%Y-%m-%d %H%M}"), ("end_date", f"{self.end:%Y-%m-%d %H%M}")]
        return [("start_date", self.start.isoformat()), ("end_date", self.end.isoformat())]


def listing_window(now: dt.datetime, last_full: dt.datetime | None, backfill_days: int, poll: bool) -> Window:
    """The window a listing asks for now (see the module docstring). Pure."""
    today = now.astimezone(dt.UTC).date()
    if last_full is None or now - last_full >= FULL_LISTING_EVERY or now < last_full:
        end = today + dt.timedelta(days=1)
        return Window(end - dt.timedelta(days=backfill_days), end, full=True)
    if poll:
        minute = now.astimezone(dt.UTC).replace(tzinfo=None, second=0, microsecond=0)
        return Window(minute - LOOKBACK, minute + dt.timedelta(minutes=1))
    days = 2 if now.astimezone(dt.UTC).hour < YESTERDAY_UNTIL_HOUR else 1
    end = today + dt.timedelta(days=1)
    return Window(end - dt.timedelta(days=min(days, backfill_days)), end)


def listing_params(key: tuple[str, str, str, tuple[str, ...], int], window: Window) -> list[tuple[str, str]]:
    """The query of SPEC section 4 for one listing key and window (no ``facilities[]`` for every station)."""
    satellite, sensor, level, facilities, _backfill = key
    return [*window.bounds(), ("sensors[]", sensor), ("processing_levels[]", level),
            *(("facilities[]", facility) for facility in facilities), ("satellites[]", satellite)]


@dataclass(frozen=True)
class Record:
    """A listed file that passed every check."""

    name: str
    url: str
    md5: str
    sdr: SdrName
    station: str = ""  # the receiving station ("" when unknown)


#: a run lists every 15 s and mostly sees the names it saw: each is parsed once a run
_parsed = functools.lru_cache(maxsize=100_000)(parse_name)


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


def record_station(item: dict, asked: tuple[str, ...]) -> str:
    """A record's station: its ``facility`` when that is a plain name, else the one station asked for, else ""."""
    facility = item.get("facility")
    if isinstance(facility, str) and _STATION.match(facility.strip().lower()):
        return facility.strip().lower()
    return asked[0] if len(asked) == 1 else ""


def parse_record(item: object, base_url: str, asked: tuple[str, ...] = ()) -> Record:
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
        sdr = _parsed(name)
    except NotASdrName:
        raise _Unusable("not a VIIRS SDR granule name") from None
    return Record(name, full, md5.lower(), sdr, record_station(item, asked))


def parse_records(items: object, base_url: str, asked: tuple[str, ...] = ()) -> tuple[list[Record], list[str]]:
    """Validate listing records. Returns the good ones and one problem string per skipped record. Pure.

    No record, whatever its JSON value, stops the others: each unusable one becomes one problem line naming it.
    """
    if not isinstance(items, list):
        return [], [f"listing is a {type(items).__name__}, not a JSON array"]
    good: dict[str, Record] = {}
    problems: list[str] = []
    for item in items:
        try:
            record = parse_record(item, base_url, asked)
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


@dataclass(frozen=True)
class Answer:
    """What a listing request got: status, Content-Type, body, the ETag (when sent), and the bytes on the wire."""

    status: int
    content_type: str
    body: bytes
    etag: str | None = None
    received: int = 0  # header and body bytes, as they came (compressed, when they were)


class ListingClient:
    """GETs of products.json over one pycurl handle (kept alive between a run's listings). pycurl is the transfer
    library mirror_gina loads anyway: a second HTTP stack would only add its import time to every run.

    It remembers the last good answer and ETag of each query (for the run: each minute's query is new), and asks
    again with ``If-None-Match``; a 304 gives back the remembered answer."""

    def __init__(self) -> None:
        self._curl = pycurl.Curl()
        self._known: dict[str, Answer] = {}
        self.received = 0  # bytes received for listings by this client, headers included
        self.requests = 0
        self.not_modified = 0

    def get(self, url: str, params: list[tuple[str, str]], timeout: tuple[float, float]) -> Answer:
        """The answer to one GET (its body at most ``MAX_LISTING_BYTES``, within ``timeout[1]`` s in all); a 304 to
        a query answered before gives that answer again. Raises :class:`ListingError`."""
        full = f"{url}?{urlencode(params)}" if params else url
        body = bytearray()
        headers: dict[str, str] = {}
        received = [0]

        def write(chunk: bytes) -> int | None:
            body.extend(chunk)
            received[0] += len(chunk)
            return 0 if len(body) > MAX_LISTING_BYTES else None  # 0 ends the transfer (curl error 23)

        def header(line: bytes) -> None:
            received[0] += len(line)
            name, sep, value = line.decode("latin-1").partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()

        curl = self._curl
        curl.reset()
        curl.setopt(pycurl.URL, full)
        curl.setopt(pycurl.WRITEFUNCTION, write)
        curl.setopt(pycurl.HEADERFUNCTION, header)
        curl.setopt(pycurl.NOSIGNAL, 1)
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, int(timeout[0] * 1000))
        curl.setopt(pycurl.TIMEOUT_MS, int(timeout[1] * 1000))
        curl.setopt(pycurl.FOLLOWLOCATION, 1)
        curl.setopt(pycurl.MAXREDIRS, 5)
        curl.setopt(pycurl.ACCEPT_ENCODING, "")  # gzip or deflate when the server offers it
        known = self._known.get(full)
        if known is not None and known.etag:
            curl.setopt(pycurl.HTTPHEADER, [f"If-None-Match: {known.etag}"])
        try:
            curl.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
            curl.setopt(pycurl.REDIR_PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        except (AttributeError, pycurl.error):
            pass
        self.requests += 1
        try:
            curl.perform()
        except pycurl.error as err:
            self.received += received[0]
            code, message = (err.args + (None, ""))[:2]
            if len(body) > MAX_LISTING_BYTES:
                raise ListingError(f"listing larger than {MAX_LISTING_BYTES // (1 << 20)} MB from {url}") from None
            if code == pycurl.E_OPERATION_TIMEDOUT and body:
                raise ListingError(f"listing took longer than {timeout[1]:.0f} s from {url}") from None
            raise ListingError(f"cannot get {url}: {str(message)[:200]} (curl {code})") from None
        self.received += received[0]
        status = int(curl.getinfo(pycurl.RESPONSE_CODE))
        if status == 304 and known is not None:
            self.not_modified += 1
            return Answer(known.status, known.content_type, known.body, known.etag, received[0])
        answer = Answer(status, curl.getinfo(pycurl.CONTENT_TYPE) or "", bytes(body), headers.get("etag"), received[0])
        if status == 200:
            if len(self._known) >= 64:  # a run asks a handful of queries a minute
                self._known.clear()
            self._known[full] = answer
        return answer

    def close(self) -> None:
        self._curl.close()


def fetch_listing(client: ListingClient, gina_url: str, key: tuple[str, str, str, tuple[str, ...], int],
                  window: Window, timeout: tuple[float, float] = (10.0, 60.0)) -> tuple[list[Record], list[str]]:
    """GET products.json for ``key`` and ``window``. Raises :class:`ListingError` on HTTP errors, timeouts,
    non-JSON."""
    url = f"{gina_url}/products.json"
    answer = client.get(url, listing_params(key, window), timeout)
    if answer.status != 200:
        raise ListingError(f"HTTP {answer.status} from {url}")
    body = answer.body
    extra: list[str] = []
    try:
        try:
            items = json.loads(body)
        except RecursionError:  # one record nested deeper than the parser's stack: decode record by record
            items, extra = split_array(bytes(body))
    except ValueError:
        head = bytes(body[:60]).decode("utf-8", "replace").replace("\n", " ")
        raise ListingError(f"listing from {url} is not JSON (Content-Type {answer.content_type or 'none'}, starts "
                           f"{head!r})") from None
    good, problems = parse_records(items, gina_url, key[3])
    return good, extra + problems
