"""End to end (issue 9, item 6): a granule with a six-digit orbit number goes through the whole supervised suite,
trollstalker's `file` message, every gatherer's `dataset` message and a task from task_broker, like a five-digit
one. Suomi-NPP's orbit count passes 99,999 around 2031."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from posttroll.message import Message

from avoviirscollector.viirs import PRODUCTS, format_name
from tests.broker_support import request
from tests.e2e.harness import Suite, only_loopback

pytestmark = pytest.mark.e2e

SEGMENTS = sorted({segment for segments in PRODUCTS.values() for segment in segments})


def test_six_digit_orbit_becomes_file_dataset_and_task_messages(tmp_path):
    if not only_loopback():
        pytest.fail("end-to-end tests must run in a loopback-only network namespace (scripts/loopback-netns)")
    with Suite(tmp_path) as suite:
        sub = suite.subscriber()
        try:
            suite.wait_flowing(sub)
            granules = {100001: dt.datetime(2031, 6, 1, 12, 0, 0), 71234: dt.datetime(2031, 6, 1, 12, 30, 0)}
            for orbit, start in granules.items():
                for segment in SEGMENTS:
                    suite.place(format_name(segment, "npp", start, start + dt.timedelta(seconds=85), orbit,
                                            start + dt.timedelta(minutes=9)))
            files: dict[int, int] = {}
            datasets: set[tuple[str, int]] = set()
            want = {(product, orbit) for product in PRODUCTS for orbit in granules}
            deadline = time.monotonic() + 30
            while not want <= datasets and time.monotonic() < deadline:
                raw = sub.recv_raw(0.2)
                if raw is None:
                    continue
                msg = Message.decode(raw)
                orbit = msg.data.get("orbit_number")
                if orbit not in granules:
                    continue
                if msg.type == "file":
                    files[orbit] = files.get(orbit, 0) + 1
                elif msg.type == "dataset":
                    datasets.add((msg.subject.rsplit("/", 1)[-1], orbit))
        finally:
            sub.close()
        assert files == {orbit: len(SEGMENTS) for orbit in granules}
        assert want <= datasets, f"no dataset for {sorted(want - datasets)}"

        tasks = set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not want <= tasks:
            reply = request(suite.settings.task_port, json.dumps({"desired products": list(PRODUCTS)}).encode())
            if not reply:
                time.sleep(0.2)
                continue
            msg = Message.decode(reply)
            tasks.add((msg.subject.rsplit("/", 1)[-1], msg.data["orbit_number"]))
        assert want <= tasks, f"never handed out: {sorted(want - tasks)}"
