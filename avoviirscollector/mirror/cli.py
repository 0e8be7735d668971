"""mirror_gina: bring every wanted VIIRS SDR file that GINA NRT lists into ``$VIIRS_BASE/sdr``, verified and whole.

Run by cron every minute. For each queue of the queue file (``MIRROR_GINA_CONFIG``; default ``etc/mirror_gina.yaml``
in the package) it takes a lock, ``state/mirror_gina.<queue>.lock``; a queue whose lock is held by a run still going
is skipped with one line saying so (and the run exits at once when every queue is busy). A run lists every
``MIRROR_POLL_SECONDS`` (15) until the next minute's run is due, so a file GINA lists starts downloading within
seconds (``--once``: one round). One ``products.json`` request per satellite serves all of its queues: the whole
backfill window at the suite's start and hourly, between those the granules of the last hour (minute bounds), asked
with ``If-None-Match`` when GINA sent an ETag. ``VIIRS_FACILITY=all`` (the default) asks every receiving station (no
facility in the query, as GINA recommends); each granule file is fetched once, from the station that listed it
first, and other stations' copies of it are left alone (``state/mirror_gina.copies.json``).
Wanted files neither in ``sdr/`` nor placed before (the journal), nor waiting after failing (backoff) or given up
on, are fetched newest orbit first, geolocation before bands, each over ``NUM_GINA_CONNECTIONS`` parallel range
requests into ``tmp/``, md5-verified while they stream, checked as HDF5, and renamed into ``sdr/`` in one step;
every placed file gets a line in the log and one in ``state/mirror_gina.journal``. Before downloading, the
free-space sweep (space.py) makes room when free space is below ``VIIRS_MIN_FREE``. Each run is recorded for the
health check (mirror/health.py). The engine is mirror/engine.py; this module is the command line.

Settings (environment, SPEC section 3): ``VIIRS_BASE``, ``GINA_URL``, ``MIRROR_GINA_CONFIG``,
``NUM_GINA_CONNECTIONS``, ``GINA_BACKFILL_DAYS``, ``VIIRS_FACILITY``, ``RECOVERY_HOURS`` (how long the journal
remembers, with the backfill window), ``MIRROR_GIVE_UP_TRIES``, ``VIIRS_MIN_FREE``, ``MIRROR_POLL_SECONDS``; with
``MAILHOST``,
``LOG_SENDER`` and ``LOG_RECIPIENT`` all set, ERROR lines (failed files, failed listings, files given up on) are
mailed in batches.

Output: one line per placed or failed file (on a full disk: "disk full", whichever write failed), a summary line;
a progress bar only when stdout is a terminal.
Exit status: 0 when nothing failed (also when every queue was busy), 1 when a listing or a file failed or the run
was stopped, 2 for bad settings or a bad queue file. SIGTERM or SIGINT: stop the transfers at once, keep partial
files for resume, finish placing what is complete, print the summary.
"""

from __future__ import annotations

import argparse
import sys

from avoviirscollector.config import settings_or_exit
from avoviirscollector.logs import setup_logging
from avoviirscollector.mirror.engine import PROGRAM, MirrorRun
from avoviirscollector.mirror.queues import QueueConfigError, load_queues
from avoviirscollector.signals import stop_on_signals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n\n")[0])
    parser.add_argument("--queue", action="append", default=[], metavar="NAME",
                        help="run only this queue (repeatable); default: every queue that is not disabled")
    parser.add_argument("--stall-seconds", type=int, default=30,
                        help="a connection below 1 KB/s for this long is dropped and its piece retried (30)")
    parser.add_argument("--connect-timeout", type=float, default=10.0, help="seconds (10)")
    parser.add_argument("--once", action="store_true",
                        help="one listing round, then exit (a run from cron lists every MIRROR_POLL_SECONDS until "
                             "the next minute's run is due)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    settings = settings_or_exit(PROGRAM)
    log = setup_logging(PROGRAM, args.verbose, settings)  # ERROR lines are mailed when MAILHOST etc. are set
    try:
        queues = load_queues(settings.mirror_gina_config, settings)
    except QueueConfigError as err:
        print(f"{PROGRAM}: bad queue file: {err}", file=sys.stderr)
        return 2
    if args.queue:
        known = {q.name: q for q in queues}
        unknown = [n for n in args.queue if n not in known]
        if unknown:
            print(f"{PROGRAM}: unknown queue(s) {', '.join(unknown)}; known: {', '.join(known)}", file=sys.stderr)
            return 2
        queues = [known[n] for n in args.queue]
    else:
        queues = [q for q in queues if not q.disabled]
    run = MirrorRun(settings, queues, log, stall_seconds=args.stall_seconds, connect_timeout=args.connect_timeout,
                    show_progress=sys.stdout.isatty(), once=args.once)
    stop_on_signals(run.stop)
    return run.run()


if __name__ == "__main__":
    raise SystemExit(main())
