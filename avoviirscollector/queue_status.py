"""task_broker's status stream as its listeners read it: JSON on ``UPDATE_PORT``, once a second and at once to a
new subscriber (broker/server.py writes it).

:func:`parse_queue_status` keeps the figures avo_status and the monitor use: ``queue length``, ``products
waiting``, ``tasks by product`` and the counts of the last day (:data:`DAY_COUNTS`, when present); the broker's
last word before a stop (``"stopping": true``) is not its queue and gives None. :func:`first_status` is avo_status's
one question; the monitor follows the stream with :func:`subscribe`.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import zmq

#: the broker's counts of the last day (its status stream), shown when present
DAY_COUNTS = ("recovered (24 h)", "in doubt (24 h)", "duplicate (24 h)", "handed out twice (24 h)")


def parse_queue_status(frames: list[bytes]) -> dict | None:
    """task_broker's status from one ZeroMQ message (the last frame that is one), or None."""
    for frame in reversed(frames):
        try:
            text = frame.decode("utf-8").strip()
        except UnicodeDecodeError:
            continue
        try:
            data = json.loads(text)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("stopping"):  # the broker's last word before a stop: not its queue
            continue
        if isinstance(data, dict) and isinstance(data.get("queue length"), int):
            waiting = data.get("products waiting", [])
            by_product = data.get("tasks by product", {})
            out = {"queue length": data["queue length"],
                   "products waiting": [str(p) for p in waiting] if isinstance(waiting, list) else [],
                   "tasks by product": {str(k): v for k, v in by_product.items() if isinstance(v, int)}
                   if isinstance(by_product, dict) else {}}
            out.update({key: data[key] for key in DAY_COUNTS if isinstance(data.get(key), int)})
            if isinstance(data.get("pair"), dict):  # two hosts: this host's role and its link to the other
                out["pair"] = data["pair"]
            if data.get("standby") is True and isinstance(data.get("queued"), int):
                out.update(standby=True, queued=data["queued"])
            return out
    return None


def not_heard(port: int, seconds: float) -> str:
    """Why there is no status: none heard on ``port`` within ``seconds``."""
    return f"no status message on port {port} within {seconds:g} s"


def subscribe(context: zmq.Context, port: int) -> zmq.Socket:
    """A SUB socket on this host's ``port``, subscribed to everything, that drops what it holds when closed."""
    import zmq

    sub = context.socket(zmq.SUB)
    try:
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(f"tcp://127.0.0.1:{port}")
    except zmq.ZMQError:
        sub.close()
        raise
    return sub


def first_status(port: int, wait: float) -> dict | None:
    """The first status message task_broker publishes on ``port`` within ``wait`` seconds, or None."""
    import zmq

    with subscribe(zmq.Context.instance(), port) as sub:
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            if not sub.poll(int(left * 1000) + 1):
                break
            status = parse_queue_status(sub.recv_multipart())
            if status is not None:
                return status
        return None


def pair_line(pair: dict) -> str:
    """One line for task_broker's ``pair`` status: this host's role, the link to the other host."""
    role = pair.get("role") or "unknown (no role file)"
    doing = "serving" if pair.get("serving") else "hands out nothing"
    line = f"pair: this host {role}, {doing}; the other host {pair.get('peer')}: link {pair.get('link')}"
    if pair.get("alone since"):
        line += f" since {pair['alone since']} (its hand-outs are not on the other host)"
    if pair.get("unanswered"):
        line += f", {pair['unanswered']} unanswered ({pair.get('lag seconds')} s)"
    if pair.get("last promotion"):
        line += f"; active since {pair['last promotion']}"
    return line
