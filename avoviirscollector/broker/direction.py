"""Pass direction (ascending or descending) of a granule, for task_broker (SPEC section 6).

First choice, the orbit: the two-line element sets in ``$VIIRS_BASE/elements`` (every regular file there is read;
entries are recognised by their NORAD catalogue number, whatever the name line says). The element set whose epoch
is closest to the granule's start time is used if it is at most :data:`MAX_TLE_AGE` away; pyorbital propagates it
to the start time and the sign of the satellite's velocity along the Earth's axis (ECI z) gives the direction.

Fallback, the granule itself: the first geolocation file of the dataset (GITCO, GMTCO, GDNBO, ...) is opened with
h5py, its ``Latitude`` dataset is read along the nadir column only (two small reads, never the whole array), and
the direction is the sign of the change between the first and last valid scan lines (scans are stored in time
order).

When neither works the direction is ``unknown``; the task is still queued. Every answer says which method gave it,
and the broker logs that.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from avoviirscollector.viirs import GEOLOCATION_SEGMENTS, PLATFORMS, NotASdrName, parse_name, tle_checksum_ok
from avoviirscollector.viirs import NORAD_IDS as VIIRS_NORAD_IDS

log = logging.getLogger("task_broker.direction")

#: platform names as in messages (and file-name short names) -> NORAD catalogue number
NORAD_BY_PLATFORM: dict[str, int] = {
    **VIIRS_NORAD_IDS, **{name: VIIRS_NORAD_IDS[short] for short, (name, _) in PLATFORMS.items()}}
MAX_TLE_AGE = dt.timedelta(days=14)
RESCAN_SECONDS = 10.0
LATITUDE_NAME = "Latitude"


@dataclass(frozen=True)
class Direction:
    value: str  # ascending, descending or unknown
    method: str  # tle, geolocation or none
    detail: str  # which file / why

    def describe(self) -> str:
        return f"{self.value} from {self.method} ({self.detail})"


@dataclass(frozen=True)
class ElementSet:
    norad: int
    epoch: dt.datetime  # aware UTC
    line1: str
    line2: str
    source: str  # file name


def _epoch(line1: str) -> dt.datetime:
    year = int(line1[18:20])
    year += 1900 if year >= 57 else 2000
    day = float(line1[20:32])
    return dt.datetime(year, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=day - 1)


def parse_tle_text(text: str, source: str = "") -> list[ElementSet]:
    """Every valid element set in a TLE text (2- or 3-line form); malformed or bad-checksum entries are skipped."""
    lines = [line.rstrip() for line in text.splitlines()]
    found = []
    for first, second in zip(lines, lines[1:], strict=False):
        if not (first.startswith("1 ") and second.startswith("2 ") and len(first) == 69 and len(second) == 69):
            continue
        if first[2:7] != second[2:7] or not (tle_checksum_ok(first) and tle_checksum_ok(second)):
            continue
        try:
            found.append(ElementSet(int(first[2:7]), _epoch(first), first, second, source))
        except ValueError:
            continue
    return found


class ElementStore:
    """The TLE sets in one directory, re-read when the directory's files change (checked every 10 s at most)."""

    def __init__(self, elements_dir: Path, clock=None) -> None:
        import time

        self.elements_dir = Path(elements_dir)
        self._clock = clock or time.monotonic
        self._signature: tuple | None = None
        self._checked = float("-inf")
        self._sets: dict[int, list[ElementSet]] = {}

    def _files(self) -> list[os.DirEntry]:
        try:
            with os.scandir(self.elements_dir) as entries:
                return sorted(
                    (e for e in entries if e.is_file(follow_symlinks=True) and not e.name.startswith(".")),
                    key=lambda e: e.name,
                )
        except FileNotFoundError:
            return []

    def refresh(self) -> None:
        now = self._clock()
        if now - self._checked < RESCAN_SECONDS and self._signature is not None:
            return
        self._checked = now
        files = self._files()
        signature = tuple((e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in files)
        if signature == self._signature:
            return
        self._signature = signature
        sets: dict[int, list[ElementSet]] = {}
        for entry in files:
            if entry.stat().st_size > 16 * 1024 * 1024:
                log.warning("elements file %s is over 16 MB: ignored", entry.name)
                continue
            try:
                text = Path(entry.path).read_text(encoding="ascii", errors="replace")
            except OSError as err:
                log.warning("cannot read elements file %s: %s", entry.name, err)
                continue
            for element in parse_tle_text(text, entry.name):
                sets.setdefault(element.norad, []).append(element)
        self._sets = sets
        log.info("elements: %d element sets for %d satellites in %s", sum(map(len, sets.values())), len(sets),
                 self.elements_dir)

    def best(self, norad: int, when: dt.datetime) -> ElementSet | None:
        """The element set for ``norad`` with the epoch closest to ``when``, if within :data:`MAX_TLE_AGE`."""
        self.refresh()
        candidates = self._sets.get(norad, [])
        if not candidates:
            return None
        element = min(candidates, key=lambda e: abs(e.epoch - when))
        return element if abs(element.epoch - when) <= MAX_TLE_AGE else None


def direction_from_elements(element: ElementSet, platform_name: str, when: dt.datetime) -> str:
    """ascending or descending at ``when`` (aware or naive UTC), from the sign of the ECI z velocity."""
    from pyorbital.orbital import Orbital

    orbital = Orbital(platform_name, line1=element.line1, line2=element.line2)
    naive = when.astimezone(dt.UTC).replace(tzinfo=None) if when.tzinfo else when
    _, velocity = orbital.get_position(naive, normalize=False)
    return "ascending" if float(velocity[2]) > 0 else "descending"


def _local_path(uri: str) -> Path | None:
    parts = urlsplit(uri)
    if parts.scheme in ("", "file"):
        return Path(parts.path)
    return None


def direction_from_geolocation(path: Path) -> str | None:
    """ascending, descending, or None when the file has no usable ``Latitude`` dataset."""
    import h5py
    import numpy as np

    with h5py.File(path, "r") as h5:
        found: list = []

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and name.rsplit("/", 1)[-1] == LATITUDE_NAME and obj.ndim == 2:
                found.append(obj)
                return True
            return None

        h5.visititems(visit)
        if not found:
            return None
        latitude = found[0]
        rows, cols = latitude.shape
        if rows < 2 or cols < 1:
            return None
        nadir = latitude[:, cols // 2].astype("float64")  # one column: rows x 4 bytes
    valid = np.flatnonzero((nadir >= -90.0) & (nadir <= 90.0))
    if valid.size < 2:
        return None
    change = nadir[valid[-1]] - nadir[valid[0]]
    if change == 0:
        return None
    return "ascending" if change > 0 else "descending"


class DirectionFinder:
    """Decides the pass direction of a granule; TLE first, then geolocation."""

    def __init__(self, elements_dir: Path) -> None:
        self.elements = ElementStore(elements_dir)

    def find(self, platform_name: str, start_time: dt.datetime, dataset: list[dict]) -> Direction:
        reasons = []
        norad = NORAD_BY_PLATFORM.get(platform_name)
        if norad is None:
            reasons.append(f"no NORAD number known for {platform_name!r}")
        else:
            try:
                element = self.elements.best(norad, start_time)
                if element is None:
                    reasons.append(f"no TLE for {norad} within {MAX_TLE_AGE.days} days in {self.elements.elements_dir}")
                else:
                    value = direction_from_elements(element, platform_name, start_time)
                    age = (start_time - element.epoch).total_seconds() / 86400
                    return Direction(value, "tle", f"{element.source}, epoch {age:+.1f} days")
            except Exception as err:  # noqa: BLE001 - any failure of the TLE path means: try the fallback
                reasons.append(f"TLE failed: {err}")
        for item in dataset:
            uri = str(item.get("uri", ""))
            name = os.path.basename(str(item.get("uid") or uri))
            try:
                if parse_name(name).segment not in GEOLOCATION_SEGMENTS:
                    continue
            except NotASdrName:
                continue
            path = _local_path(uri)
            if path is None:
                reasons.append(f"{name} is not a local file")
                continue
            try:
                value = direction_from_geolocation(path)
            except Exception as err:  # noqa: BLE001 - unreadable file: try the next geolocation file
                reasons.append(f"{name}: {err}")
                continue
            if value is not None:
                return Direction(value, "geolocation", name)
            reasons.append(f"{name} has no usable Latitude")
        if not any("Latitude" in r or "local" in r or ".h5" in r for r in reasons):
            reasons.append("no geolocation file in the dataset")
        return Direction("unknown", "none", "; ".join(reasons))


# -- the helper process ------------------------------------------------------------------------------------------
# pyorbital pulls in numpy and scipy (about 50 MB) and h5py reads files written by others: both live in a helper
# process, so the queue-holding broker stays small and an HDF5 crash can never take the queue down with it.

def serve(elements_dir: Path, requests, replies) -> None:
    """The helper's loop: one JSON request per line in, one JSON answer per line out, until end of input."""
    finder = DirectionFinder(elements_dir)
    for line in requests:
        try:
            request = json.loads(line)
            when = dt.datetime.fromisoformat(request["start_time"])
            found = finder.find(request["platform_name"], when, request.get("dataset", []))
        except Exception as err:  # noqa: BLE001 - a bad request still gets an answer
            found = Direction("unknown", "none", f"error: {err}")
        replies.write(json.dumps({"value": found.value, "method": found.method, "detail": found.detail}) + "\n")
        replies.flush()


def main(argv: list[str] | None = None) -> int:
    """``python -m avoviirscollector.broker.direction ELEMENTS_DIR``: the helper task_broker starts."""
    import signal
    import sys

    from avoviirscollector.logs import setup_logging

    args = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the broker decides when the helper ends (end of input)
    replies = sys.stdout
    sys.stdout = sys.stderr  # log lines go to stderr, the answers alone to stdout
    setup_logging("task_broker.direction")
    serve(Path(args[0]), sys.stdin, replies)
    return 0


class DirectionHelper:
    """The broker's side of the helper: same ``find`` as :class:`DirectionFinder`, answered by a child process.

    The child is started on first use and again after it failed; an answer that takes longer than ``timeout``
    seconds, or a dead child, gives direction ``unknown`` (the granule is still queued)."""

    def __init__(self, elements_dir: Path, timeout: float = 30.0) -> None:
        self.elements_dir = Path(elements_dir)
        self.timeout = timeout
        self.proc = None

    def _start(self):
        import subprocess
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "avoviirscollector.broker.direction", str(self.elements_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        return self.proc

    def find(self, platform_name: str, start_time: dt.datetime, dataset: list[dict]) -> Direction:
        import select

        proc = self.proc if self.proc is not None and self.proc.poll() is None else self._start()
        request = {"platform_name": platform_name, "start_time": start_time.isoformat(),
                   "dataset": [{"uri": str(i.get("uri", "")), "uid": str(i.get("uid", ""))} for i in dataset]}
        try:
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], self.timeout)
            line = proc.stdout.readline() if ready else ""
            if not line:
                raise OSError("no answer" if ready else f"no answer in {self.timeout} s")
            answer = json.loads(line)
            return Direction(answer["value"], answer["method"], answer["detail"])
        except (OSError, ValueError, KeyError) as err:
            log.error("direction helper failed (%s): restarting it for the next granule", err)
            self.close()
            return Direction("unknown", "none", f"direction helper failed: {err}")

    def close(self) -> None:
        import subprocess

        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(1)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


if __name__ == "__main__":
    raise SystemExit(main())
