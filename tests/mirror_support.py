"""Helpers for the mirror_gina tests: the GINA double with small passes, settings, a watcher of sdr/."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import threading
from pathlib import Path

from avoviirscollector.mirror.engine import MirrorRun
from avoviirscollector.mirror.queues import load_queues
from tests.gina_double import GinaDouble
from tests.support import settings_for  # noqa: F401 (the mirror tests import it from here)

#: 20 minutes ago: within the last hour, which the listings between the hourly full ones ask for
START = (dt.datetime.now(dt.UTC).replace(tzinfo=None, second=0, microsecond=0) - dt.timedelta(minutes=20))
SIZES = {"GITCO": 700_000, "GMTCO": 400_000, "SVI01": 150_000, "SVI04": 150_000, "SVI05": 150_000,
         "SVM03": 120_000, "SVM04": 120_000, "SVM05": 120_000, "SVM15": 200_000, "SVM16": 200_000,
         "GDNBO": 100_000, "SVDNB": 100_000}
#: small pieces so that files of a few hundred kB are fetched over several connections
FAST = {"probe_size": 64 * 1024, "min_piece": 32 * 1024, "steal_big": 128 * 1024, "backoff": 0.05,
        "backoff_max": 0.2, "max_no_progress": 3}


def add_pass(double: GinaDouble, granules: int = 2, segments=("GITCO", "GMTCO", "SVM15", "SVM16", "SVI05"),
             platform: str = "npp", orbit: int = 70000, start: dt.datetime = START):
    return double.add_pass(platform, orbit, start, granules=granules, segments=segments, sizes=SIZES)


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.levels: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.levels.append(record.levelname)

    def at(self, level: str) -> list[str]:
        return [line for line, lv in zip(self.lines, self.levels, strict=True) if lv == level]

    def having(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]

    def starting(self, text: str) -> list[str]:
        return [line for line in self.lines if line.startswith(text)]


def run_mirror(settings, queue_names=None, stall_seconds: int = 2, clock=None, once: bool = True,
               run_for: float | None = None, **options) -> tuple[int, Captured]:
    """One mirror_gina run in this process (one listing round unless ``once`` is false: then rounds every
    MIRROR_POLL_SECONDS for ``run_for`` seconds); returns the exit status and the log lines."""
    queues = load_queues(settings.mirror_gina_config, settings)
    if queue_names:
        queues = [q for q in queues if q.name in queue_names]
    logger = logging.getLogger("mirror_gina")
    handler = Captured()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        extra = {"clock": clock} if clock else {}
        run = MirrorRun(settings, queues, logger, stall_seconds=stall_seconds, connect_timeout=2,
                        downloader_options={**FAST, **options}, once=once, run_for=run_for, **extra)
        status = run.run()
    finally:
        logger.removeHandler(handler)
    return status, handler


class SdrWatch:
    """Polls ``sdr/`` while downloads run: every new file must be, the moment it is first seen, one of ``expected``
    (name -> md5) and whole. Anything else is recorded in ``violations``. Files already there are ignored."""

    def __init__(self, sdr: Path, expected: dict[str, str]) -> None:
        self.sdr = sdr
        self.expected = expected
        self.seen: dict[str, int] = {}
        self.violations: list[str] = []
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> SdrWatch:
        self.sdr.mkdir(parents=True, exist_ok=True)
        for name in os.listdir(self.sdr):  # there before: not this watch's business
            self.seen[name] = 0
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)
        self._check()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._check()
            self._stop.wait(0.002)

    def _check(self) -> None:
        self.polls += 1
        try:
            names = os.listdir(self.sdr)
        except FileNotFoundError:
            return
        for name in names:
            if name in self.seen:
                continue
            self.seen[name] = self.polls
            want = self.expected.get(name)
            if want is None:
                self.violations.append(f"unexpected file in sdr/: {name}")
                continue
            try:
                data = (self.sdr / name).read_bytes()
            except FileNotFoundError:
                self.violations.append(f"{name} vanished from sdr/")
                continue
            if hashlib.md5(data).hexdigest() != want:
                self.violations.append(f"{name} visible in sdr/ with wrong content ({len(data)} bytes)")
