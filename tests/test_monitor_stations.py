"""monitor's latency legs and receiving stations: every leg from the journals with a fake clock, the stations'
figures (files first, copies left alone, lead, passes seen at one station only), two stations' starts 0.1 s apart
taken for one granule, missing data skipped, the history's restart, /metrics through prometheus_client's parser and
the page's tables read back."""

from __future__ import annotations

import datetime as dt
import json
import threading
import urllib.request
from html.parser import HTMLParser

import pytest

from avoviirscollector.config import load_settings
from avoviirscollector.monitor import latency, page
from avoviirscollector.monitor.history import History
from avoviirscollector.monitor.server import Monitor, make_server
from avoviirscollector.ondisk.journal import Record, as_json, decode
from avoviirscollector.viirs import format_name
from tests.support import free_port
from tests.test_monitor import metrics, write_lines

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
T0 = NOW - dt.timedelta(hours=1)  # when the passes below were listed
GILMORE_START = dt.datetime(2026, 3, 1, 10, 50, 3, 300000)  # naive UTC, as in file names
UAFGINA_START = GILMORE_START + dt.timedelta(seconds=0.1)  # the same granule received at another station


def sdr(segment: str, platform: str = "j01", start: dt.datetime = UAFGINA_START, orbit: int = 1000,
        created: dt.datetime | None = None) -> str:
    created = created or start + dt.timedelta(minutes=5)
    return format_name(segment, platform, start, start + dt.timedelta(seconds=85), orbit, created)


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def journal(name: str, listed: dt.datetime | None, placed: dt.datetime, station: str = "uafgina") -> dict:
    record = {"time": iso(placed), "name": name, "bytes": 1000, "md5": "x", "seconds": 2.0, "connections": 4}
    if listed is not None:
        record["listed"] = iso(listed)
    if station:
        record["station"] = station
    return record


def put(task_id: int, product: str, names: list[str], at: dt.datetime | None) -> Record:
    record = {"op": "put", "task": {"id": task_id, "subject": f"/AVO/viirs/granule/{product}",
                                    "data": {"dataset": [{"uid": n, "uri": f"/viirs/sdr/{n}"} for n in names]}}}
    if at is not None:
        record["t"] = iso(at)
    return decode(record)


def take(task_id: int, product: str, platform: str, start: dt.datetime, at: dt.datetime) -> Record:
    return decode({"op": "take", "t": iso(at), "id": task_id, "kind": "handed out", "worker": "10.0.0.5",
                   "granules": [[product, platform, start.isoformat()]]})


def copy(station: str, of: str, of_station: str, listed: dt.datetime | None, of_listed: dt.datetime | None,
         noted: dt.datetime) -> dict:
    return {"station": station, "listed": listed and iso(listed), "of": of, "of_station": of_station,
            "of_listed": of_listed and iso(of_listed), "noted": iso(noted)}


def samples(h: History, leg: str) -> dict[tuple[str, str], list[float]]:
    return {(sat, station): [round(v, 3) for _, v in values]
            for (name, sat, station), values in h.samples.by_key.items() if name == leg}


def tir_granule(h: History, gilmore_start: dt.datetime = GILMORE_START) -> None:
    """A tir granule of NOAA-20 from uafgina; tasked (the task names gilmore's copies: their start is 0.1 s
    earlier) and handed out with gilmore's start."""
    now = NOW.timestamp()
    uafgina_start = gilmore_start + dt.timedelta(seconds=0.1)
    gitco, svi05 = sdr("GITCO", start=uafgina_start), sdr("SVI05", start=uafgina_start)
    h.placed_record(journal(gitco, T0, T0 + dt.timedelta(seconds=10)), now)
    h.placed_record(journal(svi05, T0 + dt.timedelta(seconds=30), T0 + dt.timedelta(seconds=45)), now)
    gilmore_names = [sdr("GITCO", start=gilmore_start), sdr("SVI05", start=gilmore_start)]
    h.broker_record(put(7, "tir", gilmore_names, T0 + dt.timedelta(seconds=50)), now)
    h.broker_record(take(7, "tir", "NOAA-20", gilmore_start, T0 + dt.timedelta(seconds=80)), now)


