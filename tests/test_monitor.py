"""monitor without the suite: its history (journals read once, rebuilt after downtime, bounded, saved), its
metrics through prometheus_client's own parser, its page and its HTTP server on a real socket."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from avoviirscollector.config import load_settings
from avoviirscollector.monitor import page, sources
from avoviirscollector.monitor.history import KEEP, WINDOW, History, Source
from avoviirscollector.monitor.server import LIVE_SECONDS, Monitor, make_server
from avoviirscollector.ondisk.journal import decode
from avoviirscollector.ondisk.sdr import SdrWatch
from avoviirscollector.ondisk.state import new_lines
from avoviirscollector.status import collect
from avoviirscollector.viirs import PRODUCTS, format_name
from tests.support import free_port, wait_until

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def name(segment: str, platform: str, start: dt.datetime, orbit: int = 10000) -> str:
    naive = start.replace(tzinfo=None)
    return format_name(segment, platform, naive, naive + dt.timedelta(seconds=85), orbit, naive)


def placed(segment: str, platform: str, start: dt.datetime, at: dt.datetime, size: int = 1000, **extra) -> dict:
    return {"time": at.isoformat(), "name": name(segment, platform, start), "bytes": size, "md5": "x",
            "seconds": 2.0, "connections": 4, **extra}


def metrics(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def write_lines(path: Path, records: list[dict], mode: str = "a") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as out:
        for record in records:
            out.write(json.dumps(record) + "\n")


# -- history ------------------------------------------------------------------------------------------------------
def test_a_placed_file_is_counted_once_with_its_delays():
    h = History()
    start = NOW - dt.timedelta(minutes=30)
    at = NOW - dt.timedelta(minutes=10)
    record = placed("SVI05", "j01", start, at, listed=(at - dt.timedelta(seconds=90)).isoformat())
    assert h.placed_record(record, NOW.timestamp())
    assert not h.placed_record(record, NOW.timestamp())  # the same record again (a rewritten journal)
    assert h.counter("files") == {("NOAA-20", "SVI05"): 1}
    assert h.counter("bytes") == {("NOAA-20", "SVI05"): 1000}
    assert h.histograms["acquisition"]["NOAA-20"].sum == 20 * 60
    assert h.histograms["listing"]["NOAA-20"].sum == 90
    old = placed("SVI05", "j01", start, NOW - dt.timedelta(seconds=KEEP + 60))
    old["name"] = name("SVI04", "j01", start)
    assert not h.placed_record(old, NOW.timestamp())  # older than the window: not counted


def test_listing_delay_from_the_health_record_when_the_journal_has_none():
    h = History()
    start = NOW - dt.timedelta(minutes=30)
    record = placed("SVI05", "j01", start, NOW)
    h.listing_snapshot({record["name"]: (NOW - dt.timedelta(minutes=2)).isoformat()})
    h.placed_record(record, NOW.timestamp())
    assert h.histograms["listing"]["NOAA-20"].sum == 120


def test_completeness_tasks_and_hand_outs_per_granule():
    h = History()
    start = NOW - dt.timedelta(hours=1)
    for segment in ("GITCO", "SVI05", "SVI04"):  # tir complete, mir complete, no other product
        h.placed_record(placed(segment, "npp", start, NOW - dt.timedelta(minutes=50)), NOW.timestamp())
    tir = [{"uid": name(s, "npp", start), "uri": "/x"} for s in PRODUCTS["tir"]]
    h.broker_record(decode({"op": "put", "t": NOW.isoformat(), "task": {"id": 1, "subject": "/AVO/viirs/granule/tir",
                                                                 "data": {"dataset": tir}}}), NOW.timestamp())
    h.broker_record(decode({"op": "take", "t": NOW.isoformat(), "id": 1, "kind": "handed out", "worker": "10.0.0.5",
                     "granules": [["tir", "Suomi-NPP", start.replace(tzinfo=None).isoformat()]]}), NOW.timestamp())
    rows = {row.key.product: row for row in h.granules(NOW.timestamp())}
    assert rows["tir"].complete and rows["tir"].tasked and rows["tir"].handed_out == "10.0.0.5"
    assert rows["mir"].complete and not rows["mir"].tasked
    assert not rows["btd"].complete and rows["btd"].missing == PRODUCTS["btd"]
    done = h.completeness(NOW.timestamp())
    assert done[("Suomi-NPP", "tir")] == (1, 1) and done[("Suomi-NPP", "vis")] == (0, 1)
    assert h.counter("tasked") == {("tir", "Suomi-NPP"): 1}
    assert h.counter("handed_out") == {("tir", "Suomi-NPP"): 1}


def test_events_count_their_count_and_a_rewritten_journal_counts_nothing_twice():
    h = History()
    t1 = (NOW - dt.timedelta(minutes=5)).isoformat()
    h.broker_record(decode({"op": "event", "t": t1, "kind": "bad request", "count": 7}), NOW.timestamp())
    h.broker_record(decode({"op": "event", "t": t1, "kind": "recovered"}), NOW.timestamp())
    # after a compaction the same records come again, then a new one
    newest = NOW.timestamp() - 300
    h.broker_record(decode({"op": "event", "t": t1, "kind": "bad request", "count": 7}), NOW.timestamp(), newest)
    h.broker_record(decode({"op": "event", "t": NOW.isoformat(), "kind": "bad request"}), NOW.timestamp(), newest)
    assert h.counter("bad_requests") == {(): 8}
    assert h.counter("recovered") == {(): 1}


def test_queue_gap_is_rebuilt_from_the_journal_changes():
    h = History()
    base = NOW.timestamp() - 600
    h.queue_sample(base, 2)
    changes = [(base + 130, 1), (base + 200, 1), (base + 400, -1)]
    filled = h.fill_queue_gap(changes, 3, base + 600)
    assert filled == 9
    values = [n for _, n in h.queue_samples]
    assert values == [2, 2, 3, 4, 4, 4, 4, 3, 3, 3]  # the maximum of each minute


def test_history_is_bounded_and_survives_a_save(tmp_path):
    h = History()
    now = NOW.timestamp()
    for minute in range(0, 26 * 60, 1):
        h.queue_sample(now - 26 * 3600 + minute * 60, minute % 13)
    h.placed_record(placed("SVDNB", "j02", NOW - dt.timedelta(hours=2), NOW - dt.timedelta(hours=1)), now)
    h.sources["x"] = Source((1, 2), 300, now)
    h.prune(now)
    assert len(h.queue_samples) <= WINDOW / 60 + 1
    again = History.from_json(json.loads(json.dumps(h.to_json())))
    assert again.queue_samples == h.queue_samples
    assert again.counter("files") == {("NOAA-21", "SVDNB"): 1}
    assert again.histograms["download"]["NOAA-21"].count == 1
    assert again.sources["x"].offset == 300
    with pytest.raises(ValueError):
        History.from_json({"version": 99})


# -- sources ------------------------------------------------------------------------------------------------------
def test_new_lines_follow_appends_and_rewrites(tmp_path):
    path = tmp_path / "j"
    source = Source()
    path.write_bytes(b'{"a":1}\n{"a":2}\n{"a":')
    lines, rewritten = new_lines(path, source)
    assert [json.loads(x)["a"] for x in lines] == [1, 2] and not rewritten
    with open(path, "ab") as out:
        out.write(b'3}\n')
    lines, _ = new_lines(path, source)
    assert [json.loads(x)["a"] for x in lines] == [3]
    tmp = tmp_path / "j.tmp"
    tmp.write_bytes(b'{"a":9}\n')
    os.replace(tmp, path)
    lines, rewritten = new_lines(path, source)
    assert rewritten and [json.loads(x)["a"] for x in lines] == [9]


def test_log_lines_shown_without_credentials():
    line = "2026 mirror_gina ERROR GET https://user:s3cret@nrt.example.org/products.json failed"
    assert "s3cret" not in sources.redact(line) and "https://***@nrt.example.org" in sources.redact(line)


def test_spawned_lines_of_supervisord():
    lines = [b"2026-03-01 11:00:00,250 INFO spawned: 'task_broker' with pid 12",
             b"2026-03-01 11:00:02,000 INFO success: task_broker entered RUNNING state"]
    assert list(sources.spawned(lines)) == [(dt.datetime(2026, 3, 1, 11, tzinfo=dt.UTC).timestamp() + 0.25,
                                             "task_broker")]


# -- the monitor on a VIIRS_BASE ------------------------------------------------------------------------------------
@pytest.fixture
def base(tmp_path):
    settings = load_settings({"VIIRS_BASE": str(tmp_path / "viirs"), "MONITOR_PORT": str(free_port())})
    settings.make_dirs()
    return settings


def suite_files(settings, now: dt.datetime) -> list[str]:
    """One complete tir+mir granule of NOAA-20 by mirror_gina's journal, and one of Suomi-NPP missing SVI05."""
    start = now - dt.timedelta(minutes=40)
    records = [placed(s, "j01", start, now - dt.timedelta(minutes=20), size=100) for s in ("GITCO", "SVI05", "SVI04")]
    records += [placed(s, "npp", start, now - dt.timedelta(minutes=19), size=50) for s in ("GITCO", "SVI04")]
    write_lines(settings.state_dir / "mirror_gina.journal", records)
    return [r["name"] for r in records]


