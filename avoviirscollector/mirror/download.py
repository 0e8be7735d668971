"""Parallel segmented HTTP downloads with pycurl's CurlMulti: the transfer engine of mirror_gina.

:class:`Downloader` keeps ``connections`` curl handles (each keeps its connection alive across files) and moves
files from a priority-ordered iterator into ``tmp/``. For each file:

- the first request is a small probe ``[0, probe)``; its ``Content-Range`` tells the size, the rest is split
  evenly over the idle connections, in pieces of at most ``max_piece`` (8 MiB) so that the md5 prefix follows a
  big file closely (:class:`~avoviirscollector.mirror.pieces.PiecePlan`); an idle connection
  takes the lowest free piece, else the second half of the largest remainder of a busy one (work stealing), else
  starts the next file;
- every response is checked before a byte is written: 206 with a ``Content-Range`` matching the request, or 200,
  which switches the file to one stream from byte 0 (everything received so far for it is void);
- bytes are written at their offset (``os.pwrite``) and the md5 runs over the contiguous prefix as it grows, so
  it is ready moments after the last byte; memory stays bounded whatever the size;
- a piece that fails or stalls (below ``low_speed_limit`` bytes/s for ``low_speed_time`` s) is retried from the
  byte where it stopped, after a backoff that doubles while no progress is made; a transfer far slower than the
  fastest other one (``SLOW_FACTOR`` over ``SLOW_WINDOW``) is cut at once and its bytes asked for on a new
  connection;
- the received ranges are saved next to the partial file (``<name>.part.json``, atomically, about once a second
  and on every stop), so a later run resumes where this one stopped when the server supports ranges.

The caller gets one :class:`Outcome` per file: complete and md5-verified (the temp path is handed over for
placement) or failed (reason, and whether the partial file was kept for resume or removed).
"""

from __future__ import annotations

import enum
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pycurl

from avoviirscollector.mirror.pieces import MiB, Owned, PiecePlan, Request, far_slower

log = logging.getLogger("mirror_gina")

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+)", re.I)
PART_SUFFIX = ".part"
RESCUE_AFTER = 0.5  # seconds a transfer runs before an idle connection may take over its bytes for being slow
SLOW_WINDOW = 0.25  # seconds over which the transfers' rates are compared to find one far slower than the others
SLOW_FACTOR = 8  # a transfer this many times slower than the fastest other one is asked for again afresh
SLOW_RESTARTS = 8  # most such restarts per file (then only the idle connections' rescue and curl's limit remain)
PROBE_WAIT = 0.5  # seconds idle connections wait for a probe's size before they start the next file
CATCH_UP_STEP = 8 * MiB  # most bytes read back for the md5 per write callback
STATE_SUFFIX = ".part.json"


STALE_SECONDS = 24 * 3600


def start_writeback_call() -> Callable[[int], object] | None:
    """Linux's ``sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)``: start writing a file's dirty pages to disk
    without waiting for them (no durability promise: placement still fsyncs). None where libc lacks the call."""
    try:
        import ctypes

        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    return lambda fd: call(fd, 0, 0, 2)  # 2: SYNC_FILE_RANGE_WRITE
_OWN_TEMP = re.compile(r"\.part(\.json(\.new)?|\.\d+\.complete)?$")


