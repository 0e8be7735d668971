"""monitor: how the suite is doing, to look at (``/``), to scrape (``/metrics``) and to probe (``/healthz``).

Serves HTTP on ``MONITOR_PORT`` (default 29093; SPEC section 11), every address, checked against
``ALLOWED_CLIENTS`` like the suite's other public ports (access.py; a refused client's connection is closed before
its request is read):

- ``GET /metrics``: Prometheus text format through ``prometheus_client`` (names below, all ``avo_``);
- ``GET /``: a status page (server-rendered HTML, inline SVG, refreshes itself every 30 s, nothing fetched from
  anywhere: it works on an isolated network): per satellite the last granule and its delay, 24 hours of passes
  with each granule's completeness per product and its task state, the latency legs' medians of 24 hours per
  satellite and station, the receiving stations (files first, copies left alone, lead, passes seen there only),
  the queue length over 24 hours with the thresholds 6 and 10, programs, the last ERROR lines, disk;
- ``GET /healthz``: the verdict on what monitor holds (its last poll and the broker's status heard within
  ``LIVE_SECONDS``), judged by health.py as ``avoviirscollector status --quick`` judges: ``200 healthy`` or ``503
  unhealthy`` and the reasons, one a line (before monitor's first poll, ``503`` and that it has not looked yet).

Where its figures come from (read-only: it changes nothing, shows no settings and no secrets; credentials in URLs
of log lines are blanked)
    - ``state/mirror_gina.journal``: files placed (name, bytes, download seconds; the time GINA first listed the
      file and the station it came from when the record holds them), read from where it stopped;
    - ``state/mirror_gina.copies.json``: other stations' copies mirror_gina left alone (read again when it
      changed);
    - ``state/mirror_gina.health.json`` / ``.failures.json`` (when mirror_gina writes them): last (successful)
      run, files listed but not placed (with when first listed), files given up on;
    - ``state/task_queue.journal``: granules put into tasks, hand-outs with the worker's address, drops, and the
      broker's events (recovered, in doubt, duplicate, bad requests); read as text, never through the broker's
      store (which may move a file aside);
    - ``UPDATE_PORT``: the broker's status once a second (queue length, tasks by product);
    - supervisord, through its socket with the credentials ``supervisorctl`` uses (run/supervisor.auth): program
      states; ``log/supervisord.log``: every program start (restarts);
    - ``sdr/``: files placed by anyone count for their granule's completeness, files removed by anyone stop
      counting (a download stays counted); ``log/*.log``: the last ERROR lines; the filesystem.

Its own state, ``state/monitor.json`` (written atomically every 30 s and at a stop): 24 hours of history (files,
granules, hand-outs, queue-length samples) and where it stopped reading each journal, so after its own downtime the
missed period is rebuilt from the journals (the bus keeps nothing), and its counters continue. Bounded: what is
older than 25 hours is dropped.

Metrics: ``avo_files_placed_total`` and ``avo_bytes_placed_total`` {satellite, band}; histograms
``avo_download_seconds``, ``avo_acquisition_delay_seconds`` (placed minus granule start) and
``avo_listing_delay_seconds`` (placed minus first listed) {satellite}; ``avo_granules_complete`` and
``avo_granules_expected`` {product, satellite} (last 24 h) and ``avo_granules_tasked_total``; ``avo_files_listed_
not_placed`` and ``avo_files_given_up`` {satellite}; ``avo_queue_length``, ``avo_tasks`` {product};
``avo_tasks_handed_out_total`` and ``avo_tasks_dropped_total`` {product, satellite}; ``avo_bad_requests_total``,
``avo_granules_recovered_total``, ``avo_handouts_in_doubt_total``, ``avo_duplicates_refused_total``,
``avo_handouts_twice_total`` (granules handed out by both hosts of a pair); with a pair (PAIR_PEER),
``avo_pair_active``, ``avo_pair_whole``, ``avo_pair_replication_lag_seconds`` and
``avo_pair_last_promotion_timestamp_seconds``;
``avo_mirror_last_success_timestamp_seconds``, ``avo_mirror_last_run_timestamp_seconds``; ``avo_program_up``
{program}, ``avo_program_starts_total`` {program}; ``avo_filesystem_free_bytes``, ``avo_filesystem_size_bytes``;
``avo_last_granule_timestamp_seconds`` and ``avo_last_granule_delay_seconds`` {satellite}; ``avo_healthy``;
the latency legs (``latency.py``) as the histogram ``avo_latency_seconds`` {leg, satellite, station}; per receiving
station (``stations.py``) ``avo_files_first_total`` {station} (files placed from it), ``avo_station_copies_skipped_
total`` {station} (its copies left alone, each once), and over 24 h ``avo_station_lead_seconds`` {station} (the
median lead when it came first) and ``avo_passes_one_station`` {station}.

Settings (environment, see config.py): ``VIIRS_BASE``, ``MONITOR_PORT``, ``UPDATE_PORT``, ``ALLOWED_CLIENTS``.
Ready: once it serves HTTP and its first poll is done it writes ``$VIIRS_BASE/run/ready/monitor.json`` (ready.py),
removed when it stops. It follows no posttroll bus (only task_broker's status stream).
Signals: SIGTERM or SIGINT save the state and exit 0 within a second.
"""

