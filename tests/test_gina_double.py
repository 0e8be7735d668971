"""The GINA double: listing, real HDF5 files, range semantics, bandwidth cap, faults."""

import contextlib
import datetime as dt
import hashlib
import http.client
import json
import math
import signal
import socket
import subprocess
import sys
import threading
import time

import h5py
import pytest
import requests

from avoviirscollector.broker.geolocation import direction_from_geolocation
from avoviirscollector.viirs import format_name, parse_name
from tests.gina_double import (
    GRANULE,
    ORBIT_MINUTES,
    GinaDouble,
    Schedule,
    _parse_range,
    nadir_direction,
    stations_of,
    subsatellite,
)
from tests.support import free_port, wait_until

START = dt.datetime(2026, 11, 23, 10, 0, 0)


@pytest.fixture
def one_file(double):
    return double.add_granule("npp", 70000, START, segments=("SVM16",), sizes={"SVM16": 300_000})[0]


def test_files_are_real_hdf5_with_viirs_names_and_groups(double):
    served = double.add_granule("j01", 12345, START, segments=("GMTCO", "SVM16", "SVDNB"), scale=0.002)
    for item in served:
        sdr = parse_name(item.name)
        assert sdr.platform == "j01" and sdr.orbit_number == 12345
        with h5py.File(item.path, "r") as h5:
            assert "All_Data" in h5 and "Data_Products" in h5
    with h5py.File(served[1].path, "r") as h5:
        assert "VIIRS-M16-SDR_All" in h5["All_Data"]
    with h5py.File(served[0].path, "r") as h5:  # geolocation as in a real GMTCO: 2-D, scans x pixels
        latitude = h5["All_Data/VIIRS-MOD-GEO-TC_All/Latitude"]
        longitude = h5["All_Data/VIIRS-MOD-GEO-TC_All/Longitude"]
        assert latitude.ndim == 2 and latitude.shape == longitude.shape and latitude.shape[0] > 1
        assert ((-90 <= latitude[()]) & (latitude[()] <= 90)).all()
        assert ((-180 <= longitude[()]) & (longitude[()] <= 180)).all()
    assert abs(served[0].size - int(16e6 * 0.002)) < 16e6 * 0.002 * 0.5  # still about the size asked for


# -- the schedule -------------------------------------------------------------------------------------------------
NOW = dt.datetime(2026, 11, 23, 10, 0, 0)


