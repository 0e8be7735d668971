"""The accounting of tests/e2e/chaos.py finds what it is meant to find: lost granules, granules handed out twice,
repeats the broker logged in doubt, partial granules, and tasks mixing platforms, orbits or start times."""

from __future__ import annotations

import datetime as dt

from posttroll.message import Message

from avoviirscollector.bus import encode_legacy
from avoviirscollector.viirs import PRODUCTS, format_name
from tests.e2e import chaos

START = dt.datetime(2026, 11, 27, 19, 31, 17, 300000)
LATER = START + chaos.GRANULE


def names(product: str, platform: str, start: dt.datetime, orbit: int = 67002) -> list[str]:
    return [format_name(seg, platform, start, start + chaos.GRANULE, orbit, start) for seg in PRODUCTS[product]]


def task(product: str, platform_name: str, files: list[str], orbit: int = 67002, start: dt.datetime = START) -> bytes:
    data = {"platform_name": platform_name, "orbit_number": orbit, "start_time": start,
            "end_time": start + chaos.GRANULE, "dataset": [{"uri": f"/viirs/sdr/{n}", "uid": n} for n in files]}
    return encode_legacy(Message(f"/AVO/viirs/granule/{product}", "dataset", data)).encode()


def key(product: str, platform_name: str, start: dt.datetime = START) -> tuple:
    return (product, platform_name, start.replace(microsecond=start.microsecond // 100000 * 100000))


def test_complete_granules_from_segments():
    segments = {("Suomi-NPP", START): {"GMTCO", "SVM15", "SVM16", "GITCO", "SVI05"}}
    assert chaos.granules_of(segments) == {("btd", "Suomi-NPP", START), ("tir", "Suomi-NPP", START)}


def test_lost_twice_and_merged():
    btd, tir = key("btd", "Suomi-NPP"), key("tir", "Suomi-NPP")
    later = key("btd", "Suomi-NPP", LATER)
    merged = task("btd", "Suomi-NPP", names("btd", "npp", START) + names("btd", "npp", LATER))
    result = chaos.account({btd, tir, later}, [merged, task("btd", "Suomi-NPP", names("btd", "npp", LATER))])
    assert result.lost == {tir}
    assert result.twice == {later: 2}
    assert not result.ok


def test_repeat_logged_in_doubt_is_apart_from_twice():
    btd = key("btd", "Suomi-NPP")
    raw = task("btd", "Suomi-NPP", names("btd", "npp", START))
    signature = ("btd", "Suomi-NPP", 67002, START.strftime("%Y-%m-%dT%H:%M:%S"), LATER.strftime("%H:%M:%S"))
    assert chaos.read_task(raw).signature == signature
    result = chaos.account({btd}, [raw, raw], {signature})
    assert result.in_doubt_repeats == {btd: 2} and not result.twice and result.ok
    assert chaos.account({btd}, [raw, raw]).twice == {btd: 2}


def test_partial_and_mixed_tasks_are_failures():
    btd = key("btd", "Suomi-NPP")
    partial = chaos.account({btd}, [task("btd", "Suomi-NPP", names("btd", "npp", START)[:2])])
    assert partial.partial == {btd: {"GMTCO", "SVM15"}} and not partial.ok
    mixed = task("btd", "Suomi-NPP", names("btd", "npp", START) + names("btd", "j01", START, orbit=33002))
    problems = chaos.read_task(mixed).problems
    assert any("mixes platforms" in p for p in problems) and any("in a task of Suomi-NPP" in p for p in problems)
    orbits = task("btd", "Suomi-NPP", names("btd", "npp", START)[:2] + names("btd", "npp", START, orbit=67003)[2:])
    assert any("with orbits" in p for p in chaos.read_task(orbits).problems)


def test_broker_log_lines(tmp_path):
    log = tmp_path / "task_broker.log"
    log.write_text(
        "2026-11-28T01:49:43Z task_broker WARNING recovered granule btd Suomi-NPP 2026-11-27T19:31:17.3 (late file: "
        "x): complete in sdr/ for 21.5 s; queued as task 3\n"
        "2026-11-28T01:49:44Z task_broker WARNING hand-out of task 37 dnb Suomi-NPP orbit 67002 unknown "
        "2026-11-27T19:31:17..19:32:42 (2 files) to w at t is in doubt (...): queued again in its place\n")
    read = chaos.BrokerLog.read(log)
    assert read.recovered == [("late file: x", 21.5)]
    assert read.in_doubt_tasks == {("dnb", "Suomi-NPP", 67002, "2026-11-27T19:31:17", "19:32:42")}


def test_two_stations_files_are_one_granule_and_two_copies_of_a_segment_are_a_failure():
    """The second station's copy of a granule starts 0.1 s later: a task holding geolocation from one station and
    bands from the other holds one granule, whole; a task holding both copies of a band is wrong."""
    other = START + chaos.COPY_OFFSET
    btd = key("btd", "Suomi-NPP")
    split = names("btd", "npp", START)[:1] + names("btd", "npp", other)[1:]
    result = chaos.account({btd}, [task("btd", "Suomi-NPP", split)])
    assert result.ok and not result.lost and len(result.tasks[0].granules) == 1
    doubled = task("btd", "Suomi-NPP", names("btd", "npp", START) + names("btd", "npp", other)[2:])
    problems = chaos.read_task(doubled).problems
    assert any("holds 2 copies of SVM16" in p for p in problems), problems
    made = chaos.satellite_granule_names("npp", 67002, START, "split")
    assert {n[:5] for n in made if "_t1931173_" in n} == set(chaos.GEOLOCATION)
    doubled_names = chaos.satellite_granule_names("npp", 67002, START, "both copies of a band")
    assert len(doubled_names) == len(chaos.ALL_SEGMENTS) + 1
