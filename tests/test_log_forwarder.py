"""The supervisord event listener that copies program output to stdout (protocol spoken over real pipes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def event(name: str, payload: bytes) -> bytes:
    head = f"ver:3.0 server:supervisor serial:1 pool:log_forwarder poolserial:1 eventname:{name} len:{len(payload)}\n"
    return head.encode() + payload


def test_forwards_log_events_and_acknowledges_every_event():
    body = "processname:trollstalker groupname:trollstalker pid:12 channel:stdout\nline one\nlíne two\n".encode()
    other = b"processname:cron groupname:cron from_state:STARTING tries:0"
    proc = subprocess.run([str(BIN / "avo_log_forwarder")], input=event("PROCESS_LOG_STDOUT", body)
                          + event("PROCESS_STATE_RUNNING", other), capture_output=True, timeout=30)
    assert proc.returncode == 0
    assert proc.stdout == b"READY\nRESULT 2\nOKREADY\nRESULT 2\nOKREADY\n"
    assert proc.stderr.decode() == "trollstalker | line one\ntrollstalker | líne two\n"