def remove_stale_temps(tmp_dir: Path, max_age: float = STALE_SECONDS, now: float | None = None) -> tuple[int, int]:
    """Remove mirror_gina's own leftovers in ``tmp_dir`` not modified for ``max_age`` seconds: abandoned partial
    files with their state, verified files of a run that died before placing them. A partial file another run holds
    (its flock) is kept, and so is anything not named like ours. Returns (files, bytes) removed."""
    now = time.time() if now is None else now
    count = size = 0
    try:
        entries = list(os.scandir(tmp_dir))
    except FileNotFoundError:
        return 0, 0
    for entry in entries:
        if not _OWN_TEMP.search(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if now - st.st_mtime < max_age:
                continue
            if entry.name.endswith(PART_SUFFIX):
                fd = os.open(entry.path, os.O_RDWR)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    os.unlink(entry.path)  # unlinked while locked: a run starting now cannot be handed it
                finally:
                    os.close(fd)
            else:
                os.unlink(entry.path)
        except (BlockingIOError, FileNotFoundError):
            continue
        count += 1
        size += st.st_size
    return count, size


@dataclass(frozen=True)
class FileJob:
    """One file to fetch: its local name (already validated), URL and expected md5."""

    name: str
    url: str
    md5: str


class Fault(enum.Enum):
    """Whose fault a file's failure is: it decides what the next runs do with the file."""

    NONE = "none"  # no failure
    SKIPPED = "skipped"  # another run is fetching the file: not a failure
    FILE = "file"  # the file's own fault (HTTP 4xx, md5 mismatch, not HDF5): counts toward giving up on it
    TRANSIENT = "transient"  # network, server error, stall, interruption: the next run simply tries again
    LOCAL = "local"  # this side: disk full, cannot write


@dataclass
class Outcome:
    job: FileJob
    ok: bool
    path: Path | None = None  # the complete, md5-verified temp file (ok only)
    reason: str = ""
    next_step: str = ""
    size: int = 0
    seconds: float = 0.0
    connections: int = 0
    md5: str = ""
    resumed_from: int = 0
    verify_seconds: float = 0.0  # from the last byte received to the md5 being known
    fault: Fault = Fault.NONE
    partial_kept: bool = False  # failed, but the partial file waits in tmp/ for the next run to resume


class _Fatal(Exception):
    """A failure that no retry in this run can fix."""

    def __init__(self, message: str, fault: Fault = Fault.TRANSIENT) -> None:
        super().__init__(message)
        self.fault = fault


def os_reason(err: OSError) -> str:
    """How a failed write reads in the log: ``disk full`` for ENOSPC/EDQUOT, else the system's own words."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk full"
    return err.strerror or str(err)


class _Active:
    """A file being fetched."""

    def __init__(self, job: FileJob, tmp_dir: Path, connections: int, probe: int, min_piece: int,
                 max_piece: int) -> None:
        self.job = job
        self.part = tmp_dir / (job.name + PART_SUFFIX)
        self.state_path = tmp_dir / (job.name + STATE_SUFFIX)
        self.fd = os.open(self.part, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise
        self.plan = PiecePlan(connections, probe_size=probe, min_piece=min_piece, max_piece=max_piece)
        self.md5 = hashlib.md5()
        self.hashed = 0
        self.resumed_from = 0
        self._resume()
        self.started = time.monotonic()
        self.slots_used: set[int] = set()
        self.attempts = 0
        self.no_progress = 0
        self.not_before = 0.0
        self.dirty = False
        self.last_byte = self.started
        self.announced_stream = False
        self.ranges_ok = True
        self.probe_sent = 0.0
        self.slow_restarts = 0

    def _resume(self) -> None:
        try:
            state = json.loads(self.state_path.read_text())
            total = int(state["total"])
            done = [(int(s), int(e)) for s, e in state["done"]]
            same = state.get("md5") == self.job.md5 and state.get("url") == self.job.url
        except (OSError, ValueError, KeyError, TypeError):
            same = False
        size = os.fstat(self.fd).st_size
        if not same or any(e > total or s < 0 for s, e in done) or size > total:
            os.ftruncate(self.fd, 0)
            return
        self.plan = PiecePlan(self.plan.connections, total=total, done=done, probe_size=self.plan.probe_size,
                              min_piece=self.plan.min_piece, max_piece=self.plan.max_piece)
        self.resumed_from = self.plan.done.covered()
        self.catch_up()

    def catch_up(self, limit: int | None = None) -> None:
        """Hash what is contiguous from byte 0 and not hashed yet (read back from the page cache), at most
        ``limit`` bytes now: called after every write, so the md5 follows the prefix as it grows."""
        end = self.plan.done.prefix_end()
        if limit is not None:
            end = min(end, self.hashed + limit)
        while self.hashed < end:
            chunk = os.pread(self.fd, min(4 * MiB, end - self.hashed), self.hashed)
            if not chunk:
                raise OSError(errno.EIO, f"{self.part}: short read while hashing")
            self.md5.update(chunk)
            self.hashed += len(chunk)

    def write(self, offset: int, data: memoryview) -> None:
        written = 0
        while written < len(data):
            written += os.pwrite(self.fd, data[written:], offset + written)
        if offset == self.hashed:
            self.md5.update(data)
            self.hashed += len(data)
        self.dirty = True
        self.last_byte = time.monotonic()

    def restart_hash(self) -> None:
        self.md5 = hashlib.md5()
        self.hashed = 0

    def save_state(self) -> None:
        """Record the received ranges for a later resume (atomic replace; only bytes already written)."""
        if self.plan.total is None or self.plan.single_stream:
            return
        tmp = self.state_path.with_name(self.state_path.name + ".new")
        state = {"url": self.job.url, "md5": self.job.md5, "total": self.plan.total,
                 "done": self.plan.done.intervals()}
        data = json.dumps(state).encode()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
            finally:
                os.close(fd)
            os.replace(tmp, self.state_path)
        except OSError:
            # the state saved before (if any) still lists only bytes that are on disk: a resume stays correct
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
            raise
        self.dirty = False

    def keep_for_resume(self) -> str | None:
        """Save the state and close, keeping the partial file. Returns None when kept, else why it was removed
        instead (the state cannot be written and no earlier state exists to resume from)."""
        try:
            self.save_state()
        except OSError as err:
            if not self.state_path.exists():
                self.discard()
                return os_reason(err)
        self.close()
        return None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def discard(self) -> None:
        # unlink while the lock is held, so that another run never has the file removed under it
        for path in (self.part, self.state_path):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        self.close()


@dataclass
class _Transfer:
    """One range request in flight. Where it stands (``pos``, ``request_end``) is the piece plan's record of what
    its connection owns (:class:`~avoviirscollector.mirror.pieces.Owned`), shared, not copied: one place to track
    a piece."""

    file: _Active
    start: int  # the first byte asked for
    own: Owned
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    checked: bool = False
    error: str = ""
    fatal: bool = False
    fault: Fault = Fault.TRANSIENT
    cut: bool = False
    void: bool = False
    started: float = field(default_factory=time.monotonic)
    mark_time: float = 0.0  # where the current rate window of the slow-transfer check began (time, byte)
    mark_pos: int = 0

    @property
    def pos(self) -> int:
        """The next byte expected."""
        return self.own.pos

    @property
    def request_end(self) -> int:
        return self.own.request_end

    def rate(self, now: float) -> float:
        """Bytes per second this transfer has received since it started."""
        return (self.pos - self.start) / max(1e-3, now - self.started)


class _Slot:
    def __init__(self, index: int, downloader: Downloader) -> None:
        self.index = index
        self.curl = pycurl.Curl()
        self.transfer: _Transfer | None = None
        self.downloader = downloader
        self.requests = 0
        self.busy_seconds = 0.0
        self.busy_since = 0.0
        c = self.curl
        c.setopt(pycurl.WRITEFUNCTION, self._on_body)
        c.setopt(pycurl.HEADERFUNCTION, self._on_header)
        c.setopt(pycurl.NOSIGNAL, 1)
        c.setopt(pycurl.FOLLOWLOCATION, 1)
        c.setopt(pycurl.MAXREDIRS, 3)
        c.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        c.setopt(pycurl.REDIR_PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        c.setopt(pycurl.CONNECTTIMEOUT, downloader.connect_timeout)
        c.setopt(pycurl.LOW_SPEED_LIMIT, downloader.low_speed_limit)
        c.setopt(pycurl.LOW_SPEED_TIME, downloader.low_speed_time)
        c.setopt(pycurl.BUFFERSIZE, 256 * 1024)
        c.setopt(pycurl.USERAGENT, "avoviirscollector-mirror_gina/3")

    def _on_header(self, line: bytes) -> None:
        tr = self.transfer
        if tr is None:
            return
        text = line.decode("latin-1").strip()
        if text.upper().startswith("HTTP/"):
            parts = text.split()
            tr.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            tr.headers = {}
        elif ":" in text:
            key, value = text.split(":", 1)
            tr.headers[key.strip().lower()] = value.strip()

    def _on_body(self, data: bytes) -> int:
        tr = self.transfer
        if tr is None or tr.void:
            return 0
        active = tr.file
        plan = active.plan
        try:
            if not tr.checked:
                self.downloader._check_response(self, tr)
                tr.checked = True
            if self.index not in plan.owned:  # the file switched to one stream on another connection
                tr.void = True
                return 0
            keep = plan.accept(self.index, tr.pos, len(data))
            if keep:
                active.write(tr.pos, memoryview(data)[:keep])
                plan.wrote(self.index, keep)  # advances tr.pos
                active.catch_up(CATCH_UP_STEP)
                active.slots_used.add(self.index)
            if keep < len(data):
                tr.cut = True  # another connection took over the rest of this range
                return 0
            return None  # everything consumed
        except _Fatal as err:
            tr.error, tr.fatal, tr.fault = str(err), True, err.fault
        except OSError as err:
            tr.fault = Fault.LOCAL
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                tr.error, tr.fatal = "disk full", True
            else:
                tr.error, tr.fatal = f"cannot write {active.part.name}: {err.strerror}", True
        except ValueError as err:
            tr.error = str(err)
        return 0


class Downloader:
    """Fetch files into ``tmp_dir`` over ``connections`` reusable connections. See the module docstring."""

    def __init__(
        self, tmp_dir: Path, connections: int = 4, *, connect_timeout: float = 10, low_speed_limit: int = 1024,
        low_speed_time: int = 30, max_attempts: int = 30, max_no_progress: int = 4, backoff: float = 0.5,
        backoff_max: float = 8.0, probe_size: int = MiB, min_piece: int = 256 * 1024, max_piece: int = 8 * MiB,
        steal_big: int = 4 * MiB,
        progress: Callable[[list[tuple[str, int, int | None]]], None] | None = None,
    ) -> None:
        self.tmp_dir = Path(tmp_dir)
        self.connections = connections
        self.connect_timeout = int(connect_timeout)
        self.low_speed_limit = low_speed_limit
        self.low_speed_time = int(low_speed_time)
        self.max_attempts = max_attempts
        self.max_no_progress = max_no_progress
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.probe_size = probe_size
        self.min_piece = min_piece
        self.max_piece = max_piece
        self.steal_big = steal_big
        self.progress = progress
        self._multi = pycurl.CurlMulti()
        self._slots = [_Slot(i, self) for i in range(connections)]
        self._active: list[_Active] = []
        self._fresh = False
        self._rate_ref = 0.0  # the best per-connection rate of a finished piece of this run (bytes/s)
        self._slow_checked = 0.0
        self._last_save = 0.0  # when the received ranges were last saved (and the progress shown)
        # The placement's fsync had to write the whole file (the kernel keeps dirty pages for up to 30 s): for
        # one 300 MB file a quarter of a second after its last byte. Writing back while the bytes stream in
        # leaves it at most the last fraction of a second's worth.
        self._start_writeback = start_writeback_call()

    def close(self) -> None:
        for slot in self._slots:
            slot.curl.close()
        self._multi.close()

    # -- responses ---------------------------------------------------------------------------------------
    def _check_response(self, slot: _Slot, tr: _Transfer) -> None:
        """Called before the first body byte of a response is kept: is it the range we asked for?"""
        plan = tr.file.plan
        if tr.status == 206:
            match = _CONTENT_RANGE.search(tr.headers.get("content-range", ""))
            if not match:
                raise ValueError("206 without a valid Content-Range")
            first, last, total = int(match[1]), int(match[2]), int(match[3])
            if plan.total is None:
                plan.set_total(total)
            elif total != plan.total:
                raise _Fatal(f"size changed on the server ({plan.total} -> {total} bytes)")
            want_end = min(tr.request_end, total)
            if first != tr.start or last + 1 != want_end:
                raise ValueError(f"asked for bytes {tr.start}-{want_end - 1}, got {first}-{last}")
            tr.own.request_end = want_end
            return
        if tr.status == 200:
            length = tr.headers.get("content-length", "")
            if not length.isdigit():
                raise _Fatal("200 without Content-Length to a range request")
            total = int(length)
            if plan.total is not None and total != plan.total:
                raise _Fatal(f"size changed on the server ({plan.total} -> {total} bytes)")
            if not tr.file.announced_stream:
                log.info("%s: the server ignored the range request (HTTP 200): fetching it as one stream",
                         tr.file.job.name)
                tr.file.announced_stream = True
            tr.file.ranges_ok = False
            plan.to_single_stream(slot.index, total)
            tr.file.restart_hash()
            tr.start, tr.own = 0, plan.owned[slot.index]
            return
        if 400 <= tr.status < 500 and tr.status not in (408, 429):
            raise _Fatal(f"HTTP {tr.status}", Fault.FILE)
        raise ValueError(f"HTTP {tr.status}")

    # -- scheduling --------------------------------------------------------------------------------------
    def _start(self, slot: _Slot, active: _Active, req: Request) -> None:
        tr = _Transfer(active, req.start, active.plan.owned[slot.index])
        tr.mark_time, tr.mark_pos = tr.started, req.start
        if active.plan.total is None:
            active.probe_sent = time.monotonic()
        if slot.transfer is None:
            slot.busy_since = time.monotonic()
        slot.transfer = tr
        slot.requests += 1
        c = slot.curl
        c.setopt(pycurl.URL, active.job.url)
        c.setopt(pycurl.RANGE, f"{req.start}-{req.end - 1}")
        self._multi.add_handle(c)
        self._fresh = True
        log.debug("connection %d: %s bytes %d-%d", slot.index, active.job.name, req.start, req.end - 1)

    def _assign(self, slot: _Slot, pending: Iterator[FileJob], outcomes: list[Outcome]) -> bool:
        """Give the idle connection ``slot`` its next request, in this order: a free piece (or the probe) of a file
        already started, half of what a far slower connection has left, a rescue of a stalling one, a piece of the
        next file (not while a probe's answer is due), the end of someone's piece. False: nothing to do now."""
        now = time.monotonic()
        ready = [a for a in self._active if a.not_before <= now]
        if self._share_started(slot, ready) or self._rescue(slot, now):  # files already started go first
            return True
        if any(a.plan.total is None and a.plan.owned and now - a.probe_sent < PROBE_WAIT for a in self._active):
            # A probe is on its way: its response headers (one round trip) give the size, and then this
            # connection takes a share of that file. Starting the next file instead would leave each file with
            # fewer connections (4 configured gave 3 per file) and finish every file late instead of one by one.
            # A probe that does not answer soon is not waited for (a slow server start).
            return False
        if self._open_next(slot, pending, outcomes):
            return True
        for active in ready:  # anything left to share
            req = active.plan.steal(slot.index, 2 * self.min_piece)
            if req:
                log.debug("connection %d steals the end of a piece", slot.index)
                self._start(slot, active, req)
                return True
        return False

    def _share_started(self, slot: _Slot, ready: list[_Active]) -> bool:
        """A free piece (or the probe) of a file already started; else half of what a connection far behind has
        left (at least ``steal_big``)."""
        for active in ready:
            if active.plan.needs_probe:
                self._start(slot, active, active.plan.probe(slot.index))
                return True
            req = active.plan.take(slot.index)
            if req:
                self._start(slot, active, req)
                return True
        for active in ready:
            if active.plan.largest_remaining() >= self.steal_big:
                req = active.plan.steal(slot.index, self.steal_big)
                if req:
                    log.debug("connection %d steals from a slower one", slot.index)
                    self._start(slot, active, req)
                    return True
        return False

    def _open_next(self, slot: _Slot, pending: Iterator[FileJob], outcomes: list[Outcome]) -> bool:
        """Open the next files of ``pending`` (up to one more than the connections) until one has a request for
        ``slot``; a file that cannot be opened, or was already whole, is an outcome at once."""
        while len(self._active) < self.connections + 1:
            job = next(pending, None)
            if job is None:
                return False
            active = self._open(job, outcomes)
            if active is None:
                continue
            self._active.append(active)
            if active.plan.complete:  # resumed, and nothing was missing
                self._finish_file(active, outcomes)
                continue
            req = active.plan.probe(slot.index) if active.plan.needs_probe else active.plan.take(slot.index)
            if req:
                self._start(slot, active, req)
                return True
        return False

    def _open(self, job: FileJob, outcomes: list[Outcome]) -> _Active | None:
        """``job``'s temp file opened (and locked) for this run, or None with its outcome said."""
        try:
            return _Active(job, self.tmp_dir, self.connections, self.probe_size, self.min_piece, self.max_piece)
        except BlockingIOError:
            outcomes.append(Outcome(job, False, reason="another run is fetching it", fault=Fault.SKIPPED))
        except OSError as err:
            reason = os_reason(err)
            outcomes.append(Outcome(job, False, reason=f"cannot open its temp file: {reason}",
                                    next_step="the next run tries again", fault=Fault.LOCAL))
        return None

    def _rescue(self, slot: _Slot, now: float) -> bool:
        """The last resort of an idle connection: a transfer so slow that this one would finish its bytes much
        sooner (a stalling connection, too slow to share by halves) is cut, and this one fetches what it had left.
        Its own connection is closed and opened afresh for its next request."""
        live = [o.transfer.rate(now) for o in self._slots
                if o.transfer is not None and not o.transfer.void and now - o.transfer.started >= RESCUE_AFTER / 2]
        reference = max([self._rate_ref, *live]) or self.low_speed_limit
        for other in self._slots:
            tr = other.transfer
            if other is slot or tr is None or tr.void or now - tr.started < RESCUE_AFTER:
                continue
            own = tr.file.plan.owned.get(other.index)
            if own is None or own.remaining <= 0 or tr.file not in self._active or tr.file.plan.total is None:
                continue
            if own.remaining / max(tr.rate(now), 1.0) < 2 * own.remaining / reference + RESCUE_AFTER:
                continue
            log.info("%s: connection %d is far slower than the others (%.0f kB/s): connection %d fetches its "
                     "remaining %d bytes", tr.file.job.name, other.index, tr.rate(now) / 1e3, slot.index,
                     own.remaining)
            self._cut(other, now)
            req = tr.file.plan.take(slot.index)
            if req:
                self._start(slot, tr.file, req)
                return True
        return False

    def _restart_laggards(self, now: float) -> None:
        """A transfer far slower than the fastest other one over the last ``SLOW_WINDOW`` (a response that stalls or
        crawls while the server sends the others at full speed) is cut at once, its connection closed, and its
        remaining bytes are asked for again on a new connection (the next idle slot, at once this one). Without
        this it kept its bytes until an idle connection took them over (after the others' pieces, seconds) or
        curl's stall limit (30 s) fired."""
        rates = {}
        for slot in self._slots:
            tr = slot.transfer
            if tr is not None and not tr.void and now - tr.mark_time >= SLOW_WINDOW:
                rates[slot.index] = (tr.pos - tr.mark_pos) / (now - tr.mark_time)
        slow = set(far_slower(rates, SLOW_FACTOR))
        best = max(rates.values(), default=0.0)
        for slot in self._slots:
            tr = slot.transfer
            if tr is None or slot.index not in rates:
                continue
            rate = rates[slot.index]
            tr.mark_time, tr.mark_pos = now, tr.pos
            active = tr.file
            own = active.plan.owned.get(slot.index)
            if (slot.index not in slow or active not in self._active or active.plan.single_stream or own is None
                    or active.slow_restarts >= SLOW_RESTARTS
                    or own.remaining / max(rate, 1.0) < own.remaining / best + 2 * SLOW_WINDOW):
                continue
            log.info("%s: connection %d is far slower than the others (%.0f kB/s, the fastest %.0f kB/s): its "
                     "remaining %d bytes are asked for again on a new connection", active.job.name, slot.index,
                     rate / 1e3, best / 1e3, own.remaining)
            self._cut(slot, now)
            active.slow_restarts += 1

    def _cut(self, slot: _Slot, now: float) -> None:
        """End ``slot``'s transfer mid-response (curl closes its connection) and give its bytes back to the plan."""
        tr = slot.transfer
        self._multi.remove_handle(slot.curl)
        slot.transfer = None
        slot.busy_seconds += now - slot.busy_since
        tr.file.plan.release(slot.index)

    # -- completion --------------------------------------------------------------------------------------
    def _ended(self, slot: _Slot, curl_errno: int, message: str, outcomes: list[Outcome]) -> None:
        tr = slot.transfer
        if tr is None:  # already aborted (its file failed or finished earlier in this batch)
            return
        self._multi.remove_handle(slot.curl)
        slot.transfer = None
        slot.busy_seconds += time.monotonic() - slot.busy_since
        log.debug("connection %d: ended at byte %d of %d-%d (curl %d)", slot.index, tr.pos, tr.start,
                  tr.request_end - 1, curl_errno)
        if tr.void:
            return
        active = tr.file
        plan = active.plan
        if active not in self._active:
            return
        if curl_errno == 0 and not tr.checked:
            self._check_ended(slot, tr)
        if not tr.error and (tr.cut or (curl_errno == 0 and tr.pos >= tr.request_end)):
            if tr.pos - tr.start >= 4 * self.min_piece:
                self._rate_ref = max(self._rate_ref, tr.rate(time.monotonic()))
            active.no_progress = 0
            follow = plan.finished(slot.index)
            if follow:
                self._start(slot, active, follow)
            elif plan.complete and not self._busy_on(active):
                self._finish_file(active, outcomes)
            return
        self._piece_failed(slot, tr, curl_errno, message, outcomes)

    def _check_ended(self, slot: _Slot, tr: _Transfer) -> None:
        """A transfer that ended without a body checked now: its status and headers (an empty answer is an error)."""
        tr.status = slot.curl.getinfo(pycurl.RESPONSE_CODE)
        try:
            self._check_response(slot, tr)
            tr.checked = True
            if tr.request_end > tr.start:
                tr.error = "empty response"
        except _Fatal as err:
            tr.error, tr.fatal, tr.fault = str(err), True, err.fault
        except ValueError as err:
            tr.error = str(err)

    def _piece_failed(self, slot: _Slot, tr: _Transfer, curl_errno: int, message: str,
                      outcomes: list[Outcome]) -> None:
        """A piece failed: its file given up (fatal, no progress or too many attempts), or retried after a backoff."""
        active, plan = tr.file, tr.file.plan
        if not tr.error:
            tr.error = self._describe(curl_errno, message, tr)
        progressed = tr.pos > tr.start
        plan.release(slot.index)
        active.attempts += 1
        active.no_progress = 0 if progressed else active.no_progress + 1
        if tr.fatal or active.no_progress >= self.max_no_progress or active.attempts >= self.max_attempts:
            self._fail_file(active, tr.error, outcomes, fatal=tr.fatal, fault=tr.fault)
            return
        delay = min(self.backoff_max, self.backoff * 2 ** max(0, active.no_progress - 1))
        active.not_before = time.monotonic() + delay
        log.info("%s: bytes %d-%d failed (%s); retrying from byte %d in %.1f s", active.job.name, tr.start,
                 tr.request_end - 1, tr.error, tr.pos, delay)

    def _describe(self, curl_errno: int, message: str, tr: _Transfer) -> str:
        if curl_errno == pycurl.E_OPERATION_TIMEDOUT:
            return f"stalled (below {self.low_speed_limit} B/s for {self.low_speed_time} s)"
        if curl_errno == pycurl.E_PARTIAL_FILE:
            return f"short body ({tr.pos - tr.start} of {tr.request_end - tr.start} bytes)"
        if curl_errno == 0:
            return f"response ended at byte {tr.pos} of {tr.request_end}"
        return f"{message or 'curl error'} (curl {curl_errno})"

    def _busy_on(self, active: _Active) -> bool:
        return any(s.transfer is not None and s.transfer.file is active and not s.transfer.void
                   for s in self._slots)

    def _abort_file_transfers(self, active: _Active) -> None:
        for slot in self._slots:
            if slot.transfer is not None and slot.transfer.file is active:
                self._multi.remove_handle(slot.curl)
                slot.transfer = None
                slot.busy_seconds += time.monotonic() - slot.busy_since

    def _finish_file(self, active: _Active, outcomes: list[Outcome]) -> None:
        self._active.remove(active)
        self._abort_file_transfers(active)
        seconds = time.monotonic() - active.started
        try:
            active.catch_up()
        except OSError as err:
            active.discard()
            outcomes.append(Outcome(active.job, False, reason=f"cannot read back: {os_reason(err)}",
                                    next_step="temp removed; the next run downloads it again", fault=Fault.LOCAL))
            return
        digest = active.md5.hexdigest()
        total = active.plan.total or 0
        verify = max(0.0, time.monotonic() - active.last_byte)
        if digest != active.job.md5.lower():
            active.discard()
            outcomes.append(Outcome(active.job, False, reason=f"md5 mismatch (got {digest}, listed {active.job.md5})",
                                    next_step="temp removed; the next run downloads it again", size=total,
                                    seconds=seconds, fault=Fault.FILE))
            return
        # Take the verified file out of the resumable name while its lock is still held: another run that wants
        # the same file (overlapping queues) can then never open, truncate or rewrite what is about to be placed.
        complete = active.part.with_name(f"{active.part.name}.{os.getpid()}.complete")
        try:
            os.rename(active.part, complete)
        except OSError as err:
            active.discard()
            outcomes.append(Outcome(active.job, False, reason=f"cannot rename its temp file: {os_reason(err)}",
                                    next_step="temp removed; the next run downloads it again", size=total,
                                    seconds=seconds, fault=Fault.LOCAL))
            return
        active.close()
        try:
            active.state_path.unlink()
        except FileNotFoundError:
            pass
        outcomes.append(Outcome(active.job, True, path=complete, size=total, seconds=seconds,
                                connections=len(active.slots_used), md5=digest, resumed_from=active.resumed_from,
                                verify_seconds=verify))

    def _fail_file(self, active: _Active, reason: str, outcomes: list[Outcome], fatal: bool,
                   fault: Fault = Fault.TRANSIENT) -> None:
        self._active.remove(active)
        self._abort_file_transfers(active)
        keep = not fatal and active.ranges_ok and active.plan.total is not None and active.plan.done.covered() > 0
        why_not = active.keep_for_resume() if keep else None
        if keep and why_not is None:
            step = f"partial file kept ({active.plan.done.covered()} bytes); the next run resumes it"
        elif keep:
            step = f"temp removed (its state cannot be saved: {why_not}); the next run tries again"
        else:
            active.discard()
            step = "temp removed; the next run tries again"
        outcomes.append(Outcome(active.job, False, reason=reason, next_step=step, size=active.plan.total or 0,
                                seconds=time.monotonic() - active.started, fault=fault,
                                partial_kept=keep and why_not is None))

    # -- the loop ----------------------------------------------------------------------------------------
    def run(self, jobs: Iterable[FileJob], on_outcome: Callable[[Outcome], None],
            stop: threading.Event | None = None) -> None:
        """Fetch ``jobs`` in order (a few at once); call ``on_outcome`` for each as soon as it is decided. On a stop
        (or an error) the files still going end as interrupted, their partial files kept for resume where they
        can be."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        pending = iter(jobs)
        outcomes: list[Outcome] = []
        started = self._last_save = time.monotonic()
        try:
            while self._schedule(pending, outcomes, on_outcome):
                if stop is not None and stop.is_set():
                    break
                self._advance(outcomes)
                self._save_now_and_then()
        finally:
            outcomes += self._interrupt_all()
            for outcome in outcomes:
                on_outcome(outcome)
            elapsed = time.monotonic() - started
            for slot in self._slots:
                log.debug("connection %d: %d requests, busy %.2f s of %.2f s", slot.index, slot.requests,
                          slot.busy_seconds, elapsed)

    def _schedule(self, pending: Iterator[FileJob], outcomes: list[Outcome],
                  on_outcome: Callable[[Outcome], None]) -> bool:
        """One turn of bookkeeping: laggards cut, complete files finished, idle connections given work, the
        outcomes decided so far handed over. False when nothing is left to do (every idle connection looked)."""
        now = time.monotonic()
        if now - self._slow_checked >= SLOW_WINDOW / 2:
            self._slow_checked = now
            self._restart_laggards(now)
            self._write_back()
        for active in list(self._active):  # complete, but its last transfer ended in an error
            if active.plan.complete and not self._busy_on(active):
                self._finish_file(active, outcomes)
        for slot in self._slots:
            if slot.transfer is None:
                self._assign(slot, pending, outcomes)
        for outcome in outcomes:
            on_outcome(outcome)
        outcomes.clear()
        return self._busy() or bool(self._active)

    def _busy(self) -> bool:
        return any(s.transfer is not None for s in self._slots)

    def _write_back(self) -> None:
        if self._start_writeback is None:
            return
        for active in self._active:
            if active.fd >= 0:
                self._start_writeback(active.fd)

    def _advance(self, outcomes: list[Outcome]) -> None:
        """Move the transfers on (at most 0.2 s of waiting) and take in those that ended; with no transfer going,
        wait for the earliest backoff to pass instead."""
        if not self._busy():  # every active file waits for its backoff
            time.sleep(min(0.2, max(0.0, min(a.not_before for a in self._active) - time.monotonic())))
            return
        if not self._fresh:  # a request just added is sent at once, without waiting for others
            timeout = self._multi.timeout()
            wait = 0.2 if timeout < 0 else min(0.2, timeout / 1000)
            if wait > 0:
                self._multi.select(wait)
        self._fresh = False
        while self._multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        while True:
            queued, ok_list, err_list = self._multi.info_read()
            for handle in ok_list:
                self._ended(self._slot_of(handle), 0, "", outcomes)
            for handle, code, message in err_list:
                self._ended(self._slot_of(handle), code, message, outcomes)
            if not queued:
                return

    def _save_now_and_then(self) -> None:
        """About once a second: the received ranges of every file saved for resume, and the progress shown."""
        now = time.monotonic()
        if now - self._last_save < 1.0:
            return
        self._last_save = now
        for active in self._active:
            if active.dirty:
                try:
                    active.save_state()
                except OSError:
                    pass  # kept dirty; the previous state stays valid; the file's outcome tells
        if self.progress:
            self.progress([(a.job.name, a.plan.done.covered(), a.plan.total) for a in self._active])

    def _interrupt_all(self) -> list[Outcome]:
        """End every file still going (a stop, or an error): each partial file kept for resume where it can be."""
        outcomes = [self._interrupt(active) for active in list(self._active)]
        self._active.clear()
        return outcomes

    def _interrupt(self, active: _Active) -> Outcome:
        self._abort_file_transfers(active)
        keep = active.plan.total is not None and active.ranges_ok and active.plan.done.covered()
        why_not = active.keep_for_resume() if keep else None
        if keep and why_not is None:
            return Outcome(active.job, False, reason="interrupted", next_step="partial file kept; the next run "
                           "resumes it", fault=Fault.TRANSIENT, partial_kept=True)
        if keep:
            return Outcome(active.job, False, reason=f"interrupted; {why_not}",
                           next_step="temp removed; the next run tries again", fault=Fault.LOCAL)
        active.discard()
        return Outcome(active.job, False, reason="interrupted", next_step="temp removed; the next run tries again",
                       fault=Fault.TRANSIENT)

    def _slot_of(self, handle: pycurl.Curl) -> _Slot:
        for slot in self._slots:
            if slot.curl is handle:
                return slot
        raise LookupError("unknown curl handle")

