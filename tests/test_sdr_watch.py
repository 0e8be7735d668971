"""The view of sdr/ (ondisk/sdr.py): one full pass at start, then the kernel's inotify, on a real folder. Every way
a file can come or go is tried; an overflow of the kernel's queue and sdr/ replaced under the watch are repaired
by a full pass; nothing lists the folder between passes."""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

from avoviirscollector.ondisk.sdr import NICE, SdrWatch, names_by_start
from tests.support import wait_until


class Recorder:
    """A sink that keeps what it was told: the names present (with placement times) and every call."""

    def __init__(self) -> None:
        self.present: dict[str, float] = {}
        self.calls: list[tuple] = []
        self.lock = threading.Lock()
        self._pass: set[str] | None = None

    def begin_pass(self) -> None:
        with self.lock:
            self.calls.append(("begin",))
            self._pass = set()

    def seen(self, name: str, placed: float) -> None:
        with self.lock:
            self.calls.append(("seen", name))
            self.present.setdefault(name, placed)
            if self._pass is not None:
                self._pass.add(name)

    def gone(self, name: str) -> None:
        with self.lock:
            self.calls.append(("gone", name))
            self.present.pop(name, None)

    def end_pass(self, complete: bool) -> None:
        with self.lock:
            self.calls.append(("end", complete))
            if complete and self._pass is not None:
                self.present = {n: t for n, t in self.present.items() if n in self._pass}
            self._pass = None

    def names(self) -> set[str]:
        with self.lock:
            return set(self.present)

    def passes(self) -> int:
        with self.lock:
            return sum(1 for call in self.calls if call == ("end", True))


@pytest.fixture
def watched(tmp_path):
    sdr = tmp_path / "sdr"
    sdr.mkdir()
    (sdr / "before").write_bytes(b"x")
    sink = Recorder()
    watch = SdrWatch(sdr, sink, interval=0.2)
    watch.start()
    try:
        assert watch.ready.wait(10), "no first pass"
        yield sdr, sink, watch
    finally:
        watch.stop()
        watch.join(2)
        assert not watch.is_alive()


def test_every_way_a_file_comes_or_goes_is_seen(watched, tmp_path):
    sdr, sink, _watch = watched
    assert sink.names() == {"before"}
    (tmp_path / "staged").write_bytes(b"x")
    os.replace(tmp_path / "staged", sdr / "renamed-in")  # mirror_gina's way
    with open(sdr / "written-in-place", "wb") as handle:  # an operator's cp
        handle.write(b"x")
    os.link(sdr / "before", sdr / "hard-link")
    (sdr / ".hidden-temp").write_bytes(b"x")
    (sdr / "a-folder").mkdir()
    wait_until(lambda: {"renamed-in", "written-in-place", "hard-link"} <= sink.names(), what="three new files")
    placed = sink.present["renamed-in"]
    assert abs(placed - os.stat(sdr / "renamed-in").st_ctime) < 1e-6  # the placement is the inode change time
    os.unlink(sdr / "before")
    os.replace(sdr / "renamed-in", tmp_path / "moved-out")
    wait_until(lambda: not {"before", "renamed-in"} & sink.names(), what="two files gone")
    time.sleep(0.3)  # the dot-file and the folder would have been reported by now
    assert sink.names() == {"written-in-place", "hard-link"}  # no dot-file, no folder
    assert sink.passes() == 1  # all of it from the kernel's word, no second listing


def test_an_overflow_of_the_kernels_queue_is_repaired_by_a_full_pass(watched):
    sdr, sink, watch = watched
    sink.seen("ghost", 1.0)  # what a lost event would leave behind: a name the view holds that is not there
    (sdr / "unseen").write_bytes(b"x")
    watch._callback.on_queue_overflow()  # what watchdog calls on IN_Q_OVERFLOW
    wait_until(lambda: sink.passes() == 2, what="a second full pass")
    wait_until(lambda: "ghost" not in sink.names() and "unseen" in sink.names(), what="the view made whole")


def test_sdr_removed_and_made_again_is_watched_again_and_passed(watched, tmp_path):
    sdr, sink, _watch = watched
    shutil.rmtree(sdr)
    wait_until(lambda: ("gone", "before") in sink.calls, what="sdr/'s file gone")
    sdr.mkdir()
    (sdr / "new-one").write_bytes(b"x")
    wait_until(lambda: sink.passes() >= 2 and sink.names() == {"new-one"}, what="the new sdr/ passed")
    (sdr / "and-then").write_bytes(b"x")
    wait_until(lambda: "and-then" in sink.names(), what="the new sdr/ followed")


def test_sdr_moved_away_and_replaced_is_followed_where_it_is_now(watched, tmp_path):
    sdr, sink, _watch = watched
    os.replace(sdr, tmp_path / "old-sdr")
    sdr.mkdir()
    wait_until(lambda: sink.passes() >= 2 and not sink.names(), what="the replacement passed")
    (tmp_path / "old-sdr" / "in-the-old-one").write_bytes(b"x")
    (sdr / "in-the-new-one").write_bytes(b"x")
    wait_until(lambda: "in-the-new-one" in sink.names(), what="the new sdr/ followed")
    time.sleep(0.3)  # a file of the old folder, written at the same time, would have been reported by now
    assert "in-the-old-one" not in sink.names()


def test_a_missing_sdr_is_waited_for(tmp_path):
    sink = Recorder()
    watch = SdrWatch(tmp_path / "sdr", sink, interval=0.1)
    watch.start()
    try:
        time.sleep(0.5)  # five of its intervals: still no sdr/, still not ready
        assert not watch.ready.is_set()
        (tmp_path / "sdr").mkdir()
        (tmp_path / "sdr" / "first").write_bytes(b"x")
        assert watch.ready.wait(5)
        wait_until(lambda: sink.names() == {"first"}, what="the first file")
    finally:
        started = time.monotonic()
        watch.stop()
        watch.join(2)
        assert time.monotonic() - started < 1.5 and not watch.is_alive()


def test_the_periodic_work_runs_in_the_watchs_thread(tmp_path):
    threads = []
    watch = SdrWatch(tmp_path, Recorder(), tick=lambda: threads.append(threading.current_thread()), interval=0.05)
    watch.start()
    try:
        wait_until(lambda: len(threads) >= 3, what="three ticks")
        # below the program's other threads: a full pass over months of files yields to the live path
        assert os.getpriority(os.PRIO_PROCESS, watch.native_id) == NICE
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == 0
    finally:
        watch.stop()
        watch.join(2)
    assert set(threads) == {watch}


def test_names_by_start_reads_names_only_and_keeps_the_range(tmp_path):
    names = [
        "SVM16_npp_d20260301_t1200033_e1201277_b70000_c20260301120903300000_cspp_dev.h5",
        "SVM16_npp_d20260302_t0000001_e0001245_b70007_c20260302000903300000_cspp_dev.h5",
        "GITCO_j01_d20250101_t2359590_e0001234_b30000_c20250101000903300000_cspp_dev.h5",
        "leapsec.dat",
    ]
    for file_name in names:
        (tmp_path / file_name).write_bytes(b"x")
    got = sorted(names_by_start(tmp_path))
    assert got == [("202501012359590", names[2]), ("202603011200033", names[0]), ("202603020000001", names[1])]
    assert [n for _, n in names_by_start(tmp_path, first="20260301", last="202603012359599")] == [names[0]]
