"""mirror_gina against the GINA double: placement, faults, hostile listings, work stealing, journal."""

import datetime as dt
import json
import os
import time
from dataclasses import dataclass

import pytest

from avoviirscollector.ondisk.state import read_placed
from tests.gina_double import GinaDouble
from tests.mirror_support import SIZES, START, Captured, SdrWatch, add_pass, run_mirror, settings_for

pytestmark = pytest.mark.gina_double(slow_seconds=1.5)  # the double of the fixture: slow_first_byte takes 1.5 s
IMAGERY_MODERATE = ["snpp-moderate", "snpp-imagery"]


def _served(double):
    return {s.name: s.md5 for s in double.served()}


def _no_stray_files(base):
    """Nothing but whole files in sdr/ and nothing left in tmp/ (except partial files kept for resume)."""
    return sorted(os.listdir(base / "tmp"))


def test_places_every_file_once_then_second_run_fetches_nothing(tmp_path, double):
    add_pass(double, granules=2)
    settings = settings_for(tmp_path / "viirs", double)
    expected = _served(double)
    with SdrWatch(settings.sdr_dir, expected) as watch:
        status, log = run_mirror(settings, IMAGERY_MODERATE)
    assert status == 0, log.lines
    assert watch.violations == []
    assert sorted(os.listdir(settings.sdr_dir)) == sorted(expected)
    assert _no_stray_files(settings.viirs_base) == []
    placed = log.starting("placed ")
    assert len(placed) == len(expected)
    assert all(" bytes=" in line and " MB/s=" in line and " connections=" in line for line in placed)
    journal = [raw for raw, _ in read_placed(settings.state_dir / "mirror_gina.journal")]
    assert sorted(r["name"] for r in journal) == sorted(expected)
    assert all(r["md5"] == expected[r["name"]] for r in journal)
    # several connections per file, reused across files: far fewer TCP connections than requests (uncapped on
    # loopback a small file can be done before the other connections start, so not every file needs several)
    assert any(int(line.split("connections=")[1].split()[0]) >= 2 for line in placed if line[7:12] == "GITCO")
    assert double.connections_accepted <= 8 < len(double.file_requests)

    requests_before = len(double.file_requests)
    status, log = run_mirror(settings, IMAGERY_MODERATE)
    assert status == 0
    assert len(double.file_requests) == requests_before
    assert len(log.lines) == 1 and log.lines[0].startswith("nothing new: 10 wanted files listed")


def test_fetch_order_newest_orbit_first_geolocation_first(tmp_path, double):
    add_pass(double, granules=1, orbit=70000)
    add_pass(double, granules=1, orbit=70001, start=START + dt.timedelta(minutes=101))  # the next orbit
    settings = settings_for(tmp_path / "viirs", double, NUM_GINA_CONNECTIONS=1)
    status, _ = run_mirror(settings, IMAGERY_MODERATE)
    assert status == 0
    first_requests = []
    for name, _range, _status in double.file_requests:
        if name not in first_requests:
            first_requests.append(name)
    assert [n.split("_")[0] + n.split("_")[5] for n in first_requests[:3]] == ["GMTCOb70001", "GITCOb70001",
                                                                                "SVM15b70001"]
    assert all("b70001" in n for n in first_requests[:5])


@pytest.mark.parametrize("fault", ["drop", "error5xx", "ignore_ranges", "short_body", "wrong_md5",
                                   "slow_first_byte", "slow_body", "html", "bad_json"])