# -- the legs -------------------------------------------------------------------------------------------------------
def test_file_legs_from_the_name_the_listing_and_the_placement():
    h = History()
    created = dt.datetime(2026, 3, 1, 10, 56, 0)  # naive UTC, in the name
    name = sdr("SVM15", created=created)
    listed = created.replace(tzinfo=dt.UTC) + dt.timedelta(seconds=40)
    assert h.placed_record(journal(name, listed, listed + dt.timedelta(seconds=12)), NOW.timestamp())
    assert samples(h, "created_to_listed") == {("NOAA-20", "uafgina"): [40.0]}
    assert samples(h, "listed_to_placed") == {("NOAA-20", "uafgina"): [12.0]}
    hist = h.histograms["latency"]["listed_to_placed|NOAA-20|uafgina"]
    assert hist.count == 1 and hist.sum == 12.0
    assert dict(hist.buckets())["10.0"] == 0 and dict(hist.buckets())["15.0"] == 1
    assert h.counter("files_first") == {("uafgina",): 1}


def test_granule_legs_with_starts_of_two_stations_taken_for_one_granule():
    h = History()
    tir_granule(h)
    assert samples(h, "placed_to_tasked") == {("NOAA-20", "uafgina"): [5.0]}  # put 50 s, SVI05 placed at 45 s
    assert samples(h, "tasked_to_handed_out") == {("NOAA-20", "uafgina"): [30.0]}
    assert samples(h, "listed_to_handed_out") == {("NOAA-20", "uafgina"): [50.0]}  # handed 80 s, SVI05 listed 30 s
    tir = [row for row in h.granules(NOW.timestamp()) if row.key.product == "tir"]
    assert len(tir) == 1 and tir[0].complete and tir[0].tasked and tir[0].handed_out == "10.0.0.5"
    medians = h.latency_medians(NOW.timestamp())
    assert medians[("NOAA-20", "uafgina")]["listed_to_handed_out"] == (50.0, 1)
    # the same hand-out again (a journal read twice) or a second hand-out of the granule: no second sample
    h.broker_record(take(8, "tir", "NOAA-20", UAFGINA_START, T0 + dt.timedelta(seconds=300)), NOW.timestamp())
    assert samples(h, "listed_to_handed_out") == {("NOAA-20", "uafgina"): [50.0]}


def test_the_station_of_a_granule_is_its_last_files():
    h = History()
    now = NOW.timestamp()
    gitco = sdr("GITCO", platform="npp", start=GILMORE_START)  # gilmore's copy, placed last
    svi04 = sdr("SVI04", platform="npp")  # uafgina's, 0.1 s later
    h.placed_record(journal(svi04, T0, T0 + dt.timedelta(seconds=20)), now)
    h.placed_record(journal(gitco, T0 + dt.timedelta(seconds=5), T0 + dt.timedelta(seconds=60), "gilmore"), now)
    h.broker_record(put(1, "mir", [gitco, svi04], T0 + dt.timedelta(seconds=62)), now)
    h.broker_record(take(1, "mir", "Suomi-NPP", GILMORE_START, T0 + dt.timedelta(seconds=90)), now)
    assert samples(h, "placed_to_tasked") == {("Suomi-NPP", "gilmore"): [2.0]}
    assert samples(h, "listed_to_handed_out") == {("Suomi-NPP", "gilmore"): [85.0]}  # gilmore's listed at 5 s


def test_missing_data_skips_the_sample_and_makes_none_up():
    h = History()
    now = NOW.timestamp()
    # no listing time: no file legs; a record of before stations: station "unknown"
    h.placed_record(journal(sdr("GITCO"), None, T0 + dt.timedelta(seconds=10), station=""), now)
    assert samples(h, "created_to_listed") == {} and samples(h, "listed_to_placed") == {}
    assert h.counter("files_first") == {("unknown",): 1}
    # SVI05 only seen in sdr/: the granule's times are unknown; the hand-out leg needs only the put
    h.seen_in_sdr(sdr("SVI05"), (T0 + dt.timedelta(seconds=40)).timestamp(), now)
    h.broker_record(put(3, "tir", [sdr("GITCO"), sdr("SVI05")], T0 + dt.timedelta(seconds=50)), now)
    h.broker_record(take(3, "tir", "NOAA-20", UAFGINA_START, T0 + dt.timedelta(seconds=70)), now)
    assert samples(h, "placed_to_tasked") == {} and samples(h, "listed_to_handed_out") == {}
    assert samples(h, "tasked_to_handed_out") == {("NOAA-20", "unknown"): [20.0]}
    # a granule recovered with files not in the history; a compaction's put (no time) tells no put time
    other = GILMORE_START + dt.timedelta(seconds=85.35)
    h.broker_record(put(4, "tir", [sdr("GITCO", start=other), sdr("SVI05", start=other)], None), now)
    h.broker_record(take(4, "tir", "NOAA-20", other, T0 + dt.timedelta(seconds=200)), now)
    assert samples(h, "tasked_to_handed_out") == {("NOAA-20", "unknown"): [20.0]}
    assert len(h.samples) == 1