def test_monitor_reads_the_state_and_serves_metrics_page_and_health(base):
    now = dt.datetime.now(dt.UTC)
    suite_files(base, now)
    write_lines(base.state_dir / "task_queue.journal", [
        {"format": "avoviirscollector-task-queue", "version": 2, "t": now.isoformat(), "next_id": 1},
        {"op": "event", "t": now.isoformat(), "kind": "bad request", "count": 3}])
    (base.state_dir / "mirror_gina.health.json").write_text(json.dumps({
        "last_run": now.isoformat(), "last_success": now.isoformat(), "last_run_summary": "placed 5",
        "pending": {name("SVI05", "npp", now - dt.timedelta(minutes=40)): now.isoformat()}}))
    monitor = Monitor(base)
    monitor.poll()
    monitor.heard({"queue length": 7, "products waiting": ["tir"], "tasks by product": {"tir": 7}})
    # the broker's last word before a stop (its queue is kept): not a queue length of 0
    monitor.heard({"queue length": 0, "products waiting": [], "tasks by product": {}, "stopping": True, "queued": 7})
    server = make_server(monitor, base, host="127.0.0.1")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{base.monitor_port}"
    try:
        text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
        got = metrics(text)
        assert got[("avo_files_placed_total", (("band", "SVI05"), ("satellite", "NOAA-20")))] == 1
        assert sum(v for (n, _), v in got.items() if n == "avo_files_placed_total") == 5
        assert got[("avo_bytes_placed_total", (("band", "GITCO"), ("satellite", "Suomi-NPP")))] == 50
        assert got[("avo_download_seconds_count", (("satellite", "NOAA-20"),))] == 3
        assert got[("avo_granules_complete", (("product", "tir"), ("satellite", "NOAA-20")))] == 1
        assert got[("avo_granules_complete", (("product", "tir"), ("satellite", "Suomi-NPP")))] == 0
        assert got[("avo_granules_complete", (("product", "mir"), ("satellite", "Suomi-NPP")))] == 1
        assert got[("avo_files_listed_not_placed", (("satellite", "Suomi-NPP"),))] == 1
        assert got[("avo_queue_length", ())] == 7
        assert got[("avo_tasks", (("product", "tir"),))] == 7
        assert got[("avo_bad_requests_total", ())] == 3
        assert got[("avo_mirror_last_success_timestamp_seconds", ())] == pytest.approx(now.timestamp(), abs=1)
        assert ("avo_filesystem_free_bytes", ()) in got
        html = urllib.request.urlopen(url + "/", timeout=10).read().decode()
        assert "<script" not in html and "http://" not in html.replace(url, "") and "https://" not in html
        assert 'data-satellite="NOAA-20"' in html and 'data-satellite="Suomi-NPP"' in html
        assert 'class="granule incomplete" data-satellite="Suomi-NPP" data-product="tir"' in html
        assert 'data-length="7"' in html and "supervisord does not answer" in html
        with pytest.raises(urllib.error.HTTPError) as err:  # no supervisord here: unhealthy, as status says
            urllib.request.urlopen(url + "/healthz", timeout=20)
        assert err.value.code == 503 and b"supervisord" in err.value.read()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(urllib.request.Request(url + "/", data=b"x", method="POST"), timeout=10)
        assert err.value.code == 405
    finally:
        server.shutdown()
        server.server_close()