def test_schedule_satellites_fly_a_quarter_orbit_apart_with_distinct_start_times():
    schedule = Schedule()
    latest = {p: schedule.latest(p, NOW, 40) for p in ("npp", "j01", "j02")}
    for granules in latest.values():
        assert len(granules) == 40 and granules[-1].end <= NOW < granules[-1].end + GRANULE
    starts = {p: {g.start for g in granules} for p, granules in latest.items()}
    assert not starts["npp"] & starts["j01"] and not starts["npp"] & starts["j02"] and not starts["j01"] & starts["j02"]
    # tenths of a second, as in file names: still distinct
    tenths = [{g.start.replace(microsecond=g.start.microsecond // 100000 * 100000) for g in gs}
              for gs in latest.values()]
    assert len(set.union(*tenths)) == sum(len(t) for t in tenths)
    # the same point of the orbit (the ascending node) is reached about 25 minutes (j02) and 50 minutes (npp) after j01
    def next_node(platform):
        granule = schedule.containing(platform, NOW)
        while schedule.following(granule).orbit == granule.orbit:
            granule = schedule.following(granule)
        return granule.end

    orbit = dt.timedelta(minutes=ORBIT_MINUTES)
    j01 = next_node("j01")
    for platform, delay in (("j02", orbit / 4), ("npp", orbit / 2)):
        lag = (next_node(platform) - j01) % orbit
        assert abs(lag - delay) <= GRANULE, (platform, lag)


def test_schedule_orbit_numbers_advance_every_101_5_minutes_and_granules_are_contiguous():
    schedule = Schedule()
    for platform in ("npp", "j01", "j02"):
        granule = schedule.containing(platform, NOW)
        changes, directions = [], set()
        for _ in range(400):  # about 9.5 hours
            following = schedule.following(granule)
            assert following.start == granule.end and following.end - following.start == GRANULE
            assert following.orbit - granule.orbit in (0, 1)
            if following.orbit != granule.orbit:
                changes.append(following.start)
                assert granule.direction == following.direction == "ascending"  # the count is at the ascending node
            directions.add(following.direction)
            granule = following
        gaps = [(b - a).total_seconds() / 60 for a, b in zip(changes, changes[1:], strict=False)]
        assert len(gaps) >= 4 and all(abs(gap - ORBIT_MINUTES) <= GRANULE.total_seconds() / 60 for gap in gaps)
        assert abs(sum(gaps) / len(gaps) - ORBIT_MINUTES) < 0.5
        assert directions == {"ascending", "descending"}


def test_schedule_passes_are_runs_of_consecutive_granules_in_both_directions():
    """A pass: consecutive granules of one orbit and one direction. Orbits are counted at the ascending node, so a
    descending pass is half an orbit (~36 granules) and the ascending half is cut in two at the node (~18 each)."""
    schedule = Schedule()
    for platform in ("npp", "j01", "j02"):
        runs: list[list] = []  # [orbit, direction, granules]
        for granule in schedule.latest(platform, NOW, 300):
            if runs and runs[-1][:2] == [granule.orbit, granule.direction]:
                runs[-1][2] += 1
            else:
                runs.append([granule.orbit, granule.direction, 1])
        whole = runs[1:-1]  # the first and the last are cut by the window
        assert len(whole) >= 6 and {d for _, d, _ in whole} == {"ascending", "descending"}
        assert all(33 <= n <= 38 for _, d, n in whole if d == "descending")
        assert all(15 <= n <= 21 for _, d, n in whole if d == "ascending")
    # at any time, the satellites half an orbit apart fly in opposite directions: both kinds are listed at start
    now = {p: schedule.latest(p, NOW, 4)[-1].direction for p in ("npp", "j01")}
    assert set(now.values()) == {"ascending", "descending"}


def test_same_start_option_puts_every_satellite_on_one_time_grid():
    schedule = Schedule(same_start=True)
    latest = {p: schedule.latest(p, NOW, 3) for p in ("npp", "j01", "j02")}
    assert [g.start for g in latest["npp"]] == [g.start for g in latest["j01"]] == [g.start for g in latest["j02"]]
    assert len({g.orbit for gs in latest.values() for g in gs}) >= 3  # orbit numbers still per satellite
    assert {g.orbit for g in latest["npp"]} == {Schedule().granule("npp", latest["npp"][0].start).orbit}


@pytest.mark.parametrize("platform", ["npp", "j01", "j02"])
def test_geolocation_files_give_the_schedules_direction_to_the_brokers_reader(double, platform):
    schedule = Schedule()
    granules = schedule.latest(platform, NOW, 72)[::6]  # an orbit, 12 granules along it
    assert {g.direction for g in granules} == {"ascending", "descending"}
    for granule in granules:
        (geo,) = double.add_scheduled(granule, segments=("GITCO",), scale=0.001)
        assert direction_from_geolocation(geo.path) == granule.direction
        with h5py.File(geo.path, "r") as h5:
            latitude = h5["All_Data/VIIRS-IMG-GEO-TC_All/Latitude"][()]
            longitude = h5["All_Data/VIIRS-IMG-GEO-TC_All/Longitude"][()]
        scans, pixels = latitude.shape
        assert scans > 1 and pixels > 1
        # the middle of the middle scan line is about the model's subsatellite point at the middle of the granule;
        # each scan line spans the swath (about 3000 km) across the track
        lat, lon = subsatellite(platform, granule.start + GRANULE / 2)
        row, col = scans // 2, pixels // 2
        assert distance_km(latitude[row, col], longitude[row, col], lat, lon) < 100
        assert 2900 < distance_km(latitude[row, 0], longitude[row, 0], latitude[row, -1], longitude[row, -1]) < 3100
        assert nadir_direction(platform, granule.start) == granule.direction


def distance_km(lat1, lon1, lat2, lon2) -> float:
    lat1, lon1, lat2, lon2 = (math.radians(float(v)) for v in (lat1, lon1, lat2, lon2))
    cosine = math.sin(lat1) * math.sin(lat2) + math.cos(lat1) * math.cos(lat2) * math.cos(lon2 - lon1)
    return 6371.0 * math.acos(max(-1.0, min(1.0, cosine)))


def test_listing_filters_by_satellite_and_date(double):
    double.add_granule("npp", 70000, START, segments=("SVM16",), scale=0.002)
    double.add_granule("j01", 20000, START, segments=("SVM16",), scale=0.002)
    old = double.add_granule("npp", 60000, START - dt.timedelta(days=5), segments=("SVM16",), scale=0.002)[0]
    query = {"start_date": "2026-11-22", "end_date": "2026-11-24", "satellites[]": "snpp", "sensors[]": "viirs"}
    records = requests.get(f"{double.url}/products.json", params=query, timeout=5).json()
    assert [parse_name(r["url"].rsplit("/", 1)[1]).platform for r in records] == ["npp"]
    assert old.name not in json.dumps(records)
    assert {"url", "md5sum"} <= set(records[0])
    body = requests.get(records[0]["url"], timeout=5).content
    assert hashlib.md5(body).hexdigest() == records[0]["md5sum"]


def products(double, params=None, headers=None) -> requests.Response:
    """GET products.json of ``double``; ``params`` as requests takes them (a list of pairs repeats a key)."""
    return requests.get(f"{double.url}/products.json", params=params, headers=headers, timeout=5)


def listed(double, params=None) -> list[str]:
    """The file names ``products.json`` lists for ``params``, in listing order."""
    response = products(double, params)
    assert response.status_code == 200, response.text
    return [r["url"].rsplit("/", 1)[1] for r in response.json()]


def test_stations_filter_by_facilities_and_every_station_without_one(double):
    gilmore = double.add_granule("npp", 70000, START, segments=("SVM16",), scale=0.001)[0]  # the default station
    uafgina = double.add_granule("npp", 70000, START + GRANULE, segments=("SVM16",), scale=0.001,
                                 station="uafgina")[0]
    barrow = double.add_granule("j01", 20000, START, segments=("SVM16",), scale=0.001, station="barrow")[0]
    assert (gilmore.station, uafgina.station, barrow.station) == ("gilmore", "uafgina", "barrow")
    assert listed(double) == sorted([gilmore.name, uafgina.name, barrow.name])  # no facility: every station
    assert listed(double, {"facilities[]": "uafgina"}) == [uafgina.name]
    assert listed(double, [("facilities[]", "gilmore"), ("facilities[]", "barrow")]) == sorted([gilmore.name,
                                                                                                barrow.name])
    assert listed(double, {"facilities[]": "uaf5"}) == []  # a station with nothing listed
    assert listed(double, {"facilities[]": "uafgina", "satellites[]": "noaa20"}) == []  # and the other filters
    records = products(double).json()
    assert {r["url"].rsplit("/", 1)[1]: r["facility"] for r in records} == {
        gilmore.name: "gilmore", uafgina.name: "uafgina", barrow.name: "barrow"}
    with pytest.raises(ValueError):
        double.add_granule("npp", 70000, START, segments=("SVM16",), station="Gilmore Creek")


def test_listed_only_records_are_listed_by_their_time_and_not_served(double):
    """Listings at real volume (a day of 27 level-1 files a granule at two stations) need records, not files."""
    name = format_name("SVM01", "npp", START, START + GRANULE, 70000, START + dt.timedelta(minutes=10))
    when = START.replace(tzinfo=dt.UTC).timestamp() + 900
    double.add_listed(name, 25_000_000, station="uafgina", listed_at=when)
    query = {"start_date": [f"{START:%Y-%m-%d %H%M}"], "end_date": [f"{START:%Y-%m-%d %H%M}"]}
    assert double.listing(query, now=when - 1) == []
    (record,) = double.listing(query, now=when)
    assert record["facility"] == "uafgina" and record["size"] == 25_000_000 and record["url"].endswith(name)
    assert requests.get(record["url"], timeout=5).status_code == 404
    later = {"start_date": [f"{START + dt.timedelta(minutes=1):%Y-%m-%d %H%M}"]}
    assert double.listing(later, now=when) == []  # by granule start, through the index
    double.remove(name)
    assert double.listing(query, now=when) == []


def test_same_pass_at_two_stations_starts_a_tenth_later_and_is_made_later(double):
    """GINA's example: t0953361 at one station, t0953362 at the other, same end and orbit, made 3.5 minutes
    apart; every band of a granule has the same start within one station."""
    start = dt.datetime(2017, 8, 28, 9, 53, 36, 100000)
    served = double.add_granule_at_stations("npp", 30234, start, segments=("GMTCO", "SVM16"), scale=0.001)
    assert [s.station for s in served] == ["gilmore", "gilmore", "uafgina", "uafgina"]
    first, second = ([parse_name(s.name) for s in served if s.station == st] for st in ("gilmore", "uafgina"))
    assert all("_t0953361_" in n.name and "_e0955015_" in n.name for n in first)
    assert all("_t0953362_" in n.name and "_e0955015_" in n.name for n in second)
    for a, b in zip(first, second, strict=True):
        assert a.segment == b.segment and a.orbit_number == b.orbit_number == 30234 and a.end_time == b.end_time
        assert b.start_time - a.start_time == dt.timedelta(seconds=0.1)
        assert b.proctime - a.proctime == dt.timedelta(minutes=3.5)
        assert a.proctime == start + dt.timedelta(minutes=10)  # as add_granule's default
    assert listed(double) == sorted(s.name for s in served)  # name order: stations interleave, not in blocks
    assert listed(double, {"facilities[]": "uafgina"}) == [s.name for s in served[2:]]
    # other offsets, delays and three stations
    three = double.add_granule_at_stations("j01", 20000, START, stations=("uaf5", "gilmore", "barrow"),
                                           offset=0.2, delays=(60, 0, 600), segments=("SVM16",), scale=0.001)
    starts = [parse_name(s.name).start_time - START for s in three]
    made = [parse_name(s.name).proctime - START for s in three]
    assert starts == [dt.timedelta(seconds=x) for x in (0, 0.2, 0.4)]
    assert made == [dt.timedelta(minutes=10, seconds=x) for x in (60, 0, 600)]
    with pytest.raises(ValueError):
        double.add_granule_at_stations("j01", 20000, START, stations=("gilmore", "gilmore"))


def test_granule_split_between_stations(double):
    served = double.add_granule_at_stations("npp", 30234, START, scale=0.001,
                                            segments_at={"gilmore": ("SVI04", "GITCO"), "uafgina": ("SVDNB",)})
    at = {st: sorted(parse_name(s.name).segment for s in served if s.station == st) for st in ("gilmore", "uafgina")}
    assert at == {"gilmore": ["GITCO", "SVI04"], "uafgina": ["SVDNB"]}
    (dnb,) = (parse_name(s.name) for s in served if s.station == "uafgina")
    assert dnb.start_time == START + dt.timedelta(seconds=0.1)  # the second station's copy, as a whole copy
    assert listed(double, {"facilities[]": "gilmore"}) == sorted(s.name for s in served if s.station == "gilmore")
    # a pass at one station only: just the files of that station
    only = double.add_pass("j01", 20000, START, granules=2, segments=("SVM16",), scale=0.001, station="barrow")
    assert listed(double, {"facilities[]": "barrow"}) == [s.name for s in only]
    with pytest.raises(ValueError):
        double.add_granule_at_stations("npp", 1, START, segments_at={"uaf5": ("SVM16",)})


def test_files_are_listed_from_their_listed_at_on(double):
    soon = time.time() + 1.0
    served = double.add_granule_at_stations("npp", 70000, START, segments=("SVM16",), scale=0.001,
                                            listed_at=(None, soon))
    later = double.add_granule("npp", 70000, START + GRANULE, segments=("SVM16",), scale=0.001,
                               listed_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))[0]
    assert listed(double) == [served[0].name]  # the second station's copy and the later file wait
    r = requests.get(f"{double.url}/files/{served[1].name}", timeout=5)
    assert r.status_code == 200 and len(r.content) == served[1].size  # not listed yet, but there
    time.sleep(max(0.0, soon - time.time()) + 0.05)  # listed_at is a wall-clock time: let it pass
    assert listed(double) == sorted(s.name for s in served)
    double.list_at([later.name])  # now
    assert later.name in listed(double)
    double.list_at([served[0].name], time.time() + 3600)
    assert served[0].name not in listed(double)


def test_minute_bounds_by_granule_start_both_inclusive_of_their_minute(double):
    """``start_date``/``end_date`` name a day or a minute; the granules listed start in [first instant of the
    start bound, end of the end bound)."""
    tenth = dt.timedelta(seconds=0.1)
    starts = {"before": START - tenth, "first": START, "last": START + dt.timedelta(minutes=2) - tenth,
              "after": START + dt.timedelta(minutes=2)}
    names = {key: double.add_granule("npp", 70000, start, segments=("SVM16",), scale=0.001)[0].name
             for key, start in starts.items()}

    def keys(params) -> list[str]:
        return sorted(key for key, name in names.items() if name in listed(double, params))

    # getGINAsat.py's spelling (a '+' in the query string is a space), and the other spellings accepted
    raw = requests.get(f"{double.url}/products.json?start_date=2026-11-23+1000&end_date=2026-11-23+1001", timeout=5)
    assert sorted(k for k, n in names.items() if n in raw.text) == ["first", "last"]
    for first, last in (("2026-11-23 1000", "2026-11-23 1001"), ("2026-11-23T10:00", "2026-11-23T10:01"),
                        ("2026-11-23 10:00", "2026-11-23T1001"), (" 2026-11-23 1000 ", "2026-11-23 10:01")):
        assert keys({"start_date": first, "end_date": last}) == ["first", "last"], (first, last)
    assert keys({"start_date": "2026-11-23 0959", "end_date": "2026-11-23 0959"}) == ["before"]  # one minute
    assert keys({"start_date": "2026-11-23 1000", "end_date": "2026-11-23 1002"}) == ["after", "first", "last"]
    assert keys({"start_date": "2026-11-23 1001", "end_date": "2026-11-23 1001"}) == ["last"]
    assert keys({"start_date": "2026-11-23 1002"}) == ["after"]  # one bound alone limits one side
    assert keys({"end_date": "2026-11-23 0959"}) == ["before"]
    assert keys({"start_date": "2026-11-23", "end_date": "2026-11-23 1001"}) == ["before", "first", "last"]  # mixed
    assert keys({"start_date": "2026-11-23 1001", "end_date": "2026-11-23 1000"}) == []  # reversed: nothing
    assert keys({"start_date": "2026-11-24", "end_date": "2026-11-25"}) == []  # days as before
    assert keys({"start_date": "2026-11-22", "end_date": "2026-11-23"}) == ["after", "before", "first", "last"]


def test_minute_bounds_across_midnight(double):
    late = double.add_granule("j01", 20000, dt.datetime(2026, 11, 22, 23, 59, 30), segments=("SVM16",),
                              scale=0.001)[0]
    early = double.add_granule("j01", 20000, dt.datetime(2026, 11, 23, 0, 1, 10), segments=("SVM16",),
                               scale=0.001)[0]
    assert listed(double, {"start_date": "2026-11-22 2359", "end_date": "2026-11-23 0000"}) == [late.name]
    assert listed(double, {"start_date": "2026-11-23 0001", "end_date": "2026-11-23 0001"}) == [early.name]
    assert listed(double, {"start_date": "2026-11-23", "end_date": "2026-11-23"}) == [early.name]


@pytest.mark.parametrize("bound", ["2026-11-23 25:00", "2026-11-23 1060", "23/11/2026", "2026-11-23 10",
                                   "2026-11-23T10:00:00", "2026-11-23T10:00Z", "2026-13-01", "yesterday"])
def test_a_malformed_bound_is_a_400(double, one_file, bound):
    """A malformed bound is refused with a short text, not taken as no bound (everything) as the double once did."""
    for key in ("start_date", "end_date"):
        other = "end_date" if key == "start_date" else "start_date"
        r = requests.get(f"{double.url}/products.json?{key}={bound}&{other}=2026-11-23", timeout=5)
        assert r.status_code == 400 and r.headers["Content-Type"] == "text/plain", (key, bound, r.text)
        assert key in r.text and "YYYY-MM-DD" in r.text and len(r.text) < 200
    assert listed(double, {"start_date": "2026-11-23", "end_date": "2026-11-23"}) == [one_file.name]  # still well


def test_far_bounds_are_well_formed(double, one_file):
    assert listed(double, {"start_date": "0001-01-01", "end_date": "9999-12-31 2359"}) == [one_file.name]
    assert listed(double, {"start_date": "9999-12-31", "end_date": "9999-12-31"}) == []
    empty = requests.get(f"{double.url}/products.json?start_date=&end_date=2026-11-23", timeout=5)
    assert empty.status_code == 200 and len(empty.json()) == 1  # an empty value: no bound


def test_listing_etag_and_304(double, one_file):
    first = products(double)
    tag = first.headers["ETag"]
    assert first.status_code == 200 and tag.startswith('"') and tag.endswith('"') and len(tag) > 10  # strong
    assert tag == products(double).headers["ETag"]  # the same body, the same tag
    assert products(double, {"satellites[]": "noaa20"}).headers["ETag"] != tag  # another body, another tag
    for header in (tag, f'"other", {tag}', "*", f"W/{tag}"):
        r = products(double, headers={"If-None-Match": header})
        assert r.status_code == 304 and r.content == b"" and r.headers["ETag"] == tag, header
    r = products(double, headers={"If-None-Match": '"other"'})
    assert r.status_code == 200 and r.json() == first.json()
    # the body changes when a file is added, and when a file's listed_at comes
    soon = time.time() + 0.5
    double.add_granule("npp", 70000, START + GRANULE, segments=("SVM16",), scale=0.001, listed_at=soon)
    assert products(double, headers={"If-None-Match": tag}).status_code == 304  # not listed yet: same body
    time.sleep(max(0.0, soon - time.time()) + 0.05)  # listed_at is a wall-clock time: let it pass
    r = products(double, headers={"If-None-Match": tag})
    assert r.status_code == 200 and len(r.json()) == 2 and r.headers["ETag"] != tag


def test_a_304_keeps_the_connection_alive(double, one_file):
    conn = http.client.HTTPConnection("127.0.0.1", int(double.url.rsplit(":", 1)[1]), timeout=5)
    try:
        conn.request("GET", "/products.json")
        resp = conn.getresponse()
        body, tag = resp.read(), resp.getheader("ETag")
        conn.request("GET", "/products.json", headers={"If-None-Match": tag})
        resp = conn.getresponse()
        assert resp.status == 304 and resp.read() == b""
        conn.request("GET", "/products.json")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == body
        assert double.connections_accepted == 1
    finally:
        conn.close()


def test_no_etag_fault_answers_without_validator_and_never_304(double, one_file):
    tag = products(double).headers["ETag"]
    double.set_fault("no_etag")
    for _ in range(2):
        r = products(double, headers={"If-None-Match": tag})
        assert r.status_code == 200 and "ETag" not in r.headers and len(r.json()) == 1
    double.clear_faults()
    double.set_fault("no_etag", 1)  # for one answer only
    assert "ETag" not in products(double).headers
    assert products(double, headers={"If-None-Match": tag}).status_code == 304


def raw_get(double, path: str, headers: str = "") -> tuple[bytes, bytes]:
    """(status line and headers, body) of one GET, read off the socket as sent (the connection is closed after)."""
    port = int(double.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", body


def test_bytes_served_counts_listings_and_files_apart(double):
    served = double.add_granule_at_stations("npp", 70000, START, segments=("SVM16",), scale=0.01)
    gilmore, uafgina = served
    assert double.bytes_served() == {"listing": 0, "listing_headers": 0, "listing_requests": 0, "not_modified": 0,
                                     "files": 0, "file_headers": 0, "file_requests": 0, "stations": {}}
    head, body = raw_get(double, "/products.json")
    assert len(json.loads(body)) == 2
    after_listing = double.bytes_served()
    assert (after_listing["listing"], after_listing["listing_headers"]) == (len(body), len(head))
    assert after_listing["listing_requests"] == 1 and after_listing["files"] == after_listing["file_requests"] == 0
    # one station's copy fetched, whole: one copy's bytes, counted for that station only
    head, body = raw_get(double, f"/files/{uafgina.name}")
    now = double.bytes_served()
    assert len(body) == uafgina.size and now["files"] == uafgina.size and now["file_headers"] == len(head)
    assert now["stations"] == {"uafgina": uafgina.size} and now["file_requests"] == 1
    assert now["listing"] == after_listing["listing"]  # listings and files apart
    # a range, a 404 and a 416: only content is counted as files
    requests.get(f"{double.url}/files/{gilmore.name}", headers={"Range": "bytes=100-199"}, timeout=5)
    requests.get(f"{double.url}/files/no-such.h5", timeout=5)
    requests.get(f"{double.url}/files/{gilmore.name}", headers={"Range": f"bytes={gilmore.size}-"}, timeout=5)
    now = double.bytes_served()
    assert now["files"] == uafgina.size + 100 and now["stations"] == {"uafgina": uafgina.size, "gilmore": 100}
    assert now["file_requests"] == 4
    # a 304 is a listing request with headers and no body
    answer = products(double)
    tag = answer.headers["ETag"]
    # the handler counts the body just after writing it: requests may have read it before
    before = wait_until(lambda: (seen := double.bytes_served())["listing"] == now["listing"] + len(answer.content)
                        and seen, 5, "the listing's body counted")
    head, body = raw_get(double, "/products.json", f"If-None-Match: {tag}\r\n")
    now = double.bytes_served()
    assert head.startswith(b"HTTP/1.1 304") and body == b""
    assert now["listing"] == before["listing"] and now["listing_headers"] == before["listing_headers"] + len(head)
    assert (now["not_modified"], now["listing_requests"]) == (1, before["listing_requests"] + 1)
    assert double.bytes_served() is not double.bytes_served()  # a copy


def test_bytes_served_counts_cut_bodies_as_far_as_they_went_and_parallel_fetches_exactly(double, one_file):
    url = f"{double.url}/files/{one_file.name}"
    double.set_fault("short_body", 1)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url, headers={"Range": "bytes=0-99999"}, timeout=5).content  # noqa: B018 - the body is the point
    assert double.bytes_served()["files"] == 50000
    threads = [threading.Thread(target=lambda: requests.get(url, timeout=10).content) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = {"gilmore": 50000 + 8 * one_file.size}
    # the handlers count what they wrote just after the client has read it
    wait_until(lambda: double.bytes_served()["stations"] == expected, 5, f"{expected} bytes served by station")


def test_range_semantics(double, one_file):
    url = f"{double.url}/files/{one_file.name}"
    data = one_file.path.read_bytes()
    r = requests.get(url, headers={"Range": "bytes=100-199"}, timeout=5)
    assert r.status_code == 206 and r.content == data[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(data)}" and r.headers["Accept-Ranges"] == "bytes"
    r = requests.get(url, headers={"Range": "bytes=-10"}, timeout=5)
    assert r.status_code == 206 and r.content == data[-10:]
    r = requests.get(url, headers={"Range": f"bytes={len(data) - 5}-"}, timeout=5)
    assert r.content == data[-5:]
    r = requests.get(url, headers={"Range": f"bytes={len(data)}-"}, timeout=5)
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{len(data)}"
    assert _parse_range("bytes=0-1,5-6", 10) is None  # several ranges: the whole file (200)
    r = requests.get(f"{double.url}/files/nothing.h5", timeout=5)
    assert r.status_code == 404


def test_keep_alive_serves_several_requests_on_one_connection(double, one_file):
    conn = http.client.HTTPConnection("127.0.0.1", int(double.url.rsplit(":", 1)[1]), timeout=5)
    try:
        for start in (0, 1000, 2000):
            conn.request("GET", f"/files/{one_file.name}", headers={"Range": f"bytes={start}-{start + 9}"})
            resp = conn.getresponse()
            assert resp.status == 206 and len(resp.read()) == 10
    finally:
        conn.close()


def test_per_connection_bandwidth_cap(tmp_path):
    with GinaDouble(tmp_path / "g", rate=1e6) as d:
        item = d.add_granule("npp", 1, START, segments=("SVM15",), sizes={"SVM15": 400_000})[0]
        t0 = time.monotonic()
        body = requests.get(f"{d.url}/files/{item.name}", timeout=10).content
        elapsed = time.monotonic() - t0
    assert len(body) == item.size
    assert 0.3 < elapsed < 3.0  # 400 kB at 1 MB/s


def test_faults(double, one_file):
    url = f"{double.url}/files/{one_file.name}"
    rng = {"Range": "bytes=1000-200999"}
    double.set_fault("ignore_ranges", 1)
    r = requests.get(url, headers=rng, timeout=5)
    assert r.status_code == 200 and len(r.content) == one_file.size and "Accept-Ranges" not in r.headers
    double.set_fault("error5xx", 1)
    assert requests.get(url, headers=rng, timeout=5).status_code == 503
    assert requests.get(url, headers=rng, timeout=5).status_code == 206  # count used up
    for fault in ("short_body", "drop"):
        double.set_fault(fault, 1)
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            requests.get(url, headers=rng, timeout=5).content  # noqa: B018 - the body is the point
    double.set_fault("slow_first_byte", 1)
    double.slow_seconds = 0.5
    t0 = time.monotonic()
    requests.get(url, headers={"Range": "bytes=0-9"}, timeout=5)
    assert time.monotonic() - t0 >= 0.45
    double.set_fault("wrong_md5")
    record = requests.get(f"{double.url}/products.json", timeout=5).json()[0]
    assert record["md5sum"] != one_file.md5
    double.clear_faults()
    double.set_fault("html")
    r = requests.get(f"{double.url}/products.json", timeout=5)
    assert r.headers["Content-Type"] == "text/html" and r.text.startswith("<html>")
    double.clear_faults()
    double.set_fault("bad_json", 1)
    with pytest.raises(ValueError):
        requests.get(f"{double.url}/products.json", timeout=5).json()
    with pytest.raises(ValueError):
        double.set_fault("no-such-fault")


def test_standalone_console_script_serves_and_stops_on_sigterm(tmp_path):
    with standalone(tmp_path, "--granules", "1", "--satellites", "snpp") as url:  # SIGTERM after: exit 0, "stopped"
        records = requests.get(f"{url}/products.json", timeout=2).json()
    assert len(records) == 12  # one granule of every segment the products need


@pytest.mark.parametrize("same_start", [False, True])
def test_standalone_schedule_grows_with_every(tmp_path, same_start):
    """``--every``: each satellite's next granule starts where its previous one ended; start times differ between
    satellites, unless ``--same-start``."""
    port = free_port()
    args = [sys.executable, "-m", "tests.gina_double", "--port", str(port), "--dir", str(tmp_path / "g"),
            "--granules", "2", "--every", "0.5", "--scale", "0.0005", "--satellites", "snpp,noaa20,noaa21"]
    proc = subprocess.Popen(args + (["--same-start"] if same_start else []), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        by_platform: dict[str, list] = {}

        def four_granules_each() -> bool:
            try:
                records = requests.get(f"http://127.0.0.1:{port}/products.json", timeout=5).json()
            except requests.RequestException:
                return False  # not serving yet, or slow to answer on a busy host (a read timed out in a busy run)
            names = [parse_name(r["url"].rsplit("/", 1)[1]) for r in records if "/GITCO_" in r["url"]]
            by_platform.update({p: sorted((n for n in names if n.platform == p), key=lambda n: n.start_time)
                                for p in ("npp", "j01", "j02")})
            return all(len(granules) >= 4 for granules in by_platform.values())

        wait_until(four_granules_each, 30, lambda: f"4 granules of each satellite listed (got {by_platform})", 0.2)
        for granules in by_platform.values():
            assert all(a.end_time == b.start_time for a, b in zip(granules, granules[1:], strict=False))
            assert all(0 <= b.orbit_number - a.orbit_number <= 1 for a, b in zip(granules, granules[1:], strict=False))
        firsts = [granules[0].start_time for granules in by_platform.values()]
        assert len(set(firsts)) == (1 if same_start else 3)
        orbits = {p: granules[0].orbit_number for p, granules in by_platform.items()}
        assert orbits["npp"] > orbits["j01"] > orbits["j02"]  # launched in 2011, 2017 and 2022
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0 and "stopped" in out
        assert ("same start times" in out) == same_start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def standalone(tmp_path, *args: str):
    """Run the double's command line with ``args``; yield its URL once it answers; SIGTERM it after (exit 0)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.gina_double", "--port", str(port), "--dir",
                             str(tmp_path / "g"), "--scale", "0.0005", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"

        def answering() -> bool:
            assert proc.poll() is None, f"the double exited: {proc.stdout.read() if proc.stdout else ''}"
            try:
                requests.get(f"{url}/products.json", timeout=2)
                return True
            except (requests.ConnectionError, requests.Timeout):  # not up yet, or slow to answer on a busy host
                return False

        wait_until(answering, 30, "the double's command line answering", 0.1)
        yield url
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0 and "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stations_of_gives_every_nth_granule_to_one_station_in_turn():
    both = ["gilmore", "uafgina"]
    assert [stations_of(both, i, 3) for i in range(7)] == [both, both, ["gilmore"], both, both, ["uafgina"], both]
    assert all(stations_of(both, i, 0) == both for i in range(10))
    assert stations_of(["barrow"], 3, 4) == ["barrow"]


def test_standalone_stations_copies_and_one_station_granules(tmp_path):
    with standalone(tmp_path, "--granules", "6", "--satellites", "snpp", "--stations", "gilmore,uafgina",
                    "--station-lag", "0", "--one-station-every", "3") as url:
        records = requests.get(f"{url}/products.json", timeout=5).json()
        uafgina = requests.get(f"{url}/products.json", params={"facilities[]": "uafgina"}, timeout=5).json()
    by_end: dict[dt.datetime, dict[str, list]] = {}
    for record in records:
        sdr = parse_name(record["url"].rsplit("/", 1)[1])
        by_end.setdefault(sdr.end_time, {}).setdefault(record["facility"], []).append(sdr)
    assert len(by_end) == 6 and all(len(files) == 12 for at in by_end.values() for files in at.values())
    kinds = [sorted(at) for _, at in sorted(by_end.items())]
    both = ["gilmore", "uafgina"]
    assert kinds == [both, both, ["gilmore"], both, both, ["uafgina"]]
    for end, at in by_end.items():
        starts = {station: {n.start_time for n in files} for station, files in at.items()}
        assert all(len(s) == 1 for s in starts.values())  # within a station, one start per granule
        if "gilmore" in at:
            assert starts["gilmore"] == {end - GRANULE}
        if "uafgina" in at:
            assert starts["uafgina"] == {end - GRANULE + dt.timedelta(seconds=0.1)}
        if len(at) == 2:
            made = {station: {n.proctime for n in files} for station, files in at.items()}
            assert {b - a for a in made["gilmore"] for b in made["uafgina"]} == {dt.timedelta(minutes=3.5)}
    assert {r["facility"] for r in uafgina} == {"uafgina"} and len(uafgina) == 5 * 12


def test_standalone_station_lag_holds_back_the_further_stations_copies(tmp_path):
    with standalone(tmp_path, "--granules", "1", "--every", "0.3", "--satellites", "noaa20", "--stations",
                    "gilmore,uafgina", "--station-lag", "3600", "--one-station-every", "0") as url:
        records = wait_until(lambda: len(got := requests.get(f"{url}/products.json", timeout=5).json()) >= 3 * 12
                             and got, 30, "3 granules listed", 0.2)
    assert len(records) >= 3 * 12 and {r["facility"] for r in records} == {"gilmore"}
