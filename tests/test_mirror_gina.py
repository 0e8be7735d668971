"""Queue file, listing validation and fetch planning (pure parts of mirror_gina)."""

import datetime as dt
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avoviirscollector.config import PACKAGE_ETC, load_settings
from avoviirscollector.mirror.listing import split_array
from avoviirscollector.mirror.listing_records import parse_records
from avoviirscollector.mirror.plan import SEGMENT_ORDER, plan_jobs
from avoviirscollector.mirror.queues import Queue, QueueConfigError, load_queues
from avoviirscollector.mirror.window import Window, listing_params, listing_window
from avoviirscollector.viirs import (
    GEOLOCATION_SEGMENTS,
    PRODUCT_FETCH_ORDER,
    PRODUCTS,
    SATELLITE_TO_SHORT,
    format_name,
)

T0 = dt.datetime(2026, 11, 23, 10, 0, 0)
MD5 = "0123456789abcdef0123456789abcdef"
BASE = "http://gina.example"


def name(segment, orbit=70000, start=T0, platform="npp"):
    return format_name(segment, platform, start, start + dt.timedelta(seconds=85), orbit, start)


#: every VIIRS SDR segment GINA lists (level 1): geolocation, moderate, imagery and day/night band
EVERY_SEGMENT = (*GEOLOCATION_SEGMENTS, *(f"SVM{i:02d}" for i in range(1, 17)), *(f"SVI0{i}" for i in range(1, 6)),
                 "SVDNB")


def test_default_queue_file_fetches_exactly_the_product_segments_for_each_satellite():
    """The queue file's regexes are one of the places the product table (viirs.PRODUCTS) is written: each satellite's
    queues want every segment a product needs and no other."""
    settings = load_settings({"NUM_GINA_CONNECTIONS": "6", "GINA_BACKFILL_DAYS": "1", "VIIRS_FACILITY": "uafgina"})
    queues = load_queues(PACKAGE_ETC / "mirror_gina.yaml", settings)
    assert {q.satellite for q in queues} == {"snpp", "noaa20", "noaa21"}
    assert all((q.connections, q.backfill_days, q.facilities) == (6, 1, ("uafgina",)) for q in queues)
    needed = {seg for segs in PRODUCTS.values() for seg in segs}
    assert needed <= set(EVERY_SEGMENT)
    for sat, short in SATELLITE_TO_SHORT.items():
        mine = [q for q in queues if q.satellite == sat]
        assert {seg for seg in EVERY_SEGMENT if any(q.wants(name(seg, platform=short)) for q in mine)} == needed
        assert not any(q.wants(name("SVM01", platform=short)) for q in mine)  # bands no product needs: not fetched
    assert len({q.listing_key for q in queues}) == 3  # one listing request per satellite


def test_segment_order_comes_from_the_product_table():
    """Geolocation first, then the products' bands in PRODUCT_FETCH_ORDER: btd is complete first, dnb last."""
    assert SEGMENT_ORDER == ("GMTCO", "GITCO", "GDNBO", "SVM15", "SVM16", "SVI05", "SVI04", "SVM03", "SVM04",
                             "SVM05", "SVI01", "SVDNB")
    assert sorted(PRODUCT_FETCH_ORDER) == sorted(PRODUCTS)
    assert set(SEGMENT_ORDER) == {seg for segs in PRODUCTS.values() for seg in segs}


def test_a_queue_built_without_settings_takes_the_settings_defaults():
    queue, settings = Queue("a", "snpp", "x"), load_settings({})
    assert (queue.connections, queue.backfill_days, queue.facilities) == \
        (settings.num_gina_connections, settings.gina_backfill_days, settings.facilities)


@pytest.mark.parametrize("text, complaint", [
    ("queues: []", "expected a top-level 'queues:' list"),
    ("queues:\n  - name: a\n    satellite: snpp\n    match: '('", "'match' must be a regular expression"),
    ("queues:\n  - name: ../a\n    satellite: snpp\n    match: x", "'name' must be"),
    ("queues:\n  - {name: a, satellite: snpp, match: x, connections: 99}", "connections must be"),
    ("queues:\n  - {name: a, satellite: snpp, match: x, colour: red}", "unknown key(s) colour"),
    ("queues:\n  - {name: a, satellite: snpp, match: x}\n  - {name: a, satellite: snpp, match: y}", "unique"),
    ("queues: [", "not valid YAML"),
])
def test_bad_queue_files_are_refused_with_a_reason(tmp_path, text, complaint):
    path = tmp_path / "q.yaml"
    path.write_text(text)
    with pytest.raises(QueueConfigError, match=None) as err:
        load_queues(path, load_settings({}))
    assert complaint in str(err.value)