from __future__ import annotations

import argparse
import http.server
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from avoviirscollector.access import DualStackServer, GatedServerMixin, bind_dual_stack, make_gate
from avoviirscollector.config import Settings, settings_or_exit
from avoviirscollector.health import Facts, assess
from avoviirscollector.isotime import epoch
from avoviirscollector.logs import setup_logging
from avoviirscollector.monitor import page, sources
from avoviirscollector.monitor.history import KEEP, History, Source
from avoviirscollector.ondisk import journal
from avoviirscollector.ondisk.log_errors import last_errors
from avoviirscollector.ondisk.sdr import SdrWatch
from avoviirscollector.ondisk.state import (
    BROKER_JOURNAL,
    MIRROR_COPIES,
    MIRROR_FAILURES,
    MIRROR_HEALTH,
    MIRROR_JOURNAL,
    MONITOR_STATE,
    json_records,
    new_lines,
    read_json,
)
from avoviirscollector.ondisk.usage import disk_use
from avoviirscollector.queue_status import not_heard, parse_queue_status, subscribe
from avoviirscollector.ready import ReadyMarker
from avoviirscollector.signals import stop_on_signals
from avoviirscollector.supervisor_client import ask_programs
from avoviirscollector.viirs import NotASdrName, parse_name

PROGRAM = "monitor"
POLL_SECONDS = 5.0
SAVE_SECONDS = 30.0
LIVE_SECONDS = 10.0  # the broker's status counts as current this long (it publishes once a second)

NOT_POLLED = "monitor has not read the suite's state yet"

log = logging.getLogger(PROGRAM)


def _platform_of(name: str) -> str:
    try:
        return parse_name(name).platform_name
    except NotASdrName:
        return "unknown"


