"""The mirror_gina console script as cron runs it: locks, SIGTERM, resume, disk full, bad configuration."""

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.mirror_support import START
from tests.support import wait_until

MIRROR = [sys.executable, "-m", "avoviirscollector.mirror.cli", "--once"]


def _env(base, double, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIIRS_", "GINA_", "NUM_GINA", "MIRROR_GINA"))}
    env.update(VIIRS_BASE=str(base), GINA_URL=double.url, PYTHONUNBUFFERED="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Proc:
    """A mirror_gina process that is always ended."""

    def __init__(self, args, env):
        self.p = subprocess.Popen(MIRROR + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)

    def finish(self, timeout=30):
        try:
            out, _ = self.p.communicate(timeout=timeout)
        finally:
            if self.p.poll() is None:
                self.p.kill()
                self.p.wait()
        return self.p.returncode, out


def _lock_held(path):
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_overlapping_run_exits_at_once_then_sigterm_keeps_partial_and_next_run_resumes(tmp_path, double):
    (item,) = double.add_granule("npp", 70000, START, segments=("GITCO",), sizes={"GITCO": 3_000_000})
    double.rate = 150e3  # 4 connections x 150 kB/s: the first run needs about 5 s
    base = tmp_path / "viirs"
    env = _env(base, double)
    first = Proc(["--queue", "snpp-imagery"], env)
    try:
        lock = base / "state" / "mirror_gina.snpp-imagery.lock"
        part = base / "tmp" / (item.name + ".part")
        wait_until(lambda: _lock_held(lock) and part.exists(), 15, "the run's lock and part file")
        t0 = time.monotonic()
        status, out = Proc(["--queue", "snpp-imagery"], env).finish()
        assert time.monotonic() - t0 < 5
        assert status == 0
        assert "queue snpp-imagery: another mirror_gina run still holds" in out
        assert "every queue is busy" in out
        wait_until(lambda: (base / "tmp" / (item.name + ".part.json")).exists(), 15, "the part file's record")
        t0 = time.monotonic()
        first.p.send_signal(signal.SIGTERM)
        status, out = first.finish()
        assert time.monotonic() - t0 < 3
    finally:
        first.finish(5)
    assert status == 1
    assert "stopped: placed 0 files" in out and "the next run resumes it" in out
    assert os.listdir(base / "sdr") == []
    assert sorted(os.listdir(base / "tmp")) == [item.name + ".part", item.name + ".part.json"]

    double.rate = None
    requests_before = len(double.file_requests)
    status, out = Proc(["--queue", "snpp-imagery"], env).finish()
    assert status == 0, out
    assert f"placed {item.name}" in out and "resumed from byte" in out
    assert (base / "sdr" / item.name).read_bytes() == item.path.read_bytes()
    assert os.listdir(base / "tmp") == []
    # only the missing bytes were asked for
    first_ranges = [r for _n, r, _s in double.file_requests[requests_before:]]
    assert first_ranges and not any(r.startswith("bytes=0-") for r in first_ranges)


def test_disk_full_fails_cleanly(tmp_path, double):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to mount a private tmpfs")
    big = double.add_granule("npp", 70000, START, segments=("GITCO",), sizes={"GITCO": 3_000_000})[0]
    small = double.add_granule("npp", 70000, START, segments=("SVI05",), sizes={"SVI05": 100_000})[0]
    base = tmp_path / "viirs"
    base.mkdir()
    report = tmp_path / "report.txt"
    script = (
        'mount -t tmpfs -o size=1500k tmpfs "$BASE" || exit 97; '
        'mkdir "$BASE/sdr" "$BASE/tmp" "$BASE/state"; '
        '"$@" --queue snpp-imagery; echo "rc=$?"; '
        'cd "$BASE" && find sdr tmp -type f -exec md5sum {} + > "$REPORT"'
    )
    env = _env(base, double, BASE=base, REPORT=report)
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"] + MIRROR,
                          env=env, capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    if proc.returncode == 97:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    assert "rc=1" in out, out
    assert f"FAILED {big.name}: disk full; temp removed; the next run tries again" in out
    files = dict(line.split()[::-1] for line in report.read_text().splitlines())
    assert not any(path.startswith("tmp/") for path in files)  # nothing left behind in tmp/
    assert set(files) <= {f"sdr/{small.name}"}
    for path, md5 in files.items():
        assert md5 == hashlib.md5((double.files_dir / path[4:]).read_bytes()).hexdigest()


def test_bad_settings_and_bad_queue_file_stop_at_start(tmp_path, double):
    status, out = Proc([], _env(tmp_path, double, NUM_GINA_CONNECTIONS="lots")).finish()
    assert status == 2 and "NUM_GINA_CONNECTIONS" in out
    bad = tmp_path / "queues.yaml"
    bad.write_text("queues:\n  - name: x\n    satellite: terra\n    match: '.'\n")
    status, out = Proc([], _env(tmp_path, double, MIRROR_GINA_CONFIG=bad)).finish()
    assert status == 2 and "satellite must be one of" in out
    status, out = Proc(["--queue", "nope"], _env(tmp_path, double)).finish()
    assert status == 2 and "unknown queue(s) nope" in out


def test_cron_output_is_plain_lines(tmp_path, double):
    double.add_granule("npp", 70000, START, segments=("SVM16",), sizes={"SVM16": 100_000})
    status, out = Proc(["--queue", "snpp-moderate"], _env(tmp_path / "viirs", double)).finish()
    assert status == 0
    assert "\r" not in out and "%|" not in out  # no progress bar when stdout is not a terminal
    lines = out.splitlines()
    assert all(" mirror_gina " in line for line in lines)
    assert lines[-1].split(" INFO ")[1].startswith("done: placed 1 files")


def test_progress_bar_on_a_terminal(tmp_path, double):
    if not shutil.which("script"):
        pytest.skip("script(1) is not installed: no pseudo-terminal to run mirror_gina on")
    double.add_granule("npp", 70000, START, segments=("GITCO", "SVM16"), sizes={"GITCO": 400_000, "SVM16": 100_000})
    out = tmp_path / "typescript"
    command = "stty cols 120 rows 40; " + " ".join(MIRROR) + " --queue snpp-moderate --queue snpp-imagery"
    proc = subprocess.run(["script", "-qec", command, str(out)], env=_env(tmp_path / "viirs", double),
                          stdout=subprocess.DEVNULL, timeout=60)
    text = out.read_text(errors="replace")
    assert proc.returncode == 0, text
    assert "2/2 [" in text and "file/s" in text  # tqdm's bar
    assert "done: placed 2 files" in text


def test_two_queues_wanting_one_file_in_overlapping_runs_fetch_it_once(tmp_path, double):
    (item,) = double.add_granule("npp", 70000, START, segments=("GITCO",), sizes={"GITCO": 1_500_000})
    queues = tmp_path / "queues.yaml"
    queues.write_text("queues:\n"
                      "  - {name: geo-a, satellite: snpp, match: '^GITCO_'}\n"
                      "  - {name: geo-b, satellite: snpp, match: '^G'}\n")
    double.rate = 150e3  # about 2.5 s for the file over 4 connections
    base = tmp_path / "viirs"
    env = _env(base, double, MIRROR_GINA_CONFIG=queues)
    first = Proc(["--queue", "geo-a"], env)
    try:
        wait_until(lambda: (base / "tmp" / (item.name + ".part")).exists(), 15, "the part file")
        status_b, out_b = Proc(["--queue", "geo-b"], env).finish()
        status_a, out_a = first.finish()
    finally:
        first.finish(5)
    assert (status_a, status_b) == (0, 0), out_a + out_b
    assert f"skipped {item.name}: another run is fetching it" in out_b
    assert f"placed {item.name}" in out_a
    assert (base / "sdr" / item.name).read_bytes() == item.path.read_bytes()


def test_failures_are_mailed_in_one_batch(tmp_path, double, smtp):
    double.add_granule("npp", 70000, START, segments=("SVM15", "SVM16"), sizes={"SVM15": 50_000, "SVM16": 50_000})
    double.set_fault("wrong_md5")
    env = _env(tmp_path / "viirs", double, MAILHOST=f"127.0.0.1:{smtp.port}", LOG_SENDER="viirs@example.org",
               LOG_RECIPIENT="ops@example.org")
    status, out = Proc(["--queue", "snpp-moderate"], env).finish()
    assert status == 1
    mails = smtp.wait_for(1, timeout=10)
    assert len(mails) == 1
    text = mails[0][2].get_content()
    assert text.count("md5 mismatch") == 2 and "mirror_gina" in text
