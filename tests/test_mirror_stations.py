"""Every pass, from whichever receiving station has it first, within seconds of its listing (issue 14): the planner's
rules (pure), then mirror_gina against the GINA double with two stations, polling rounds, minute bounds and ETags."""

from __future__ import annotations

import datetime as dt
import json
import time

from avoviirscollector.granules import GranuleMap
from avoviirscollector.mirror.engine import next_round
from avoviirscollector.mirror.listing import ListingClient, fetch_listing
from avoviirscollector.mirror.listing_records import parse_records
from avoviirscollector.mirror.plan import granule_file, placed_file, plan_jobs
from avoviirscollector.mirror.queues import Queue
from avoviirscollector.mirror.window import listing_window
from avoviirscollector.viirs import format_name, parse_name
from tests.mirror_support import SIZES, START, run_mirror, settings_for

BASE = "http://gina.example"
MD5 = "0123456789abcdef0123456789abcdef"
T0 = dt.datetime(2026, 11, 23, 10, 0, 3, 600000)
QUEUES = [Queue("m", "snpp", r"^(GMTCO|SVM1[56])_"), Queue("i", "snpp", r"^(GITCO|SVI05)_")]


def name(segment: str, start: dt.datetime = T0, minutes: float = 9.0, orbit: int = 70000) -> str:
    return format_name(segment, "npp", start, T0 + dt.timedelta(seconds=85.4), orbit,
                       start + dt.timedelta(minutes=minutes))


def records(*named: tuple[str, str]):
    """Listing records of (file name, station) pairs ("" station: the record says none)."""
    items = [{"url": f"{BASE}/{n}", "md5sum": MD5, **({"facility": s} if s else {})} for n, s in named]
    return parse_records(items, BASE)[0]


OTHER = T0 + dt.timedelta(seconds=0.1)  # the second station's copy of the granule starting at T0


# -- the planner ---------------------------------------------------------------------------------------------------
def test_of_two_stations_copies_the_one_listed_first_is_fetched_the_other_left_alone():
    gilmore, uafgina = name("SVM16"), name("SVM16", OTHER, minutes=12.5)
    listed = {gilmore: "2026-11-23T10:20:00Z", uafgina: "2026-11-23T10:19:30Z"}  # uafgina listed it first
    plan = plan_jobs(records((gilmore, "gilmore"), (uafgina, "uafgina")), QUEUES, set(), first_listed=listed)
    assert [job.name for job in plan.jobs] == [uafgina] and plan.stations == {uafgina: "uafgina"}
    assert [(c.name, c.station, c.of, c.of_station) for c in plan.copies] == [(gilmore, "gilmore", uafgina,
                                                                              "uafgina")]
    # listed in the same listing: the one made first
    plan = plan_jobs(records((uafgina, "uafgina"), (gilmore, "gilmore")), QUEUES, set())
    assert [job.name for job in plan.jobs] == [gilmore]


def test_a_copy_of_a_file_placed_before_is_left_alone_and_a_reissue_is_fetched():
    placed = GranuleMap()
    placed.setdefault(*placed_file(name("SVM16"), "gilmore"))
    assert placed_file(name("SVM16"), "gilmore")[0] == granule_file(parse_name(name("SVM16")))
    copy, reissue = name("SVM16", OTHER, minutes=12.5), name("SVM16", minutes=45)
    plan = plan_jobs(records((copy, "uafgina"), (reissue, "gilmore")), QUEUES, {name("SVM16")}, placed)
    assert [job.name for job in plan.jobs] == [reissue]
    assert [(c.name, c.of) for c in plan.copies] == [(copy, name("SVM16"))]
    assert plan.counts["m"] == (2, 0)


def test_without_station_names_another_stations_copy_is_told_by_its_start():
    """GINA's records may name no station: a copy 0.1 s off in start is another station's, the same start with a
    later creation a reissue."""
    copy, reissue = name("SVM15", OTHER, minutes=12.5), name("SVM15", minutes=45)
    plan = plan_jobs(records((name("SVM15"), ""), (copy, ""), (reissue, "")), QUEUES, set())
    assert sorted(job.name for job in plan.jobs) == sorted([name("SVM15"), reissue])
    assert [c.name for c in plan.copies] == [copy]


