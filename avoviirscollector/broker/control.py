"""The operators' line to task_broker: list, drop and re-queue tasks (``avoviirscollector tasks``).

task_broker binds a ZeroMQ socket on ``ipc://$VIIRS_BASE/run/task_broker.ctl`` (a Unix socket file, mode as the
suite's umask gives: only the suite's user can connect). A client sends one JSON object and gets one JSON object:

- ``{"command": "list"}`` -> ``{"queued": [task, ...], "handed out": [hand-out, ...]}`` (the ledger: hand-outs and
  drops of the last ``RECOVERY_HOURS``, each with time, worker address, granules);
- ``{"command": "drop", "id": N}`` -> ``{"dropped": "<task>"}``: the task leaves the queue for good; its granules
  go into the ledger as dropped, so reconciliation does not bring them back;
- ``{"command": "requeue", "from": ISO, "to": ISO, "product": P or null, "platform": NAME or null}`` ->
  ``{"requeued": ["<granule>", ...]}``: every complete granule in ``sdr/`` whose start time is in [from, to] leaves
  the ledger and is queued again (a worker that crashed mid-task, say);
- anything else -> ``{"error": "..."}``.

Every change is written to the task journal like any other. This module holds the request checks (pure) and the
client; the broker's side is in ``server.py``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from avoviirscollector import isotime
from avoviirscollector.viirs import PLATFORMS, PRODUCTS

CONTROL_NAME = "task_broker.ctl"
MAX_CONTROL_BYTES = 4096
PLATFORM_NAMES = tuple(name for name, _ in PLATFORMS.values())


class BadCommand(ValueError):
    """A control request that is refused (the text says why)."""


@dataclass(frozen=True)
class Command:
    name: str
    task_id: int | None = None
    start: dt.datetime | None = None  # naive UTC, like granule keys
    end: dt.datetime | None = None
    product: str | None = None
    platform_name: str | None = None


def control_address(run_dir: Path) -> str:
    return f"ipc://{Path(run_dir) / CONTROL_NAME}"


def _when(body: dict, key: str) -> dt.datetime:
    value = body.get(key)
    try:
        return isotime.naive(value)
    except ValueError:
        raise BadCommand(f'"{key}" is not an ISO time: {value!r}') from None


def parse_command(payload: bytes) -> Command:
    if len(payload) > MAX_CONTROL_BYTES:
        raise BadCommand(f"request is over {MAX_CONTROL_BYTES} bytes")
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError):
        raise BadCommand("request is not JSON") from None
    if not isinstance(body, dict):
        raise BadCommand("request is not a JSON object")
    name = body.get("command")
    if name == "list":
        return Command("list")
    if name == "drop":
        task_id = body.get("id")
        if isinstance(task_id, bool) or not isinstance(task_id, int):
            raise BadCommand('"id" must be a task number')
        return Command("drop", task_id=task_id)
    if name == "requeue":
        start, end = _when(body, "from"), _when(body, "to")
        if end < start:
            raise BadCommand('"to" is before "from"')
        product, platform = body.get("product"), body.get("platform")
        if product is not None and product not in PRODUCTS:
            raise BadCommand(f'"product" must be one of {", ".join(PRODUCTS)}')
        if platform is not None and platform not in PLATFORM_NAMES:
            raise BadCommand(f'"platform" must be one of {", ".join(PLATFORM_NAMES)}')
        return Command("requeue", start=start, end=end, product=product, platform_name=platform)
    raise BadCommand(f"unknown command {name!r}: expected list, drop or requeue")


def ask(run_dir: Path, request: dict, timeout: float = 5.0) -> dict:
    """Send one request to the broker and return its answer; TimeoutError when it does not answer."""
    import zmq

    context = zmq.Context()
    sock = context.socket(zmq.REQ)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(control_address(run_dir))
        sock.send(json.dumps(request).encode())
        if not sock.poll(int(timeout * 1000)):
            raise TimeoutError(f"task_broker did not answer on {control_address(run_dir)} within {timeout:.0f} s "
                               f"(is it running?)")
        return json.loads(sock.recv())
    finally:
        sock.close(linger=0)
        context.term()