class Monitor:
    """The state monitor keeps and the figures it shows; :meth:`poll` reads what changed (thread-safe)."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.lock = threading.RLock()
        self.state_path = settings.state_dir / MONITOR_STATE
        self.history = self._restore()
        if self.history.watching_since is None:  # the first start: files placed before it count from the journals
            self.history.watching_since = clock()
        self.new_in_sdr = sources.NewInSdr(self._sdr_floor(clock()))
        self.copies = sources.ChangedJson(settings.state_dir / MIRROR_COPIES)
        self.live: dict = {}  # the broker's last status and when it was heard
        self.live_at: float | None = None
        self.programs: list[dict] = []
        self.supervisor_error: str | None = None
        self.health: dict = {}
        self.failures: dict = {}
        self.disk: dict = {}
        self.errors: list[dict] = []
        self.polled = False
        self.gap_checked = False
        self.saved_at = 0.0

    # -- state ------------------------------------------------------------------------------------------------------
    def _restore(self) -> History:
        try:
            data = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return History()
        except (OSError, ValueError) as err:
            log.warning("state %s unreadable (%s): starting with an empty history", self.state_path, err)
            return History()
        try:
            history = History.from_json(data)
        except ValueError as err:
            log.warning("state %s: %s; starting with an empty history", self.state_path, err)
            return History()
        log.info("state: %d files, %d queue samples of the last day from %s", len(history.files),
                 len(history.queue_samples), self.state_path)
        return history

    def save(self) -> None:
        with self.lock:
            text = json.dumps(self.history.to_json(), separators=(",", ":"))
            self.saved_at = self.clock()
        tmp = self.state_path.with_name(f".{self.state_path.name}.{os.getpid()}")
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.state_path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            log.warning("state not saved to %s: %s", self.state_path, err)

    # -- reading ----------------------------------------------------------------------------------------------------
    def _sdr_floor(self, now: float) -> float:
        """The oldest placement in sdr/ that counts: the window, and nothing placed before monitor first watched."""
        return max(now - KEEP, self.history.watching_since or now)

    def _source(self, name: str) -> Source:
        return self.history.sources.setdefault(name, Source())

    def poll(self) -> None:
        """Read what changed in the journals, state records, sdr/, supervisord, logs and the disk."""
        s = self.settings
        now = self.clock()
        health = read_json(s.state_dir / MIRROR_HEALTH)
        failures = read_json(s.state_dir / MIRROR_FAILURES)
        copies = self.copies.read()
        programs, supervisor_error = ask_programs(s.viirs_base)
        disk = disk_use(s.viirs_base, None)
        errors = [dict(e, line=sources.redact(e["line"])) for e in last_errors(s.log_dir, 10)]
        with self.lock:
            h = self.history
            pending = health.get("pending")
            if isinstance(pending, dict):
                h.listing_snapshot(pending)
            source = self._source(MIRROR_JOURNAL)
            lines, _ = new_lines(s.state_dir / MIRROR_JOURNAL, source)
            for record in json_records(lines):
                h.placed_record(record, now)
            if copies is not None:  # after the journal: a copy's lead may need the listing of the file it gave way to
                h.copies_snapshot(copies, now)
            source = self._source(BROKER_JOURNAL)
            newest = source.newest
            lines, rewritten = new_lines(s.state_dir / BROKER_JOURNAL, source)
            for record in journal.records(lines):
                h.broker_record(record, now, newest if rewritten else None)
                if record.t is not None and record.t.timestamp() > source.newest:
                    source.newest = record.t.timestamp()
            source = self._source("supervisord.log")
            newest = source.newest
            lines, rewritten = new_lines(s.log_dir / "supervisord.log", source)
            for when, program in sources.spawned(lines):
                if when > newest or not rewritten:
                    h.program_started(program)
                source.newest = max(source.newest, when)
            self.new_in_sdr.floor = self._sdr_floor(now)
            for kind, what in self.new_in_sdr.take():
                if kind == "seen":
                    h.seen_in_sdr(*what, now)
                elif kind == "gone":
                    h.gone_from_sdr(what)
                else:
                    h.sdr_pass(lambda name: os.path.lexists(s.sdr_dir / name))
            h.prune(now)
            self.health, self.failures = health, failures
            self.programs, self.supervisor_error = programs, supervisor_error
            self.disk, self.errors = disk, errors
            self.polled = True
        if now - self.saved_at >= SAVE_SECONDS:
            self.save()

    def heard(self, message: dict) -> None:
        """One status message of task_broker."""
        if message.get("stopping"):  # the broker's last word before it stops: its queue is kept, not emptied
            return
        now = self.clock()
        with self.lock:
            length = message["queue length"]
            if not self.gap_checked:
                self.gap_checked = True
                filled = self.history.fill_queue_gap(list(self.history.changes), length, now)
                if filled:
                    log.info("queue length of %d minutes while monitor was not listening rebuilt from %s", filled,
                             BROKER_JOURNAL)
            self.history.queue_sample(now, length)
            self.live, self.live_at = message, now

    # -- verdict ----------------------------------------------------------------------------------------------------
    def verdict(self) -> tuple[bool, list[str]] | None:
        """health.py's verdict on what monitor holds (None before its first poll): healthy, and the reasons."""
        s = self.settings
        with self.lock:
            if not self.polled:
                return None
            live = self.live_status()
            facts = Facts(viirs_base=str(s.viirs_base), programs=list(self.programs),
                          supervisor_error=self.supervisor_error, queue=live,
                          queue_error=None if live else not_heard(s.update_port, LIVE_SECONDS), disk=self.disk,
                          mirror_health=self.health)
            verdict = assess(facts, self.clock(), s.mirror_stale_minutes, s.silence_hours)
        return verdict.healthy, verdict.problems

    # -- views ------------------------------------------------------------------------------------------------------
    def live_status(self) -> dict | None:
        """The broker's status if heard within the last LIVE_SECONDS."""
        if self.live_at is None or self.clock() - self.live_at > LIVE_SECONDS:
            return None
        return self.live

    def page(self) -> bytes:
        with self.lock:
            view = page.View(
                now=self.clock(), history=self.history, live=self.live_status(), programs=list(self.programs),
                supervisor_error=self.supervisor_error, health=self.health, failures=self.failures,
                disk=self.disk, errors=list(self.errors), verdict=self.verdict())
            return page.render(view).encode("utf-8")

    def collect(self) -> Iterator:
        """prometheus_client collector: every metric from the current state."""
        with self.lock:
            yield from self._metrics(self.clock())

    def _metrics(self, now: float) -> Iterator:
        yield from self._placement_metrics(now)
        yield from self._mirror_file_metrics()
        yield from self._broker_metrics()
        yield from self._suite_metrics()
        yield from self._station_metrics(now)

    def _counter(self, name: str, doc: str, key: str, labels: list[str]) -> CounterMetricFamily:
        """One of the history's counters (``key``) as a Prometheus counter; 0 for a counter without labels that has
        counted nothing yet."""
        counts = self.history.counter(key)
        family = CounterMetricFamily(name, doc, labels=labels)
        for values, value in sorted(counts.items()):
            family.add_metric(list(values) if labels else [], value)
        if not labels and not counts:
            family.add_metric([], 0.0)
        return family

    def _placement_metrics(self, now: float) -> Iterator:
        """Files and bytes placed, their delays, and the product granules complete, expected and tasked."""
        h = self.history
        yield self._counter("avo_files_placed", "Files placed in sdr/ by mirror_gina", "files", ["satellite", "band"])
        yield self._counter("avo_bytes_placed", "Bytes placed in sdr/ by mirror_gina", "bytes", ["satellite", "band"])
        for key, name, doc in (("download", "avo_download_seconds", "Download time of a placed file"),
                               ("acquisition", "avo_acquisition_delay_seconds",
                                "Placed minus the granule's start time (from the file name)"),
                               ("listing", "avo_listing_delay_seconds",
                                "Placed minus when GINA's listing first showed the file")):
            family = HistogramMetricFamily(name, doc, labels=["satellite"])
            for label, hist in sorted(h.histograms.get(key, {}).items()):
                family.add_metric([label], hist.buckets(), hist.sum)
            yield family
        complete = GaugeMetricFamily("avo_granules_complete", "Product granules complete in sdr/ (last 24 h)",
                                     labels=["product", "satellite"])
        expected = GaugeMetricFamily("avo_granules_expected", "Product granules expected: any file of their "
                                     "platform and start time placed (last 24 h)", labels=["product", "satellite"])
        for (satellite, product), (done, total) in sorted(h.completeness(now).items()):
            complete.add_metric([product, satellite], done)
            expected.add_metric([product, satellite], total)
        yield complete
        yield expected
        yield self._counter("avo_granules_tasked", "Product granules put into a task by task_broker", "tasked",
                            ["product", "satellite"])

    def _mirror_file_metrics(self) -> Iterator:
        """Files listed and not placed, and given up on, by satellite (mirror_gina's health and failure records)."""
        waiting = self.health.get("pending") if isinstance(self.health.get("pending"), dict) else {}
        given_up = [name for name, entry in self.failures.items() if isinstance(entry, dict) and entry.get("given_up")]
        for name, doc, names in (("avo_files_listed_not_placed", "Files GINA listed that are not placed yet "
                                  "(nor given up on)", waiting),
                                 ("avo_files_given_up", "Files mirror_gina gave up on", given_up)):
            family = GaugeMetricFamily(name, doc, labels=["satellite"])
            counts: dict[str, int] = {}
            for file_name in names:
                counts[_platform_of(file_name)] = counts.get(_platform_of(file_name), 0) + 1
            for satellite, count in sorted(counts.items()):
                family.add_metric([satellite], count)
            yield family

    def _broker_metrics(self) -> Iterator:
        """The queue as last heard (when live), and the broker's counters from its journal."""
        live = self.live_status()
        if live is not None:
            yield GaugeMetricFamily("avo_queue_length", "Tasks waiting in task_broker's queue",
                                    value=live["queue length"])
            tasks = GaugeMetricFamily("avo_tasks", "Tasks waiting by product", labels=["product"])
            by_product = live.get("tasks by product") if isinstance(live.get("tasks by product"), dict) else {}
            for product, count in sorted(by_product.items()):
                if isinstance(count, int):
                    tasks.add_metric([str(product)], count)
            yield tasks
        counter = self._counter
        yield counter("avo_tasks_handed_out", "Tasks handed out to workers", "handed_out", ["product", "satellite"])
        yield counter("avo_tasks_dropped", "Tasks dropped by operators", "dropped", ["product", "satellite"])
        yield counter("avo_bad_requests", "Requests task_broker answered with an error", "bad_requests", [])
        yield counter("avo_granules_recovered", "Granules task_broker recovered from sdr/", "recovered", [])
        yield counter("avo_handouts_in_doubt", "Hand-outs re-queued in doubt after a kill", "in_doubt", [])
        yield counter("avo_duplicates_refused", "Granules refused as already handed out", "duplicate", [])
        yield counter("avo_handouts_twice", "Granules handed out by both hosts of a pair (two actives at once)",
                      "handed_out_twice", [])
        pair = live.get("pair") if live is not None else None
        if isinstance(pair, dict):  # two hosts (PAIR_PEER): this host's role and its link to the other
            yield GaugeMetricFamily("avo_pair_active", "1 when this host is the pair's active one (hands out tasks)",
                                    value=1 if pair.get("serving") else 0)
            yield GaugeMetricFamily("avo_pair_whole", "1 when the other host of the pair has every hand-out",
                                    value=1 if pair.get("link") == "whole" else 0)
            yield GaugeMetricFamily("avo_pair_replication_lag_seconds", "Age of the oldest hand-out the other host "
                                    "has not answered", value=float(pair.get("lag seconds") or 0.0))
            promoted = epoch(pair["last promotion"]) if pair.get("last promotion") else None
            if promoted is not None:
                yield GaugeMetricFamily("avo_pair_last_promotion_timestamp_seconds", "When this host last became "
                                        "the active one", value=promoted)

    def _suite_metrics(self) -> Iterator:
        """mirror_gina's last runs, the programs, the disk, the newest granule per satellite, the verdict."""
        for key, name, doc in (("last_success", "avo_mirror_last_success_timestamp_seconds",
                                "When a mirror_gina run last succeeded"),
                               ("last_run", "avo_mirror_last_run_timestamp_seconds", "When mirror_gina last ran")):
            when = epoch(self.health.get(key))
            if when is not None:
                yield GaugeMetricFamily(name, doc, value=when)
        up = GaugeMetricFamily("avo_program_up", "1 when supervisord reports the program RUNNING",
                               labels=["program", "state"])
        for prog in self.programs:
            up.add_metric([prog["name"], prog["state"]], 1.0 if prog["state"] == "RUNNING" else 0.0)
        yield up
        yield self._counter("avo_program_starts", "Program starts by supervisord (log/supervisord.log)", "starts",
                            ["program"])
        if "free" in self.disk:
            yield GaugeMetricFamily("avo_filesystem_free_bytes", "Free bytes of the filesystem of VIIRS_BASE",
                                    value=self.disk["free"])
            yield GaugeMetricFamily("avo_filesystem_size_bytes", "Size of the filesystem of VIIRS_BASE",
                                    value=self.disk["total"])
        last_t = GaugeMetricFamily("avo_last_granule_timestamp_seconds", "Start of the newest granule placed",
                                   labels=["satellite"])
        last_d = GaugeMetricFamily("avo_last_granule_delay_seconds", "Placed minus start of the newest granule",
                                   labels=["satellite"])
        for satellite, entry in sorted(self.history.last_granule().items()):
            last_t.add_metric([satellite], entry["start"])
            last_d.add_metric([satellite], entry["delay"])
        yield last_t
        yield last_d
        verdict = self.verdict()
        if verdict is not None:
            yield GaugeMetricFamily("avo_healthy", "1 when `avoviirscollector status --quick` says healthy",
                                    value=1.0 if verdict[0] else 0.0)

    def _station_metrics(self, now: float) -> Iterator:
        """The latency legs and the receiving stations' figures."""
        h = self.history
        latency = HistogramMetricFamily("avo_latency_seconds", "Latency legs: created -> listed -> placed -> tasked "
                                        "-> handed out, and listed -> handed out", labels=["leg", "satellite",
                                                                                           "station"])
        for text, hist in sorted(h.histograms.get("latency", {}).items()):
            latency.add_metric(text.split("|"), hist.buckets(), hist.sum)
        yield latency
        yield self._counter("avo_files_first", "Files placed in sdr/ by mirror_gina, by the station they came from",
                            "files_first", ["station"])
        yield self._counter("avo_station_copies_skipped", "Other stations' copies of files placed or being fetched, "
                            "left alone (by the copy's station)", "copies_skipped", ["station"])
        lead = GaugeMetricFamily("avo_station_lead_seconds", "Median lead of a station when it came first: a copy's "
                                 "first listing minus the kept file's (last 24 h)", labels=["station"])
        passes = GaugeMetricFamily("avo_passes_one_station", "Passes all of whose files and copies came from this "
                                   "station (last 24 h)", labels=["station"])
        for station, row in h.station_stats(now).items():
            if row.lead_median is not None:
                lead.add_metric([station], row.lead_median)
            passes.add_metric([station], row.one_station_passes)
        yield lead
        yield passes