def test_fault_never_shows_in_sdr_and_next_run_completes(tmp_path, double, fault):
    add_pass(double, granules=1)
    settings = settings_for(tmp_path / "viirs", double)
    expected = _served(double)
    double.slow_rate = 300e3
    double.set_fault(fault)
    with SdrWatch(settings.sdr_dir, expected) as watch:
        status, log = run_mirror(settings, IMAGERY_MODERATE, stall_seconds=1)
        if fault in ("wrong_md5", "html", "bad_json", "slow_first_byte"):
            assert status == 1
            assert os.listdir(settings.sdr_dir) == []
        failed = log.starting("FAILED ")
        for line in failed:  # one line: which file, why, what next
            assert "; " in line and ("next run" in line)
        if fault == "wrong_md5":
            assert len(failed) == len(expected) and all("md5 mismatch" in line for line in failed)
            assert os.listdir(settings.tmp_dir) == []
        if fault in ("html", "bad_json"):
            assert log.having("is not JSON") and log.having("the next run tries again")
        if fault == "ignore_ranges":
            assert status == 0 and log.having("ignored the range request")
        double.clear_faults()
        status, log = run_mirror(settings, IMAGERY_MODERATE, stall_seconds=1)
        assert status == 0, log.lines
    assert watch.violations == []
    assert sorted(os.listdir(settings.sdr_dir)) == sorted(expected)
    assert os.listdir(settings.tmp_dir) == []
    names = [placed.name for _, placed in read_placed(settings.state_dir / "mirror_gina.journal")]
    assert sorted(names) == sorted(expected)  # each file placed exactly once


def test_failed_piece_resumes_from_where_it_stopped(tmp_path, double):
    (item,) = double.add_granule("npp", 70000, START, segments=("GITCO",), sizes=SIZES)
    settings = settings_for(tmp_path / "viirs", double)
    double.set_fault("drop", 2)
    status, log = run_mirror(settings, ["snpp-imagery"])
    assert status == 0
    retries = log.having("retrying from byte")
    # two responses are dropped; a dropped piece may also be taken over by an idle connection before the reset
    # is seen, and then there is nothing to retry
    assert 1 <= len(retries) <= 2
    # the retry of a dropped piece asks for the bytes after those it already has, not the whole piece again
    ranges = [r for n, r, s in double.file_requests]
    for line in retries:
        first, _ = line.split("bytes ")[1].split(" failed")[0].split("-")
        resumed_at = int(line.split("retrying from byte ")[1].split()[0])
        assert resumed_at > int(first)
        assert any(r.startswith(f"bytes={resumed_at}-") for r in ranges)
    assert (settings.sdr_dir / item.name).read_bytes() == item.path.read_bytes()


def test_slow_connection_is_overtaken_by_idle_ones(tmp_path):
    with GinaDouble(tmp_path / "gina", slow_rate=20e3) as double:
        (item,) = double.add_granule("npp", 70000, START, segments=("GITCO",),
                                     sizes={"GITCO": 1_600_000})
        settings = settings_for(tmp_path / "viirs", double)
        double.set_fault("slow_body", 1)  # the probe's connection crawls at 20 kB/s
        t0 = time.monotonic()
        status, log = run_mirror(settings, ["snpp-imagery"], probe_size=32 * 1024)
        elapsed = time.monotonic() - t0
    assert status == 0
    # alone, the slow connection would need 400 kB / 20 kB/s = 20 s for its quarter of the file
    assert elapsed < 8, elapsed
    assert (settings.sdr_dir / item.name).read_bytes() == item.path.read_bytes()


