"""The pass-direction helper process of task_broker: its line protocol and the broker's client for it.

task_broker starts the helper as a child process, ``python -m avoviirscollector.broker.direction ELEMENTS_DIR``
(``direction.main``, whose loop is ``direction.serve``), on its first granule, and again on the next granule after
the child died or failed to answer. The protocol is one JSON object per line in each direction, over the child's
stdin and stdout:

- request: ``{"platform_name": "NOAA-20", "start_time": "<ISO 8601>", "dataset": [{"uri": ..., "uid": ...}]}``
- answer: ``{"value": "ascending|descending|unknown", "method": "tle|geolocation|none", "detail": "..."}``

Every request gets one answer (a malformed one gets ``unknown`` with the error in ``detail``). The child logs to
its stderr, which is the broker's log (``$VIIRS_BASE/log/task_broker.log``); it ignores SIGINT and ends at the
end of its input, which is when the broker closes the pipe. An answer that takes longer than the client's timeout
(30 s in the broker), or a dead child, gives direction ``unknown`` for that granule (it is still queued), an
ERROR line, and a fresh child for the next one.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import select
import subprocess
import sys
from pathlib import Path

from avoviirscollector.broker.direction import Direction

log = logging.getLogger("task_broker.direction")

HELPER_MODULE = "avoviirscollector.broker.direction"


class DirectionClient:
    """The broker's side of the helper: same ``find`` as ``DirectionFinder``, answered by a child process.

    The child is started on first use and again after it failed; an answer that takes longer than ``timeout``
    seconds, or a dead child, gives direction ``unknown`` (the granule is still queued)."""

    def __init__(self, elements_dir: Path, timeout: float = 30.0) -> None:
        self.elements_dir = Path(elements_dir)
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", HELPER_MODULE, str(self.elements_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        return self.proc

    def find(self, platform_name: str, start_time: dt.datetime, dataset: list[dict]) -> Direction:
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