class StatusListener(threading.Thread):
    """Follows task_broker's status stream on UPDATE_PORT (reconnects by itself: ZeroMQ does)."""

    def __init__(self, monitor: Monitor, port: int, stopping: threading.Event) -> None:
        super().__init__(name="status-listener", daemon=True)
        self.monitor, self.port, self.stopping = monitor, port, stopping

    def run(self) -> None:
        import zmq

        with zmq.Context() as context, subscribe(context, self.port) as sub:
            while not self.stopping.is_set():
                if not sub.poll(250):
                    continue
                status = parse_queue_status(sub.recv_multipart())
                if status is not None:
                    self.monitor.heard(status)


class MonitorServer(GatedServerMixin, http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


class DualStackMonitorServer(DualStackServer, MonitorServer):
    """On ``::``: IPv6 and IPv4 clients (see ``access.DualStackServer``)."""


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "avoviirscollector-monitor"
    monitor: Monitor
    registry: CollectorRegistry

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(self.registry))
            elif path == "/":
                self._send(200, "text/html; charset=utf-8", self.monitor.page())
            elif path == "/healthz":
                healthy, problems = self.monitor.verdict() or (False, [NOT_POLLED])
                text = ("healthy\n" if healthy else "unhealthy\n" + "".join(f"{p}\n" for p in problems))
                self._send(200 if healthy else 503, "text/plain; charset=utf-8", text.encode())
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found: try /, /metrics or /healthz\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._send(405, "text/plain; charset=utf-8", b"")

    def do_POST(self) -> None:  # noqa: N802 (read-only: nothing is changed through it)
        self._send(405, "text/plain; charset=utf-8", b"read-only: GET /, /metrics or /healthz\n")

    do_PUT = do_DELETE = do_POST  # noqa: N815

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, fmt: str, *args) -> None:  # no line per request (Prometheus scrapes often)
        return


