"""End to end: the supervised suite with the GINA double; mirror_gina places files, task_broker queues and hands out
tasks, and monitor's /metrics (read with prometheus_client's own parser), / (rendered by headless Chromium) and
/healthz say what happened; after monitor's own downtime the missed files are counted from the journal.

The page's screenshot is kept as a test artifact: ``$AVO_TEST_ARTIFACTS`` (default ``test-artifacts/`` in the
repo) / ``monitor.png``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from avoviirscollector.viirs import PRODUCTS
from tests.e2e.harness import BIN, REPO, Suite
from tests.gina_double import GinaDouble, Schedule
from tests.mirror_support import SIZES
from tests.support import request, wait_until

pytestmark = pytest.mark.e2e

MIRROR = [sys.executable, "-m", "avoviirscollector.mirror.cli", "--once", "--stall-seconds", "2"]
QUEUES = ["--queue", "snpp-moderate", "--queue", "snpp-imagery", "--queue", "snpp-dnb",
          "--queue", "noaa20-moderate", "--queue", "noaa20-imagery", "--queue", "noaa20-dnb"]
SEGMENTS = sorted({seg for segs in PRODUCTS.values() for seg in segs})
ARTIFACTS = Path(os.environ.get("AVO_TEST_ARTIFACTS", REPO / "test-artifacts"))


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def metrics(url: str) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(got: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in got.items() if n == name and all((k, v2) in ls for k, v2 in labels.items()))


def _up(got: dict) -> dict[str, float]:
    """avo_program_up of each program."""
    return {labels[0][1]: value for (name, labels), value in got.items() if name == "avo_program_up"}


def _placed_and_tasked(url: str, placed: int) -> dict:
    """The metrics once ``placed`` files and 9 tasks are in (every product of npp's granule, all but tir of j01's),
    from a poll of supervisord made after cron started (the monitor asks it every POLL_SECONDS: on a busy host the
    poll that sees the tasks may come before cron ran)."""
    return wait_metrics(url, lambda m: total(m, "avo_files_placed_total") == placed
                        and m.get(("avo_queue_length", ())) == 9 and _up(m).get("cron") == 1, timeout=90)


def wait_metrics(url: str, predicate, timeout: float = 60) -> dict:
    """The monitor's metrics once ``predicate`` holds for them (a page not served yet counts as no metrics)."""
    got: dict = {}

    def matching() -> dict | None:
        got.clear()
        try:
            got.update(metrics(url))
        except OSError:
            return None
        return dict(got) if got and predicate(got) else None

    return wait_until(matching, timeout, lambda: "metrics matching: last "
                      f"{ {k: v for k, v in got.items() if not k[0].startswith('avo_download')} }", every=1)


@pytest.fixture
def suite(mirrored_suite):
    """The suite of these tests: GINA_URL on the double and cron stopped, so that the tests' own mirror_gina runs
    fetch (see :func:`mirror_run`)."""
    return mirrored_suite


