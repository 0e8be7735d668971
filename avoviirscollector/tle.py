"""tle_refresh: keep the orbital elements in ``$VIIRS_BASE/elements/tle.txt`` fresh (the hourly job of ``crontab``).

What it does
    Downloads the TLE set at ``TLE_URL`` (default: celestrak's weather satellites, which include Suomi-NPP,
    NOAA-20 and NOAA-21) into a temporary file in ``elements/``, checks that it parses as two-line element sets
    (an optional name line, then lines 1 and 2 of 69 characters with valid checksums and matching catalog numbers;
    nothing else), and only when it differs from the current file replaces ``elements/tle.txt`` in one atomic
    rename. An unchanged download leaves the file (and its modification time) alone.
    On any failure (HTTP error, timeout, more than 10 MB, not TLEs) it logs one ERROR line, keeps the old file,
    removes its temporary file and exits 1. A set that lacks one of the VIIRS satellites is still installed, with
    a WARNING naming the missing ones.

Settings (environment, see config.py): ``VIIRS_BASE``, ``TLE_URL``.
Usage: ``tle_refresh [--timeout SECONDS] [-v]`` (timeout for the whole download, default 60).
Signals: none handled; a run takes seconds, and an interrupted run leaves the old file in place.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import requests

from avoviirscollector.config import Settings, settings_or_exit
from avoviirscollector.logs import setup_logging
from avoviirscollector.viirs import NORAD_IDS, PLATFORMS, tle_checksum_ok

PROGRAM = "tle_refresh"
LOG = logging.getLogger(PROGRAM)
TLE_NAME = "tle.txt"
MAX_BYTES = 10 * 1024 * 1024
# NORAD catalog numbers of the satellites whose granules the suite handles
VIIRS_SATELLITES = {NORAD_IDS[short]: name for short, (name, _) in PLATFORMS.items()}
checksum_ok = tle_checksum_ok


class TLEError(ValueError):
    """The text is not a set of TLEs; the message says where."""


def parse_tles(lines: Iterable[str]) -> list[int]:
    """Catalog numbers of every element set in ``lines``; raise :class:`TLEError` on anything that is not TLE.

    Accepts 2-line and 3-line (name first) sets, blank lines, trailing whitespace and CRLF.
    """
    catalogs: list[int] = []
    pending: str | None = None  # line 1 waiting for its line 2
    name_seen = False
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip()
        if not line:
            continue
        if line.startswith("1 ") and len(line) == 69:
            if pending is not None:
                raise TLEError(f"line {number}: line 1 follows a line 1")
            if not checksum_ok(line):
                raise TLEError(f"line {number}: bad checksum")
            pending = line
        elif line.startswith("2 ") and len(line) == 69:
            if pending is None:
                raise TLEError(f"line {number}: line 2 without its line 1")
            if not checksum_ok(line):
                raise TLEError(f"line {number}: bad checksum")
            if line[2:7] != pending[2:7]:
                raise TLEError(f"line {number}: catalog number differs from its line 1")
            try:
                catalogs.append(int(line[2:7]))
            except ValueError:
                raise TLEError(f"line {number}: catalog number {line[2:7]!r} is not a number") from None
            pending, name_seen = None, False
        else:
            if pending is not None or name_seen or len(line) > 24 or not line.isprintable():
                raise TLEError(f"line {number}: not a TLE line: {line[:40]!r}")
            name_seen = True  # satellite name line of a 3-line set
    if pending is not None or name_seen:
        raise TLEError("the text ends inside an element set")
    if not catalogs:
        raise TLEError("no element set in the text")
    return catalogs


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
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=".part", dir=self.target.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                md5 = self._download(out)
                out.flush()
                os.fsync(out.fileno())
            with open(tmp, encoding="ascii", errors="strict") as text:
                catalogs = parse_tles(text)
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
