"""Reconciliation with sdr/ (broker/reconcile.py): which complete granules are recovered, when, and why."""

from __future__ import annotations

import datetime as dt
import os

from avoviirscollector.broker.reconcile import Planner, SdrView, complete_between, gatherer_timeouts
from avoviirscollector.config import PACKAGE_ETC
from avoviirscollector.granules import GranuleKey, OnDisk
from avoviirscollector.viirs import PRODUCTS, format_name, parse_name
from tests.support import wait_until

T0 = dt.datetime(2026, 3, 1, 12, 0, 3, 300000)


def on_disk(product="btd", complete_at=1000.0, first_at=None, start=T0) -> OnDisk:
    files = tuple(parse_name(format_name(s, "npp", start, start + dt.timedelta(seconds=85.4), 70000, start))
                  for s in PRODUCTS[product])
    return OnDisk(GranuleKey(product, "Suomi-NPP", start), files, complete_at,
                  complete_at if first_at is None else first_at)


def test_only_unknown_granules_complete_for_the_grace_period_within_the_window_are_recovered():
    planner = Planner(window_seconds=3600, ledger_since=0, started_at=0, grace=20)
    known = on_disk("tir")
    fresh = on_disk("mir", complete_at=990)  # complete for 10 s only: the live path may still bring it
    old = on_disk("vis", complete_at=1000 - 3601)
    wanted = on_disk("btd", complete_at=900)
    got = planner.plan([known, fresh, old, wanted], lambda key: key == known.key, now=1000)
    assert [r.key for r in got] == [wanted.key] and got[0].waited == 100
    assert planner.plan([wanted], lambda key: False, now=1001) == []  # on its way already: not sent twice
    planner.done(wanted.key)
    assert len(planner.plan([wanted], lambda key: False, now=1002)) == 1


def test_nothing_completed_before_the_ledger_began_is_recovered():
    planner = Planner(window_seconds=3600, ledger_since=950, started_at=0, grace=20)
    assert planner.since(1000) == 950
    assert planner.plan([on_disk(complete_at=940)], lambda key: False, now=1000) == []


def test_the_case_is_named():
    planner = Planner(3600, 0, started_at=500, timeouts={"btd": 600})
    assert "not following the bus" in planner.case(on_disk(complete_at=400))
    assert "late file" in planner.case(on_disk(complete_at=1700, first_at=1000))
    assert "no dataset from segment_gatherer-btd" in planner.case(on_disk(complete_at=700, first_at=650))


def test_slot_timeouts_come_from_the_gatherers_ini():
    assert gatherer_timeouts(PACKAGE_ETC / "segment_gatherer.ini") == {product: 600.0 for product in PRODUCTS}


def test_the_view_of_sdr_reports_complete_granules_of_its_folder_and_follows_its_changes(tmp_path):
    """The broker's view of sdr/ (a real inotify watch on a real folder): the complete granules found by the pass
    at start, a granule completed later by a file renamed in, and a granule that stops counting when one of its files
    is removed by someone else."""
    for segment in PRODUCTS["dnb"]:
        (tmp_path / format_name(segment, "j01", T0, T0, 30000, T0)).write_bytes(b"x")
    (tmp_path / "leapsec.dat").write_bytes(b"x")
    deliveries: list[list] = []
    view = SdrView(tmp_path, since=lambda now: 0, deliver=deliveries.append, horizon=dt.timedelta(days=30000),
                   interval=0.1)
    view.start()
    try:
        assert view.watch.ready.wait(10)
        found = _next(deliveries, lambda found: found)
        assert [item.key for item in found] == [GranuleKey("dnb", "NOAA-20", T0)]
        stat = os.stat(tmp_path / found[0].files[0].name)
        assert found[0].complete_at >= stat.st_ctime - 1
        later = T0 + dt.timedelta(minutes=2)
        for segment in PRODUCTS["tir"]:
            (tmp_path / ".part").write_bytes(b"x")
            os.replace(tmp_path / ".part", tmp_path / format_name(segment, "npp", later, later, 70000, later))
        found = _next(deliveries, lambda found: len(found) == 2)
        assert {item.key for item in found} == {GranuleKey("dnb", "NOAA-20", T0), GranuleKey("tir", "Suomi-NPP", later)}
        os.unlink(tmp_path / format_name("SVDNB", "j01", T0, T0, 30000, T0))
        found = _next(deliveries, lambda found: len(found) == 1)
        assert [item.key for item in found] == [GranuleKey("tir", "Suomi-NPP", later)]
    finally:
        view.stop()
        view.join(2)
    assert not view.watch.is_alive()


def _next(deliveries: list, good, timeout: float = 10.0) -> list:
    return wait_until(lambda: deliveries and good(deliveries[-1]) and deliveries[-1], timeout,
                      lambda: f"a delivery like that (last: {deliveries[-1:] or 'none'})")


def test_an_operators_requeue_finds_the_complete_granules_of_its_range_only(tmp_path):
    inside, outside = T0 + dt.timedelta(minutes=5), T0 - dt.timedelta(days=10)
    for start in (inside, outside):
        for segment in PRODUCTS["btd"]:
            (tmp_path / format_name(segment, "npp", start, start, 70000, start)).write_bytes(b"x")
    found = complete_between(tmp_path, T0, T0 + dt.timedelta(minutes=10))
    assert [item.key for item in found] == [GranuleKey("btd", "Suomi-NPP", inside)]
