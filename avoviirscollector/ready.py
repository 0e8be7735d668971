"""Ready markers: how the suite's own programs say that they are ready, not only alive.

supervisord calls a program RUNNING once it has stayed up for ``startsecs``; that says nothing of whether it has
bound its ports, subscribed to the bus or installed its signal handlers. So each program of this project writes
``$VIIRS_BASE/run/ready/<program>.json``, ``{"pid": <its pid>, "since": "<ISO UTC>"}``, at the moment it is ready,
and removes it when it stops (only while the file still holds its own pid: a newer run's marker is left alone):

- task_broker: its state loaded, ``TASK_PORT`` and ``UPDATE_PORT`` bound, its threads started and its bus follower
  subscribed (it serves meanwhile: the marker is written from its loop);
- msg_publisher: ``PUBLISH_PORT`` bound and the bus subscribed;
- monitor: serving HTTP on ``MONITOR_PORT``, its first poll done;
- cron (``avo_cron``): its signal handlers installed and the crontab parsed (before it waits for the rest of the
  suite: see cron.py). When it hands over to supercronic (exec, same pid) the marker stays after supercronic
  stops; its pid is then stale, which readiness.py refuses, and the next start replaces it.

Signal handlers are always installed before the marker is written. The file is written atomically (a temp file in
the same folder, then ``os.replace``), so a reader sees a whole marker or none. A marker that cannot be written
(a read-only ``run/``) is one WARNING line, never a stop. ``avoviirscollector status --wait-ready`` reads the
markers (readiness.py) and accepts one only when its pid is the one supervisord reports.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path

from avoviirscollector import isotime

#: the markers' folder under ``$VIIRS_BASE``
READY_DIR = Path("run") / "ready"

log = logging.getLogger("ready")


def marker_path(viirs_base: Path, program: str) -> Path:
    """The ready marker of ``program`` in the suite at ``viirs_base``."""
    return viirs_base / READY_DIR / f"{program}.json"


def marker_pid(path: Path) -> int | None:
    """The pid a marker holds, or None when there is no marker or it is not one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = data.get("pid") if isinstance(data, dict) else None
    return pid if isinstance(pid, int) and not isinstance(pid, bool) else None


def read_markers(viirs_base: Path) -> dict[str, int]:
    """{program: pid} of every ready marker in the suite at ``viirs_base`` (none when the folder is missing)."""
    found = {}
    try:
        paths = sorted((viirs_base / READY_DIR).glob("*.json"))
    except OSError:
        return found
    for path in paths:
        pid = marker_pid(path)
        if pid is not None:
            found[path.stem] = pid
    return found


class ReadyMarker:
    """The ready marker of one program: :meth:`set` when ready, :meth:`clear` when stopping (use it as a context
    manager: cleared on the way out, whatever happened)."""

    def __init__(self, viirs_base: Path, program: str, pid: int | None = None) -> None:
        self.path = marker_path(viirs_base, program)
        self.pid = os.getpid() if pid is None else pid
        self.is_set = False

    def set(self) -> None:
        """Write the marker atomically (temp file in the same folder, then one rename)."""
        tmp = self.path.with_name(f".{self.path.name}.{self.pid}.tmp")
        body = json.dumps({"pid": self.pid, "since": isotime.stamp(time.time(), micro=True)})
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(body + "\n")
            os.replace(tmp, self.path)
        except OSError as err:
            log.warning("cannot write the ready marker %s (%s): readiness checks will not see this program",
                        self.path, err)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            return
        self.is_set = True

    def clear(self) -> None:
        """Remove the marker if it still holds this pid (a newer run's marker stays)."""
        self.is_set = False
        if marker_pid(self.path) != self.pid:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()

    def __enter__(self) -> ReadyMarker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.clear()
