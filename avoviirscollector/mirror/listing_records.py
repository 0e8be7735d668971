"""The records of a GINA NRT listing, checked: nothing in a listing is trusted. Pure.

A record needs string ``url`` and ``md5sum`` (32 hex digits); the URL must be http(s); the local name is the URL
path's basename and must be a VIIRS SDR granule name, so no listing can make a path outside ``sdr/`` or ``tmp/``.
Bad records are skipped with one problem line each, never a crash. Each record's station is its ``facility`` key
when the record has one (GINA's records are not documented to), else the one station asked for, else unknown
(``""``).
"""

from __future__ import annotations

import functools
import posixpath
import re
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from avoviirscollector.viirs import NotASdrName, SdrName, parse_name

_MD5 = re.compile(r"^[0-9a-fA-F]{32}$")
_STATION = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


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
