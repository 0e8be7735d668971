"""avo_cron: run the repo's ``crontab`` with supercronic when it is installed, with this runner otherwise.

What it does
    ``avo_cron CRONTAB`` execs ``supercronic CRONTAB`` when supercronic is on PATH (the image ships it).
    Elsewhere (``make run`` on a plain Linux host) it runs the same file itself, so the same schedule drives the
    same jobs: at each second boundary every due line's command is started with ``/bin/sh -c`` (``exec`` before a
    simple command, so the job's process is the program itself and a stop's SIGTERM reaches it), with this
    process's environment (jobs read their settings from the environment, not from the crontab). A line whose
    previous run is still going is not started again (logged), as supercronic does by default. Job output goes
    to this program's stdout, which supervisord logs.

Crontab syntax (the subset supercronic and cron share)
    5 fields ``minute hour day-of-month month day-of-week`` or 7 fields ``second minute hour dom month dow year``;
    ``*``, ``*/n``, ``a-b``, ``a-b/n``, lists ``a,b``; ``@hourly``, ``@daily``, ``@midnight``, ``@weekly``,
    ``@monthly``, ``@yearly``. Day-of-week 0 or 7 is Sunday. When both day fields are restricted, either matching
    is enough (classic cron). Blank lines and ``#`` comments are ignored; ``KEY=VALUE`` lines are refused (settings
    come from the environment).

Options
    ``--runner builtin`` forces this runner even where supercronic is installed. ``--check`` parses and exits.
    ``--at-start COMMAND`` (repeatable) also starts COMMAND once, in the background, when avo_cron starts its jobs
    (the suite fetches its TLEs this way instead of waiting up to an hour for the first refresh); the schedule does
    not wait for it, and its output goes to this program's stdout like the jobs'.
    ``--wait-ready SECONDS`` (supervisord.conf gives 60; default 0, no wait): before any job (the ``--at-start``
    ones too) wait until the rest of the suite is ready (readiness.py: every program but cron itself RUNNING and
    ready, the bus connections made), so the first mirror_gina run never places a file before the gatherers and
    task_broker listen; after SECONDS start anyway, with a WARNING naming what is not ready. One line says how long
    it waited.

Ready
    Once its handlers are installed and the crontab parsed (before that wait) it writes
    ``$VIIRS_BASE/run/ready/cron.json`` (ready.py), removed when it stops; handed over to supercronic (exec, the same
    pid) the marker stays, and is stale once supercronic has stopped.

Settings (environment, see config.py): ``VIIRS_BASE``; posttroll's ``POSTTROLL_*`` ports (the readiness wait); the
jobs read theirs from the same environment.

Signals
    SIGTERM, SIGINT: start nothing new, pass SIGTERM to running jobs, wait up to 30 s for them, exit 0 (during the
    readiness wait: exit 0 within a second, no job started).
    Each job runs in a process group of its own and gets the SIGTERM once, from here, to its whole group. supervisord
    stops the ``cron`` program as a group (``stopasgroup``) for supercronic, which passes no signal on to its jobs
    (they are in its group): either way a mirror_gina run drains its downloads and exits, releasing its queues'
    locks, before cron is STOPPED.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from avoviirscollector.config import Settings, settings_or_exit
from avoviirscollector.logs import setup_logging
from avoviirscollector.ready import ReadyMarker
from avoviirscollector.signals import stop_on_signals

PROGRAM = "cron"  # its name in supervisord.conf, of its log and its ready marker
LOG = logging.getLogger(PROGRAM)

SHORTCUTS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# (name, low, high) of the 7-field form
FIELDS = (("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23), ("day-of-month", 1, 31), ("month", 1, 12),
          ("day-of-week", 0, 7), ("year", 1970, 2199))
SIMPLE_COMMAND = re.compile(r"[\w@%+=:,./-]+(?:[ \t]+[\w@%+=:,./-]+)*")
ENV_LINE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\s*=")


class CrontabError(ValueError):
    """A crontab line cannot be parsed; the message names the line."""


def _parse_field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        match = re.fullmatch(r"(\*|\d+(?:-\d+)?)(?:/(\d+))?", part)
        if match is None:
            raise CrontabError(f"bad {name} field {text!r}")
        span, step = match.group(1), int(match.group(2) or 1)
        if span == "*":
            first, last = low, high
        elif "-" in span:
            first, last = (int(x) for x in span.split("-"))
        else:
            first = last = int(span)
            if match.group(2):
                last = high
        if step < 1 or first < low or last > high or first > last:
            raise CrontabError(f"{name} field {text!r} outside {low}-{high}")
        values.update(range(first, last + 1, step))
    if name == "day-of-week" and 7 in values:
        values.discard(7)
        values.add(0)
    return frozenset(values)


@dataclass(frozen=True)
class CronLine:
    """One schedule line: the sets of matching values per field, and the command."""

    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    years: frozenset[int]
    day_restricted: bool
    weekday_restricted: bool
    command: str
    text: str

    @classmethod
    def parse(cls, line: str) -> CronLine:
        text = line.strip()
        words = text.split()
        if words and words[0] in SHORTCUTS:
            schedule, used = SHORTCUTS[words[0]].split(), 1
        elif len(words) >= 8 and all(re.fullmatch(r"[\d*,/-]+", w) for w in words[:7]):
            schedule, used = words[:7], 7
        else:
            schedule, used = words[:5], 5
        if len(words) <= used:
            raise CrontabError(f"no command in crontab line {text!r}")
        fields = schedule if len(schedule) == 7 else ["0", *schedule, "*"]
        sets = [_parse_field(f, name, low, high) for f, (name, low, high) in zip(fields, FIELDS, strict=True)]
        command_text = text.split(None, used)[-1]
        return cls(*sets, day_restricted=fields[3] != "*", weekday_restricted=fields[5] != "*",
                   command=command_text, text=text)

    def is_due(self, when: dt.datetime) -> bool:
        """True when this line fires at ``when`` (its second, in the crontab's time zone: UTC here)."""
        if when.second not in self.seconds or when.minute not in self.minutes or when.hour not in self.hours:
            return False
        if when.month not in self.months or when.year not in self.years:
            return False
        day_ok = when.day in self.days
        weekday_ok = (when.isoweekday() % 7) in self.weekdays
        if self.day_restricted and self.weekday_restricted:
            return day_ok or weekday_ok
        return day_ok and weekday_ok


def parse_crontab(text: str) -> list[CronLine]:
    """Every schedule line of a crontab file; raise :class:`CrontabError` naming the first bad line."""
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if ENV_LINE.match(stripped):
            raise CrontabError(f"line {number}: KEY=VALUE lines are not used; settings come from the environment")
        try:
            lines.append(CronLine.parse(stripped))
        except CrontabError as err:
            raise CrontabError(f"line {number}: {err}") from None
    return lines


def shell_line(command: str) -> str:
    """What ``/bin/sh -c`` runs for a crontab command: ``exec command`` for a simple command (words, no shell syntax),
    so the shell becomes the program: its pid, exit status and signals are the job's. A shell left in between would
    die of a stop's SIGTERM at once and leave the program running on, unsignalled."""
    return f"exec {command}" if SIMPLE_COMMAND.fullmatch(command) else command


class CronRunner:
    """Start due lines every second; never two runs of one line at once."""

    def __init__(self, lines: list[CronLine], clock=lambda: dt.datetime.now(dt.UTC),
                 stopping: threading.Event | None = None):
        self.lines = lines
        self._clock = clock
        self._stop = stopping or threading.Event()
        self._running: dict[int, subprocess.Popen] = {}

    def stop(self) -> None:
        self._stop.set()

    def _reap(self) -> None:
        for index, proc in list(self._running.items()):
            code = proc.poll()
            if code is not None:
                del self._running[index]
                level = logging.INFO if code == 0 else logging.WARNING
                LOG.log(level, "job finished with exit status %d: %s", code, self.lines[index].command)

    def _start_due(self, when: dt.datetime) -> None:
        for index, line in enumerate(self.lines):
            if not line.is_due(when):
                continue
            if index in self._running:
                LOG.warning("not starting %r: its previous run (pid %d) is still going",
                            line.command, self._running[index].pid)
                continue
            LOG.info("starting job: %s", line.command)
            # a process group of its own: the stop's SIGTERM reaches it once, from here (see run())
            self._running[index] = subprocess.Popen(["/bin/sh", "-c", shell_line(line.command)],
                                                    start_new_session=True)

    def run(self) -> None:
        LOG.info("running %d crontab line(s) with the built-in runner", len(self.lines))
        last = self._clock().replace(microsecond=0)
        try:
            while not self._stop.is_set():
                now = self._clock()
                second = now.replace(microsecond=0)
                while last < second:  # catch up every second boundary crossed, none twice
                    last += dt.timedelta(seconds=1)
                    self._start_due(last)
                self._reap()
                self._stop.wait(max(0.05, 1.0 - (self._clock().microsecond / 1e6)))
        finally:
            # one SIGTERM to each job's group: a second one (supervisord's to the cron group, say) could land while
            # the job's interpreter is already exiting, its handler gone, and kill it
            for proc in self._running.values():
                _signal_group(proc, signal.SIGTERM)
            deadline = time.monotonic() + 30
            for proc in self._running.values():
                try:
                    proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    LOG.warning("job still running 30 s after SIGTERM, killed: %s (pid %d)", proc.args[-1], proc.pid)
                    _signal_group(proc, signal.SIGKILL)
                    proc.wait()
            self._reap()


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    """Send ``signum`` to the process group of a job started in a session of its own (its pid is the group's)."""
    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:  # the job and its group are gone
        pass


def start_detached(command: str) -> None:
    """Start ``/bin/sh -c command`` in the background, not as a child of this process (which may exec supercronic,
    which would never reap it): an intermediate process starts it and exits at once; init or supervisord reaps it."""
    LOG.info("starting at start: %s", command)
    pid = os.fork()
    if pid == 0:  # the intermediate
        try:
            subprocess.Popen(["/bin/sh", "-c", command], start_new_session=True)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def wait_for_the_suite(settings: Settings, limit: float, stopping: threading.Event) -> None:
    """Wait until the rest of the suite is ready (readiness.py, cron itself left out), ``stopping`` seen every
    0.2 s and each question given 0.35 s (so the flag is seen within a second), for ``limit`` seconds at most; one
    line says how it went."""
    from avoviirscollector.readiness import Collector, Judge, wait_ready

    outcome = wait_ready(Collector(settings, timeout=0.35).observe, limit, Judge(exclude={PROGRAM}),
                         stopping=stopping)
    if outcome.stopped:
        LOG.info("stopped while waiting for the rest of the suite to be ready: no job started")
    elif outcome.ready:
        LOG.info("the rest of the suite is ready after %.1f s: starting the jobs", outcome.seconds)
    else:
        LOG.warning("the rest of the suite is not ready after %g s (%s): starting the jobs anyway", limit,
                    "; ".join(outcome.reasons))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="avo_cron", description=__doc__.split("\n\n")[0])
    parser.add_argument("crontab", type=Path)
    parser.add_argument("--runner", choices=("auto", "builtin"), default="auto")
    parser.add_argument("--check", action="store_true", help="parse the crontab and exit")
    parser.add_argument("--at-start", action="append", default=[], metavar="COMMAND",
                        help="run COMMAND once in the background when the jobs start (repeatable)")
    parser.add_argument("--wait-ready", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to SECONDS for the rest of the suite to be ready before any job (default 0)")
    args = parser.parse_args(argv)
    setup_logging(PROGRAM)
    stopping = threading.Event()
    stop_on_signals(stopping.set)
    try:
        lines = parse_crontab(args.crontab.read_text())
    except (OSError, CrontabError) as err:
        print(f"avo_cron: {args.crontab}: {err}", flush=True)
        return 2
    if args.check:
        return 0
    settings = settings_or_exit("avo_cron")
    with ReadyMarker(settings.viirs_base, PROGRAM) as ready:
        ready.set()
        if args.wait_ready > 0:
            wait_for_the_suite(settings, args.wait_ready, stopping)
        if stopping.is_set():
            return 0
        for command in args.at_start:
            start_detached(command)
        supercronic = shutil.which("supercronic")
        if supercronic and args.runner == "auto":
            LOG.info("handing %s to %s", args.crontab, supercronic)
            os.execv(supercronic, [supercronic, str(args.crontab)])  # the marker stays: the same pid goes on
        CronRunner(lines, stopping=stopping).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
