"""Failure memory of mirror_gina (issue 9, item 4): a file failing by its own fault (404, md5, not HDF5) is tried
again later and later, then given up on with one ERROR line (mailed), and avo_status lists it; an outage of GINA
(a listing fails, or most files fail at once) puts no file into backoff."""

from __future__ import annotations

import datetime as dt
import json

from avoviirscollector.mirror.backoff import FailureMemory
from avoviirscollector.mirror.state_files import SkippedRecords
from avoviirscollector.status import collect, render_text
from avoviirscollector.viirs import format_name
from tests.mirror_support import START, add_pass, run_mirror, settings_for


def _backoff_over(settings):
    """Time passes: every backoff is over."""
    path = settings.state_dir / "mirror_gina.failures.json"
    files = json.loads(path.read_text())
    for entry in files.values():
        entry["not_before"] = "2000-01-01T00:00:00Z"
    path.write_text(json.dumps(files))


def test_missing_file_backs_off_then_is_given_up_and_listed_by_status(tmp_path, double):
    served = add_pass(double, granules=1, segments=("GITCO", "SVI05"))
    missing = format_name("SVI04", "npp", START, START + dt.timedelta(seconds=85), 70000, START)
    double.add_record({"url": f"{double.url}/files/{missing}", "md5sum": served[0].md5})  # answers 404
    settings = settings_for(tmp_path / "viirs", double, MIRROR_GIVE_UP_TRIES=3)

    status, log = run_mirror(settings, ["snpp-imagery"])
    assert status == 1
    assert log.having(f"FAILED {missing}: HTTP 404")
    assert sorted(p.name for p in settings.sdr_dir.iterdir()) == sorted(s.name for s in served)
    entry = json.loads((settings.state_dir / "mirror_gina.failures.json").read_text())[missing]
    assert entry["tries"] == 1 and "404" in entry["reason"]

    status, log = run_mirror(settings, ["snpp-imagery"])  # a minute later: still in backoff
    assert not log.having(missing)
    assert log.having("not fetched now: 1 file(s) waiting after failing (backoff), 0 given up on")

    for _ in (2, 3):
        _backoff_over(settings)
        status, log = run_mirror(settings, ["snpp-imagery"])
        assert status == 1 and log.having(f"FAILED {missing}: HTTP 404")
    (line,) = log.at("ERROR")[-1:]
    assert line.startswith(f"giving up on {missing} after 3 tries (last: HTTP 404)")

    _backoff_over(settings)
    status, log = run_mirror(settings, ["snpp-imagery"])
    assert not log.having(f"FAILED {missing}")
    assert log.having("0 file(s) waiting after failing (backoff), 1 given up on")

    report = collect(settings, wait=0.1, du_seconds=None)
    assert [item["name"] for item in report.given_up] == [missing]
    assert f"{missing}  3 tries, last: HTTP 404" in render_text(report)


def test_most_files_failing_at_once_is_an_outage_and_puts_nothing_into_backoff(tmp_path, double):
    add_pass(double, granules=2, segments=("GITCO", "SVI05"))
    settings = settings_for(tmp_path / "viirs", double, MIRROR_GIVE_UP_TRIES=1)
    double.set_fault("wrong_md5")
    status, log = run_mirror(settings, ["snpp-imagery"])
    assert status == 1
    assert log.having("4 of 4 files failed at once (or a listing failed): taken for an outage of GINA")
    assert FailureMemory(settings.state_dir, 1).files == {}
    double.clear_faults()
    status, log = run_mirror(settings, ["snpp-imagery"])
    assert status == 0 and len(log.starting("placed ")) == 4


def test_each_unusable_record_is_named_once_a_day(tmp_path):
    skipped = SkippedRecords(tmp_path)
    now = dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)
    assert skipped.to_name([], now) == []
    assert skipped.to_name(["bad a", "bad b", "bad a"], now) == ["bad a", "bad b"]
    assert skipped.to_name(["bad b", "bad a"], now + dt.timedelta(minutes=1)) == []
    assert skipped.to_name(["bad a", "bad c"], now + dt.timedelta(hours=2)) == ["bad c"]
    assert skipped.to_name(["bad a", "bad c"], now + dt.timedelta(hours=24, minutes=1)) == ["bad a"]
    (tmp_path / "mirror_gina.skipped.json").write_text("{not json")  # damaged: read as empty, rewritten
    assert skipped.to_name(["bad c"], now + dt.timedelta(hours=25)) == ["bad c"]
    (tmp_path / "mirror_gina.skipped.json.new").mkdir()  # the file cannot be written (as on a full disk):
    assert skipped.to_name(["bad c", "bad c"], now + dt.timedelta(hours=25)) == ["bad c"]  # nothing is remembered