def mirror_run(suite: Suite) -> None:
    """One mirror_gina run of the test's, as cron would start it (cron is stopped: a run of its own, started at a
    minute's turn, would hold the queues' locks and this run would skip them: nothing fetched)."""
    proc = subprocess.run(MIRROR + QUEUES, env=suite.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _serve_npp_whole_and_j01_without_svi05(double: GinaDouble) -> list:
    """The files of two granules served by the GINA double, one pass of each satellite from about 20 minutes ago:
    every segment of npp's, all but SVI05 of j01's (so j01's tir lacks a file)."""
    schedule = Schedule()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    npp = schedule.latest("npp", now - dt.timedelta(minutes=20), 1)[0]
    j01 = schedule.latest("j01", now - dt.timedelta(minutes=20), 1)[0]
    served = double.add_scheduled(npp, segments=SEGMENTS, sizes=SIZES)
    served += double.add_scheduled(j01, segments=[s for s in SEGMENTS if s != "SVI05"], sizes=SIZES)  # tir lacks
    return served


def _healthz_status(url: str) -> int:
    """The HTTP status of the monitor's /healthz (an error status too)."""
    try:
        return urllib.request.urlopen(url + "/healthz", timeout=20).status
    except urllib.error.HTTPError as err:
        return err.code


def _headless_chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """``browser`` run headless with ``args`` (and its profile in ``profile``), its output as text."""
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--no-first-run", f"--user-data-dir={profile}", "--hide-scrollbars"]
    return subprocess.run([*common, *args], capture_output=True, text=True, timeout=120)


def _rendered_page(browser: str, profile: Path, url: str) -> str:
    """The monitor's page (at ``url``/) as headless ``browser`` renders it: its DOM."""
    dom = _headless_chromium(browser, profile, "--dump-dom", url + "/")
    assert dom.returncode == 0, dom.stderr[-2000:]
    return dom.stdout


def _granule_cells(html: str) -> list[tuple[str, str, str, str, str]]:
    """(class, satellite, product, files there, files needed) of each granule's cell of the page."""
    return re.findall(r'<rect class="granule ([a-z -]+)" data-satellite="([^"]+)" data-product="(\w+)" '
                      r'data-start="[^"]+" data-files="(\d+)/(\d+)"', html)


def test_metrics_page_and_health_tell_what_the_suite_did(suite, double, tmp_path):
    url = f"http://127.0.0.1:{suite.settings.monitor_port}"
    served = _serve_npp_whole_and_j01_without_svi05(double)
    mirror_run(suite)
    suite.supervisorctl("start", "cron")  # stopped while the test's run fetched (its run would hold the queues' locks)
    placed = len(served)  # 12 + 11 files
    got = _placed_and_tasked(url, placed)
    assert total(got, "avo_files_placed_total", satellite="NOAA-20") == 11
    assert total(got, "avo_files_placed_total", satellite="Suomi-NPP", band="SVI05") == 1
    assert total(got, "avo_bytes_placed_total") == sum(s.size for s in served)
    assert total(got, "avo_download_seconds_count") == placed
    assert total(got, "avo_acquisition_delay_seconds_count", satellite="Suomi-NPP") == 12
    assert total(got, "avo_listing_delay_seconds_count") == placed  # mirror_gina's journal says when first listed
    assert got[("avo_mirror_last_success_timestamp_seconds", ())] > time.time() - 300  # its health record
    assert got[("avo_granules_complete", (("product", "tir"), ("satellite", "NOAA-20")))] == 0
    assert got[("avo_granules_complete", (("product", "tir"), ("satellite", "Suomi-NPP")))] == 1
    assert total(got, "avo_granules_complete") == 9 and total(got, "avo_granules_expected") == 10
    assert got[("avo_tasks", (("product", "tir"),))] == 1
    programs = _up(got)
    assert "monitor" in programs and "task_broker" in programs and all(v == 1 for v in programs.values())
    assert total(got, "avo_program_starts_total", program="task_broker") == 1
    assert got[("avo_filesystem_free_bytes", ())] > 0

    # a worker takes a task, another sends rubbish twice
    reply = request(suite.settings.task_port, json.dumps({"desired products": ["tir"]}).encode())
    assert reply.startswith(b"pytroll://")
    for _ in range(2):
        assert b"error" in request(suite.settings.task_port, b"rubbish")
    got = wait_metrics(url, lambda m: total(m, "avo_tasks_handed_out_total") == 1
                       and total(m, "avo_bad_requests_total") == 2 and m.get(("avo_queue_length", ())) == 8, 40)
    assert total(got, "avo_granules_tasked_total") == 9
    assert total(got, "avo_tasks_handed_out_total", product="tir", satellite="Suomi-NPP") == 1

    # /healthz gives the verdict of `status --quick`
    quick = subprocess.run([str(BIN / "avo_status"), "--quick"], env=suite.env, capture_output=True, timeout=30)
    assert (_healthz_status(url) == 200) == (quick.returncode == 0), quick.stdout

    # the page, in a real browser
    browser = chromium()
    if browser is None:
        pytest.skip("chromium is not installed (make test installs Debian's chromium; apt-get install chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "monitor.png"
    html = _rendered_page(browser, tmp_path / "chromium", url)
    satellites = set(re.findall(r'<tr class="satellite" data-satellite="([^"]+)"', html))
    assert satellites == {"Suomi-NPP", "NOAA-20"}
    cells = _granule_cells(html)
    assert len(cells) == 10
    incomplete = [(sat, product, have, need) for cls, sat, product, have, need in cells if "incomplete" in cls]
    assert incomplete == [("NOAA-20", "tir", "1", "2")]
    handed = [(sat, product) for cls, sat, product, *_ in cells if "handed-out" in cls]
    assert handed == [("Suomi-NPP", "tir")]
    assert re.search(r'id="queue-now" class="warn" data-length="8"', html)
    assert html.count('class="program"') == len(programs)
    assert "<script" not in html
    done = _headless_chromium(browser, tmp_path / "chromium", f"--screenshot={shot}", "--window-size=1140,1250",
                              url + "/")
    assert done.returncode == 0 and shot.stat().st_size > 10_000, done.stderr[-2000:]


def test_files_placed_while_monitor_was_down_are_counted_and_its_history_kept(suite, double):
    url = f"http://127.0.0.1:{suite.settings.monitor_port}"
    schedule = Schedule()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    first = schedule.latest("npp", now - dt.timedelta(minutes=20), 2)
    served = double.add_scheduled(first[0], segments=SEGMENTS, sizes=SIZES)
    mirror_run(suite)
    wait_metrics(url, lambda m: total(m, "avo_files_placed_total") == len(served))
    time.sleep(1)  # a margin (not a condition) for the monitor's state before the stop writes it to monitor.json
    suite.supervisorctl("stop", "monitor")
    saved = json.loads((suite.settings.state_dir / "monitor.json").read_text())
    assert len(saved["files"]) == len(served) and saved["queue_samples"]
    more = double.add_scheduled(first[1], segments=SEGMENTS, sizes=SIZES)
    mirror_run(suite)
    suite.supervisorctl("start", "monitor")
    got = wait_metrics(url, lambda m: total(m, "avo_files_placed_total") == len(served) + len(more))
    time.sleep(6)  # one more poll: nothing is counted twice
    got = metrics(url)
    assert total(got, "avo_files_placed_total") == len(served) + len(more)
    assert total(got, "avo_program_starts_total", program="monitor") == 2
    assert total(got, "avo_granules_complete", satellite="Suomi-NPP") == 10
