"""Pass direction: from the test TLE set with pyorbital, and from a granule's geolocation file as the fallback.

The element store has its tests in test_broker_direction_elements.py, the helper process in
test_broker_direction_client.py; the geolocation reader's are here, next to the fallback that uses it."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import h5py
import numpy as np
import pytest
from pyorbital.orbital import Orbital

from avoviirscollector.broker.direction import DirectionFinder
from avoviirscollector.broker.elements import MAX_TLE_AGE
from avoviirscollector.broker.geolocation import direction_from_geolocation, local_path
from avoviirscollector.viirs import format_name
from tests.broker_support import ASCENDING_TIME, DESCENDING_TIME, TLE_EPOCH, TLE_FILE

PLATFORMS = {"Suomi-NPP": ("npp", 37849), "NOAA-20": ("j01", 43013), "NOAA-21": ("j02", 54234)}


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_direction_from_tle(elements, platform):
    finder = DirectionFinder(elements)
    up = finder.find(platform, ASCENDING_TIME, [])
    down = finder.find(platform, DESCENDING_TIME, [])
    assert (up.value, up.method) == ("ascending", "tle")
    assert (down.value, down.method) == ("descending", "tle")
    assert "weather.txt" in up.detail


@pytest.mark.parametrize("when,expected", [(ASCENDING_TIME, "ascending"), (DESCENDING_TIME, "descending")])
def test_tle_direction_agrees_with_the_latitude_trend(elements, when, expected):
    orbital = Orbital("Suomi-NPP", tle_file=str(TLE_FILE))
    naive = when.replace(tzinfo=None)
    lat0 = orbital.get_lonlatalt(naive)[1]
    lat1 = orbital.get_lonlatalt(naive + dt.timedelta(seconds=60))[1]
    assert ("ascending" if lat1 > lat0 else "descending") == expected
    assert DirectionFinder(elements).find("Suomi-NPP", when, []).value == expected


def write_geolocation(path, latitudes_by_row, segment_group="VIIRS-IMG-GEO-TC_All", fill_rows=0):
    rows = np.repeat(np.asarray(latitudes_by_row, dtype="float32")[:, None], 9, axis=1)
    if fill_rows:
        rows[:fill_rows] = -999.3
        rows[-fill_rows:] = -999.3
    with h5py.File(path, "w") as h5:
        h5.create_dataset(f"All_Data/{segment_group}/Latitude", data=rows)
        h5.create_dataset(f"All_Data/{segment_group}/Longitude", data=np.zeros_like(rows))


def geolocation_entry(tmp_path, platform, when, latitudes, segment="GITCO", **kwargs):
    short = PLATFORMS[platform][0]
    naive = when.replace(tzinfo=None)
    name = format_name(segment, short, naive, naive + dt.timedelta(seconds=85), 40000, naive)
    write_geolocation(tmp_path / name, latitudes, **kwargs)
    return {"uri": str(tmp_path / name), "uid": name}


def track_latitudes(when, rows=48):
    orbital = Orbital("Suomi-NPP", tle_file=str(TLE_FILE))
    naive = when.replace(tzinfo=None)
    return [orbital.get_lonlatalt(naive + dt.timedelta(seconds=85.4 * i / rows))[1] for i in range(rows)]


@pytest.mark.parametrize("when", [ASCENDING_TIME, DESCENDING_TIME])
def test_geolocation_fallback_agrees_with_tle(tmp_path, elements, when):
    """Latitudes along the TLE's own ground track, in a GITCO file, give the TLE's answer without the TLE."""
    entry = geolocation_entry(tmp_path, "Suomi-NPP", when, track_latitudes(when), fill_rows=3)
    band = {"uri": str(tmp_path / "SVI05.h5"), "uid": entry["uid"].replace("GITCO", "SVI05")}
    with_tle = DirectionFinder(elements).find("Suomi-NPP", when, [band, entry])
    empty = tmp_path / "no-elements"
    empty.mkdir()
    without = DirectionFinder(empty).find("Suomi-NPP", when, [band, entry])
    assert with_tle.method == "tle"
    assert without.method == "geolocation" and without.detail == entry["uid"]
    assert without.value == with_tle.value


def test_stale_tle_falls_back_to_geolocation(tmp_path, elements):
    when = TLE_EPOCH + MAX_TLE_AGE + dt.timedelta(hours=1)
    entry = geolocation_entry(tmp_path, "NOAA-20", when, np.linspace(60, 55, 30), segment="GMTCO",
                              segment_group="VIIRS-MOD-GEO-TC_All")
    got = DirectionFinder(elements).find("NOAA-20", when, [entry])
    assert (got.value, got.method) == ("descending", "geolocation")
    fresh = TLE_EPOCH + MAX_TLE_AGE - dt.timedelta(hours=1)
    assert DirectionFinder(elements).find("NOAA-20", fresh, []).method == "tle"


@pytest.mark.parametrize("latitudes,expected", [
    (np.linspace(50, 56, 48), "ascending"),
    (np.linspace(56, 50, 48), "descending"),
    ([70.0] * 48, None),
    ([-999.0] * 47 + [50.0], None),
])
def test_latitude_trend(tmp_path, latitudes, expected):
    write_geolocation(tmp_path / "geo.h5", latitudes)
    assert direction_from_geolocation(tmp_path / "geo.h5") == expected


def test_no_tle_and_no_geolocation_is_unknown_and_says_why(tmp_path):
    finder = DirectionFinder(tmp_path / "missing")
    band = format_name("SVI05", "npp", dt.datetime(2019, 4, 22, 18, 28), dt.datetime(2019, 4, 22, 18, 29), 38780,
                       dt.datetime(2019, 4, 22, 18, 39))
    got = finder.find("Suomi-NPP", dt.datetime(2019, 4, 22, 18, 28, tzinfo=dt.UTC), [{"uri": "/x/" + band,
                                                                                         "uid": band}])
    assert (got.value, got.method) == ("unknown", "none")
    assert "no TLE" in got.detail and "no geolocation file" in got.detail
    geo = band.replace("SVI05", "GITCO")
    broken = tmp_path / geo
    broken.write_bytes(b"not hdf5")
    got = finder.find("Unknown-Sat", ASCENDING_TIME, [{"uri": str(broken), "uid": geo}])
    assert got.value == "unknown" and "no NORAD number" in got.detail and geo in got.detail


def test_local_path_of_dataset_uris():
    assert local_path("/viirs/sdr/GITCO_x.h5") == local_path("file:///viirs/sdr/GITCO_x.h5")
    assert str(local_path("file:///viirs/sdr/GITCO_x.h5")) == "/viirs/sdr/GITCO_x.h5"
    assert local_path("http://gina/GITCO_x.h5") is None


def test_the_broker_side_loads_no_science_stack():
    """The broker imports Direction from here and DirectionClient from direction_client: pyorbital, scipy, numpy,
    h5py (and requests, which tle.py's downloader uses) must stay in the helper process."""
    code = ("import sys; from avoviirscollector.broker.direction import Direction; "
            "from avoviirscollector.broker.direction_client import DirectionClient; "
            "import avoviirscollector.broker.server; "
            "print(sorted(m for m in ('pyorbital', 'scipy', 'numpy', 'h5py', 'requests') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