def test_a_granule_split_between_stations_is_fetched_whole_and_a_copy_that_fails_gives_way():
    split = [(name("GMTCO"), "gilmore"), (name("SVM15"), "gilmore"), (name("SVM16", OTHER, minutes=12), "uafgina")]
    assert len(plan_jobs(records(*split), QUEUES, set()).jobs) == 3
    # the first station's copy waits after failing (404 at that station, say): the other station's is fetched
    gilmore, uafgina = name("SVM16"), name("SVM16", OTHER, minutes=12)
    plan = plan_jobs(records((gilmore, "gilmore"), (uafgina, "uafgina")), QUEUES, set(),
                     waiting_of=lambda n: "backoff" if n == gilmore else None)
    assert [job.name for job in plan.jobs] == [uafgina] and plan.waiting == {gilmore: "backoff"}
    assert plan.copies == []


def test_rounds_come_every_poll_seconds_until_the_next_minutes_run_is_due():
    minute = 1_800_000_000 - 1_800_000_000 % 60
    assert next_round(minute + 0.2, minute + 1.0, 15) == minute + 15.2
    assert next_round(minute + 45.2, minute + 46.0, 15) is None  # 60.2: the next run lists then
    assert next_round(minute + 40.0, minute + 59.2, 15) is None  # a round that took long: too close to the minute
    assert next_round(minute + 40.0, minute + 57.0, 15) == minute + 57.0  # at once
    late = next_round(minute + 30.0, minute + 75.0, 15)  # a round ran past the minute (cron skipped that run)
    assert late == minute + 75.0  # at once, and on until the next minute
    assert next_round(minute, minute + 1, 0) is None  # polling off: one round a run
    assert next_round(minute, minute + 1, 5, until=minute + 4) is None and next_round(minute, minute + 1, 5,
                                                                                      until=minute + 6) == minute + 5


# -- against the GINA double ---------------------------------------------------------------------------------------
SEGMENTS = ("GITCO", "GMTCO", "SVM15", "SVM16", "SVI05")


def test_a_pass_at_two_stations_is_fetched_once_from_the_station_that_listed_it_first(tmp_path, double):
    now = time.time()
    both = double.add_granule_at_stations("npp", 70000, START, segments=SEGMENTS, sizes=SIZES,
                                          listed_at=[now + 3600, now])  # uafgina lists it first
    gilmore_only = double.add_granule("npp", 70000, START + dt.timedelta(seconds=85.4), segments=SEGMENTS,
                                      sizes=SIZES, station="gilmore")
    settings = settings_for(tmp_path / "viirs", double)
    status, log = run_mirror(settings, ["snpp-moderate", "snpp-imagery"])
    assert status == 0, log.lines
    uafgina = [s for s in both if s.station == "uafgina"]
    placed = {line.split()[1] for line in log.starting("placed ")}
    assert placed == {s.name for s in uafgina + gilmore_only}
    served = double.bytes_served()
    gilmores_copy = {s.name for s in both if s.station == "gilmore"}
    assert not [request for request in double.file_requests if request[0] in gilmores_copy]
    assert set(served["stations"]) == {"uafgina", "gilmore"}  # every byte of the two-station granule from uafgina
    assert served["stations"]["uafgina"] >= sum(s.size for s in uafgina)
    # gilmore lists its copy an hour later: one copy fetched, the other left alone, each noted once
    double.list_at([s.name for s in both])
    status, log = run_mirror(settings, ["snpp-moderate", "snpp-imagery"])
    assert status == 0 and not log.starting("placed ")
    assert double.bytes_served()["files"] == served["files"]
    (line,) = log.having("left alone")
    assert "left alone 5 copies of granule files another station listed first (5 from gilmore)" in line
    copies = json.loads((settings.state_dir / "mirror_gina.copies.json").read_text())
    assert {entry["of_station"] for entry in copies.values()} == {"uafgina"} and len(copies) == 5
    assert all(entry["station"] == "gilmore" and entry["of"] in placed for entry in copies.values())
    journal = [json.loads(line) for line in (settings.state_dir / "mirror_gina.journal").read_text().splitlines()]
    assert {r["name"]: r["station"] for r in journal} == {s.name: s.station for s in uafgina + gilmore_only}
    status, log = run_mirror(settings, ["snpp-moderate", "snpp-imagery"])
    assert status == 0 and not log.having("left alone")  # noted before: not again


