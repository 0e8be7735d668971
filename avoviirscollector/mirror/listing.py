"""mirror_gina's listing client: GET GINA NRT's ``products.json`` and decode it into checked records.

The listing is fetched with pycurl (:class:`ListingClient`, one handle kept alive across a run's listings), the
library the downloads use: at most ``MAX_LISTING_BYTES``, within 60 s, redirects over http(s) only. A query
answered before is asked with ``If-None-Match`` when the server sent an ``ETag``: a ``304`` costs a few hundred
bytes instead of the listing. A listing with a record nested deeper than the JSON parser's stack is decoded
record by record (:func:`split_array`), so that one record cannot cost the others. What a listing asks for is
mirror/window.py; how its records are checked, mirror/listing_records.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlencode

import pycurl

from avoviirscollector.mirror.listing_records import Record, parse_records
from avoviirscollector.mirror.window import Window, listing_params

MAX_LISTING_BYTES = 64 * 1024 * 1024


class ListingError(Exception):
    """The listing could not be had; the message says why."""


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


#: what the array splitter looks at: a whole JSON string (escapes included; unterminated: to the end), or a bracket,
#: brace or comma
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*+"?|[][{},]', re.S)


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
    for begin, end in _element_spans(text, start):
        chunk = text[begin:end].strip()
        if not chunk:
            continue
        try:
            items.append(json.loads(chunk))
        except (ValueError, RecursionError) as err:
            kind = "nested too deeply" if isinstance(err, RecursionError) else "not valid JSON"
            problems.append(f"record {kind}: {chunk[:60]!r}...")
    return items, problems


def _element_spans(text: str, start: int) -> Iterator[tuple[int, int]]:
    """(begin, end) of each top-level element of the JSON array opened at ``text[start]``, counting brackets and
    braces outside strings. Raises ValueError when the array is not closed."""
    depth, begin = 0, start + 1
    for token in _TOKEN.finditer(text, start + 1):
        mark = token.group()
        if depth == 0 and mark in (",", "]"):
            yield begin, token.start()
            if mark == "]":
                return
            begin = token.end()
        elif mark in ("[", "{"):
            depth += 1
        elif mark in ("]", "}"):
            depth = max(0, depth - 1)
    raise ValueError("unterminated JSON array")
