"""Decode messages with posttroll 1.5, the version the workers in the field run (in .venv-legacy, Python < 3.12).

``make test`` builds ``.venv-legacy`` from setup.py's ``legacy-client`` pins when such a Python is installed; the
tests that need it skip, saying why, when it is not there.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LEGACY_PYTHON = REPO / ".venv-legacy" / "bin" / "python"
ISO_NAIVE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?$")

_DECODER = r"""
import datetime, json, sys
import posttroll
from posttroll.message import Message
def plain(value):
    if isinstance(value, datetime.datetime):
        return {"__datetime__": value.isoformat(), "aware": value.tzinfo is not None}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
out = []
for raw in json.load(sys.stdin):
    msg = Message.decode(raw)
    out.append({"subject": msg.subject, "type": msg.type, "version": msg.version, "time": plain(msg.time),
                "data": plain(msg.data)})
print(json.dumps({"posttroll": getattr(posttroll, "__version__", "?"), "messages": out}))
"""


def legacy_available() -> bool:
    return LEGACY_PYTHON.exists()


def legacy_decode(raws: list[str]) -> dict:
    """Decode every raw message with posttroll 1.5; raises CalledProcessError if any fails to decode."""
    result = subprocess.run([str(LEGACY_PYTHON), "-c", _DECODER], input=json.dumps(raws), capture_output=True,
                            text=True, timeout=60, check=True)
    return json.loads(result.stdout)


def legacy_rule_violations(raw: str) -> list[str]:
    """What in one raw message posttroll 1.5 would not accept: version, header and data datetimes."""
    problems = []
    parts = raw.split(" ", 6)
    if len(parts) < 7:
        return [f"not 7 fields: {raw[:120]}"]
    if parts[4] != "v1.01":
        problems.append(f"version {parts[4]}")
    if not ISO_NAIVE.match(parts[3]) or len(parts[3]) > 26:
        problems.append(f"header time {parts[3]!r}")

    def walk(value, where):
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{where}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{where}[{index}]")
        elif isinstance(value, str) and re.match(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d", value):
            if not ISO_NAIVE.match(value) or len(value) > 26:
                problems.append(f"datetime {where}={value!r}")

    walk(json.loads(parts[6]), "data")
    return problems
