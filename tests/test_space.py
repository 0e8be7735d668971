"""The free-space sweep (issue 9, item 10): below VIIRS_MIN_FREE the oldest granule files of sdr/ go first, never a
file of a task still queued, of a granule handed out in the last hour, or placed within RECOVERY_HOURS; when what
must be kept does not fit, nothing kept goes and one ERROR line says so. mirror_gina sweeps before downloading and
the nightly cleanup after its retention."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import signal
import subprocess

import pytest

from avoviirscollector.config import load_settings
from avoviirscollector.space import sweep
from avoviirscollector.viirs import PLATFORMS, format_name
from tests.broker_support import ASCENDING_TIME, Broker, granule_files, request, seed_queue
from tests.gina_double import GinaDouble
from tests.mirror_support import START, Captured
from tests.test_mirror_cli import MIRROR, _env

SIZE = 100_000
T0 = dt.datetime(2026, 11, 27, 0, 0)


def _name(segment, start, platform="npp"):
    return format_name(segment, platform, start, start + dt.timedelta(seconds=85), 70000, start)


def _iso(when):
    return when.astimezone(dt.UTC).isoformat()


def _broker_journal(state, queued, handed_out):
    """task_broker's journal as it writes it: a queued task (put) and hand-outs (take with the ledger's granules)."""
    now = dt.datetime.now(dt.UTC)
    lines = [{"format": "avoviirscollector-task-queue", "version": 2, "next_id": 10, "ledger_since": _iso(now),
              "t": _iso(now)},
             {"op": "put", "t": _iso(now), "task": {"id": 1, "subject": "/AVO/viirs/granule/tir",
                                                    "data": {"dataset": [{"uri": f"/x/{n}", "uid": n}
                                                                         for n in queued]}}}]
    for task_id, (start, when) in enumerate(handed_out, start=2):
        lines.append({"op": "take", "t": _iso(when), "id": task_id, "kind": "handed out", "worker": "w",
                      "granules": [["tir", PLATFORMS["npp"][0], start.isoformat()]], "what": "tir"})
    state.mkdir(parents=True, exist_ok=True)
    (state / "task_queue.journal").write_text("".join(json.dumps(line) + "\n" for line in lines))


class Disk:
    """A filesystem of ``total`` bytes whose only use is sdr/ plus ``other`` bytes."""

    def __init__(self, sdr, total, other):
        self.sdr, self.total, self.other = sdr, total, other

    def __call__(self, _path):
        used = self.other + sum(p.stat().st_blocks * 512 for p in self.sdr.iterdir())
        return self.total, used, self.total - used


def test_oldest_granules_go_first_and_what_is_in_use_stays(tmp_path):
    settings = load_settings({"VIIRS_BASE": str(tmp_path), "VIIRS_MIN_FREE": "10%", "RECOVERY_HOURS": "6"})
    settings.make_dirs()
    starts = [T0 + dt.timedelta(minutes=10 * i) for i in range(6)]  # oldest first
    for start in starts:
        for segment in ("GITCO", "SVI05"):
            (settings.sdr_dir / _name(segment, start)).write_bytes(os.urandom(SIZE))
    (settings.sdr_dir / "notes.txt").write_bytes(os.urandom(SIZE))  # not a granule file: never touched
    block = (settings.sdr_dir / _name("GITCO", starts[0])).stat().st_blocks * 512
    now = dt.datetime.now(dt.UTC) + dt.timedelta(hours=7)  # every file placed more than RECOVERY_HOURS ago
    _broker_journal(settings.state_dir, queued=[_name("SVI05", starts[1])],
                    handed_out=[(starts[2], now - dt.timedelta(minutes=30)),  # an hour not yet over: kept
                                (starts[3], now - dt.timedelta(hours=2))])  # long done: may go
    # 12 granule files and 81 blocks of other data: 6 blocks free, 10 wanted, and the sweep frees 1% (1 block) more
    disk = Disk(settings.sdr_dir, total=100 * block, other=81 * block)
    log = logging.getLogger("test_space")
    handler = Captured()
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        result = sweep(settings, log, now=now, disk_usage=disk)
    finally:
        log.removeHandler(handler)
    gone = {_name(seg, starts[i]) for i in (0, 3) for seg in ("GITCO", "SVI05")} | {_name("GITCO", starts[4])}
    left = set(os.listdir(settings.sdr_dir))
    assert result.removed == 5 and not result.short
    assert left.isdisjoint(gone) and "notes.txt" in left and len(left) == 8
    assert _name("SVI05", starts[1]) in left and _name("GITCO", starts[1]) in left  # the queued task's granule
    assert _name("GITCO", starts[2]) in left  # handed out half an hour ago
    (line,) = handler.lines
    assert line.startswith("free space: removed 5 granule file(s)")
    assert f"up to granule time {starts[4]:%Y-%m-%dT%H:%M:%S}" in line and "(VIIRS_MIN_FREE 10%" in line

    # what must be kept does not fit: nothing kept goes, one ERROR line
    handler = Captured()
    log.addHandler(handler)
    try:
        result = sweep(settings, log, now=dt.datetime.now(dt.UTC), disk_usage=Disk(settings.sdr_dir, 100 * block,
                                                                                  95 * block))
    finally:
        log.removeHandler(handler)
    assert result.removed == 0 and result.short
    assert set(os.listdir(settings.sdr_dir)) == left
    (line,) = handler.lines
    assert "and nothing more may go: 7 file(s) in sdr/ are kept" in line

    off = load_settings({"VIIRS_BASE": str(tmp_path), "VIIRS_MIN_FREE": "0"})
    assert sweep(off, log, now=now, disk_usage=Disk(settings.sdr_dir, 100 * block, 99 * block)).removed == 0


def test_the_sweep_reads_the_journal_a_real_broker_wrote(tmp_path, nameserver):
    """Across programs: task_broker (the real process) loads a queue of two tir tasks, hands the first one out and
    stops cleanly; the sweep (mirror_gina's and cleanup's) then reads the journal the broker itself wrote. Seen from
    seven hours later (every file outside the recovery window, the hand-out older than an hour) on a disk where
    everything that may go must go: the still-queued task's files stay; the handed-out task's files and two older
    files no task knows go."""
    base = tmp_path / "viirs"
    seed_queue(base, ["tir", "tir"], orbit=40000)
    names = [[f["uid"] for f in granule_files("tir", "NOAA-20", 40000 + i, ASCENDING_TIME + dt.timedelta(minutes=2 * i),
                                              base)] for i in range(2)]
    naive = ASCENDING_TIME.replace(tzinfo=None)
    unknown = [_name("SVI05", naive - dt.timedelta(hours=h), "j01") for h in (3, 2)]  # alone: never a complete granule
    sdr = base / "sdr"
    sdr.mkdir(parents=True, exist_ok=True)
    for name in names[0] + names[1] + unknown:
        (sdr / name).write_bytes(os.urandom(SIZE))
    broker = Broker(base)
    try:
        broker.start()
        reply = request(broker.task_port, json.dumps({"desired products": ["tir"]}).encode())
        assert b"b40000" in reply  # the first task, with orbit 40000's files
        broker.signal(signal.SIGTERM)
        assert broker.wait(5) == 0
    finally:
        broker.stop()
    assert "recovered granule" not in broker.log_text()
    settings = load_settings({"VIIRS_BASE": str(base), "VIIRS_MIN_FREE": "90%", "RECOVERY_HOURS": "6"})
    block = (sdr / unknown[0]).stat().st_blocks * 512
    log = logging.getLogger("test_space")
    handler = Captured()
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        result = sweep(settings, log, now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=7),
                       disk_usage=Disk(sdr, total=100 * block, other=50 * block))
    finally:
        log.removeHandler(handler)
    assert set(os.listdir(sdr)) == set(names[1]), handler.lines
    assert result.removed == 4 and result.short


def test_mirror_gina_on_a_disk_full_of_files_it_must_keep(tmp_path):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to mount a private tmpfs")
    with GinaDouble(tmp_path / "gina") as double:
        served = double.add_granule("npp", 70000, START, segments=("GITCO",), sizes={"GITCO": 600_000})
        base = tmp_path / "viirs"
        base.mkdir()
        old = _name("SVI05", T0)
        script = (
            'mount -t tmpfs -o size=2m tmpfs "$BASE" || exit 97; '
            'mkdir "$BASE/sdr" "$BASE/tmp" "$BASE/state"; '
            f'dd if=/dev/urandom of="$BASE/sdr/{old}" bs=64k count=24 2>/dev/null; '
            '"$@" --queue snpp-imagery; echo "rc=$?"; ls "$BASE/sdr"'
        )
        env = _env(base, double, BASE=base, VIIRS_MIN_FREE="60%")
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"] + MIRROR,
                              env=env, capture_output=True, text=True, timeout=60)
    if proc.returncode == 97:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    errors = [line for line in out.splitlines() if "free space:" in line]
    assert len(errors) == 1 and " ERROR " in errors[0] and "nothing more may go: 1 file(s)" in errors[0], out
    assert out.rstrip().endswith(old), out  # placed within RECOVERY_HOURS: kept
    assert "rc=1" in out and f"FAILED {served[0].name}: disk full" in out, out


def test_status_shows_the_headroom(tmp_path):
    from avoviirscollector.status import collect, render_text

    settings = load_settings({"VIIRS_BASE": str(tmp_path), "VIIRS_MIN_FREE": "1G", "UPDATE_PORT": "1"})
    settings.make_dirs()
    report = collect(settings, wait=0.05, du_seconds=None)
    free = shutil.disk_usage(tmp_path).free
    assert report.disk["min_free"] == 10**9 and abs(report.disk["headroom"] - (free - 10**9)) < 50 * 10**6
    assert "above VIIRS_MIN_FREE 1000000000 bytes" in render_text(report)
