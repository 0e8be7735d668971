"""The free-space sweep: keep ``VIIRS_MIN_FREE`` free under ``$VIIRS_BASE`` by removing the oldest granule files.

Run by mirror_gina before it starts downloading and by the nightly cleanup. When the filesystem holding
``$VIIRS_BASE`` has less free space than ``VIIRS_MIN_FREE`` (a percentage of it, or bytes; ``0`` turns the sweep
off), files in ``sdr/`` named as VIIRS SDR granules are removed, oldest granule (start time) first, until enough is
free, and 1% of the filesystem more. Never removed:

- a file of a task still queued (task_broker's journal ``state/task_queue.journal``, read only), nor any file of
  that task's granules;
- a file of a granule handed out to a worker in the last hour (the journal's ledger: workers open files by ``uri``);
- a file placed within ``RECOVERY_HOURS`` (its inode change time: the broker's recovery window);
- anything outside ``sdr/``, anything not named as a granule file, links.

One INFO line per sweep that removed something (count, bytes, up to which granule time, free space now). When what
must be kept does not leave enough free space, nothing kept is removed and one ERROR line says so; mirror_gina
then fails each file it cannot write with one "disk full" line. mirror_gina's download journal remembers removed
files, so they are not fetched again. Sweeps of overlapping runs do not run at once (``state/free_space.lock``).

Cost, with months of files in sdr/: a sweep reads names only (each name's granule start from its fixed places,
``viirs.start_key``), keeps the 20,000 oldest, and looks at (``lstat``) only the files it considers, so it costs
about a second for 600,000 files; and it frees 1% of the filesystem more than ``VIIRS_MIN_FREE`` asks (about 7
hours of data on 1 TB), so that at a steadily full disk it runs a few times a day, not before every download.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import heapq
import logging
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from avoviirscollector.config import Settings
from avoviirscollector.formatting import human_bytes
from avoviirscollector.granules import GranuleMap
from avoviirscollector.ondisk.journal import Take
from avoviirscollector.ondisk.sdr import names_by_start
from avoviirscollector.ondisk.state import BROKER_JOURNAL, FREE_SPACE_LOCK, read_broker_journal
from avoviirscollector.viirs import PLATFORMS, NotASdrName, parse_name

HANDED_OUT_KEEP = dt.timedelta(hours=1)
#: a sweep frees this share of the filesystem more than VIIRS_MIN_FREE asks, so that the next one is hours away
MARGIN = 0.01
#: the oldest names taken from one pass over sdr/ (a pass reads names only; a sweep that needs more makes another)
BATCH = 20_000


@dataclass
class SweepResult:
    needed: int = 0  # free bytes wanted
    free_before: int = 0
    free_after: int = 0
    removed: int = 0
    removed_bytes: int = 0
    up_to: dt.datetime | None = None  # the start time of the newest granule a removed file belonged to
    kept_protected: int = 0  # files kept because they must be (when space was still short)
    short: bool = False  # still below the minimum after removing everything that may go


def protected(state_dir: Path, now: dt.datetime) -> tuple[set[str], GranuleMap]:
    """File names and (platform name, granule start) pairs that must stay (starts matched within the tolerance:
    another station's copy of a granule is that granule): queued tasks and the hand-outs of the last hour, from
    task_broker's journal (read only: ``ondisk.state.read_broker_journal``)."""
    loaded = read_broker_journal(state_dir / BROKER_JOURNAL)
    names: set[str] = set()
    granules = GranuleMap()
    for task in loaded.tasks:
        data = task.get("data") if isinstance(task, dict) else None
        dataset = data.get("dataset") if isinstance(data, dict) else None
        for item in dataset if isinstance(dataset, list) else []:
            if not isinstance(item, dict):
                continue
            name = os.path.basename(str(item.get("uid") or item.get("uri") or ""))
            names.add(name)
            try:
                sdr = parse_name(name)
            except NotASdrName:
                continue
            granules[(sdr.platform_name, sdr.start_time)] = None
    for record in loaded.ledger:
        if not isinstance(record, Take) or record.t is None or now - record.t > HANDED_OUT_KEEP:
            continue
        for granule in record.granules or ():
            granules[(granule.platform_name, granule.start_time)] = None
    return names, granules


def sweep(settings: Settings, log: logging.Logger, now: dt.datetime | None = None,
          disk_usage: Callable[[Path], tuple[int, int, int]] = shutil.disk_usage) -> SweepResult:
    """One sweep (see the module docstring). Returns what it did; logs one line when it removed something or
    when space stays short. Raises OSError only when ``$VIIRS_BASE`` cannot be examined at all."""
    result = SweepResult()
    if settings.min_free.off:
        return result
    total, _used, free = disk_usage(settings.viirs_base)
    result.needed = settings.min_free.bytes_of(total)
    result.free_before = result.free_after = free
    if free >= result.needed:
        return result
    try:
        lock = os.open(settings.state_dir / FREE_SPACE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        lock = None  # a disk too full for an empty lock file: sweep anyway, freeing space is what is needed
    try:
        if lock is not None:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return result  # another run is sweeping right now
        _sweep(settings, log, now or dt.datetime.now(dt.UTC), disk_usage, result)
    finally:
        if lock is not None:
            os.close(lock)
    return result


def _sweep(settings: Settings, log: logging.Logger, now: dt.datetime,
           disk_usage: Callable[[Path], tuple[int, int, int]], result: SweepResult) -> None:
    names, granules = protected(settings.state_dir, now)
    recent = (now - dt.timedelta(hours=settings.recovery_hours)).timestamp()
    total = disk_usage(settings.viirs_base)[0]
    to_free = result.needed - result.free_before + int(total * MARGIN)
    after: tuple[str, str] | None = None  # the newest (start key, name) looked at so far
    while result.removed_bytes < to_free:
        pool = names_by_start(settings.sdr_dir, first=after[0] if after else None)
        oldest = heapq.nsmallest(BATCH, (item for item in pool if after is None or item > after))
        for _key, name in oldest:
            if result.removed_bytes >= to_free:
                break
            _consider(settings, name, names, granules, recent, result)
        if len(oldest) < BATCH:
            break
        after = oldest[-1]
    result.free_after = disk_usage(settings.viirs_base)[2]
    result.short = result.free_after < result.needed
    if result.removed:
        log.info("free space: removed %d granule file(s) (%s) from sdr/, oldest first up to granule time %s; "
                 "%s free now (VIIRS_MIN_FREE %s = %s)", result.removed, human_bytes(result.removed_bytes),
                 f"{result.up_to:%Y-%m-%dT%H:%M:%S}", human_bytes(result.free_after), settings.min_free,
                 human_bytes(result.needed))
    if result.short:
        log.error("free space: %s free, below VIIRS_MIN_FREE %s = %s, and nothing more may go: %d file(s) in sdr/ "
                  "are kept (queued tasks, hand-outs of the last hour, placed within RECOVERY_HOURS=%d); writes "
                  "that do not fit fail as disk full", human_bytes(result.free_after), settings.min_free,
                  human_bytes(result.needed), result.kept_protected, settings.recovery_hours)


def _consider(settings: Settings, name: str, names: set[str], granules: GranuleMap,
              recent: float, result: SweepResult) -> None:
    """Remove one of the oldest files unless it must stay (counted in ``result``)."""
    path = settings.sdr_dir / name
    try:
        sdr = parse_name(name)
        st = os.lstat(path)
    except (NotASdrName, OSError):
        return
    if not stat.S_ISREG(st.st_mode):
        return
    if name in names or (PLATFORMS[sdr.platform][0], sdr.start_time) in granules or st.st_ctime >= recent:
        result.kept_protected += 1
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    result.removed += 1
    result.removed_bytes += st.st_blocks * 512 or st.st_size
    result.up_to = sdr.start_time