def test_hostile_listing_never_writes_outside_sdr_and_tmp(tmp_path, double):
    good = add_pass(double, granules=1, segments=("SVM16",))[0]
    name = good.name
    md5 = good.md5
    hostile = [
        {"url": f"{double.url}/files/../x.h5", "md5sum": md5},
        {"url": f"{double.url}/files/..%2F..%2F{name}", "md5sum": md5},
        {"url": f"{double.url}/files/{name}/..", "md5sum": md5},
        {"url": "/etc/passwd", "md5sum": md5},
        {"url": f"file:///tmp/{name}", "md5sum": md5},
        {"url": f"http://127.0.0.2:9/{name.replace('SVM16', 'SVM15')}", "md5sum": md5},  # another host
        {"url": f"{double.url}/files/leapsec.dat", "md5sum": md5},
        {"url": f"{double.url}/files/{name}"},
        {"md5sum": md5},
        {"url": 17, "md5sum": [1]},
        {"url": f"{double.url}/files/{name}", "md5sum": "../../etc"},
        "just a string",
        None,
    ]
    for record in hostile:
        double.add_record(record)
    for i in range(20_000):  # a huge listing of junk
        double.add_record({"url": f"{double.url}/files/junk{i}.h5", "md5sum": md5, "extra": "x" * 50})
    settings = settings_for(tmp_path / "viirs", double)
    status, log = run_mirror(settings, ["snpp-moderate"], stall_seconds=1)
    assert status == 1  # the file on the unreachable host failed
    assert log.having("skipped not a VIIRS SDR granule name")
    warned = [line for line in log.at("WARNING") if line.startswith("listing for snpp: skipped ")]
    assert len(warned) == len(set(warned)) == 20_000 + 12  # one WARNING naming each unusable record (12 above)
    assert any("junk19999.h5" in line for line in warned) and any("just a string" in line for line in warned)
    assert log.having("FAILED SVM15_npp")
    assert os.listdir(settings.sdr_dir) == [name]
    outside = []
    for root, _dirs, files in os.walk(settings.viirs_base):
        rel = os.path.relpath(root, settings.viirs_base)
        if rel.split(os.sep)[0] not in ("sdr", "tmp", "state"):
            outside += [os.path.join(root, f) for f in files]
    assert outside == []
    assert not (tmp_path / "x.h5").exists() and not (settings.viirs_base / "x.h5").exists()
    # the same listing a minute later: no record is named again; one line counts them
    _, again = run_mirror(settings, ["snpp-moderate"], stall_seconds=1)
    assert not [line for line in again.at("WARNING") if "skipped" in line]
    assert again.having("listing for snpp: skipped 20012 unusable records again")


def test_journal_lines_are_complete_json(tmp_path, double):
    sizes = {s.name: s.size for s in add_pass(double, granules=1, segments=("SVM15", "SVM16"))}
    settings = settings_for(tmp_path / "viirs", double)
    assert run_mirror(settings, ["snpp-moderate"])[0] == 0
    lines = (settings.state_dir / "mirror_gina.journal").read_text().splitlines()
    assert len(lines) == 2
    for line in lines:
        record = json.loads(line)
        assert set(record) == {"time", "name", "bytes", "md5", "seconds", "connections", "listed", "station"}
        assert record["bytes"] == sizes[record["name"]] and record["station"] == "gilmore"  # the double's default
        listed, placed = (dt.datetime.fromisoformat(record[k].replace("Z", "+00:00")) for k in ("listed", "time"))
        assert listed <= placed  # first shown by this run's listing, placed after


def test_stalled_connection_is_dropped_and_its_piece_retried(tmp_path):
    with GinaDouble(tmp_path / "gina", slow_rate=300) as double:
        (item,) = double.add_granule("npp", 70000, START, segments=("SVM16",), sizes={"SVM16": 300_000})
        settings = settings_for(tmp_path / "viirs", double)
        double.set_fault("slow_body", 1)  # one response trickles at 300 B/s, below the 1 kB/s floor
        t0 = time.monotonic()
        status, log = run_mirror(settings, ["snpp-moderate"], stall_seconds=1)
        elapsed = time.monotonic() - t0
    assert status == 0
    assert log.having("failed (stalled (below 1024 B/s for 1 s)); retrying from byte")
    assert elapsed < 15  # curl's speed check averages over a few seconds before it calls the transfer stalled
    assert (settings.sdr_dir / item.name).read_bytes() == item.path.read_bytes()


def test_listing_http_error_and_refused_connection_are_one_line_each(tmp_path, double):
    import socket

    add_pass(double, granules=1, segments=("SVM16",))
    settings = settings_for(tmp_path / "viirs", double, GINA_URL=double.url + "/no/such/place")
    status, log = run_mirror(settings, ["snpp-moderate"])
    assert status == 1
    (line,) = log.having("listing for snpp")
    assert "HTTP 404 from " in line and line.endswith("the next run tries again")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    settings = settings_for(tmp_path / "viirs", double, GINA_URL=f"http://127.0.0.1:{closed}")
    status, log = run_mirror(settings, ["snpp-moderate"])
    assert status == 1
    (line,) = log.having("listing for snpp")
    assert "cannot get" in line and "Could not connect" in line and "(curl 7)" in line
    assert os.listdir(settings.sdr_dir) == []


