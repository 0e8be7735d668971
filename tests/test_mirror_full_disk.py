"""mirror_gina on a full disk (issue 9, item 1): whichever write fails (piece, state, lock, journal, placement),
one line per file saying disk full, exit status 1, no traceback, nothing in sdr/, and a temp state the next run
resumes from once there is space again.

In-process, each write point is made to fail with ENOSPC on its own (the others succeed); the console script is
also run on a real tmpfs that is full before it starts (the measured case: a traceback from the lock's pid write).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.mirror_support import START, add_pass, run_mirror, settings_for
from tests.test_mirror_cli import MIRROR, _env

SEGMENTS = ("GITCO", "SVI05")


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


class FullDisk:
    """ENOSPC for the writes of one kind under ``base`` (the real os functions otherwise)."""

    KINDS = {
        "piece": lambda p: p.endswith(".part"),
        "state": lambda p: p.endswith(".part.json.new"),
        "lock": lambda p: p.endswith(".lock"),
        "journal": lambda p: p.endswith("mirror_gina.journal"),
        "placement": lambda p: "/sdr/" in p,
    }

    def __init__(self, monkeypatch, base: Path, kind: str) -> None:
        self.base, self.hit = str(base), self.KINDS[kind]
        self.failures = 0
        real_write, real_pwrite, real_replace = os.write, os.pwrite, os.replace

        def full(path: str) -> bool:
            if path.startswith(self.base) and self.hit(path):
                self.failures += 1
                return True
            return False

        def write(fd, data):
            if full(_fd_path(fd)):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(fd, data)

        def pwrite(fd, data, offset):
            if full(_fd_path(fd)):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_pwrite(fd, data, offset)

        def replace(src, dst, **kw):
            if full(os.fspath(dst)):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_replace(src, dst, **kw)

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "pwrite", pwrite)
        monkeypatch.setattr(os, "replace", replace)


def _tmp_consistent(tmp: Path) -> None:
    """Every partial file left has a state that lists only bytes within it; nothing else is left."""
    names = set(os.listdir(tmp))
    for name in names:
        if name.endswith(".part"):
            state = json.loads((tmp / (name + ".json")).read_text())
            assert all(e <= (tmp / name).stat().st_size for _s, e in state["done"])
        else:
            assert name.endswith(".part.json") and name[:-5] in names, name


@pytest.mark.parametrize("kind", list(FullDisk.KINDS))
def test_every_write_on_a_full_disk_is_one_line_per_file(tmp_path, double, monkeypatch, kind):
    served = add_pass(double, granules=1, segments=SEGMENTS)
    names = sorted(s.name for s in served)
    settings = settings_for(tmp_path / "viirs", double)
    with monkeypatch.context() as m:
        disk = FullDisk(m, settings.viirs_base, kind)
        if kind == "state":
            double.set_fault("drop")  # pieces fail, so each file would be kept for resume with its state
        status, log = run_mirror(settings, ["snpp-imagery"])
        double.clear_faults()
    assert disk.failures, f"no {kind} write was attempted"
    if kind == "lock":  # the pid in the lock file is for the operator: the flock is the lock; the run goes on
        assert status == 0, log.lines
        assert sorted(os.listdir(settings.sdr_dir)) == names
        return
    assert status == 1, log.lines
    assert os.listdir(settings.sdr_dir) == []
    assert not [line for line in log.lines if "Traceback" in line]
    for name in names:
        lines = log.having(name)
        failed = [line for line in lines if line.startswith(f"FAILED {name}")]
        assert len(failed) == 1 and "disk full" in failed[0], lines
    _tmp_consistent(settings.tmp_dir)
    journal = settings.state_dir / "mirror_gina.journal"
    if journal.exists():  # a retracted record is blank: no file is remembered as placed that is not
        assert journal.read_text().strip() == ""

    status, log = run_mirror(settings, ["snpp-imagery"])  # space is back
    assert status == 0, log.lines
    assert sorted(os.listdir(settings.sdr_dir)) == names
    assert os.listdir(settings.tmp_dir) == []


def test_console_script_on_a_disk_full_from_the_start(tmp_path, double):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to mount a private tmpfs")
    served = double.add_granule("npp", 70000, START, segments=SEGMENTS, sizes={"GITCO": 300_000, "SVI05": 90_000})
    base = tmp_path / "viirs"
    base.mkdir()
    script = (
        'mount -t tmpfs -o size=1m tmpfs "$BASE" || exit 97; '
        'mkdir "$BASE/sdr" "$BASE/tmp" "$BASE/state"; '
        'dd if=/dev/zero of="$BASE/filler" bs=64k 2>/dev/null; '
        '"$@" --queue snpp-imagery; echo "rc=$?"; '
        'rm "$BASE/filler"; echo "--- space again"; '
        '"$@" --queue snpp-imagery; echo "rc=$?"; ls "$BASE/sdr"'
    )
    env = _env(base, double, BASE=base)
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"] + MIRROR,
                          env=env, capture_output=True, text=True, timeout=90)
    if proc.returncode == 97:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    out = proc.stdout + proc.stderr
    full, again = out.split("--- space again")
    assert "Traceback" not in out, out
    assert "rc=1" in full, out
    for item in served:
        failed = [line for line in full.splitlines() if f"FAILED {item.name}" in line]
        assert len(failed) == 1 and "disk full" in failed[0], full
    assert "rc=0" in again, out
    assert all(item.name in again.split("rc=0")[1] for item in served), out
