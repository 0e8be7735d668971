"""ondisk/journal.py: task_broker's journal records, one type each, encoded and decoded there only."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from avoviirscollector.granules import GranuleKey
from avoviirscollector.ondisk import journal
from avoviirscollector.ondisk.journal import (
    FORMAT,
    Event,
    Forget,
    Header,
    Mark,
    Put,
    Sent,
    Stop,
    Take,
    decode,
    decode_header,
    encode,
    records,
    stamped,
)

T = dt.datetime(2026, 12, 3, 17, 40, 1, 250000, tzinfo=dt.UTC)
KEY = GranuleKey.from_json(["tir", "NOAA-20", "2026-12-03T17:30:12.100000"])
PACKAGE = Path(journal.__file__).parent.parent


@pytest.mark.parametrize("record", [
    Put({"id": 7, "subject": "/AVO/viirs/granule/tir", "data": {"dataset": []}}, T),
    Put({"id": 7}),  # a compaction's put: no time
    Take(7, "handed out", "192.0.2.21", (KEY,), "task 7 tir NOAA-20", T),
    Take(8, "dropped", "operator", (), "task 8", T),
    Take(9),  # version 1: the id only
    Forget((KEY, KEY._replace(product="mir")), T),
    Event("bad request", 7, T), Event("recovered", 1, T),
    Sent(7, T), Sent(7), Mark(T), Stop(T),
])
def test_every_record_comes_back_as_it_was_written(record):
    line = encode(record)
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and line.isascii()
    assert decode(line) == record
    assert decode(json.loads(line)) == record  # an object already parsed decodes the same


def test_the_line_is_the_format_the_readers_of_today_read():
    assert json.loads(encode(Take(7, "handed out", "w", (KEY,), "x", T))) == {
        "op": "take", "t": T.isoformat(), "id": 7, "worker": "w", "kind": "handed out",
        "granules": [["tir", "NOAA-20", "2026-12-03T17:30:12.100000"]], "what": "x"}
    assert json.loads(encode(Event("recovered", 1, T))) == {"op": "event", "t": T.isoformat(), "kind": "recovered"}
    assert json.loads(encode(Put({"id": 1}))) == {"op": "put", "task": {"id": 1}}
    assert json.loads(encode(Header(5, T, T))) == {"format": FORMAT, "version": 2, "t": T.isoformat(), "next_id": 5,
                                                  "ledger_since": T.isoformat()}
    assert decode(b'{"op":"take","t":"2026-12-03T17:40:01+00:00","id":3}').kind == "handed out"  # the default


def test_a_header_is_read_only_when_it_is_one_this_version_reads():
    assert decode_header(encode(Header(5, T, T))) == Header(5, T, T)
    assert decode_header(json.dumps({"format": FORMAT, "version": 1, "next_id": 3})) == Header(3, version=1)
    for line in (b'{"format": "other", "version": 2}', json.dumps({"format": FORMAT, "version": 99}), b"[1]",
                 b"\x89HDF\r\n", json.dumps({"format": FORMAT, "version": 2, "next_id": "x"})):
        assert decode_header(line) is None, line


@pytest.mark.parametrize("line", [
    b"", b"\x00garbage", b"[1, 2]", b'{"op": "launch"}', b'{"t": "2026-12-03T00:00:00Z"}',
    b'{"op": "put"}', b'{"op": "put", "task": [1]}',
    b'{"op": "take"}', b'{"op": "take", "id": "7"}', b'{"op": "take", "id": true}',
    b'{"op": "take", "id": 7, "kind": "stolen"}', b'{"op": "take", "id": 7, "granules": "tir"}',
    b'{"op": "take", "id": 7, "granules": [["tir", "NOAA-20"]]}', b'{"op": "take", "id": 7, "worker": 5}',
    b'{"op": "forget"}', b'{"op": "event"}', b'{"op": "event", "kind": "x", "count": "2"}',
    b'{"op": "sent"}', b'{"op": "mark", "t": "yesterday"}', b'{"op": "stop", "t": 5}', b'\xff\xfe',
])
def test_a_line_that_is_no_record_whole_is_refused(line):
    with pytest.raises(ValueError):
        decode(line)


def test_records_skips_what_is_not_one_and_stamped_keeps_a_time():
    lines = [encode(Header(1, T, T)), b"torn {", encode(Mark(T)), encode(Stop())]
    assert list(records(lines)) == [Mark(T), Stop()]
    later = T + dt.timedelta(seconds=1)
    assert stamped(Mark(), later) == Mark(later) and stamped(Mark(T), later) == Mark(T)


def test_no_other_module_writes_or_reads_a_record_by_hand():
    """The format has one owner: an ``"op"`` key or a hand-out kind spelt out anywhere else in the package is a
    second encoder or decoder."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "journal.py" and path.parent.name == "ondisk":
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#", 1)[0]
            if re.search(r"""["']op["']\s*[:\]]|\.get\(["']op["']|== ?["']dropped["']|== ?["']handed out["']""",
                         code):
                found.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert found == []