def test_a_listing_over_the_size_cap_is_one_line_and_nothing_is_fetched(tmp_path, double, monkeypatch):
    from avoviirscollector.mirror import listing

    add_pass(double, granules=1, segments=("SVM16",))
    for i in range(2000):
        double.add_record({"url": f"{double.url}/files/junk{i}.h5", "md5sum": "0" * 32})
    monkeypatch.setattr(listing, "MAX_LISTING_BYTES", 50_000)
    settings = settings_for(tmp_path / "viirs", double)
    status, log = run_mirror(settings, ["snpp-moderate"])
    assert status == 1
    (line,) = log.having("listing for snpp")
    assert "listing larger than" in line and line.endswith("the next run tries again")
    assert os.listdir(settings.sdr_dir) == []


def test_md5_is_ready_as_the_last_byte_arrives(tmp_path):
    with GinaDouble(tmp_path / "gina", rate=400e3) as double:
        (item,) = double.add_granule("npp", 70000, START, segments=("GITCO",), sizes={"GITCO": 1_600_000})
        settings = settings_for(tmp_path / "viirs", double)
        status, log = run_mirror(settings, ["snpp-imagery"])
    assert status == 0
    (line,) = log.starting("placed ")
    assert "connections=4" in line  # pieces arrived out of order over four connections
    assert float(line.split("md5_after_last_byte=")[1].split("s")[0]) < 0.2
    assert (settings.sdr_dir / item.name).read_bytes() == item.path.read_bytes()


def test_odd_listing_records_are_one_warning_each_and_the_rest_is_fetched(tmp_path, double):
    served = add_pass(double, granules=1, segments=("GITCO", "SVI05", "SVI04"))
    odd = f"http://[::1/{served[0].name.replace('GITCO', 'SVI01')}"
    double.add_record({"url": odd, "md5sum": served[0].md5})
    double.add_raw_record("[" * 100_000 + "]" * 100_000)  # nested deeper than json's stack
    double.add_record({"url": f"{double.url}/files/{served[0].name}", "md5sum": served[0].md5, "x": [[[{}]]]})
    settings = settings_for(tmp_path / "viirs", double)
    status, log = run_mirror(settings, ["snpp-imagery"])
    assert status == 0, log.lines
    assert sorted(os.listdir(settings.sdr_dir)) == sorted(s.name for s in served)
    warnings = log.at("WARNING")
    assert len(warnings) == 2, warnings
    assert any("[::1" in w for w in warnings) and any("nested too deeply" in w for w in warnings)
    assert not log.having("Traceback")


def test_stale_temp_files_older_than_a_day_are_removed(tmp_path, double):
    import fcntl

    add_pass(double, granules=1, segments=("SVM16",))
    settings = settings_for(tmp_path / "viirs", double)
    tmp = settings.tmp_dir
    tmp.mkdir(parents=True)
    old = time.time() - 25 * 3600
    stale = ["A.h5.part", "A.h5.part.json", "B.h5.part.4242.complete", "C.h5.part.json.new"]
    kept = ["D.h5.part", "D.h5.part.json", "E.h5.part", "notes.txt"]
    for name in stale + kept:
        (tmp / name).write_bytes(b"x" * 1000)
    for name in stale + ["E.h5.part", "notes.txt"]:
        os.utime(tmp / name, (old, old))
    fd = os.open(tmp / "E.h5.part", os.O_RDWR)  # another run is fetching E right now
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        status, log = run_mirror(settings, ["snpp-moderate"])
    finally:
        os.close(fd)
    assert status == 0, log.lines
    assert sorted(os.listdir(tmp)) == sorted(kept)
    (line,) = log.having("stale temp file")
    assert line.startswith("removed 4 stale temp file(s)")