def test_a_leg_made_negative_by_clock_skew_counts_as_zero():
    h = History()
    created = dt.datetime(2026, 3, 1, 10, 56, 0)
    listed = created.replace(tzinfo=dt.UTC) - dt.timedelta(seconds=3)  # GINA's clock ahead of ours
    h.placed_record(journal(sdr("SVM16", created=created), listed, listed + dt.timedelta(seconds=9)),
                    NOW.timestamp())
    assert samples(h, "created_to_listed") == {("NOAA-20", "uafgina"): [0.0]}


def test_samples_are_kept_a_day_and_bounded(monkeypatch):
    h = History()
    now = NOW.timestamp()
    h.observe_leg("listed_to_placed", "NOAA-20", "gilmore", now - 25 * 3600, 5.0)
    h.observe_leg("listed_to_placed", "NOAA-20", "gilmore", now - 3600, 7.0)
    h.prune(now)
    assert samples(h, "listed_to_placed") == {("NOAA-20", "gilmore"): [7.0]}
    assert h.histograms["latency"]["listed_to_placed|NOAA-20|gilmore"].count == 2  # a counter: never pruned
    monkeypatch.setattr(latency, "MAX_SAMPLES", 10)
    for i in range(30):
        h.observe_leg("placed_to_tasked", "NOAA-21", "uaf5", now - 1000 + i, float(i))
    h.prune(now + 30)  # the samples are pruned at most once a minute
    assert len(h.samples) == 31
    h.prune(now + 60)
    assert len(h.samples) == 10  # the newest ten
    assert samples(h, "placed_to_tasked") == {("NOAA-21", "uaf5"): [float(i) for i in range(20, 30)]}


def test_tasks_and_hand_outs_are_forgotten_after_the_window_only():
    h = History()
    tir_granule(h)  # put and handed out at T0 + 50 s and T0 + 80 s
    h.prune(NOW.timestamp())
    assert len(h.tasked) == len(h.handed) == len(h.put_at) == 1
    held = h.tasked
    h.prune(NOW.timestamp() + 5)
    assert h.tasked is held  # nothing expired: not rebuilt (a GranuleMap's lookups cost, each poll)
    h.prune((T0 + dt.timedelta(seconds=60) + dt.timedelta(hours=25)).timestamp())  # the put is older than 25 h
    assert len(h.tasked) == len(h.put_at) == 0 and len(h.handed) == 1
    h.prune((T0 + dt.timedelta(seconds=90) + dt.timedelta(hours=25)).timestamp())
    assert len(h.handed) == 0


# -- the stations ---------------------------------------------------------------------------------------------------
PASS_A = [sdr("GITCO", orbit=1000), sdr("SVI05", orbit=1000)]  # NOAA-20 at uafgina, gilmore's copy left alone
PASS_B_START = UAFGINA_START + dt.timedelta(minutes=101)
PASS_B = [sdr("GITCO", start=PASS_B_START, orbit=1001), sdr("SVI05", start=PASS_B_START, orbit=1001)]
NPP_START = dt.datetime(2026, 3, 1, 10, 20, 0, 100000)
PASS_C_GILMORE = sdr("GITCO", platform="npp", start=NPP_START - dt.timedelta(seconds=0.1), orbit=2000)
PASS_C_UAFGINA = sdr("SVI05", platform="npp", start=NPP_START, orbit=2000)  # one granule split over two stations
PASS_D = sdr("GDNBO", platform="j02", start=NPP_START + dt.timedelta(minutes=30), orbit=3000)  # gilmore only


