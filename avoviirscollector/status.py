"""avo_status (also ``avoviirscollector status``): how the suite stands, at a glance; the image's HEALTHCHECK.

What it shows
    - programs: every program supervisord runs and its state (XML-RPC over ``$VIIRS_BASE/run/supervisor.sock``,
      logged in with ``run/supervisor.auth``, see supervisor_client.py)
    - queue: task_broker's latest status message on ``UPDATE_PORT`` (queue length, tasks by product, and the
      granules recovered from sdr/, hand-outs re-queued in doubt and duplicates refused in the last 24 hours)
    - last files placed: the tail of mirror_gina's download journal (``$VIIRS_BASE/state/mirror_gina.journal``:
      JSON lines with time, name, bytes, md5, seconds, connections) with rates, and the last hour's totals
    - stations (last 24 h): per receiving station the files placed from it (the journal's tail, as above: the
      figures say since when when that tail does not reach a day back), the other stations' copies mirror_gina
      left alone (``state/mirror_gina.copies.json``), by how much earlier a station listed the files kept than the
      copies (median), and the passes seen at one station only (``monitor/stations.py`` says how each is counted)
    - files given up on: what mirror_gina no longer fetches after ``MIRROR_GIVE_UP_TRIES`` failures of the file's own
      fault (``state/mirror_gina.failures.json``)
    - mirror health: the last run and last successful run of mirror_gina (``state/mirror_gina.health.json``)
    - last errors: the newest ERROR / CRITICAL lines of ``$VIIRS_BASE/log/*.log``
    - refused connections: with ``ALLOWED_CLIENTS`` set, how many connections each program refused and from where
      (``$VIIRS_BASE/state/refused-<program>.json``, see access.py); not a health problem in itself
    - disk: the filesystem holding ``$VIIRS_BASE`` (size, used, free, headroom above ``VIIRS_MIN_FREE``: statvfs)
      and the size of each top-level folder but ``sdr/``, whose months of files the filesystem figures count (the
      folder walk stops after ``--du-seconds``, default 3 s, and then says the figures are partial)

Readable in a terminal by default; ``--json`` prints one JSON object for scripts (same content).
``--quick`` skips the folder walk (the HEALTHCHECK uses it: it runs every minute).

Ready (``--wait-ready [--timeout S]``, default 60 s)
    Waits, judging again every 0.2 s, until the suite is ready, not only RUNNING (readiness.py): every program
    RUNNING; task_broker, msg_publisher, monitor and cron have written their ready marker
    (``$VIIRS_BASE/run/ready/<program>.json``, ready.py) with the pid supervisord reports; the nameserver answers;
    trollstalker and every gatherer have registered their publisher on a port their pid listens on; and the bus
    connections are made (each gatherer to trollstalker, task_broker to each gatherer, msg_publisher to all of
    them: established TCP connections seen on two reads 0.25 s apart, from ``/proc``). Then it prints ``ready in
    X s`` and exits 0; after the timeout it prints ``not ready after X s`` and the reasons, one a line, and exits 1.
    On a ready suite it answers within a second. With ``--quick`` (the image's HEALTHCHECK: ``avo_status --quick
    --wait-ready --timeout 15``) or ``--report`` the report below follows once ready, and the exit status is its
    verdict's; with ``--json`` the readiness is one JSON object (``ready``, ``seconds``, ``reasons``), or the
    ``ready`` and ``ready_seconds`` keys of the report's.

Exit status: 0 healthy; 1 unhealthy, with the reasons listed: supervisord does not answer, a program is not
RUNNING, task_broker is configured but its status was not heard within ``--wait`` seconds (default 3), the
filesystem is 98% full or more, or the mirror is unhealthy: no mirror_gina run succeeded for
``MIRROR_STALE_MINUTES``, files GINA listed over an hour ago are neither placed nor given up on, or a satellite of
the queues had nothing new listed for ``SILENCE_HOURS`` (health.py judges; the monitor's ``/healthz`` the same way);
2 a bad setting.
Settings (environment, see config.py): ``VIIRS_BASE``, ``UPDATE_PORT``; posttroll's ``POSTTROLL_*`` port variables
(the nameserver, for ``--wait-ready``). Reads files, sockets and ``/proc`` only; changes nothing. Signals: none
handled (it runs for a few seconds at most, or ``--timeout`` seconds waiting for readiness).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field

from avoviirscollector import isotime
from avoviirscollector.access import read_refusals
from avoviirscollector.config import Settings, settings_or_exit
from avoviirscollector.formatting import human_bytes
from avoviirscollector.health import Facts, assess
from avoviirscollector.monitor.stations import copy_notes, station_rows
from avoviirscollector.ondisk.log_errors import last_errors
from avoviirscollector.ondisk.state import (
    MIRROR_COPIES,
    MIRROR_FAILURES,
    MIRROR_HEALTH,
    MIRROR_JOURNAL,
    placed_records,
    read_json,
    tail_lines,
)
from avoviirscollector.ondisk.usage import disk_use
from avoviirscollector.queue_status import DAY_COUNTS, first_status, not_heard, pair_line
from avoviirscollector.readiness import Collector, Outcome, wait_ready
from avoviirscollector.supervisor_client import ask_programs

PROGRAM = "avo_status"
TAIL_BYTES = 256 * 1024
DAY_SECONDS = 24 * 3600.0


# ----------------------------------------------------------------------------------------------- pure parts
@dataclass
class Report:
    time: str
    viirs_base: str
    programs: list[dict] = field(default_factory=list)
    supervisor_error: str | None = None
    queue: dict | None = None
    queue_error: str | None = None
    last_files: list[dict] = field(default_factory=list)
    last_hour: dict = field(default_factory=dict)
    stations: dict = field(default_factory=dict)
    last_errors: list[dict] = field(default_factory=list)
    disk: dict = field(default_factory=dict)
    refused: list[dict] = field(default_factory=list)
    given_up: list[dict] = field(default_factory=list)
    mirror: dict = field(default_factory=dict)
    mirror_problems: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems


def recent_placements(lines: list[str], now: float, count: int) -> tuple[list[dict], dict]:
    """The last ``count`` placed files (name, bytes, seconds, MB/s, time) and the last hour's totals.

    Tolerant: lines that are not JSON objects, or lack fields, are skipped or shown with what they have. The time
    placed is ``time`` (ISO 8601, as mirror_gina writes it).
    """
    entries = []
    for placed in placed_records(lines):
        rate = None
        if placed.size is not None and placed.seconds:
            rate = round(placed.size / placed.seconds / 1e6, 2)
        entries.append({"name": placed.name, "bytes": placed.size, "seconds": placed.seconds, "mb_per_s": rate,
                        "time": _iso(placed.time), "_epoch": placed.time})
    hour = [e for e in entries if e["_epoch"] is not None and now - e["_epoch"] <= 3600]
    total = sum(e["bytes"] for e in hour if isinstance(e["bytes"], (int, float)))
    busy = sum(e["seconds"] for e in hour if isinstance(e["seconds"], (int, float)))
    last_hour = {"files": len(hour), "bytes": total,
                 "mb_per_s": round(total / busy / 1e6, 2) if busy > 0 else None}
    for e in entries:
        del e["_epoch"]
    return entries[-count:][::-1], last_hour


def station_summary(lines: list[str], copies: dict, now: float, cut: bool = False) -> dict:
    """The receiving stations of the last 24 hours from the journal's tail and copies.json: ``{"since": ISO or
    None, "partial": bool, "by_station": [{"station", "files", "copies", "lead_median", "leads",
    "one_station_passes"}, ...]}``. ``cut``: the tail is not the whole journal (then, when its oldest record is less
    than a day old, the files are counted since that record: ``partial``)."""
    since = now - DAY_SECONDS
    records = [p for p in placed_records(lines) if p.time is not None]
    oldest = min((p.time for p in records), default=None)
    partial = cut and (oldest is None or oldest > since)
    recent = [p for p in records if p.time >= since]
    listed = {p.name: p.listed for p in recent if p.listed is not None}
    notes = list(copy_notes(copies, listed.get, since))
    rows = station_rows(((p.name, p.station) for p in recent), notes)
    return {"since": _iso(oldest if partial else since), "partial": partial,
            "by_station": [row.to_json() for row in rows.values()]}


def _iso(when: float | None) -> str | None:
    return None if when is None else isotime.stamp(when, micro=True)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if abs(seconds) < 120 else f"{seconds / 60:.1f} min"


def render_stations(stations: dict) -> list[str]:
    """The "stations (last 24 h)" lines: per receiving station the files placed from it, its copies left alone
    (another station's copy was placed or being fetched), by how much earlier it listed the files kept than the
    copies (median, and of how many), the passes seen there only."""
    rows = stations.get("by_station") or []
    if not rows:
        return ["stations (last 24 h): no files placed, no copies left alone"]
    out = [f"{'stations (last 24 h)':22s} {'files':>6s} {'copies left alone':>18s}   {'came first by (median)':24s}"
           f"passes seen there only"]
    for row in rows:
        lead = "-" if row.get("lead_median") is None else f"{_duration(row['lead_median'])} ({row['leads']})"
        out.append(f"  {row['station']:20s} {row['files']:6d} {row['copies']:18d}   {lead:24s}"
                   f"{row['one_station_passes']:d}")
    if stations.get("partial"):
        out.append(f"  (files placed since {stations['since']}: the journal's tail read does not reach a day back)")
    return out


def render_text(report: Report) -> str:
    """The report for a terminal: a headline, then one block per section, the problems last."""
    out = [f"avoviirscollector at {report.time}   VIIRS_BASE={report.viirs_base}   "
           + ("HEALTHY" if report.healthy else "UNHEALTHY"), ""]
    out += [*_program_lines(report), "", *_queue_lines(report), "", *_placed_lines(report), ""]
    if report.stations:
        out += [*render_stations(report.stations), ""]
    out += [*_mirror_lines(report), "", *_error_lines(report)]
    if report.refused:
        out += ["", *_refused_lines(report.refused)]
    out += ["", *_disk_lines(report.disk)]
    if report.problems:
        out += ["", "problems", *(f"  {p}" for p in report.problems)]
    return "\n".join(out) + "\n"


def _program_lines(report: Report) -> list[str]:
    out = ["programs (supervisord)"]
    if report.supervisor_error:
        out.append(f"  supervisord does not answer: {report.supervisor_error}")
    for prog in report.programs:
        out.append(f"  {prog['name']:32s} {prog['state']:9s} {prog.get('description', '')}")
    return out


def _queue_lines(report: Report) -> list[str]:
    queue = report.queue
    if queue is None:
        return [f"queue: unknown ({report.queue_error})"]
    counts = queue.get("tasks by product") or {}
    waiting = ", ".join(f"{p} {counts[p]}" if p in counts else p for p in queue["products waiting"])
    out = [f"queue: {queue['queue length']} tasks waiting; by product: {waiting or 'none'}"]
    if queue.get("standby"):
        out = [f"queue: {queue['queued']} tasks queued here; this host is the standby: the other host hands out"]
    day = [f"{queue[key]} {key[:-7]}" for key in DAY_COUNTS if key in queue]
    if day:
        out.append(f"granules in the last 24 h: {', '.join(day)} (recovered from sdr/ after the bus missed them; "
                   f"hand-outs re-queued in doubt; duplicates refused; handed out by both hosts of a pair)")
    if isinstance(queue.get("pair"), dict):
        out.append(pair_line(queue["pair"]))
    return out


def _placed_lines(report: Report) -> list[str]:
    hour = report.last_hour
    out = [f"last files placed (last hour: {hour.get('files', 0)} files, {human_bytes(hour.get('bytes', 0))}"
           + (f", {hour['mb_per_s']} MB/s while downloading" if hour.get("mb_per_s") else "") + ")"]
    if not report.last_files:
        out.append("  none in the journal")
    for item in report.last_files:
        rate = f"{item['mb_per_s']:.2f} MB/s" if item["mb_per_s"] is not None else "? MB/s"
        seconds = f"{item['seconds']:.1f} s" if isinstance(item["seconds"], (int, float)) else "? s"
        out.append(f"  {item.get('time') or '?':26s} {item['name']}  {human_bytes(item['bytes'])} in "
                   f"{seconds} = {rate}")
    return out


def _mirror_lines(report: Report) -> list[str]:
    mirror = report.mirror
    out = [f"mirror_gina: last run {mirror.get('last_run') or 'never'}"
           + (f" ({mirror['last_run_summary']})" if mirror.get("last_run_summary") else "")
           + f", last successful run {mirror.get('last_success') or 'never'}"]
    if report.given_up:
        out.append(f"files given up on ({len(report.given_up)}; not fetched again while GINA lists them)")
        for item in report.given_up:
            out.append(f"  {item['name']}  {item.get('tries')} tries, last: {item.get('reason')} ({item.get('last')})")
    return out


def _error_lines(report: Report) -> list[str]:
    out = ["last errors (log/*.log)"]
    if not report.last_errors:
        out.append("  none")
    for err in report.last_errors:
        out.append(f"  {err['log']}: {err['line']}")
    return out


def _refused_lines(refused: list[dict]) -> list[str]:
    total = sum(item["total"] for item in refused)
    out = [f"refused connections (ALLOWED_CLIENTS): {total}"]
    for item in refused:
        peers = sorted(item["peers"].items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{addr} {count}" for addr, count in peers[:5]) + (" ..." if len(peers) > 5 else "")
        out.append(f"  {item['program']:32s} {item['total']} since {item.get('since') or '?'}: {shown}")
    return out


def _disk_lines(disk: dict) -> list[str]:
    out = []
    if "total" in disk:
        out.append(f"disk: {human_bytes(disk['used'])} used of {human_bytes(disk['total'])} "
                   f"({disk['percent_used']:.0f}%), {human_bytes(disk['free'])} free"
                   + (f"; headroom {human_bytes(disk['headroom'])} above VIIRS_MIN_FREE {disk['min_free_setting']} "
                      f"(below it the oldest granule files of sdr/ go)" if "headroom" in disk else ""))
    if disk.get("folders"):
        sizes = ", ".join(f"{name} {human_bytes(v['bytes'])} ({v['files']} files)"
                          for name, v in disk["folders"].items())
        out.append(f"  {sizes}; sdr/ not walked" + ("" if disk.get("complete", True)
                                                  else "  (partial: walk stopped at time limit)"))
    return out


# ------------------------------------------------------------------------------------------- I/O wrappers
def mirror_state(settings: Settings, report: Report) -> dict:
    """The files mirror_gina gave up on and its last (successful) run, into ``report``; its health record."""
    failures = read_json(settings.state_dir / MIRROR_FAILURES)
    report.given_up = sorted(({"name": name, **{k: entry.get(k) for k in ("tries", "reason", "first", "last")}}
                              for name, entry in failures.items() if isinstance(entry, dict) and entry.get("given_up")),
                             key=lambda item: item["name"])
    health = read_json(settings.state_dir / MIRROR_HEALTH)
    report.mirror = {k: health.get(k) for k in ("last_run", "last_success", "last_run_summary")}
    return health


def collect(settings: Settings, lines: int = 10, wait: float = 3.0, du_seconds: float | None = 3.0) -> Report:
    """Gather the report (supervisord, task_broker's status within ``wait`` s, the journal's tail, the last
    ``lines`` files and errors, the disk with a folder walk of ``du_seconds`` or none, the refusals, mirror_gina's
    records) and judge it with health.assess."""
    now = time.time()
    report = Report(time=isotime.stamp(now),
                    viirs_base=str(settings.viirs_base))
    report.programs, report.supervisor_error = ask_programs(settings.viirs_base)
    try:
        report.queue = first_status(settings.update_port, wait)
        if report.queue is None:
            report.queue_error = not_heard(settings.update_port, wait)
    except Exception as err:  # noqa: BLE001 (zmq errors: report, don't crash the health check)
        report.queue_error = f"{type(err).__name__}: {err}"
    journal = settings.state_dir / MIRROR_JOURNAL
    try:
        journal_lines = tail_lines(journal, 4 * TAIL_BYTES)
        cut = journal.stat().st_size > 4 * TAIL_BYTES
    except OSError:
        journal_lines, cut = [], False
    report.last_files, report.last_hour = recent_placements(journal_lines, now, lines)
    report.stations = station_summary(journal_lines, read_json(settings.state_dir / MIRROR_COPIES), now, cut)
    report.last_errors = last_errors(settings.log_dir, lines)
    report.disk = disk_use(settings.viirs_base, du_seconds)
    report.refused = read_refusals(settings.state_dir)
    if "total" in report.disk and not settings.min_free.off:
        needed = settings.min_free.bytes_of(report.disk["total"])
        report.disk.update(min_free=needed, min_free_setting=str(settings.min_free),
                           headroom=report.disk["free"] - needed)
    facts = Facts(viirs_base=report.viirs_base, programs=report.programs, supervisor_error=report.supervisor_error,
                  queue=report.queue, queue_error=report.queue_error, disk=report.disk,
                  mirror_health=mirror_state(settings, report))
    verdict = assess(facts, now, settings.mirror_stale_minutes, settings.silence_hours)
    report.mirror_problems, report.problems = verdict.mirror_problems, verdict.problems
    return report


def render_ready(outcome: Outcome) -> str:
    """``ready in X s``, or ``not ready after X s`` and the reasons, one a line."""
    if outcome.ready:
        return f"ready in {outcome.seconds:.2f} s\n"
    return f"not ready after {outcome.seconds:.1f} s\n" + "".join(f"  {reason}\n" for reason in outcome.reasons)


def _wait_ready(settings: Settings, args: argparse.Namespace) -> tuple[Outcome, bool]:
    """Wait for readiness; (the outcome, whether the report follows: asked for, and the suite ready)."""
    outcome = wait_ready(Collector(settings).observe, args.timeout)
    report_too = outcome.ready and (args.quick or args.report)
    if not args.json:
        sys.stdout.write(render_ready(outcome))
    elif not report_too:
        print(json.dumps({"ready": outcome.ready, "seconds": outcome.seconds, "reasons": outcome.reasons}))
    sys.stdout.flush()
    return outcome, report_too


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROGRAM, description="How the VIIRS collection suite stands.")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of text")
    parser.add_argument("--quick", action="store_true", help="skip the folder sizes (for the HEALTHCHECK)")
    parser.add_argument("--lines", type=int, default=10, help="files and errors shown (default 10)")
    parser.add_argument("--wait", type=float, default=3.0, help="seconds to wait for task_broker (default 3)")
    parser.add_argument("--du-seconds", type=float, default=3.0, help="time limit of the folder walk (default 3)")
    parser.add_argument("--wait-ready", action="store_true",
                        help="wait until the suite is ready (readiness.py), not only RUNNING; with --quick or "
                             "--report, the report follows once it is")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds --wait-ready waits (default 60)")
    parser.add_argument("--report", action="store_true", help="with --wait-ready: the whole report once ready")
    args = parser.parse_args(argv)
    settings = settings_or_exit(PROGRAM)
    readiness = None
    if args.wait_ready:
        readiness, report_too = _wait_ready(settings, args)
        if not report_too:
            return 0 if readiness.ready else 1
    report = collect(settings, lines=args.lines, wait=args.wait, du_seconds=None if args.quick else args.du_seconds)
    if args.json:
        out = asdict(report)
        out["healthy"] = report.healthy
        if readiness is not None:
            out.update(ready=readiness.ready, ready_seconds=readiness.seconds)
        print(json.dumps(out, indent=2, default=str))
    else:
        sys.stdout.write(render_text(report))
    return 0 if report.healthy else 1


if __name__ == "__main__":
    raise SystemExit(main())