def test_the_verdict_is_status_quicks_on_what_monitor_holds(base):
    """No second look: the programs, mirror_gina's health record and the disk of monitor's last poll, the broker's
    status heard within LIVE_SECONDS; the same reasons, in the same words, as avoviirscollector status --quick."""
    now = dt.datetime.now(dt.UTC)
    (base.state_dir / "mirror_gina.health.json").write_text(json.dumps({
        "last_run": now.isoformat(), "last_success": (now - dt.timedelta(hours=2)).isoformat()}))
    clock = [now.timestamp()]
    monitor = Monitor(base, clock=lambda: clock[0])
    assert monitor.verdict() is None  # nothing read yet
    monitor.poll()
    report = collect(base, lines=0, wait=0.1, du_seconds=None)  # no supervisord, no broker here
    assert monitor.verdict() == (report.healthy, report.problems) and not report.healthy
    assert report.problems[0].startswith("supervisord: ") and "no run has succeeded for 120 min" in report.problems[1]
    (base.state_dir / "mirror_gina.health.json").write_text(json.dumps({"last_success": now.isoformat()}))
    monitor.poll()
    monitor.programs, monitor.supervisor_error = [{"name": "task_broker", "state": "RUNNING"}], None
    assert monitor.verdict() == (False, [f"task_broker status not heard: no status message on port "
                                         f"{base.update_port} within 10 s"])
    monitor.heard({"queue length": 2, "products waiting": ["tir"]})
    clock[0] += LIVE_SECONDS
    assert monitor.verdict() == (True, [])
    clock[0] += 0.5
    assert monitor.verdict()[0] is False


