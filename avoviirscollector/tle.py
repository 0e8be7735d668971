"""tle_refresh: keep the orbital elements in ``$VIIRS_BASE/elements/tle.txt`` fresh (the hourly job of ``crontab``).

What it does
    Downloads the TLE set at ``TLE_URL`` (default: celestrak's weather satellites, which include Suomi-NPP,
    NOAA-20 and NOAA-21) into a temporary file in ``elements/``, checks that it parses as two-line element sets
    (an optional name line, then lines 1 and 2 of 69 characters with valid checksums, matching catalog numbers
    and an epoch that is a date; nothing else), and only when it differs from the current file replaces
    ``elements/tle.txt`` in one atomic rename. An unchanged download leaves the file (and its modification time) alone.
    On any failure (HTTP error, timeout, more than 10 MB, not TLEs) it logs one ERROR line, keeps the old file,
    removes its temporary file and exits 1. A set that lacks one of the VIIRS satellites is still installed, with
    a WARNING naming the missing ones.

    :func:`parse_tles` is the suite's one TLE parser: task_broker's pass-direction helper reads ``elements/`` with
    it too (``broker/elements.py``), skipping a bad element set in a file where tle_refresh refuses the download.

Settings (environment, see config.py): ``VIIRS_BASE``, ``TLE_URL``.
Usage: ``tle_refresh [--timeout SECONDS] [-v]`` (timeout for the whole download, default 60).
Signals: none handled; a run takes seconds, and an interrupted run leaves the old file in place.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from avoviirscollector.config import Settings, settings_or_exit
from avoviirscollector.logs import setup_logging
from avoviirscollector.viirs import NORAD_IDS, PLATFORMS

PROGRAM = "tle_refresh"
LOG = logging.getLogger(PROGRAM)
TLE_NAME = "tle.txt"
MAX_BYTES = 10 * 1024 * 1024
# NORAD catalog numbers of the satellites whose granules the suite handles
VIIRS_SATELLITES = {NORAD_IDS[short]: name for short, (name, _) in PLATFORMS.items()}

if TYPE_CHECKING:
    import requests


class TLEError(ValueError):
    """The text is not a set of TLEs; the message says where."""


@dataclass(frozen=True)
class ElementSet:
    """One two-line element set as read from a text."""

    norad: int  # catalogue number
    epoch: dt.datetime  # aware UTC
    line1: str
    line2: str
    source: str  # where the text came from (a file name), for log lines


def _epoch(line1: str) -> dt.datetime:
    """The epoch of line 1 (columns 19-32: two-digit year, day of the year with fraction), aware UTC."""
    year = int(line1[18:20])
    year += 1900 if year >= 57 else 2000
    day = float(line1[20:32])
    if not 1 <= day < 367:
        raise ValueError(f"day of the year {day} out of range")
    return dt.datetime(year, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=day - 1)


def checksum_ok(line: str) -> bool:
    """TLE line checksum: digits count their value, '-' counts 1, modulo 10, in column 69."""
    if len(line) < 69 or not line[68].isdigit():
        return False
    total = sum(int(c) if c.isdigit() else 1 if c == "-" else 0 for c in line[:68])
    return total % 10 == int(line[68])


_BROKEN = "broken line 1"  # stands for a line 1 already reported, so that its line 2 is dropped silently


def parse_tles(lines: Iterable[str], source: str = "",
               on_error: Callable[[TLEError], None] | None = None) -> list[ElementSet]:
    """Every element set in ``lines`` (2-line sets, or 3-line sets with the name first), in order.

    Accepts blank lines, trailing whitespace and CRLF. What to do with anything else is the caller's policy:
    without ``on_error`` the first problem raises :class:`TLEError` (tle_refresh refuses a bad download); with it,
    each problem is passed to ``on_error``, the element set it spoils is skipped and reading goes on with the next
    line (the pass-direction helper skips bad sets in a file and uses the good ones). A text with no element set
    at all is a problem too.
    """
    reader = _TLEReader(source, on_error)
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip()
        if line:
            reader.take(number, line)
    return reader.end()


class _NotASet(Exception):
    """A line 2 that does not complete its line 1 (the message says why)."""


class _TLEReader:
    """One read of :func:`parse_tles`: the sets found, a line 1 waiting for its line 2 (or :data:`_BROKEN`) and
    whether a name line waits for its set."""

    def __init__(self, source: str, on_error: Callable[[TLEError], None] | None) -> None:
        self.source, self.on_error = source, on_error
        self.found: list[ElementSet] = []
        self.pending: str | None = None
        self.name_seen = False

    def problem(self, message: str) -> None:
        """Report a problem (raise it, without ``on_error``) and forget the set being read."""
        self.pending, self.name_seen = None, False
        error = TLEError(f"{self.source}: {message}" if self.source else message)
        if self.on_error is None:
            raise error
        self.on_error(error)

    def take(self, number: int, line: str) -> None:
        """Line ``number`` of the text, stripped and not blank."""
        if self.pending is _BROKEN and not line.startswith("2 "):
            self.pending, self.name_seen = None, False
        if line.startswith("1 ") and len(line) == 69:
            self._line1(number, line)
        elif line.startswith("2 ") and len(line) == 69:
            self._line2(number, line)
        else:
            name_like = len(line) <= 24 and line.isprintable()
            if self.pending is not None or self.name_seen or not name_like:
                self.problem(f"line {number}: not a TLE line: {line[:40]!r}")
            self.name_seen = name_like  # satellite name line of a 3-line set (after a problem: maybe the next set's)

    def _line1(self, number: int, line: str) -> None:
        if self.pending is not None:
            self.problem(f"line {number}: line 1 follows a line 1")  # the earlier set is skipped; this one may do
        if not checksum_ok(line):
            self.problem(f"line {number}: bad checksum")
            self.pending = _BROKEN
            return
        self.pending = line

    def _line2(self, number: int, line: str) -> None:
        if self.pending is _BROKEN:
            self.pending, self.name_seen = None, False
            return
        if self.pending is None:
            self.problem(f"line {number}: line 2 without its line 1")
            return
        try:
            self.found.append(_element_set(number, self.pending, line, self.source))
        except _NotASet as err:
            self.problem(str(err))
            return
        self.pending, self.name_seen = None, False

    def end(self) -> list[ElementSet]:
        """After the last line: the sets found (a set cut off, or none at all, is a problem)."""
        if self.pending is _BROKEN:
            self.pending = None
        if self.pending is not None or self.name_seen:
            self.problem("the text ends inside an element set")
        if not self.found:
            self.problem("no element set in the text")
        return self.found


def _element_set(number: int, line1: str, line2: str, source: str) -> ElementSet:
    """The set of ``line1`` and ``line2`` (line ``number`` of the text); raises :class:`_NotASet`."""
    if not checksum_ok(line2):
        raise _NotASet(f"line {number}: bad checksum")
    if line2[2:7] != line1[2:7]:
        raise _NotASet(f"line {number}: catalog number differs from its line 1")
    try:
        norad = int(line2[2:7])
    except ValueError:
        raise _NotASet(f"line {number}: catalog number {line2[2:7]!r} is not a number") from None
    try:
        epoch = _epoch(line1)
    except ValueError as err:
        raise _NotASet(f"line {number - 1}: epoch {line1[18:32]!r} is not a date ({err})") from None
    return ElementSet(norad, epoch, line1, line2, source)


def file_md5(path: Path) -> str | None:
    digest = hashlib.md5()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 16), b""):
                digest.update(block)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


class TLERefresher:
    """Download, verify and install one TLE file. ``session`` is a requests session (or anything with ``get``)."""

    def __init__(self, url: str, target: Path, timeout: float = 60.0, session: requests.Session | None = None):
        import requests  # here, not at the top: the pass-direction helper reads TLEs with this module's parser

        self.url = url
        self.target = target
        self.timeout = timeout
        self.session = session or requests.Session()

    def _download(self, out) -> str:
        """Stream the body into ``out``; return its md5."""
        deadline = time.monotonic() + self.timeout
        digest = hashlib.md5()
        size = 0
        with self.session.get(self.url, stream=True, timeout=(min(10.0, self.timeout), self.timeout)) as reply:
            if reply.status_code != 200:
                raise OSError(f"HTTP {reply.status_code} {reply.reason}")
            for block in reply.iter_content(1 << 16):
                size += len(block)
                if size > MAX_BYTES:
                    raise OSError(f"more than {MAX_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"download took longer than {self.timeout:g} s")
                digest.update(block)
                out.write(block)
        return digest.hexdigest()

    def refresh(self) -> int:
        """Return 0 when the file is current (updated or unchanged), 1 on failure (old file kept)."""
        import requests

        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=".part", dir=self.target.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                md5 = self._download(out)
                out.flush()
                os.fsync(out.fileno())
            with open(tmp, encoding="ascii", errors="strict") as text:
                catalogs = [element.norad for element in parse_tles(text)]
            if md5 == file_md5(self.target):
                LOG.info("TLEs at %s unchanged (%d element sets): %s kept", self.url, len(catalogs), self.target)
                return 0
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.target)
            missing = sorted(name for number, name in VIIRS_SATELLITES.items() if number not in catalogs)
            LOG.info("TLEs updated from %s: %d element sets in %s", self.url, len(catalogs), self.target)
            if missing:
                LOG.warning("the TLEs from %s have no element set for %s", self.url, ", ".join(missing))
            return 0
        except (requests.RequestException, OSError, TLEError, UnicodeDecodeError) as err:
            reason = f"{type(err).__name__}: {err}" if not isinstance(err, TLEError) else f"not TLEs: {err}"
            if isinstance(err, UnicodeDecodeError):
                reason = "not TLEs: the text is not ASCII"
            LOG.error("TLE refresh from %s failed (%s); keeping %s", self.url, reason,
                      self.target if self.target.exists() else "no TLE file yet")
            return 1
        finally:
            tmp.unlink(missing_ok=True)


def tle_path(settings: Settings) -> Path:
    """Where the suite's TLE file lives (what task_broker reads)."""
    return settings.elements_dir / TLE_NAME


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROGRAM, description="Refresh the TLE file in $VIIRS_BASE/elements.")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for the whole download (default 60)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(PROGRAM, args.verbose)
    settings = settings_or_exit(PROGRAM)
    return TLERefresher(settings.tle_url, tle_path(settings), timeout=args.timeout).refresh()


if __name__ == "__main__":
    raise SystemExit(main())