def make_server(monitor: Monitor, settings: Settings, port: int | None = None,
                host: str | None = None) -> MonitorServer:
    """The HTTP server (bound, not yet serving): on every address, IPv6 and IPv4 (IPv4 alone on a host without
    IPv6), or on ``host``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(monitor)
    handler = type("BoundHandler", (Handler,), {"monitor": monitor, "registry": registry})
    server = bind_dual_stack(DualStackMonitorServer, MonitorServer, settings.monitor_port if port is None else port,
                             handler, host=host)
    server.gate = make_gate(settings, PROGRAM, log)
    server.gate_where = f"MONITOR_PORT {settings.monitor_port}"
    return server


def run(settings: Settings, stopping: threading.Event) -> int:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    monitor = Monitor(settings)
    try:
        server = make_server(monitor, settings)
    except OSError as err:
        log.error("cannot serve on MONITOR_PORT %d: %s", settings.monitor_port, err)
        return 1
    watch = SdrWatch(settings.sdr_dir, monitor.new_in_sdr, logger=log)
    watch.start()
    monitor.poll()
    listener = StatusListener(monitor, settings.update_port, stopping)
    listener.start()
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="http",
                               daemon=True)
    serving.start()
    log.info("serving /, /metrics and /healthz on port %d%s", settings.monitor_port,
             "" if settings.allowed_clients is None else " (ALLOWED_CLIENTS only)")
    ready = ReadyMarker(settings.viirs_base, PROGRAM)
    try:
        if not stopping.is_set():
            ready.set()
        while not stopping.wait(POLL_SECONDS):
            try:
                monitor.poll()
            except Exception:  # noqa: BLE001 - a bad record or file must not stop the monitor
                log.exception("reading the suite's state failed; trying again in %.0f s", POLL_SECONDS)
    finally:
        ready.clear()
        server.shutdown()
        server.server_close()
        watch.stop()
        listener.join(timeout=1)
        watch.join(timeout=1)
        monitor.save()
        log.info("stopped; state saved to %s", monitor.state_path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    settings = settings_or_exit(PROGRAM)
    setup_logging(PROGRAM, args.verbose)  # no mail: monitor's trouble is shown, not mailed
    stopping = threading.Event()
    stop_on_signals(stopping.set)
    return run(settings, stopping)


if __name__ == "__main__":
    raise SystemExit(main())
