"""cleanup: retention on a real tree aged with os.utime, links out of the tree, files in use, bad settings."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avoviirscollector.cleanup import DAY, Cleaner, RetentionPolicy, files_in_use

NOW = time.time()
CLEANUP = [sys.executable, "-m", "avoviirscollector.cleanup"]


def age(path: Path, days: float) -> Path:
    when = NOW - days * DAY
    os.utime(path, (when, when), follow_symlinks=False)
    return path


def put(path: Path, days: float, data: bytes = b"data") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return age(path, days)


def run(base: Path, *args: str, retention: str | None = "3") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("VIIRS_RETENTION",)}
    env["VIIRS_BASE"] = str(base)
    if retention is not None:
        env["VIIRS_RETENTION"] = retention
    return subprocess.run([*CLEANUP, *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """A VIIRS_BASE with old and fresh files everywhere, and links pointing out of it."""
    base = tmp_path / "viirs"
    outside = tmp_path / "outside"
    outside_file = put(outside / "precious.h5", 30)
    put(outside / "deep" / "old.h5", 30)
    p = {
        "base": base,
        "outside": outside,
        "outside_file": outside_file,
        "old_sdr": put(base / "sdr" / "SVM16_npp_old.h5", 10, b"x" * 1000),
        "new_sdr": put(base / "sdr" / "SVM16_npp_new.h5", 1),
        "old_nested": put(base / "sdr" / "2026" / "11" / "GITCO_old.h5", 5, b"y" * 500),
        "old_log": put(base / "log" / "nameserver.log.1", 8),
        "new_log": put(base / "log" / "nameserver.log", 0),
        "old_elements": put(base / "elements" / "weather.txt.old", 20),
        "state_live": put(base / "state" / "queue.json", 40),
        "journal": put(base / "state" / "journal.jsonl", 40),
        "state_old_nested": put(base / "state" / "archive" / "queue-2025.json", 40),
        "partial": put(base / "tmp" / "SVM05_npp_partial.h5.part", 0),
        "old_partial": put(base / "tmp" / "SVM05_npp_stale.h5.part", 4),
        "pidfile": put(base / "run" / "supervisord.pid", 50),
        "other_top": put(base / "lost+found" / "junk", 9),
    }
    (base / "sdr" / "link_to_outside_file").symlink_to(outside_file)
    (base / "sdr" / "link_to_outside_dir").symlink_to(outside)
    (base / "sdr" / "dangling").symlink_to(tmp_path / "nowhere")
    age(base / "sdr" / "link_to_outside_file", 30)
    age(base / "sdr" / "link_to_outside_dir", 30)
    (base / "sdr" / "empty_old").mkdir()
    age(base / "sdr" / "empty_old", 10)
    (base / "sdr" / "empty_recent").mkdir()  # a download may be about to use it
    for folder in (base / "sdr" / "2026" / "11", base / "sdr" / "2026", base / "state" / "archive"):
        age(folder, 5)
    return p


def test_retention_removes_old_files_everywhere_and_keeps_the_rest(tree):
    result = run(tree["base"])
    assert result.returncode == 0, result.stderr
    gone = ("old_sdr", "old_nested", "old_log", "old_elements", "state_old_nested", "old_partial", "other_top")
    kept = ("new_sdr", "new_log", "state_live", "journal", "partial", "pidfile", "outside_file")
    for key in gone:
        assert not tree[key].exists(), key
    for key in kept:
        assert tree[key].exists(), key
    base = tree["base"]
    # links are neither followed nor removed; nothing outside was touched
    assert (base / "sdr" / "link_to_outside_file").is_symlink()
    assert (base / "sdr" / "link_to_outside_dir").is_symlink()
    assert (base / "sdr" / "dangling").is_symlink()
    assert (tree["outside"] / "deep" / "old.h5").exists()
    # emptied old folders go, top-level folders and recently modified ones stay
    assert not (base / "sdr" / "2026").exists()
    assert not (base / "sdr" / "empty_old").exists()
    assert not (base / "state" / "archive").exists()
    assert (base / "sdr" / "empty_recent").is_dir()
    assert (base / "lost+found").is_dir() and (base / "tmp").is_dir()
    # one summary line with the counts
    summary = [line for line in result.stdout.splitlines() if "removed" in line]
    assert len(summary) == 1, result.stdout
    assert "removed 7 files (1.5 KB) and 4 empty folders older than 3 days" in summary[0]
    assert "3 links untouched" in summary[0]


def test_dry_run_removes_nothing_but_reports_the_same(tree):
    before = sorted(str(p) for p in tree["base"].rglob("*"))
    result = run(tree["base"], "--dry-run")
    assert result.returncode == 0, result.stderr
    assert sorted(str(p) for p in tree["base"].rglob("*")) == before
    assert "dry run: would remove 7 files (1.5 KB) and 4 empty folders" in result.stdout


def test_unset_retention_keeps_everything_and_says_so(tree):
    before = sorted(str(p) for p in tree["base"].rglob("*"))
    result = run(tree["base"], retention=None)
    assert result.returncode == 0
    assert "VIIRS_RETENTION is not set: keeping everything" in result.stdout
    assert sorted(str(p) for p in tree["base"].rglob("*")) == before


def test_zero_retention_removes_everything_not_live_but_spares_a_file_being_written(tree):
    result = run(tree["base"], retention="0")
    assert result.returncode == 0, result.stderr
    assert not tree["new_sdr"].exists() and not tree["old_partial"].exists()
    # partial download touched just now: kept (tmp/ grace), like the live state and the link targets
    for key in ("partial", "state_live", "journal", "pidfile", "outside_file"):
        assert tree[key].exists(), key


@pytest.mark.parametrize("bad", ["-1", "seven", "2.5", "1e3"])
def test_bad_retention_stops_with_one_line_and_removes_nothing(tree, bad):
    before = sorted(str(p) for p in tree["base"].rglob("*"))
    result = run(tree["base"], retention=bad)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "VIIRS_RETENTION" in lines[0] and "whole number" in lines[0]
    assert sorted(str(p) for p in tree["base"].rglob("*")) == before


def test_files_open_or_locked_by_a_process_are_kept(tmp_path):
    base = tmp_path / "viirs"
    held_open = put(base / "log" / "quiet_program.log", 30)
    locked = put(base / "tmp" / "mirror_gina-npp.lock", 30)
    plain = put(base / "log" / "old.log", 30)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, sys, time\n"
         f"log = open({str(held_open)!r}, 'a')\n"
         f"lock = open({str(locked)!r}, 'r')\n"
         "fcntl.flock(lock, fcntl.LOCK_EX)\n"
         "print('ready', flush=True)\n"
         "sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        open_paths, locked_ids = files_in_use(base)
        assert str(held_open) in open_paths
        st = locked.stat()
        assert (st.st_dev, st.st_ino) in locked_ids
        link = tmp_path / "viirs-link"  # VIIRS_BASE given through a link: /proc shows real paths
        link.symlink_to(base)
        result = run(link, retention="1")
        assert result.returncode == 0, result.stderr
        assert held_open.exists() and locked.exists()
        assert not plain.exists()
        assert "2 in use" in result.stdout
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)


def test_a_lock_held_by_this_process_is_seen(tmp_path):
    base = tmp_path / "viirs"
    lock_path = put(base / "state" / "q" / "x.lock", 30)
    with open(lock_path) as handle:
        fcntl.lockf(handle, fcntl.LOCK_SH)  # a POSIX lock, as the flock case is covered above
        _, locked = files_in_use(base)
        st = lock_path.stat()
        assert (st.st_dev, st.st_ino) in locked


def test_folder_swapped_for_a_link_is_not_entered(tmp_path):
    base = tmp_path / "viirs"
    outside = tmp_path / "outside"
    victim = put(outside / "old.h5", 30)
    put(base / "sdr" / "x.h5", 1)
    # the walk opens folders with O_NOFOLLOW relative to their parent: a link in place of a folder is refused
    (base / "sdr" / "sub").symlink_to(outside, target_is_directory=True)
    summary = Cleaner(base, RetentionPolicy(NOW, 2)).run()
    assert victim.exists()
    assert summary.files == 0 and summary.links == 1 and summary.errors == 0


def test_policy_rules():
    policy = RetentionPolicy(NOW, 2)
    assert policy.file_expired("sdr", 1, NOW - 3 * DAY)
    assert not policy.file_expired("sdr", 1, NOW - 1 * DAY)
    assert not policy.file_expired("state", 1, NOW - 300 * DAY)
    assert policy.file_expired("state", 2, NOW - 3 * DAY)
    zero = RetentionPolicy(NOW, 0)
    assert zero.file_expired("sdr", 1, NOW - 1)
    assert not zero.file_expired("tmp", 1, NOW - 60)
    assert zero.file_expired("tmp", 1, NOW - 2 * 3600)
    assert not policy.folder_removable(1, NOW - 10 * DAY)
    assert policy.folder_removable(2, NOW - 10 * DAY)
    assert not policy.folder_removable(2, NOW - 60)
    with pytest.raises(ValueError):
        RetentionPolicy(NOW, -1)


def test_unremovable_file_is_counted_and_exit_status_is_one(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root may remove files from a read-only folder: permission errors cannot be provoked")
    base = tmp_path / "viirs"
    stuck = put(base / "sdr" / "ro" / "old.h5", 30)
    (base / "sdr" / "ro").chmod(0o555)
    try:
        result = run(base, retention="1")
        assert result.returncode == 1
        assert stuck.exists() and "cannot remove" in result.stdout
    finally:
        (base / "sdr" / "ro").chmod(0o755)
