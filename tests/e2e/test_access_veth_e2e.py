"""SPEC section 12 with a real second host: a network namespace joined to the suite's by a veth pair (192.0.2.0/24,
nothing routed further; see veth_host.py, which runs in a namespace of its own so this one keeps only loopback).

From 192.0.2.2 (not in ALLOWED_CLIENTS): no task, no status, no message on the public ports, though TCP reaches
them (so it is the check, not routing, that says no); from 192.0.2.3 (allowed): the status stream and a reply, so
the path works. From both: no answer from the nameserver, no registration of a publisher, nothing from the
nameserver's announcements or trollstalker's publisher (posttroll's ZAP allow-list of this host's own addresses)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def test_a_foreign_host_on_a_veth_pair(tmp_path):
    if os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("ip", "unshare", "nsenter")):
        pytest.skip("needs root and iproute2/util-linux to make a veth pair between two network namespaces")
    result = subprocess.run(["unshare", "--net", "--", sys.executable, "-m", "tests.e2e.veth_host", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    refused, allowed = got["192.0.2.2"], got["192.0.2.3"]
    print(json.dumps(got, indent=1))
    assert all(refused["tcp"].values())  # every port is reachable over TCP (posttroll binds them all on *) ...
    assert refused["task"] is None and refused["update"] == 0 and refused["publish"] == 0  # ... but nothing answers
    assert allowed["task"] is not None and allowed["update"] >= 2  # the allowed address on the same path is served
    for source in (refused, allowed):  # internal sockets: nobody but this host
        assert source["nameserver"] is None and source["register"] is None
        assert source["announcements"] == 0 and source["trollstalker"] == 0
    assert not got["registered"]
    for program, lines in got["logs"].items():
        assert len(lines) == 1 and "from 192.0.2.2 to" in lines[0], (program, lines)