def station_day(h: History) -> dict:
    """Files of four passes and the copies mirror_gina noted (copies.json's content)."""
    now = NOW.timestamp()
    for index, name in enumerate(PASS_A + PASS_B + [PASS_C_UAFGINA]):
        h.placed_record(journal(name, T0 + dt.timedelta(seconds=index), T0 + dt.timedelta(seconds=60 + index)), now)
    for name in (PASS_C_GILMORE, PASS_D):
        h.placed_record(journal(name, T0, T0 + dt.timedelta(seconds=30), "gilmore"), now)
    noted = T0 + dt.timedelta(minutes=5)
    copies = {
        # gilmore listed its copy of PASS_A's GITCO 210 s after uafgina's: uafgina came first by 210 s
        sdr("GITCO", start=GILMORE_START, orbit=1000):
            copy("gilmore", PASS_A[0], "uafgina", T0 + dt.timedelta(seconds=210), T0, noted),
        # barrow's copy of gilmore's GITCO, the kept file's listing not in the note: taken from the journal
        sdr("GITCO", platform="npp", start=NPP_START + dt.timedelta(seconds=0.1), orbit=2000):
            copy("barrow", PASS_C_GILMORE, "gilmore", T0 + dt.timedelta(seconds=45), None, noted),
        # noted two days ago (copies.json keeps three): not of the window
        sdr("SVM16", orbit=900): copy("gilmore", "x", "uafgina", T0, T0, NOW - dt.timedelta(days=2)),
        "leapsec.dat": copy("gilmore", "x", "uafgina", T0, T0, noted),  # not a granule file
        sdr("SVM15", orbit=1000): {"station": "gilmore"},  # no noted time: not a note
    }
    assert h.copies_snapshot(copies, now) == 2
    return copies


def test_station_figures_files_first_copies_lead_and_one_station_passes():
    h = History()
    station_day(h)
    rows = {station: row.to_json() for station, row in h.station_stats(NOW.timestamp()).items()}
    assert rows == {
        "barrow": {"station": "barrow", "files": 0, "copies": 1, "lead_median": None, "leads": 0,
                   "one_station_passes": 0},
        "gilmore": {"station": "gilmore", "files": 2, "copies": 1, "lead_median": 45.0, "leads": 1,
                    "one_station_passes": 1},  # pass D; pass C is split between gilmore and uafgina
        "uafgina": {"station": "uafgina", "files": 5, "copies": 0, "lead_median": 210.0, "leads": 1,
                    "one_station_passes": 1},  # pass B; pass A has gilmore's copy
    }
    assert h.counter("files_first") == {("uafgina",): 5, ("gilmore",): 2}
    assert h.counter("copies_skipped") == {("gilmore",): 1, ("barrow",): 1}


def test_each_copy_is_counted_once_across_snapshots_and_restarts():
    h = History()
    copies = station_day(h)
    assert h.copies_snapshot(copies, NOW.timestamp()) == 0
    again = History.from_json(json.loads(json.dumps(h.to_json())))
    assert again.copies_snapshot(copies, NOW.timestamp() + 60) == 0
    assert again.counter("copies_skipped") == {("gilmore",): 1, ("barrow",): 1}
    # a day later the copies fall out of the window and out of the history, and are never taken again
    later = NOW.timestamp() + 26 * 3600
    again.prune(later)
    assert again.copies == {} and again.copies_snapshot(copies, later) == 0
    assert again.counter("copies_skipped") == {("gilmore",): 1, ("barrow",): 1}


def test_restart_keeps_samples_counters_stations_and_put_times():
    h = History()
    now = NOW.timestamp()
    station_day(h)
    start = UAFGINA_START + dt.timedelta(seconds=3 * 85.35)
    gitco, svi05 = sdr("GITCO", start=start), sdr("SVI05", start=start)
    h.placed_record(journal(gitco, T0, T0 + dt.timedelta(seconds=10)), now)
    h.placed_record(journal(svi05, T0, T0 + dt.timedelta(seconds=20)), now)
    h.broker_record(put(9, "tir", [gitco, svi05], T0 + dt.timedelta(seconds=25)), now)
    again = History.from_json(json.loads(json.dumps(h.to_json())))
    assert again.samples.by_key == h.samples.by_key and len(again.samples) == len(h.samples) > 0
    assert again.latency_medians(now) == h.latency_medians(now)
    assert {k: v.to_json() for k, v in again.histograms["latency"].items()} == \
        {k: v.to_json() for k, v in h.histograms["latency"].items()}
    assert {s: r.to_json() for s, r in again.station_stats(now).items()} == \
        {s: r.to_json() for s, r in h.station_stats(now).items()}
    assert again.counter("files_first") == h.counter("files_first")
    # the hand-out after the restart still finds the put's time and the granule's files
    again.broker_record(take(9, "tir", "NOAA-20", start, T0 + dt.timedelta(seconds=65)), now)
    assert samples(again, "tasked_to_handed_out") == {("NOAA-20", "uafgina"): [40.0]}
    assert samples(again, "listed_to_handed_out") == {("NOAA-20", "uafgina"): [65.0]}


