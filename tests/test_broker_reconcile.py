"""Reconciliation with sdr/ (broker/reconcile.py): which complete granules are recovered, when, and why."""

from __future__ import annotations

import datetime as dt
import os

from avoviirscollector.broker.reconcile import (
    GRACE_SECONDS,
    Planner,
    SdrView,
    complete_between,
    gatherer_timeouts,
)
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


def announce(planner: Planner, item: OnDisk, now: float) -> None:
    for name in item.files:
        planner.live.file(name.name, now)


def deliver(planner: Planner, item: OnDisk, now: float) -> None:
    planner.live.dataset(item.key.product, [item.key], [item.key], now)


def granules(product: str, count: int, first_complete: float, start=T0) -> list[OnDisk]:
    """``count`` consecutive granules of one satellite, completed on disk one a second from ``first_complete``."""
    return [on_disk(product, complete_at=first_complete + n, start=start + dt.timedelta(seconds=85.35 * n))
            for n in range(count)]


def test_the_case_is_named():
    planner = Planner(3600, 0, started_at=500, timeouts={"btd": 600})
    assert "not following the bus" in planner.case(on_disk(complete_at=400))
    assert "late file" in planner.case(on_disk(complete_at=1700, first_at=1000))
    silent = on_disk(complete_at=700, first_at=650)
    assert planner.case(silent) == ("trollstalker announced no file message for its GMTCO, SVM15, SVM16 (stopped or "
                                    "restarting when they were placed)")
    announce(planner, silent, 701)
    assert "no dataset from segment_gatherer-btd within 10 s of its files' messages (stopped" in planner.case(silent)
    later = on_disk(complete_at=705, start=T0 + dt.timedelta(seconds=85.35))
    announce(planner, later, 706)
    deliver(planner, later, 707)
    planner.live.learn([silent, later], 708)
    assert "segment_gatherer-btd went on to later granules without a dataset" in planner.case(silent)


def test_a_burst_that_a_gatherer_is_still_working_through_is_not_recovered():
    """A hundred granules complete on disk within 100 s; the gatherer delivers one every 2 s, in order, so the last
    ones' datasets come more than a minute after their files: none is recovered while it keeps delivering, and
    when it stops (here after 80 of them) the rest are, GRACE_SECONDS after its last dataset."""
    planner = Planner(window_seconds=3600, ledger_since=0, started_at=0)
    burst = granules("dnb", 100, first_complete=1000)
    for item in burst:
        announce(planner, item, item.complete_at + 0.05)
    recovered = []
    for step in range(0, 260):
        now = 1000 + step
        if step % 2 == 0 and step // 2 < 80:
            deliver(planner, burst[step // 2], now)
        known = {item.key for item in burst[:min(80, step // 2 + 1)]}
        recovered += [r.key for r in planner.plan(burst, known.__contains__, now)]
        if step == 158:
            assert recovered == []  # 100 s after the last file: the gatherer is still publishing
    assert recovered == [item.key for item in burst[80:]]
    assert "no dataset from segment_gatherer-dnb" in planner.case(burst[80])


def test_a_granule_the_gatherer_went_past_is_recovered_while_the_burst_goes_on():
    planner = Planner(window_seconds=3600, ledger_since=0, started_at=0)
    burst = granules("tir", 30, first_complete=1000)
    for item in burst:
        announce(planner, item, item.complete_at)
    lost = burst[3]
    recovered = []
    for step in range(60):
        now = 1000 + step
        if step % 2 == 0 and step // 2 != 3:
            deliver(planner, burst[step // 2], now)
        known = {item.key for item in burst[:step // 2 + 1]} - {lost.key}
        recovered += [(now, r.key) for r in planner.plan(burst, known.__contains__, now)]
    assert [key for _, key in recovered] == [lost.key]
    assert recovered[0][0] <= lost.complete_at + GRACE_SECONDS + 1  # not held up by the rest of the burst
    assert "went on to later granules" in planner.case(lost)


def test_files_trollstalker_has_not_reached_yet_wait_and_files_it_went_past_are_recovered():
    planner = Planner(window_seconds=3600, ledger_since=0, started_at=0)
    burst = granules("mir", 40, first_complete=1000)  # all on disk at 1000..1039; trollstalker announces 1 a second
    skipped = burst[5]
    recovered = []
    for step in range(90):
        now = 1000 + step
        if step < 40 and step != 5:
            announce(planner, burst[step], now + 30)  # 30 s behind: a backlog
        recovered += [r.key for r in planner.plan(burst, lambda key: False if key == skipped.key else True, now)]
    assert recovered == [skipped.key]
    assert "trollstalker announced no file message for its GITCO, SVI04" in planner.case(skipped)


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
