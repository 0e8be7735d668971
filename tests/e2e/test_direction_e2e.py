"""End to end on the supervised suite, with no TLE in elements/: granule files made by the GINA double (real HDF5,
2-D Latitude along the double's orbit model) are placed in sdr/ as mirror_gina places them, go through trollstalker
and the segment_gatherers to task_broker, and a worker loop written like the deployed one receives tasks whose
``pass_direction`` is the double's, decided from the geolocation files (the broker's log says so); also when the
satellites' granules start at identical times (the double's ``--same-start`` schedule)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from posttroll.message import Message

from avoviirscollector.viirs import PLATFORMS, PRODUCTS
from tests.broker_support import DeployedWorker
from tests.e2e.harness import Suite
from tests.gina_double import GinaDouble, Granule, Schedule
from tests.support import wait_until

pytestmark = pytest.mark.e2e


def place_and_receive(suite: Suite, gina: Path, granules: list[Granule], product: str) -> tuple[dict, dict]:
    """Place the double's files of ``granules`` (``product``'s segments) in sdr/; the tasks a deployed-style worker
    then receives, {(platform_name, orbit): message data}, and {granule: its geolocation file's name}."""
    double = GinaDouble(gina)
    geolocation = {}
    try:
        for granule in granules:
            for served in double.add_scheduled(granule, segments=PRODUCTS[product], scale=0.001):  # G* first
                suite.place(served.name, served.path.read_bytes())  # tmp/ then one rename into sdr/
                geolocation.setdefault(granule, served.name)
    finally:
        double.stop()
    want = {(PLATFORMS[g.platform][0], g.orbit) for g in granules}
    s = suite.settings
    worker = DeployedWorker(s.task_port, s.update_port, [product])
    worker.start()
    got: dict[tuple, dict] = {}
    try:

        def every_task_came() -> bool:
            for raw in list(worker.received):
                data = Message.decode(raw).data
                got[(data["platform_name"], data["orbit_number"])] = data
            return not want - set(got)

        wait_until(every_task_came, 60, lambda: f"a task for each of {sorted(want - set(got))}", 0.1)
    finally:
        worker.stop()
    assert not worker.hung
    return got, geolocation


def assert_directions_from_geolocation(suite: Suite, granules, got, geolocation) -> None:
    for granule in granules:
        data = got.get((PLATFORMS[granule.platform][0], granule.orbit))
        assert data is not None, f"no task for {granule}; got {sorted(got)}"
        assert data["pass_direction"] == granule.direction
        assert {item["uid"].split("_")[1] for item in data["dataset"]} == {granule.platform}
    log = (suite.base / "log" / "task_broker.log").read_text()
    for granule in granules:
        assert geolocation[granule].startswith("G")
        assert f"pass direction {granule.direction} from geolocation ({geolocation[granule]})" in log
    assert "from tle" not in log


def test_pass_direction_comes_from_the_doubles_geolocation_when_there_is_no_tle(suite: Suite, tmp_path):
    elements = suite.base / "elements"
    assert not elements.exists() or not any(elements.iterdir())
    suite.wait_flowing()
    schedule = Schedule()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=20)
    # NOAA-20 and Suomi-NPP fly half an orbit apart: one of them ascends while the other descends
    recent = [g for short in ("j01", "npp") for g in schedule.latest(short, now, 6)]
    up, down = next((a, b) for a in recent for b in recent
                    if (a.direction, b.direction) == ("ascending", "descending") and a.platform != b.platform)
    got, geolocation = place_and_receive(suite, tmp_path / "gina", [up, down], "tir")
    assert_directions_from_geolocation(suite, [up, down], got, geolocation)


def test_identical_start_times_of_three_satellites_still_make_three_tasks(suite: Suite, tmp_path):
    """The double's --same-start schedule: segment_gatherer keys its slots by start time alone."""
    suite.wait_flowing()
    schedule = Schedule(same_start=True)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=20)
    granules = [schedule.latest(short, now, 1)[0] for short in ("npp", "j01", "j02")]
    assert len({g.start for g in granules}) == 1
    got, geolocation = place_and_receive(suite, tmp_path / "gina", granules, "dnb")
    assert_directions_from_geolocation(suite, granules, got, geolocation)