def test_a_save_of_before_stations_and_latency_is_read():
    h = History()
    station_day(h)
    saved = h.to_json()
    for key in ("put_at", "copies", "samples"):
        del saved[key]
    saved["files"] = {name: value[:5] for name, value in saved["files"].items()}
    old = History.from_json(json.loads(json.dumps(saved)))
    assert len(old.files) == len(h.files) and old.copies == {} and len(old.samples) == 0
    assert {p.station for p in old.files.values()} == {""}


# -- the page -------------------------------------------------------------------------------------------------------
class Rows(HTMLParser):
    """The ``tr`` elements of one table (by id): each row's attributes and its cells' attributes."""

    def __init__(self, table: str) -> None:
        super().__init__()
        self.table, self.inside, self.rows = table, False, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.inside = attrs.get("id") == self.table
        elif self.inside and tag == "tr":
            self.rows.append({"attrs": attrs, "cells": []})
        elif self.inside and tag == "td" and self.rows:
            self.rows[-1]["cells"].append(attrs)

    def handle_endtag(self, tag):
        if tag == "table":
            self.inside = False


def table(html: str, table_id: str) -> list[dict]:
    parser = Rows(table_id)
    parser.feed(html)
    return parser.rows


def test_the_page_shows_the_latency_and_the_stations():
    h = History()
    station_day(h)
    tir_granule(h, GILMORE_START + dt.timedelta(seconds=2 * 85.35))  # a later granule of pass A
    html = page.render(page.View(now=NOW.timestamp(), history=h))
    assert "<script" not in html and 'class="latency"' in html and 'class="stations"' in html
    rows = {(r["attrs"]["data-satellite"], r["attrs"]["data-station"]): {c["data-leg"]: c for c in r["cells"]
                                                                        if "data-leg" in c}
            for r in table(html, "latency") if r["attrs"].get("class") == "latency-row"}
    assert set(rows) == {("NOAA-20", "uafgina"), ("Suomi-NPP", "uafgina"), ("Suomi-NPP", "gilmore"),
                         ("NOAA-21", "gilmore")}
    legs = rows[("NOAA-20", "uafgina")]
    assert list(legs) == list(latency.LEGS)
    assert (legs["placed_to_tasked"]["data-median"], legs["placed_to_tasked"]["data-samples"]) == ("5.0", "1")
    assert legs["listed_to_handed_out"]["data-median"] == "50.0"
    assert legs["listed_to_placed"]["data-samples"] == "6"  # PASS_A, PASS_B and the tir granule's two
    assert rows[("NOAA-21", "gilmore")]["tasked_to_handed_out"] == {"class": "num leg",
                                                                  "data-leg": "tasked_to_handed_out",
                                                                  "data-median": "", "data-samples": "0"}
    stations = {r["attrs"]["data-station"]: r["attrs"] for r in table(html, "stations")
                if r["attrs"].get("class") == "station"}
    assert stations["uafgina"]["data-files-first"] == "7" and stations["uafgina"]["data-lead"] == "210.0"
    assert stations["uafgina"]["data-one-station-passes"] == "1"
    assert stations["gilmore"]["data-copies-skipped"] == "1" and stations["gilmore"]["data-lead"] == "45.0"
    assert stations["barrow"]["data-lead"] == "" and stations["barrow"]["data-leads"] == "0"
    assert ">3.5 min <" in html  # the 210 s lead, for a person


