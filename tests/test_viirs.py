"""VIIRS SDR names and the pytroll configuration that must agree with them."""

from __future__ import annotations

import configparser
import datetime as dt

import pytest
import trollsift

from avoviirscollector.config import PACKAGE_ETC
from avoviirscollector.granules import START_TOLERANCE
from avoviirscollector.viirs import (
    INI_PATTERN,
    PRODUCTS,
    TROLLSIFT_PATTERN,
    NotASdrName,
    format_name,
    parse_name,
)

EXAMPLE = "SVM16_npp_d20190422_t1828348_e1829590_b38780_c20190422183926285541_cspp_dev.h5"


def test_parse_the_original_example():
    n = parse_name(EXAMPLE)
    assert (n.segment, n.platform, n.platform_name, n.orbit_number, n.source) == (
        "SVM16", "npp", "Suomi-NPP", 38780, "cspp_dev")
    assert n.start_time == dt.datetime(2019, 4, 22, 18, 28, 34, 800000)
    assert n.end_time == dt.datetime(2019, 4, 22, 18, 29, 59)
    assert n.proctime == dt.datetime(2019, 4, 22, 18, 39, 26, 285541)


def test_granule_crossing_midnight():
    n = parse_name("GITCO_j01_d20260101_t2359300_e0000550_b12345_c20260102000500000000_cspp_dev.h5")
    assert n.end_time == dt.datetime(2026, 1, 2, 0, 0, 55)


def test_format_round_trips():
    start = dt.datetime(2026, 11, 23, 1, 2, 3, 400000)
    name = format_name("GDNBO", "j02", start, start + dt.timedelta(seconds=85), 5, start)
    assert parse_name(name).start_time == start and parse_name(name).orbit_number == 5


@pytest.mark.parametrize("name", [
    "leapsec.dat", "", "../SVM16_npp_d20190422_t1828348_e1829590_b38780_c20190422183926285541_cspp_dev.h5",
    "/abs/" + EXAMPLE, EXAMPLE + ".part", EXAMPLE.replace("npp", "xyz"), EXAMPLE.replace("d20190422", "d20191322"),
    EXAMPLE.replace("SVM16", "svm16"), EXAMPLE.replace("_cspp_dev", ""), "SVM16_npp.h5",
])
def test_not_sdr_names(name):
    with pytest.raises(NotASdrName):
        parse_name(name)


def test_geolocation_segments():
    assert parse_name(EXAMPLE.replace("SVM16", "GMTCO")).is_geolocation and not parse_name(EXAMPLE).is_geolocation


def test_trollstalker_ini_uses_the_pattern():
    ini = configparser.RawConfigParser()
    ini.read(PACKAGE_ETC / "trollstalker.ini")
    assert ini["viirs"]["filepattern"] == INI_PATTERN
    assert ini["viirs"]["nameservers"] == "localhost"
    assert trollsift.parse(TROLLSIFT_PATTERN, EXAMPLE)["start_time"] == parse_name(EXAMPLE).start_time


@pytest.mark.parametrize("name", [EXAMPLE, EXAMPLE.replace("_t1828348_e1829590_", "_t2359300_e0000554_")])
def test_trollstalker_gives_full_start_and_end_times_with_its_pattern(name):
    """trollstalker's own parsing (pytroll-collectors' EventProcessor, without its publisher) on the ini's pattern:
    the message data carries the start and end as full datetimes (the end on the next day past midnight), and no
    ``start_date``; its day-stepping loop runs at most once."""
    from pytroll_collectors.trollstalker import EventProcessor
    from trollsift import Parser

    processor = EventProcessor.__new__(EventProcessor)
    processor.file_parser, processor.instrument, processor.custom_vars = Parser(INI_PATTERN), "viirs", {}
    processor.aliases = {"platform_name": {"npp": "Suomi-NPP"}}
    processor.tbus_orbit, processor.granule_length = False, 0
    info = processor.parse_file_info(f"/viirs/sdr/{name}")
    sdr = parse_name(name)
    assert (info["start_time"], info["end_time"]) == (sdr.start_time, sdr.end_time)
    assert "start_date" not in info and "end_date" not in info
    assert (info["platform_name"], info["orig_platform_name"], info["segment"]) == ("Suomi-NPP", "npp", "SVM16")


def test_segment_gatherer_ini_matches_products():
    ini = configparser.RawConfigParser()
    ini.read(PACKAGE_ETC / "segment_gatherer.ini")
    assert sorted(ini.sections()) == sorted(PRODUCTS)
    for product, segments in PRODUCTS.items():
        section = ini[product]
        # the gatherer compares names rebuilt from parsed fields: the platform field must not be the aliased one
        assert section["pattern"] == INI_PATTERN.replace("{platform_name}", "{platform_shortname}")
        for key in ("critical_files", "wanted_files", "all_files"):
            assert sorted(section[key].split(",")) == sorted(":" + s for s in segments)
        assert section["publish_topic"] == f"/AVO/viirs/granule/{product}"
        assert section["nameservers"] == "localhost" and section["time_name"] == "start_time"
        # one granule's copies from two stations share a slot (starts 0.1 s apart), as they share a granule key
        assert float(section["time_tolerance"]) == START_TOLERANCE
        assert set(section["variable_tags"].split(",")) == {"proctime", "source", "start_time", "end_time"}


@pytest.mark.parametrize("orbit", [42, 38780, 99999, 100000, 100001, 999999])
def test_pattern_reads_five_and_six_digit_orbits_as_parse_name_does(orbit):
    """trollsift itself, on the pattern the ini files use: a six-digit orbit must not be cut to five characters
    (with ``{orbit_number:5d}`` such files were mirrored and never announced)."""
    name = EXAMPLE.replace("_b38780_", f"_b{orbit:05d}_")
    parsed = trollsift.parse(TROLLSIFT_PATTERN, name)
    sdr = parse_name(name)
    assert parsed["orbit_number"] == sdr.orbit_number == orbit
    assert (parsed["segment"], parsed["platform_name"], parsed["source"]) == (sdr.segment, sdr.platform, sdr.source)
    assert parsed["start_time"] == sdr.start_time and parsed["proctime"] == sdr.proctime
