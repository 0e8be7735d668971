"""task_broker's bus intake (broker/intake.py): what it tells the broker's loop of the live path, and what it sends on
to the direction finder."""

from __future__ import annotations

import datetime as dt

from posttroll.message import Message

from avoviirscollector.broker.core import Announced, Delivered
from avoviirscollector.broker.intake import FILE_TOPIC, Ingest
from avoviirscollector.granules import GranuleKey
from tests.broker_support import ASCENDING_TIME, granule_data


class Submitted:
    def __init__(self) -> None:
        self.resolves = []

    def submit(self, resolve) -> None:
        self.resolves.append(resolve)


def ingest() -> tuple[Ingest, Submitted, list]:
    resolver, heard = Submitted(), []
    return Ingest(resolver, heard=heard.append), resolver, heard


def test_a_file_message_is_an_announcement_and_nothing_for_the_direction_finder():
    intake, resolver, heard = ingest()
    name = "SVM15_npp_d20240601_t1210033_e1211287_b70000_c20240601121903300000_cspp_dev.h5"
    intake.handle(Message(FILE_TOPIC, "file", {"uid": name, "uri": f"/viirs/sdr/{name}"}))
    intake.handle(Message(FILE_TOPIC, "file", {"uri": "/viirs/sdr/no-uid"}))  # nothing to learn from
    assert heard == [Announced(name)] and resolver.resolves == []


def test_a_dataset_is_a_delivery_of_its_whole_granules_and_names_the_rest(tmp_path):
    intake, resolver, heard = ingest()
    whole = granule_data("btd", "NOAA-20", 30000, ASCENDING_TIME, tmp_path)
    other = ASCENDING_TIME + dt.timedelta(seconds=85.4)  # file names hold starts to 0.1 s
    partial = granule_data("btd", "NOAA-20", 30000, other, tmp_path)["dataset"][:1]
    intake.handle(Message("/AVO/viirs/granule/btd", "dataset", {**whole, "dataset": whole["dataset"] + partial}))
    key = GranuleKey("btd", "NOAA-20", ASCENDING_TIME.replace(tzinfo=None))
    (delivered,) = heard
    assert isinstance(delivered, Delivered) and delivered.product == "btd"
    assert delivered.taken == (key,)
    assert set(delivered.named) == {key, GranuleKey("btd", "NOAA-20", other.replace(tzinfo=None))}
    assert [r.granule.product for r in resolver.resolves] == ["btd"] and resolver.resolves[0].origin == "live"