def test_equal_files_get_every_connection_one_after_another(tmp_path):
    """Four equal files, four connections capped alike: each file is fetched by all four, in turn (the probe's
    size is waited for instead of starting the next file on each idle connection)."""
    with GinaDouble(tmp_path / "gina", rate=500e3) as double:
        for segment in ("GITCO", "SVI05", "SVI04", "SVI01"):
            double.add_granule("npp", 70000, START, segments=(segment,), sizes={segment: 2_000_000})
        settings = settings_for(tmp_path / "viirs", double)
        status, log = run_mirror(settings, ["snpp-imagery"], probe_size=256 * 1024, min_piece=64 * 1024,
                                 steal_big=1024 * 1024)
    assert status == 0
    placed = log.starting("placed ")
    assert len(placed) == 4
    assert [line.split("connections=")[1].split()[0] for line in placed] == ["4"] * 4, placed
    seconds = [float(line.split("seconds=")[1].split()[0]) for line in placed]
    assert max(seconds) < 1.6, placed  # one file at a time: about 1 s each, not all four finishing at 4 s


@dataclass
class CrawlRun:
    settings: object
    status: int
    log: Captured
    elapsed: float
    accepted: int  # connections the double accepted
    items: list


def run_with_a_crawling_response(tmp_path, slow_rate: float, sizes: dict[str, int]) -> CrawlRun:
    """One run over a double capped at 500 kB/s per connection whose first response trickles at ``slow_rate``:
    one granule file per entry of ``sizes`` (segment: bytes), small pieces so every connection has work."""
    with GinaDouble(tmp_path / "gina", rate=500e3, slow_rate=slow_rate) as double:
        items = [item for segment, size in sizes.items()
                 for item in double.add_granule("npp", 70000, START, segments=(segment,), sizes={segment: size})]
        settings = settings_for(tmp_path / "viirs", double)
        double.set_fault("slow_body", 1)
        t0 = time.monotonic()
        status, log = run_mirror(settings, ["snpp-imagery"], stall_seconds=30, probe_size=256 * 1024,
                                 min_piece=64 * 1024, steal_big=1024 * 1024)
        elapsed = time.monotonic() - t0
        return CrawlRun(settings, status, log, elapsed, double.connections_accepted, items)


def test_a_connection_too_slow_to_share_by_halves_is_taken_over(tmp_path):
    """One response trickles at 5 kB/s, above curl's stall floor, among connections of 500 kB/s: an idle connection
    takes over what it has left (stealing halves would leave the slow one its last piece for half a minute)."""
    run = run_with_a_crawling_response(tmp_path, 5e3, {"GITCO": 2_000_000, "SVI05": 2_000_000,
                                                       "SVI04": 2_000_000, "SVI01": 2_000_000})
    status, log, elapsed = run.status, run.log, run.elapsed
    assert status == 0 and len(log.starting("placed ")) == 4
    assert len(log.having("is far slower than the others")) == 1
    assert elapsed < 7, elapsed  # the cap-sum floor is 4 s


def test_a_crawling_response_among_fast_ones_is_asked_again_at_once(tmp_path):
    """The aria2c comparison's stall shape, scaled down: the probe's response trickles at 2 kB/s while the other
    three connections get the cap. It is cut within a fraction of a second (not when the others' shares are done
    and an idle connection takes it over), on its own connection, and its bytes are asked for on a new one."""
    run = run_with_a_crawling_response(tmp_path, 2e3, {"GITCO": 4_000_000})
    status, log, elapsed, accepted, settings = run.status, run.log, run.elapsed, run.accepted, run.settings
    (item,) = run.items
    assert status == 0
    (line,) = log.having("is far slower than the others")
    assert "are asked for again on a new connection" in line, line
    assert accepted == 1 + 4 + 1  # the listing, four for the file, one more for the crawling one's bytes
    assert elapsed < 5, elapsed  # the cap-sum floor is 2 s; the crawling quarter alone would need 500 s
    assert (settings.sdr_dir / item.name).read_bytes() == item.path.read_bytes()
