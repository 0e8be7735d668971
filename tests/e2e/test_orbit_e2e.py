"""End to end (issue 9, item 6): a granule with a six-digit orbit number goes through the whole supervised suite,
trollstalker's `file` message, every gatherer's `dataset` message and a task from task_broker, like a five-digit
one. Suomi-NPP's orbit count passes 99,999 around 2031."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from posttroll.message import Message

from avoviirscollector.viirs import PRODUCTS, format_name
from tests.e2e.harness import Suite
from tests.support import request, wait_until

pytestmark = pytest.mark.e2e

SEGMENTS = sorted({segment for segments in PRODUCTS.values() for segment in segments})


def test_six_digit_orbit_becomes_file_dataset_and_task_messages(tmp_path):
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

            def every_dataset_heard() -> bool:
                raw = sub.recv_raw(0.2)
                msg = None if raw is None else Message.decode(raw)
                orbit = None if msg is None else msg.data.get("orbit_number")
                if orbit in granules and msg.type == "file":
                    files[orbit] = files.get(orbit, 0) + 1
                elif orbit in granules and msg.type == "dataset":
                    datasets.add((msg.subject.rsplit("/", 1)[-1], orbit))
                # both: a gatherer's dataset can reach msg_publisher before trollstalker's last file messages
                return want <= datasets and all(files.get(orbit) == len(SEGMENTS) for orbit in granules)

            wait_until(every_dataset_heard, 30, lambda: f"a dataset for {sorted(want - datasets)}", every=0)
        finally:
            sub.close()
        assert files == {orbit: len(SEGMENTS) for orbit in granules}
        assert want <= datasets, f"no dataset for {sorted(want - datasets)}"

        tasks = set()

        def every_task_handed_out() -> bool:
            while reply := request(suite.settings.task_port, json.dumps({"desired products": list(PRODUCTS)}).encode()):
                msg = Message.decode(reply)
                tasks.add((msg.subject.rsplit("/", 1)[-1], msg.data["orbit_number"]))
            return want <= tasks

        wait_until(every_task_handed_out, 20, lambda: f"every task handed out (never: {sorted(want - tasks)})", 0.2)