def test_monitor_rebuilds_its_downtime_from_the_journals_and_keeps_its_history(base):
    now = dt.datetime.now(dt.UTC)
    names = suite_files(base, now)
    monitor = Monitor(base)
    monitor.poll()
    monitor.heard({"queue length": 1, "products waiting": ["tir"]})
    monitor.save()
    # while monitor is down: mirror_gina places two files more, the broker's journal is written
    more = [placed("SVM15", "j01", now - dt.timedelta(minutes=40), now),
            placed("SVM16", "j01", now - dt.timedelta(minutes=40), now)]
    write_lines(base.state_dir / "mirror_gina.journal", more)
    again = Monitor(base)
    again.poll()
    files = again.history.counter("files")
    assert sum(files.values()) == len(names) + 2  # the five it had, the two of its downtime, none twice
    assert len(again.history.queue_samples) >= 1
    assert b"NOAA-20" in again.page()


def _watched(monitor: Monitor, settings) -> SdrWatch:
    watch = SdrWatch(settings.sdr_dir, monitor.new_in_sdr, interval=0.1)
    watch.start()
    assert watch.ready.wait(10)
    return watch


def _until(monitor: Monitor, product: str, wanted: tuple[int, int], timeout: float = 10.0) -> None:
    def completeness() -> tuple[int, int] | None:
        monitor.poll()
        return monitor.history.completeness(time.time()).get(("NOAA-20", product))

    wait_until(lambda: completeness() == wanted, timeout,
               lambda: f"{product} of NOAA-20 {wanted} (now {completeness()})")