def test_the_page_without_any_sample_says_so():
    html = page.render(page.View(now=NOW.timestamp(), history=History()))
    assert not [r for r in table(html, "latency") if r["attrs"].get("class") == "latency-row"]
    assert "no samples yet" in html and "no files placed yet" in html


# -- /metrics from the state files ----------------------------------------------------------------------------------
@pytest.fixture
def base(tmp_path):
    settings = load_settings({"VIIRS_BASE": str(tmp_path / "viirs"), "MONITOR_PORT": str(free_port())})
    settings.make_dirs()
    return settings


def test_metrics_of_latency_and_stations_from_the_journals_and_copies(base):
    scratch = History()
    copies = station_day(scratch)
    now = NOW.timestamp()
    records = [journal(name, T0 + dt.timedelta(seconds=i), T0 + dt.timedelta(seconds=60 + i))
               for i, name in enumerate(PASS_A + PASS_B + [PASS_C_UAFGINA])]
    records += [journal(name, T0, T0 + dt.timedelta(seconds=30), "gilmore") for name in (PASS_C_GILMORE, PASS_D)]
    write_lines(base.state_dir / "mirror_gina.journal", records)
    (base.state_dir / "mirror_gina.copies.json").write_text(json.dumps(copies))
    write_lines(base.state_dir / "task_queue.journal", [
        {"format": "avoviirscollector-task-queue", "version": 2, "t": iso(T0), "next_id": 1},
        as_json(put(1, "tir", PASS_A, T0 + dt.timedelta(seconds=70))),
        as_json(take(1, "tir", "NOAA-20", UAFGINA_START, T0 + dt.timedelta(seconds=100)))])
    monitor = Monitor(base, clock=lambda: now)
    monitor.poll()
    monitor.poll()  # copies.json unchanged: not read again, nothing counted twice
    server = make_server(monitor, base, host="127.0.0.1")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{base.monitor_port}/metrics", timeout=10).read().decode()
    finally:
        server.shutdown()
        server.server_close()
    got = metrics(text)
    end_to_end = (("leg", "listed_to_handed_out"), ("satellite", "NOAA-20"), ("station", "uafgina"))
    assert got[("avo_latency_seconds_count", end_to_end)] == 1
    assert got[("avo_latency_seconds_sum", end_to_end)] == 99.0  # handed out at 100 s, PASS_A's SVI05 listed at 1 s
    assert got[("avo_latency_seconds_bucket", (("le", "60.0"), *end_to_end))] == 0
    assert got[("avo_latency_seconds_bucket", (("le", "120.0"), *end_to_end))] == 1
    tasked = (("leg", "placed_to_tasked"), ("satellite", "NOAA-20"), ("station", "uafgina"))
    assert got[("avo_latency_seconds_sum", tasked)] == 9.0  # put at 70 s, PASS_A's SVI05 placed at 61 s
    assert got[("avo_latency_seconds_count", (("leg", "listed_to_placed"), ("satellite", "NOAA-20"),
                                              ("station", "uafgina")))] == 4
    assert got[("avo_files_first_total", (("station", "uafgina"),))] == 5
    assert got[("avo_files_first_total", (("station", "gilmore"),))] == 2
    assert got[("avo_station_copies_skipped_total", (("station", "gilmore"),))] == 1
    assert got[("avo_station_copies_skipped_total", (("station", "barrow"),))] == 1
    assert got[("avo_station_lead_seconds", (("station", "uafgina"),))] == 210
    assert got[("avo_station_lead_seconds", (("station", "gilmore"),))] == 45
    assert ("avo_station_lead_seconds", (("station", "barrow"),)) not in got
    assert got[("avo_passes_one_station", (("station", "uafgina"),))] == 1
    assert got[("avo_passes_one_station", (("station", "barrow"),))] == 0
    assert got[("avo_files_placed_total", (("band", "GITCO"), ("satellite", "NOAA-20")))] == 2  # unchanged metrics
    # a restart of monitor: the counters continue, nothing is counted twice
    monitor.save()
    again = Monitor(base, clock=lambda: now + 30)
    again.poll()
    assert again.history.counter("copies_skipped") == {("gilmore",): 1, ("barrow",): 1}
    assert again.history.counter("files_first") == {("uafgina",): 5, ("gilmore",): 2}
    assert again.history.histograms["latency"]["listed_to_handed_out|NOAA-20|uafgina"].count == 1