def test_queue_keys_win_over_settings(tmp_path):
    path = tmp_path / "q.yaml"
    path.write_text("queues:\n  - {name: a, satellite: noaa21, match: x, connections: 2, backfill_days: 0,"
                    " facility: uafgina, disabled: true}\n")
    (queue,) = load_queues(path, load_settings({"NUM_GINA_CONNECTIONS": "8"}))
    assert (queue.connections, queue.backfill_days, queue.facilities, queue.disabled) == (2, 0, ("uafgina",), True)


def test_listing_query_is_the_one_of_the_spec():
    full = listing_window(dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC), None, 2, poll=True)
    params = dict(listing_params(("noaa20", "viirs", "level1", ("gilmore",), 2), full))
    assert params == {"start_date": "2026-11-22", "end_date": "2026-11-24", "sensors[]": "viirs",
                      "processing_levels[]": "level1", "facilities[]": "gilmore", "satellites[]": "noaa20"}
    # every station (GINA's advice): no facility at all; two stations: the parameter twice; minute bounds
    assert "facilities[]" not in dict(listing_params(("noaa20", "viirs", "level1", (), 2), full))
    short = Window(dt.datetime(2026, 11, 23, 10, 59), dt.datetime(2026, 11, 23, 12, 1))
    query = listing_params(("snpp", "viirs", "level1", ("gilmore", "uafgina"), 2), short)
    assert query[:2] == [("start_date", "2026-11-23 1059"), ("end_date", "2026-11-23 1201")]
    assert [v for k, v in query if k == "facilities[]"] == ["gilmore", "uafgina"]


def test_a_records_station_is_its_facility_else_the_one_station_asked_for():
    item = {"url": f"{BASE}/{name('SVM16')}", "md5sum": MD5}
    assert parse_records([dict(item, facility="uafgina")], BASE)[0][0].station == "uafgina"
    assert parse_records([item], BASE, ("gilmore",))[0][0].station == "gilmore"
    assert parse_records([item], BASE, ("gilmore", "uafgina"))[0][0].station == ""
    assert parse_records([dict(item, facility={"x": 1})], BASE)[0][0].station == ""


def test_parse_records_keeps_only_safe_viirs_names():
    good = name("SVM16")
    items = [
        {"url": f"{BASE}/a/{good}", "md5sum": MD5.upper(), "size": 3},
        {"url": f"{BASE}/a/{good}", "md5sum": MD5},  # duplicate
        {"url": f"/relative/{name('SVM15')}", "md5sum": MD5},
        {"url": f"{BASE}/../x.h5", "md5sum": MD5},
        {"url": f"{BASE}/a/{good}%2F..%2Fx", "md5sum": MD5},
        {"url": f"ftp://h/{name('SVM05')}", "md5sum": MD5},
        {"url": f"{BASE}/leapsec.dat", "md5sum": MD5},
        {"url": f"{BASE}/{good}", "md5sum": "zz"},
        {"url": f"{BASE}/{good}"},
        ["not", "a", "dict"],
    ]
    records, problems = parse_records(items, BASE)
    assert [(r.name, r.url, r.md5) for r in records] == [
        (good, f"{BASE}/a/{good}", MD5),
        (name("SVM15"), f"{BASE}/relative/{name('SVM15')}", MD5),
    ]
    assert len(problems) == 7
    assert parse_records({"error": "nope"}, BASE) == ([], ["listing is a dict, not a JSON array"])


def test_plan_orders_newest_orbit_first_and_geolocation_before_bands():
    queues = [Queue("m", "snpp", r"^(GMTCO|SVM1[56])_"), Queue("i", "snpp", r"^(GITCO|SVI05)_"),
              Queue("j", "noaa20", r"^SVM16_")]
    names = [name(seg, orbit, start) for orbit, start in ((70000, T0), (70001, T0 + dt.timedelta(minutes=100)))
             for seg in ("SVM16", "SVI05", "GMTCO", "SVM15", "GITCO", "SVM01")]
    names.append(name("SVM16", platform="j01"))
    records, _ = parse_records([{"url": f"{BASE}/{n}", "md5sum": MD5} for n in names], BASE)
    have = {name("SVM15", 70000, T0)}
    plan = plan_jobs(records, queues, have)
    jobs, counts = plan.jobs, plan.counts
    got = [(j.name[:5], j.name.split("_")[5]) for j in jobs]
    # geolocation first, then the bands that complete btd, then tir's
    assert got == [("GMTCO", "b70001"), ("GITCO", "b70001"), ("SVM15", "b70001"), ("SVM16", "b70001"),
                   ("SVI05", "b70001"), ("SVM16", "b70000"), ("GMTCO", "b70000"), ("GITCO", "b70000"),
                   ("SVM16", "b70000"), ("SVI05", "b70000")]
    # same start time: one granule's files stay together (j01's before npp's)
    assert [j.name.split("_")[1] for j in jobs[5:7]] == ["j01", "npp"]
    assert counts == {"m": (6, 1), "i": (4, 0), "j": (1, 0)}