def test_a_file_put_into_sdr_by_hand_counts_and_one_removed_by_hand_stops_counting(base):
    """monitor's view of sdr/ (a real inotify watch): a granule placed by hand (no journal) is complete; a file of it
    removed makes it incomplete, put back complete again; one removed while monitor is stopped is gone after the
    next start's full pass."""
    monitor = Monitor(base)
    watch = _watched(monitor, base)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)
    files = [base.sdr_dir / name(segment, "j01", start) for segment in PRODUCTS["tir"]]
    try:
        for path in files:
            path.write_bytes(b"x")
        _until(monitor, "tir", (1, 1))
        files[0].unlink()
        _until(monitor, "tir", (0, 1))
        files[0].write_bytes(b"x")
        _until(monitor, "tir", (1, 1))
        monitor.save()
    finally:
        watch.stop()
        watch.join(5)
    files[1].unlink()  # while monitor is not watching
    again = Monitor(base)
    assert again.history.completeness(time.time()).get(("NOAA-20", "tir")) == (1, 1)  # as saved
    watch = _watched(again, base)
    try:
        _until(again, "tir", (0, 1))
    finally:
        watch.stop()
        watch.join(5)


def _place_a_day_of_passes(h: History, now: float) -> None:
    """14 passes of 12 granules of each satellite in the last day, every segment of every product placed 20 minutes
    after the granule's start, but SVM16 of each pass's sixth granule."""
    segments = {s for segs in PRODUCTS.values() for s in segs}
    for sat_index, platform in enumerate(("npp", "j01", "j02")):
        for orbit in range(14):
            for granule in range(12):
                start = NOW - dt.timedelta(hours=23) + dt.timedelta(minutes=101 * orbit + 25 * sat_index,
                                                                    seconds=86 * granule)
                at = start + dt.timedelta(minutes=20)
                for segment in segments - ({"SVM16"} if granule == 5 else set()):
                    h.placed_record(placed(segment, platform, start, at), now)


def test_page_renders_a_day_of_passes_quickly():
    h = History()
    now = NOW.timestamp()
    _place_a_day_of_passes(h, now)
    for minute in range(1440):
        h.queue_sample(now - WINDOW + minute * 60, minute % 14)
    started = time.perf_counter()
    html = page.render(page.View(now=now, history=h, live={"queue length": 3}))
    assert time.perf_counter() - started < 2.0
    assert html.count('class="granule incomplete') >= 1 and html.count("<svg") >= 3


def test_the_page_of_a_standby_shows_its_own_queue_and_the_pair():
    """A standby's status says no task waits (0): the page shows what it queues, its role and the link."""
    pair = {"role": "BACKUP", "serving": False, "peer": "192.0.2.11", "link": "alone",
            "alone since": "2026-12-04T03:09:47Z"}
    live = {"queue length": 0, "products waiting": [], "standby": True, "queued": 4, "pair": pair}
    html = page.render(page.View(now=NOW.timestamp(), history=History(), live=live))
    assert 'data-length="4"' in html
    assert ('<div id="pair" class="bad" data-role="BACKUP" data-link="alone">pair: this host BACKUP, hands out '
            'nothing; the other host 192.0.2.11: link alone since 2026-12-04T03:09:47Z') in html
    assert 'id="pair" class="ok"' in page.render(page.View(now=NOW.timestamp(), history=History(),
                                                           live={**live, "pair": {**pair, "link": "whole"}}))


def test_allowed_clients_gate_the_monitor_port(tmp_path):
    settings = load_settings({"VIIRS_BASE": str(tmp_path / "viirs"), "MONITOR_PORT": str(free_port()),
                              "ALLOWED_CLIENTS": "10.9.9.9"})
    server = make_server(Monitor(settings), settings, host="127.0.0.1")
    try:
        assert server.verify_request(None, ("10.9.9.9", 40000))
        assert server.verify_request(None, ("127.0.0.1", 40000))  # this host's own probes (HEALTHCHECK)
        assert not server.verify_request(None, ("192.0.2.7", 40000))
        assert server.gate.refusals.total == 1
    finally:
        server.server_close()
