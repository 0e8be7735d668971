"""mirror_gina's queue file (YAML): which files each queue brings from GINA NRT, read and validated.

The queue file (``MIRROR_GINA_CONFIG``, default ``etc/mirror_gina.yaml`` in the package)::

    queues:
      - name: snpp-moderate        # unique; also names the lock file
        satellite: snpp            # snpp, noaa20 or noaa21
        match: '^(GMTCO|SVM(03|04|05|15|16))_'   # regex on the file name
        # optional: sensor (viirs), level (level1), facility (all, a station, or a list of them), connections,
        # backfill_days, disabled (false)

A queue key wins; otherwise ``facility``, ``connections`` and ``backfill_days`` come from the settings
(``VIIRS_FACILITY``, ``NUM_GINA_CONNECTIONS``, ``GINA_BACKFILL_DAYS``, or their defaults in config.py). One run
fetches the files of all its queues over one set of connections: the largest ``connections`` of those queues.
Queues with the same satellite, sensor, level, stations and backfill share one listing request
(:attr:`Queue.listing_key`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from avoviirscollector.config import DEFAULTS, Settings, SettingsError, parse_facilities
from avoviirscollector.viirs import SATELLITE_TO_SHORT

_QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_QUEUE_KEYS = {"name", "satellite", "sensor", "level", "facility", "match", "connections", "backfill_days",
               "disabled"}


class QueueConfigError(ValueError):
    """The queue file is unusable; the message names the file and the problem."""


@dataclass(frozen=True)
class Queue:
    name: str
    satellite: str
    match: str
    sensor: str = "viirs"
    level: str = "level1"
    facilities: tuple[str, ...] = DEFAULTS.facilities  # (): every station
    connections: int = DEFAULTS.num_gina_connections
    backfill_days: int = DEFAULTS.gina_backfill_days
    disabled: bool = False

    @property
    def listing_key(self) -> tuple[str, str, str, tuple[str, ...], int]:
        """Queues with the same key share one listing request."""
        return (self.satellite, self.sensor, self.level, self.facilities, self.backfill_days)

    def wants(self, name: str) -> bool:
        return re.search(self.match, name) is not None


def load_queues(path: Path, settings: Settings) -> list[Queue]:
    """Read and validate the queue file."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise QueueConfigError(f"{path}: cannot read ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise QueueConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    items = doc.get("queues") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not items:
        raise QueueConfigError(f"{path}: expected a top-level 'queues:' list")
    queues = [_queue_of(item, path, number, settings) for number, item in enumerate(items, 1)]
    names = [q.name for q in queues]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise QueueConfigError(f"{path}: queue names must be unique (repeated: {', '.join(dupes)})")
    return queues


def _queue_of(item: object, path: Path, number: int, settings: Settings) -> Queue:
    """Entry ``number`` of the queue file, checked; the settings fill the keys it lacks. Raises
    :class:`QueueConfigError`."""
    where = f"{path}: queue #{number}"
    if not isinstance(item, dict):
        raise QueueConfigError(f"{where}: expected a mapping")
    unknown = set(item) - _QUEUE_KEYS
    if unknown:
        raise QueueConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    name = str(item.get("name", ""))
    if not _QUEUE_NAME.match(name):
        raise QueueConfigError(f"{where}: 'name' must be letters, digits, '-', '_' or '.' (got {name!r})")
    where = f"{path}: queue {name}"
    sat = item.get("satellite")
    if sat not in SATELLITE_TO_SHORT:
        raise QueueConfigError(f"{where}: satellite must be one of {', '.join(SATELLITE_TO_SHORT)}")
    match = item.get("match")
    try:
        re.compile(match)
    except (re.error, TypeError):
        raise QueueConfigError(f"{where}: 'match' must be a regular expression") from None
    try:
        facilities = parse_facilities(item["facility"], "facility") if "facility" in item else settings.facilities
    except SettingsError as err:
        raise QueueConfigError(f"{where}: {err}") from None
    conns = item.get("connections", settings.num_gina_connections)
    days = item.get("backfill_days", settings.gina_backfill_days)
    if not isinstance(conns, int) or not 1 <= conns <= 16:
        raise QueueConfigError(f"{where}: connections must be a whole number 1..16")
    if not isinstance(days, int) or not 0 <= days <= 30:
        raise QueueConfigError(f"{where}: backfill_days must be a whole number 0..30")
    disabled = item.get("disabled", False)
    if not isinstance(disabled, bool):
        raise QueueConfigError(f"{where}: disabled must be true or false")
    optional = {key: str(item[key]) for key in ("sensor", "level") if key in item}
    return Queue(name, sat, match, facilities=facilities, connections=conns, backfill_days=days, disabled=disabled,
                 **optional)