def test_plan_puts_the_newest_granule_first_across_satellites():
    # orbit numbers are per satellite (Suomi-NPP's are far higher than NOAA-21's): the newest start comes first
    queues = [Queue("n", "snpp", r"^SVM16_"), Queue("j", "noaa21", r"^SVM16_")]
    older_npp = name("SVM16", 78000, T0)
    newer_j02 = name("SVM16", 21000, T0 + dt.timedelta(minutes=50), platform="j02")
    records, _ = parse_records([{"url": f"{BASE}/{n}", "md5sum": MD5} for n in (older_npp, newer_j02)], BASE)
    jobs = plan_jobs(records, queues, set()).jobs
    assert [j.name for j in jobs] == [newer_j02, older_npp]


@settings(max_examples=300, deadline=None)
@given(url=st.one_of(
    st.text(max_size=200),
    st.builds(lambda prefix, n: prefix + n, st.sampled_from(["", "/", "../", "http://h/a/", "http://h/a/../../",
                                                            "file:///", "//other/", "http://h/%2e%2e/"]),
              st.sampled_from([name("SVM16"), name("GITCO") + "/..", "..", ".", "x.h5", "/" + name("SVM15")])),
))
def test_no_listing_record_can_name_a_path_outside_sdr(url):
    records, problems = parse_records([{"url": url, "md5sum": MD5}], BASE)
    assert len(records) + len(problems) == 1
    for rec in records:
        assert "/" not in rec.name and "\\" not in rec.name and not rec.name.startswith(".")
        assert os.path.dirname(os.path.normpath(os.path.join("/viirs/sdr", rec.name))) == "/viirs/sdr"
        assert rec.url.startswith(("http://", "https://"))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["url", "md5sum", "x"]) | st.text(
        max_size=5), inner, max_size=4),
    max_leaves=20,
)
URLS = st.one_of(
    st.text(max_size=80),
    st.builds(lambda scheme, host, tail: f"{scheme}{host}/{tail}",
              st.sampled_from(["http://", "https://", "", "//", "ftp://", "http:"]),
              st.sampled_from(["[::1", "[::1]", "[zz]", "h:99999", "h:-1", "h:x", "h", "\u00e9t\u00e9", "",
                               "a b", "[", "]"]),
              st.sampled_from([name("SVM16"), "x.h5", "", "\x00" + name("SVM15")])),
)


def _deep(depth):
    value = {"url": "x"}
    for _ in range(depth):
        value = [value]
    return value


@settings(max_examples=400, deadline=None)
@given(junk=st.lists(JSON | st.fixed_dictionaries({"url": URLS, "md5sum": st.just(MD5)}), max_size=6),
       position=st.integers(0, 6))
def test_no_listing_record_stops_the_others(junk, position):
    good = {"url": f"{BASE}/files/{name('SVM16')}", "md5sum": MD5}
    items = list(junk)
    items.insert(min(position, len(items)), good)
    records, problems = parse_records(items, BASE)
    assert name("SVM16") in [r.name for r in records]
    assert len(records) + len(problems) <= len(items)
    assert all(isinstance(p, str) and len(p) < 400 for p in problems)
    for rec in records:
        assert rec.url.startswith(("http://", "https://")) and rec.url.isascii() and " " not in rec.url


def test_bad_ipv6_url_and_deep_nesting_are_one_problem_each():
    good = [{"url": f"{BASE}/files/{name(seg)}", "md5sum": MD5} for seg in ("GITCO", "SVI05", "SVI04")]
    records, problems = parse_records([{"url": f"http://[::1/{name('SVM16')}", "md5sum": MD5}, _deep(50000)] + good,
                                      BASE)
    assert sorted(r.name for r in records) == sorted(name(seg) for seg in ("GITCO", "SVI05", "SVI04"))
    assert len(problems) == 2 and "[::1" in problems[0]


def test_a_listing_too_deep_for_the_json_parser_is_split_record_by_record():
    good = {"url": f"{BASE}/files/{name('SVM16')}", "md5sum": MD5, "note": "a [string] with {brackets}, \"quotes\\"}
    body = "[" + json.dumps(good) + ", " + "[" * 100_000 + "]" * 100_000 + ', {"x": [1, {"y": "]"}]}, {bad}]'
    items, problems = split_array(body.encode())
    assert items == [good, {"x": [1, {"y": "]"}]}]
    assert [p.split(":")[0] for p in problems] == ["record nested too deeply", "record not valid JSON"]
    assert split_array(" [] ") == ([], [])
    for broken, complaint in (('{"a": 1}', "not a JSON array"), ('x[1]', "not a JSON array"),
                              ('[1, "2]', "unterminated"), ("[[1], 2", "unterminated")):
        with pytest.raises(ValueError, match=complaint):
            split_array(broken)