def test_one_named_station_sees_its_own_passes_only(tmp_path, double):
    double.add_granule("npp", 70000, START, segments=SEGMENTS, sizes=SIZES, station="uafgina")
    mine = double.add_granule("npp", 70000, START + dt.timedelta(seconds=85.4), segments=SEGMENTS, sizes=SIZES,
                              station="gilmore")
    settings = settings_for(tmp_path / "viirs", double, VIIRS_FACILITY="gilmore")
    status, log = run_mirror(settings, ["snpp-moderate", "snpp-imagery"])
    assert status == 0
    assert {line.split()[1] for line in log.starting("placed ")} == {s.name for s in mine}
    assert double.listing_requests[-1]["facilities[]"] == ["gilmore"]


def test_a_run_polls_and_fetches_what_is_listed_meanwhile_within_seconds(tmp_path, double):
    """One run, rounds every 5 s: a granule GINA lists two seconds into the run is placed by the run's next round;
    the rounds between full listings ask by minutes, and a query answered before is asked with If-None-Match."""
    settings = settings_for(tmp_path / "viirs", double, MIRROR_POLL_SECONDS=5)
    later = double.add_granule("npp", 70000, START, segments=("GITCO",), sizes=SIZES, listed_at=time.time() + 2)
    began = time.monotonic()
    status, log = run_mirror(settings, ["snpp-imagery"], once=False, run_for=11)
    assert status == 0, log.lines
    assert log.starting(f"placed {later[0].name}")
    assert 10 <= time.monotonic() - began < 14
    queries = double.listing_requests
    assert len(queries) == 3  # at 0, 5 and 10 s
    assert len(queries[0]["start_date"][0]) == 10 and all(len(q["start_date"][0]) == 15 for q in queries[1:])


def test_a_listing_asked_again_is_answered_with_304_and_gives_the_same_records(double):
    double.add_granule("npp", 70000, START, segments=("GITCO", "SVI05"), sizes=SIZES)
    client = ListingClient()
    key = ("snpp", "viirs", "level1", (), 2)
    window = listing_window(dt.datetime.now(dt.UTC), dt.datetime.now(dt.UTC), 2, poll=True)
    try:
        first, _ = fetch_listing(client, double.url, key, window)
        again, _ = fetch_listing(client, double.url, key, window)
        full = double.bytes_served()
        assert first == again and len(first) == 2
        assert full["not_modified"] == client.not_modified == 1 and full["listing_requests"] == 2
        double.add_granule("npp", 70000, START + dt.timedelta(seconds=85.4), segments=("GITCO",), sizes=SIZES)
        changed, _ = fetch_listing(client, double.url, key, window)
        assert len(changed) == 3 and double.bytes_served()["not_modified"] == 1
    finally:
        client.close()


def test_without_etags_from_the_server_every_listing_is_answered_in_full(tmp_path, double):
    double.set_fault("no_etag")
    double.add_granule("npp", 70000, START, segments=("GITCO",), sizes=SIZES)
    settings = settings_for(tmp_path / "viirs", double, MIRROR_POLL_SECONDS=5)
    status, _ = run_mirror(settings, ["snpp-imagery"], once=False, run_for=6)
    assert status == 0 and double.bytes_served()["not_modified"] == 0
    assert len(double.listing_requests) == 2
