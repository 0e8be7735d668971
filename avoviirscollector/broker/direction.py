"""Pass direction (ascending or descending) of a granule, for task_broker (SPEC section 6).

First choice, the orbit: the TLE files in ``$VIIRS_BASE/elements``, propagated with pyorbital to the granule's
start time (``elements.py``: which files, which element set, how old it may be). Fallback, the granule itself: the
first geolocation file of the dataset (GITCO, GMTCO, GDNBO, ...) whose ``Latitude`` gives an answer
(``geolocation.py``). When neither works the direction is ``unknown``; the task is still queued. Every answer
says which method gave it (``tle``, ``geolocation`` or ``none``) and why, and the broker logs that.

Where it runs: :class:`DirectionFinder` does the work in a helper child process that task_broker starts,
``python -m avoviirscollector.broker.direction ELEMENTS_DIR`` (:func:`main`; :func:`serve` is its side of the line
protocol described in ``direction_client.py``); the broker talks to it through ``direction_client.DirectionClient``.
So pyorbital, scipy, numpy and h5py never load into the process that holds the queue, and a crash reading someone's
HDF5 file cannot take the queue down. Importing this module loads none of them either: the broker imports
:class:`Direction` from here.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from avoviirscollector import isotime
from avoviirscollector.broker.elements import MAX_TLE_AGE, ElementStore, direction_from_elements
from avoviirscollector.broker.geolocation import direction_from_geolocation, local_path
from avoviirscollector.logs import setup_logging
from avoviirscollector.viirs import GEOLOCATION_SEGMENTS, PLATFORMS, NotASdrName, parse_name
from avoviirscollector.viirs import NORAD_IDS as VIIRS_NORAD_IDS

#: platform names as in messages (and file-name short names) -> NORAD catalogue number
NORAD_BY_PLATFORM: dict[str, int] = {
    **VIIRS_NORAD_IDS, **{name: VIIRS_NORAD_IDS[short] for short, (name, _) in PLATFORMS.items()}}


@dataclass(frozen=True)
class Direction:
    value: str  # ascending, descending or unknown
    method: str  # tle, geolocation or none
    detail: str  # which file / why

    def describe(self) -> str:
        return f"{self.value} from {self.method} ({self.detail})"


class DirectionFinder:
    """Decides the pass direction of a granule; TLE first, then geolocation."""

    def __init__(self, elements_dir) -> None:
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
            path = local_path(uri)
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


def serve(elements_dir: Path, requests, replies) -> None:
    """The helper's loop: one JSON request per line in, one JSON answer per line out, until end of input."""
    finder = DirectionFinder(elements_dir)
    for line in requests:
        try:
            request = json.loads(line)
            when = isotime.parse(request["start_time"])
            found = finder.find(request["platform_name"], when, request.get("dataset", []))
        except Exception as err:  # noqa: BLE001 - a bad request still gets an answer
            found = Direction("unknown", "none", f"error: {err}")
        replies.write(json.dumps({"value": found.value, "method": found.method, "detail": found.detail}) + "\n")
        replies.flush()


def main(argv: list[str] | None = None) -> int:
    """``python -m avoviirscollector.broker.direction ELEMENTS_DIR``: the helper task_broker starts."""
    args = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the broker decides when the helper ends (end of input)
    replies = sys.stdout
    sys.stdout = sys.stderr  # log lines go to stderr, the answers alone to stdout
    setup_logging("task_broker.direction")
    serve(Path(args[0]), sys.stdin, replies)
    return 0


if __name__ == "__main__":  # the helper process
    raise SystemExit(main())
