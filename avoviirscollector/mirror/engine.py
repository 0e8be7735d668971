"""The engine of mirror_gina: one run over its queues (their locks, then its listing rounds) and the per-queue
locks. Each round goes through five phases, one method each: list (the listings its queues need), plan (what to
fetch, in what order: mirror/plan.py), fetch (the downloader: mirror/download.py), place (verify and rename into
sdr/, journalled: mirror/place.py) and summarise (failure memory and health record: mirror/backoff.py,
mirror/health.py). What a run
did is one :class:`~avoviirscollector.mirror.results.RunResult`, which alone decides the exit status and whether a
round counts as a success. The command line is mirror/cli.py.

A run started by cron lists every ``MIRROR_POLL_SECONDS`` (15 s by default) and fetches what is new at once, until
the next minute's run is about to take over (:func:`next_round`): a file GINA lists starts downloading within
seconds, with one process a minute as before. ``MIRROR_POLL_SECONDS=0`` (or ``mirror_gina --once``) makes one
round a run."""


from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from avoviirscollector import isotime
from avoviirscollector.config import Settings
from avoviirscollector.granules import GranuleMap
from avoviirscollector.mirror.backoff import FailureMemory, is_outage
from avoviirscollector.mirror.download import Downloader, Fault, Outcome, os_reason, remove_stale_temps
from avoviirscollector.mirror.health import MirrorHealth
from avoviirscollector.mirror.listing import ListingClient, ListingError, fetch_listing
from avoviirscollector.mirror.listing_records import Record
from avoviirscollector.mirror.place import AlreadyPlaced, Journal, PlacementError, place_file, warm_up
from avoviirscollector.mirror.plan import Copy, Plan, placed_file, plan_jobs
from avoviirscollector.mirror.queues import Queue
from avoviirscollector.mirror.results import RoundResult, RunResult
from avoviirscollector.mirror.state_files import ListingTimes, SkippedRecords, StationCopies
from avoviirscollector.mirror.window import listing_window
from avoviirscollector.ondisk.state import MIRROR_HEALTH, PlacedRecord, read_json
from avoviirscollector.space import sweep
from avoviirscollector.viirs import SATELLITE_TO_SHORT

PROGRAM = "mirror_gina"


