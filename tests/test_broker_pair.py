"""The pair's rules in this process (broker/core.py, broker/taskqueue.py, broker/replication.py's PeerLink): what a
hand-out of the other host does to this host's queue, what a promotion queues again, and the link's states. Two
cores with journals of their own play the two hosts; the records that travel are the ones the active core makes
(``handout_records``), encoded and decoded as on the wire."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest
from posttroll.message import Message

from avoviirscollector.broker.core import PEER_DOUBT_SECONDS, BrokerCore
from avoviirscollector.broker.direction import DirectionFinder
from avoviirscollector.broker.replication import (
    ALONE,
    CATCHING_UP,
    PROBE_SECONDS,
    SILENT_LINK_SECONDS,
    WHOLE,
    PeerLink,
)
from avoviirscollector.broker.taskqueue import task_from_record
from avoviirscollector.ondisk.journal import Put, Take, decode, encode
from tests.broker_support import ASCENDING_TIME, FakeClock, granule_data
from tests.test_broker_core import ask, kill, live, start

PEER = "192.0.2.11"
GAP = dt.timedelta(seconds=86)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def finder(elements) -> DirectionFinder:
    return DirectionFinder(elements)


@pytest.fixture
def hosts(tmp_path, clock):
    """Two cores, ``a`` (the active) and ``b`` (the standby), each with a journal of its own."""
    return start(tmp_path / "a", clock), start(tmp_path / "b", clock)


def both(hosts, finder, product: str, start: dt.datetime, orbit: int = 50000) -> None:
    """One granule completed on both hosts (each host's own gatherer)."""
    for core in hosts:
        live(core, finder, product, granule_data(product, "NOAA-20", orbit, start, core.sdr_dir.parent))


def hand_out(active: BrokerCore, products: list[str]) -> tuple[Put, Take]:
    """A worker asks the active host; the records of its hand-out, as the other host decodes them from the wire."""
    body = json.dumps({"desired products": products, "just testing": False}).encode()
    reply, task = active.request([body], lambda: "192.0.2.21")
    assert task is not None, reply
    put, take = (decode(encode(record)) for record in active.handout_records(task))
    return put, take


def replicate(standby: BrokerCore, put: Put, take: Take) -> bool:
    wrote = standby.peer_took(take, put.task, PEER)
    standby.written()
    return wrote


def test_a_hand_out_of_the_other_host_takes_the_granule_off_this_queue_for_good(tmp_path, hosts, finder, clock,
                                                                               caplog):
    """The standby's own task of the granule leaves its queue as the other host's hand-out; it stays so across a
    kill of the standby (not in doubt: the standby handed nothing out), and the same granule arriving again (a
    second station's copy, a recovery) is not queued and not counted as a duplicate. Applying it twice changes
    nothing."""
    caplog.set_level(logging.INFO, "task_broker")
    a, b = hosts
    both(hosts, finder, "tir", ASCENDING_TIME)
    both(hosts, finder, "btd", ASCENDING_TIME)
    put, take = hand_out(a, ["tir"])
    assert replicate(b, put, take)
    assert b.status()["tasks by product"] == {"btd": 1}
    assert not replicate(b, put, take)  # once is enough
    kill(b)
    b = start(tmp_path / "b", clock)
    assert b.status()["tasks by product"] == {"btd": 1} and b.status()["in doubt (24 h)"] == 0
    live(b, finder, "tir", granule_data("tir", "NOAA-20", 50000, ASCENDING_TIME, tmp_path / "b"))
    assert b.status()["tasks by product"] == {"btd": 1} and b.status()["duplicate (24 h)"] == 0
    (entry,) = [e for e in b.queue.ledger() if e.by]
    assert entry.by == PEER and entry.worker == "192.0.2.21" and entry.kind == "handed out"
    assert f"was handed out by {PEER}" in caplog.text


def test_a_granule_this_host_has_not_seen_yet_is_kept_as_taken(hosts, finder):
    """The other host's gatherer was faster: the granule is not queued here when it completes here."""
    a, b = hosts
    live(a, finder, "tir", granule_data("tir", "NOAA-20", 50000, ASCENDING_TIME, a.sdr_dir.parent))
    replicate(b, *hand_out(a, ["tir"]))
    assert len(b.queue) == 0
    live(b, finder, "tir", granule_data("tir", "NOAA-20", 50000, ASCENDING_TIME, b.sdr_dir.parent))
    assert len(b.queue) == 0 and b.status()["duplicate (24 h)"] == 0


def test_a_task_here_with_more_granules_keeps_the_ones_not_handed_out(hosts, finder):
    """The standby merged two granules of a pass into one task, the active handed out the first alone: the
    standby's task keeps the second granule's files, nothing else."""
    a, b = hosts
    live(a, finder, "tir", granule_data("tir", "NOAA-20", 50000, ASCENDING_TIME, a.sdr_dir.parent))
    put, take = hand_out(a, ["tir"])
    for start_time in (ASCENDING_TIME, ASCENDING_TIME + GAP):
        live(b, finder, "tir", granule_data("tir", "NOAA-20", 50000, start_time, b.sdr_dir.parent))
    (merged,) = list(b.queue)
    assert len(merged.data["dataset"]) == 2 * len(put.task["data"]["dataset"])
    replicate(b, put, take)
    (left,) = list(b.queue)
    assert left.id == merged.id
    second = granule_data("tir", "NOAA-20", 50000, ASCENDING_TIME + GAP, b.sdr_dir.parent)["dataset"]
    assert [item["uid"] for item in left.data["dataset"]] == [item["uid"] for item in second]
    reply = ask(b, ["tir"])
    assert [item["uid"] for item in Message.decode(reply).data["dataset"]] == [item["uid"] for item in second]


def test_a_promotion_queues_again_the_hand_outs_whose_reply_was_not_said_to_have_left(hosts, finder, clock, caplog):
    """Of three hand-outs replicated before the active died, the one whose ``sent`` came is done; the one without
    is in doubt at the promotion (queued again, counted, logged); one older than PEER_DOUBT_SECONDS is not."""
    a, b = hosts
    for minutes in (0, 10, 20):
        both(hosts, finder, "tir", ASCENDING_TIME + dt.timedelta(minutes=minutes), orbit=50000 + minutes)
    old = hand_out(a, ["tir"])
    replicate(b, *old)
    clock.advance(PEER_DOUBT_SECONDS + 1)
    done, doubted = hand_out(a, ["tir"]), hand_out(a, ["tir"])
    replicate(b, *done)
    b.peer_sent(done[1].id)
    replicate(b, *doubted)
    assert len(b.queue) == 0
    assert b.promoted() == 1
    (task,) = list(b.queue)
    assert task.data["orbit_number"] == doubted[0].task["data"]["orbit_number"]
    assert b.status()["in doubt (24 h)"] == 1 and "is in doubt (this host took over" in caplog.text
    assert b.promoted() == 0  # once


def test_a_granule_handed_out_by_both_hosts_is_counted_and_logged(hosts, finder, caplog):
    """Two actives at once (a partition): each hands the granule out; when the other's hand-out arrives, it is
    counted (``handed out twice``) and logged at ERROR. A granule this host queued again as in doubt and handed out
    is not counted when the old hand-out comes again in a catch-up."""
    a, b = hosts
    a.promoted()
    b.promoted()  # the split: both serve
    both(hosts, finder, "tir", ASCENDING_TIME)
    ask(b, ["tir"])
    twice = hand_out(a, ["tir"])
    replicate(b, *twice)
    assert b.status()["handed out twice (24 h)"] == 1
    assert "was handed out by both hosts" in caplog.text
    replicate(b, *twice)  # a second catch-up (the link was lost again right after the first) counts nothing more
    assert b.status()["handed out twice (24 h)"] == 1
    both(hosts, finder, "btd", ASCENDING_TIME)
    doubted = hand_out(a, ["btd"])
    replicate(b, *doubted)
    assert b.promoted() == 1
    ask(b, ["btd"])
    replicate(b, *doubted)
    assert b.status()["handed out twice (24 h)"] == 1


def test_a_hand_out_after_this_host_stopped_serving_is_no_split(hosts, finder, clock, caplog):
    """A failover, not a split: the active hands a granule out and stops (it died, or stepped down); the other host
    takes over, queues that hand-out again as in doubt and hands the granule out once more. When the first host
    learns of it (the catch-up after its return), it counts nothing as handed out twice: it was not serving then.
    The second host counted the repeat as in doubt."""
    a, b = hosts
    a.promoted()
    both(hosts, finder, "tir", ASCENDING_TIME)
    replicate(b, *hand_out(a, ["tir"]))  # its reply may not have left: no sent follows
    clock.advance(1)
    a.demoted()
    clock.advance(1)
    assert b.promoted() == 1
    clock.advance(1)
    again = hand_out(b, ["tir"])
    a.peer_took(again[1], again[0].task, "192.0.2.12")
    assert a.status()["handed out twice (24 h)"] == 0 and b.status()["in doubt (24 h)"] == 1
    assert "was handed out by both hosts" not in caplog.text
    a.promoted()  # serving again: a hand-out of the other host's now is two actives at once
    both(hosts, finder, "btd", ASCENDING_TIME)
    ask(a, ["btd"])
    clock.advance(1)
    split = hand_out(b, ["btd"])
    a.peer_took(split[1], split[0].task, "192.0.2.12")
    assert a.status()["handed out twice (24 h)"] == 1


def test_a_hand_out_the_other_host_could_not_deliver_is_queued_here_again(hosts, finder):
    a, b = hosts
    both(hosts, finder, "tir", ASCENDING_TIME)
    put, take = hand_out(a, ["tir"])
    replicate(b, put, take)
    assert len(b.queue) == 0
    b.peer_returned(task_from_record(put.task))
    assert b.status()["tasks by product"] == {"tir": 1}
    assert b.promoted() == 0  # not in doubt: it is queued


def test_a_catch_up_sends_the_whole_ledger_and_a_host_learns_its_own_hand_outs_back(tmp_path, hosts, finder, clock):
    """A catch-up sends the ledger: this host's own entries and the other host's (with their ``by``). The active
    lost the end of its journal with its power (here: its journal without its last hand-out) and queues that task
    again at its start; the standby's catch-up gives it back as its own hand-out: it leaves the queue, and nothing
    is counted twice."""
    a, b = hosts
    both(hosts, finder, "tir", ASCENDING_TIME)
    both(hosts, finder, "btd", ASCENDING_TIME)
    journal = a.store.path
    before = journal.read_bytes()
    replicate(b, *hand_out(a, ["tir"]))
    ask(b, ["btd"])
    assert [(take.what.split()[2], take.by) for take in b.hand_outs()] == [("tir", PEER), ("btd", "")]
    kill(a)
    journal.write_bytes(before)  # what was on the disk: the hand-out was never synced
    a = start(tmp_path / "a", clock)
    assert a.status()["tasks by product"] == {"btd": 1, "tir": 1}
    for take in b.hand_outs():
        a.peer_took(decode(encode(take)), None, "" if take.by else "192.0.2.12")
    assert len(a.queue) == 0 and a.status()["handed out twice (24 h)"] == 0
    assert sorted((e.what.split()[2], e.by) for e in a.queue.ledger()) == [("btd", "192.0.2.12"), ("tir", "")]


def test_the_link_starts_alone_catches_up_and_is_whole_until_an_answer_is_missed(clock):
    link = PeerLink(clock.ticks)
    assert link.state == ALONE and not link.waits
    assert link.probe_due() and not link.probe_due()  # one probe a second
    probe = link.next()
    assert link.acked(probe) == CATCHING_UP and link.waits
    handout = link.next()  # a hand-out during the catch-up waits too
    last = link.next()
    link.catching_up(last)
    assert link.acked(handout) is None and link.state == CATCHING_UP
    clock.advance(0.25)
    assert link.lag()[0] == 1 and link.lag()[1] == pytest.approx(0.25)
    assert link.acked(last) == WHOLE and link.lag() == (0, 0.0)
    link.next()
    assert link.lost() and link.state == ALONE and not link.lost()
    assert link.lag() == (0, 0.0)
    clock.advance(1.0)
    assert link.probe_due()


def test_a_whole_link_with_nothing_to_send_probes_and_is_alone_when_its_answers_stop(clock):
    """A link that died while no hand-out went out (a standby, an active between passes) is found alone within a few
    seconds: a probe after a second with nothing sent, and a message unanswered for SILENT_LINK_SECONDS."""
    link = PeerLink(clock.ticks)
    link.acked(link.next())
    link.catching_up(last := link.next())
    assert not link.probe_due()  # catching up: the catch-up's own probe is out
    link.acked(last)
    assert link.state == WHOLE and not link.probe_due()  # just sent
    clock.advance(PROBE_SECONDS)
    assert link.probe_due()
    probe = link.next()
    clock.advance(PROBE_SECONDS)
    assert not link.probe_due() and not link.silent()  # its answer awaited
    assert link.acked(probe) is None and link.state == WHOLE
    clock.advance(PROBE_SECONDS)
    assert link.probe_due()
    link.next()  # never answered
    clock.advance(SILENT_LINK_SECONDS)
    assert not link.silent()
    clock.advance(0.1)
    assert link.silent() and link.lost() and link.state == ALONE and not link.silent()


def test_an_answer_settles_every_message_sent_before_it(clock):
    """Answers come in order: probes lost while the other host was away are not awaited once a later one is
    answered (else the link, whole again, would find them unanswered and be alone at once)."""
    link = PeerLink(clock.ticks)
    lost = [link.next() for _ in range(3)]  # probes while alone, never answered
    clock.advance(5.0)
    link.acked(answered := link.next())
    link.catching_up(last := link.next())
    link.acked(last)
    assert link.state == WHOLE and link.unacked == {} and not link.silent()
    assert max(lost) < answered