class QueueLocks:
    """Non-blocking ``flock`` per queue in ``state/``; released when the process ends, whatever the cause."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._fds: dict[str, int] = {}

    def path(self, queue: str) -> Path:
        return self.state_dir / f"{PROGRAM}.{queue}.lock"

    def acquire(self, queue: str) -> bool:
        """True when this run now holds the queue's lock. Raises OSError when the lock file cannot be created."""
        fd = os.open(self.path(queue), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:  # the pid is for the operator only: the flock is the lock, so a full disk does not stop the run
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass
        self._fds[queue] = fd
        return True

    def release_all(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


class Placed:
    """What counts as placed already: a name the journal remembers, or a file of that name in sdr/ (looked up one
    name at a time: sdr/ holds months of files, a listing only days of them)."""

    def __init__(self, sdr_dir: Path, remembered: set[str]) -> None:
        self.sdr_dir = sdr_dir
        self.remembered = remembered

    def __contains__(self, name: object) -> bool:
        return name in self.remembered or (isinstance(name, str) and os.path.lexists(self.sdr_dir / name))


class _Progress:
    """A tqdm bar on the terminal (stderr), fed by the downloader once a second and on every outcome."""

    def __init__(self, files: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=files, unit="file", dynamic_ncols=True, file=sys.stderr)

    def active(self, items: list[tuple[str, int, int | None]]) -> None:
        parts = [f"{name.split('_', 1)[0]} {done * 100 // total if total else 0}%" for name, done, total in items]
        self.bar.set_postfix_str(", ".join(parts[:4]))

    def one_done(self) -> None:
        self.bar.update(1)

    @staticmethod
    def logging_above() -> contextlib.AbstractContextManager:
        """Log lines go above the bar instead of through it."""
        from tqdm.contrib.logging import logging_redirect_tqdm

        return logging_redirect_tqdm()

    def close(self) -> None:
        self.bar.close()


def next_round(started: float, now: float, poll: int, until: float | None = None) -> float | None:
    """When the next listing round of a run starts (epoch seconds), or None when the run ends: rounds come every
    ``poll`` seconds (at once after a round that took longer) while the next one starts over a second before the
    next minute (when cron starts the next run; a run still going then is not started twice, so "the next minute" is
    counted from ``now``), or before ``until`` when given. Pure."""
    if poll <= 0:
        return None
    at = max(started + poll, now)
    end = until if until is not None else (now // 60 + 1) * 60 - 1.0
    return at if at < end else None



class MirrorRun:
    """One run of mirror_gina over ``queues``: its listing rounds (see :func:`next_round`; one with ``once``), each
    in named phases: list (:meth:`_list`), plan (:meth:`_plan`), fetch (:meth:`_fetch`), place (:meth:`_place`, on
    a thread of its own while the transfers go on) and summarise (:meth:`_summarise`: failure memory and health
    record). What the run did is :attr:`result` (mirror/results.py decides what it means); ``run()`` returns its
    exit status; ``stop()`` may come from a signal."""

    def __init__(self, settings: Settings, queues: list[Queue], log: logging.Logger, *, stall_seconds: int = 30,
                 connect_timeout: float = 10.0, show_progress: bool = False,
                 downloader_options: dict | None = None, once: bool = False, run_for: float | None = None,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.settings = settings
        self.queues = queues
        self.log = log
        self.stall_seconds = stall_seconds
        self.connect_timeout = connect_timeout
        self.show_progress = show_progress
        self.downloader_options = downloader_options or {}
        self.once = once
        self.run_for = run_for
        self.clock = clock
        self.result = RunResult()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.first_listed: dict[str, str] = {}  # name -> when a listing first showed it (ISO), for the journal
        self._client: ListingClient | None = None
        self._journal = Journal(settings.state_dir)
        self._placed: dict[str, PlacedRecord] = {}  # what the journal remembers, and what this run placed
        self._files = GranuleMap()  # plan.granule_file -> plan.Held of those
        self._copies = StationCopies(settings.state_dir)

    def stop(self) -> None:
        self._stop.set()

    @property
    def journal_keep(self) -> dt.timedelta:
        """How long the journal remembers a placed file: the longer of the listing window (the largest backfill,
        plus the day the listing's end date runs ahead) and RECOVERY_HOURS."""
        days = max([self.settings.gina_backfill_days] + [q.backfill_days for q in self.queues])
        return max(dt.timedelta(days=days + 1), dt.timedelta(hours=self.settings.recovery_hours))

    def run(self) -> int:
        s = self.settings
        try:
            for path in (s.sdr_dir, s.tmp_dir, s.state_dir):
                path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            self.log.error("cannot create %s: %s; the next run tries again", err.filename, os_reason(err))
            self.result.cannot_start = True
            return self.result.exit_status()
        locks = QueueLocks(s.state_dir)
        try:
            mine = self._take_locks(locks)
            if mine:
                self._serve(mine)
            elif not self.result.lock_failed:
                self.log.info("every queue is busy with another mirror_gina run; exiting")
        finally:
            locks.release_all()
        return self.result.exit_status()

    def _take_locks(self, locks: QueueLocks) -> list[Queue]:
        """The queues whose lock this run now holds (the others are busy with another run, or their lock file
        cannot be created: ``result.lock_failed``)."""
        mine = []
        for queue in self.queues:
            try:
                got = locks.acquire(queue.name)
            except OSError as err:
                self.log.error("queue %s: cannot create its lock %s: %s; the next run tries again", queue.name,
                               locks.path(queue.name), os_reason(err))
                self.result.lock_failed = True
                continue
            if got:
                mine.append(queue)
            else:
                self.log.info("queue %s: another mirror_gina run still holds %s; skipping this queue",
                              queue.name, locks.path(queue.name))
        return mine

    # -- the run: its rounds -------------------------------------------------------------------------------------
    def _serve(self, queues: list[Queue]) -> None:
        began = time.time()
        self._clean_temps()
        self._remember_placed()
        self._client = ListingClient()
        try:
            while True:
                started = time.time()
                self._round(queues, first=not self.result.rounds)
                poll = 0 if self.once else self.settings.mirror_poll_seconds
                until = None if self.run_for is None else began + self.run_for
                at = next_round(started, time.time(), poll, until)
                if at is None or self._stop.is_set() or self._stop.wait(max(0.0, at - time.time())):
                    break
        finally:
            self._client.close()
            self._client = None

    def _clean_temps(self) -> None:
        tmp = self.settings.tmp_dir
        try:
            count, size = remove_stale_temps(tmp)
        except OSError as err:
            self.log.warning("cannot clean %s of stale temp files: %s", tmp, os_reason(err))
        else:
            if count:
                self.log.info("removed %d stale temp file(s) (%.1f MB) untouched for a day from %s", count,
                              size / 1e6, tmp)

    def _remember_placed(self) -> None:
        """What the journal remembers (read once a run; the run's own placements are added as they come)."""
        self._placed = self._journal.placed(self.journal_keep)
        self._files = GranuleMap()
        for record in self._placed.values():
            self._note_placed(record.name, record.station)

    def _note_placed(self, name: str, station: str) -> None:
        placed = placed_file(name, station)
        if placed is not None:
            self._files.setdefault(*placed)

    # -- one round ---------------------------------------------------------------------------------------------
    def _round(self, queues: list[Queue], first: bool) -> None:
        now = self.clock()
        started = time.monotonic()
        result = RoundResult()
        self.result.rounds.append(result)
        records = self._list(queues, result, now)
        if self._stop.is_set():
            self.log.info("stopped before any download")
            result.stopped = True
            return
        memory = FailureMemory(self.settings.state_dir, self.settings.mirror_give_up_tries)
        quiet = logging.INFO if first else logging.DEBUG
        plan = self._plan(records, queues, memory, now, quiet)
        listed = sum(c[0] for c in plan.counts.values())
        wanted = {rec.name for rec in records if any(q.wants(rec.name) and SATELLITE_TO_SHORT[q.satellite] ==
                                                     rec.sdr.platform for q in queues)}
        try:
            if plan.jobs:
                self._fetch(plan, listed, queues, started, result)
            else:
                self._nothing(listed, queues, result, quiet)
        finally:
            self._summarise(memory, now, wanted, plan, result)

    # -- phase: list -------------------------------------------------------------------------------------------
    def _list(self, queues: list[Queue], result: RoundResult, now: dt.datetime) -> list[Record]:
        """The good records of every listing these queues need (one request per listing key); each name's first
        listing is remembered for the journal (from the health record when an earlier run listed it first)."""
        listings = ListingTimes(self.settings.state_dir)
        skipped = SkippedRecords(self.settings.state_dir)
        groups: dict[tuple, list[Queue]] = {}
        for queue in queues:
            groups.setdefault(queue.listing_key, []).append(queue)
        records: list[Record] = []
        for key, members in groups.items():
            if self._stop.is_set():
                break
            records += self._listing(key, members, listings, skipped, result, now)
        pending = read_json(self.settings.state_dir / MIRROR_HEALTH).get("pending")  # first listed by an earlier run
        listed_now = isotime.stamp(now)
        for rec in records:
            if rec.name not in self.first_listed:
                self.first_listed[rec.name] = (pending.get(rec.name) if isinstance(pending, dict) else None) \
                    or listed_now
        return records

    def _listing(self, key: tuple, members: list[Queue], listings: ListingTimes, skipped: SkippedRecords,
                 result: RoundResult, now: dt.datetime) -> list[Record]:
        """One listing (shared by the queues ``members``): its good records; notes the satellite's newest granule
        listed (None when the listing failed) in ``result.satellites``."""
        satellite = key[0]
        window = listing_window(now, listings.last_full(key), key[4], self.settings.mirror_poll_seconds > 0)
        try:
            good, problems = fetch_listing(self._client, self.settings.gina_url, key, window,
                                           timeout=(self.connect_timeout, 60.0))
            if window.full:
                listings.listed_in_full(key, now)
        except ListingError as err:
            result.listing_failed = True
            result.satellites.setdefault(satellite, None)
            self.log.error("listing for %s (queues %s) failed: %s; the next run tries again", satellite,
                           ", ".join(q.name for q in members), err)
            return []
        newest = max((rec.sdr.start_time.replace(tzinfo=dt.UTC) for rec in good), default=None)
        if newest is not None or satellite not in result.satellites:
            result.satellites[satellite] = max(filter(None, (newest, result.satellites.get(satellite))), default=None)
        to_name = skipped.to_name(problems, now)
        for problem in to_name:  # one WARNING per unusable record (again a day later if still listed)
            self.log.warning("listing for %s: skipped %s", satellite, problem)
        if len(problems) > len(to_name):
            self.log.info("listing for %s: skipped %d unusable records again (each named in a WARNING within "
                          "the last 24 hours)", satellite, len(problems) - len(to_name))
        return good

    # -- phase: plan -------------------------------------------------------------------------------------------
    def _plan(self, records: list[Record], queues: list[Queue], memory: FailureMemory, now: dt.datetime,
              quiet: int) -> Plan:
        """What to fetch and in what order (mirror/plan.py); other stations' copies left alone are noted."""
        # placed before and removed since (cleanup, free-space sweep): not fetched again while GINA lists it
        have = Placed(self.settings.sdr_dir, set(self._placed))
        plan = plan_jobs(records, queues, have, self._files, self.first_listed,
                         lambda name: memory.waiting(name, now))
        held = Counter(plan.waiting.values())
        if held:
            self.log.log(quiet, "not fetched now: %d file(s) waiting after failing (backoff), %d given up on (see "
                         "avo_status)", held["backoff"], held["given up"])
        self._note_copies(plan.copies, now)
        return plan

    def _note_copies(self, copies: list[Copy], now: dt.datetime) -> None:
        """Other stations' copies left alone: each noted once (``state/mirror_gina.copies.json``, with when each
        copy and the file kept instead were first listed) for status and the monitor; one line a round that found
        new ones."""
        if not copies:
            return
        listed = {c.name: self.first_listed.get(c.name) for c in copies}
        listed |= {c.of: self.first_listed.get(c.of) or self._listed_of(c.of) for c in copies}
        try:
            new = self._copies.note(copies, listed, now, now - self.journal_keep)
        except OSError as err:
            self.log.warning("cannot write the record of other stations' copies in %s: %s",
                             self.settings.state_dir, os_reason(err))
            return
        if new:
            by = Counter(copy.station or "an unknown station" for copy in new)
            shown = ", ".join(f"{count} from {station}" for station, count in sorted(by.items()))
            self.log.info("left alone %d copies of granule files another station listed first (%s): placed or "
                          "being fetched already", len(new), shown)

    def _listed_of(self, name: str) -> str | None:
        record = self._placed.get(name)
        if record is None or record.listed is None:
            return None
        return isotime.stamp(record.listed)

    def _nothing(self, listed: int, queues: list[Queue], result: RoundResult, level: int) -> None:
        """The round's line when its plan has nothing to fetch."""
        if self.result.lock_failed and not result.listing_failed:
            self.log.info("nothing fetched: %d wanted files listed, all placed before; a queue's lock could "
                          "not be taken (see above)", listed)
        elif result.listing_failed:
            self.log.info("nothing fetched: %d wanted files listed for %d queue(s), all placed before; "
                          "a listing failed (see above)", listed, len(queues))
        else:
            self.log.log(level, "nothing new: %d wanted files listed for %d queue(s), all placed before", listed,
                         len(queues))

    # -- phase: fetch ------------------------------------------------------------------------------------------
    def _fetch(self, plan: Plan, listed: int, queues: list[Queue], started: float, result: RoundResult) -> None:
        """Room made first, then the plan's jobs through the downloader; each verified file goes to the place phase
        (one thread of its own: placing never holds the transfers back)."""
        self._make_room()
        connections = max(q.connections for q in queues)
        self.log.info("%d of %d wanted files to fetch with %d connections per file", len(plan.jobs), listed,
                      connections)
        progress = _Progress(len(plan.jobs)) if self.show_progress else None
        downloader = Downloader(self.settings.tmp_dir, connections, connect_timeout=self.connect_timeout,
                                low_speed_time=self.stall_seconds, progress=progress.active if progress else None,
                                **self.downloader_options)
        placer = ThreadPoolExecutor(1, thread_name_prefix="place")
        placer.submit(warm_up)
        on_outcome = functools.partial(self._on_outcome, plan=plan, result=result, placer=placer, progress=progress)
        try:
            with progress.logging_above() if progress else contextlib.nullcontext():
                downloader.run(plan.jobs, on_outcome, self._stop)
        finally:
            placer.shutdown(wait=True)
            downloader.close()
            if progress:
                progress.close()
        result.stopped = self._stop.is_set()
        self._log_fetched(result, time.monotonic() - started)

    def _make_room(self) -> None:
        """Room for the downloads first: below VIIRS_MIN_FREE the oldest granule files go (space.py)."""
        try:
            sweep(self.settings, self.log)
        except OSError as err:
            self.log.warning("free-space sweep of %s failed: %s", self.settings.sdr_dir, os_reason(err))

    def _on_outcome(self, outcome: Outcome, *, plan: Plan, result: RoundResult, placer: ThreadPoolExecutor,
                    progress: _Progress | None) -> None:
        """The downloader's word on one file: a verified file goes to the placer, anything else is noted."""
        if progress:
            progress.one_done()
        name = outcome.job.name
        if outcome.ok:
            placer.submit(self._place, outcome, plan.stations.get(name, ""), result)
        elif outcome.fault is Fault.SKIPPED:
            self.log.info("skipped %s: %s", name, outcome.reason)
            self._note(result, name, Fault.SKIPPED)
        else:
            self.log.error("FAILED %s: %s; %s", name, outcome.reason, outcome.next_step)
            self._note(result, name, outcome.fault, outcome.reason, outcome.partial_kept)

    def _note(self, result: RoundResult, name: str, fault: Fault, reason: str = "", partial_kept: bool = False
              ) -> None:
        with self._lock:
            result.note(name, fault, reason, partial_kept)

    def _log_fetched(self, result: RoundResult, seconds: float) -> None:
        megabytes = result.bytes_placed / 1e6
        self.log.info(
            "%s: placed %d files (%.1f MB in %.1f s, %.1f MB/s), failed %d, skipped %d%s",
            "stopped" if result.stopped else "done", len(result.placed), megabytes, seconds,
            megabytes / seconds if seconds else 0.0, len(result.failed), len(result.skipped),
            "; listing failed for some queues" if result.listing_failed else "",
        )

    # -- phase: place (the placer's thread) --------------------------------------------------------------------
    def _place(self, outcome: Outcome, station: str, result: RoundResult) -> None:
        """Check a verified file and rename it into sdr/, journalled just before the rename (mirror/place.py)."""
        name = outcome.job.name
        try:
            place_file(outcome.path, self.settings.sdr_dir, name,
                       before_rename=functools.partial(self._journal_entry, outcome, station))
        except AlreadyPlaced:
            self.log.info("skipped %s: another run placed it meanwhile; this copy is removed", name)
            self._note(result, name, Fault.SKIPPED)
            return
        except PlacementError as err:
            self.log.error("FAILED %s: %s; temp removed; the next run tries again", name, err)
            self._note(result, name, Fault.FILE, str(err))
            return
        except OSError as err:
            self.log.error("FAILED %s: cannot place (%s); temp removed; the next run tries again", name,
                           os_reason(err))
            self._note(result, name, Fault.LOCAL, os_reason(err))
            return
        mbps = outcome.size / 1e6 / outcome.seconds if outcome.seconds > 0 else 0.0
        resumed = f" resumed from byte {outcome.resumed_from}" if outcome.resumed_from else ""
        self.log.info("placed %s bytes=%d seconds=%.2f MB/s=%.1f connections=%d md5_after_last_byte=%.3fs%s%s",
                      name, outcome.size, outcome.seconds, mbps, outcome.connections, outcome.verify_seconds,
                      resumed, f" station={station}" if station else "")
        with self._lock:
            result.note(name, Fault.NONE, size=outcome.size)
            self._placed[name] = PlacedRecord(name, time.time(), outcome.size, station=station)
            self._note_placed(name, station)

    def _journal_entry(self, outcome: Outcome, station: str) -> Callable[[], None]:
        """The journal record of a file about to be renamed into sdr/; returns what blanks it out again (called
        when the rename fails)."""
        name = outcome.job.name
        record = self._journal.append(name, outcome.size, outcome.md5, outcome.seconds, outcome.connections,
                                      listed=self.first_listed.get(name), station=station)
        return functools.partial(self._journal.retract, record)

    # -- phase: summarise --------------------------------------------------------------------------------------
    def _summarise(self, memory: FailureMemory, now: dt.datetime, wanted: set[str], plan: Plan,
                   result: RoundResult) -> None:
        """Failure memory and the health record, after the round (both skipped quietly when they cannot be
        written: a full disk has been reported per file already)."""
        result.stopped = result.stopped or self._stop.is_set()
        given_up = self._remember_failures(memory, now, plan, result)
        tried = {job.name for job in plan.jobs} | set(plan.waiting)
        unplaced = tried - set(result.placed) - set(result.skipped) - given_up
        summary = (f"placed {len(result.placed)}, failed {len(result.failed)}, waiting {len(unplaced)}"
                   + ("; a listing failed" if result.listing_failed else ""))
        try:
            MirrorHealth(self.settings.state_dir).record_run(now, self.result.round_succeeded(result, unplaced),
                                                             result.satellites, unplaced,
                                                             (wanted - unplaced) | given_up, summary)
        except OSError as err:
            self.log.warning("cannot write the health record in %s: %s", self.settings.state_dir, os_reason(err))

    def _remember_failures(self, memory: FailureMemory, now: dt.datetime, plan: Plan, result: RoundResult
                           ) -> set[str]:
        """Backoff for the files that failed of their own fault (none when the round looks like an outage of GINA
        or was stopped), placed files forgotten; returns the names given up on."""
        own = {} if result.stopped else result.own_faults
        if own and is_outage(len(own), len(plan.jobs), result.listing_failed):
            self.log.warning("%d of %d files failed at once (or a listing failed): taken for an outage of GINA, no "
                             "file is put into backoff", len(own), len(plan.jobs))
            own = {}
        try:
            for name, entry in memory.record(own, result.placed, now, now - self.journal_keep):
                self.log.error("giving up on %s after %d tries (last: %s); it is not fetched again (avo_status "
                               "lists it)", name, entry["tries"], entry["reason"])
        except OSError as err:
            self.log.warning("cannot write %s: %s", memory.path, os_reason(err))
        return set(memory.given_up())
