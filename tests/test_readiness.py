"""readiness.py's judge on made-up observations, its parsers, its /proc reader on this process's own sockets, and
wait_ready on a fake clock."""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import replace

from avoviirscollector.readiness import (
    STEADY_SECONDS,
    Judge,
    NetTables,
    Observation,
    Program,
    Sockets,
    parse_registrations,
    parse_tcp_table,
    pid_sockets,
    required_links,
    service_of,
    wait_ready,
)
from avoviirscollector.viirs import PRODUCTS

GATHERERS = [f"segment_gatherer-{product}" for product in PRODUCTS]
PIDS = {name: 100 + i for i, name in enumerate(
    ["nameserver", "trollstalker", *GATHERERS, "task_broker", "msg_publisher", "monitor", "cron", "log_forwarder"])}
PORTS = {"trollstalker": 41000, **{name: 42000 + i for i, name in enumerate(GATHERERS)}}


def ready_suite(time: float = 10.0) -> Observation:
    """An observation of a ready suite: every program RUNNING, markers, registrations, every bus connection."""
    programs = tuple(Program(name, "RUNNING", pid) for name, pid in PIDS.items())
    markers = {name: PIDS[name] for name in ("task_broker", "msg_publisher", "monitor", "cron")}
    answer = [{"URI": "tcp://127.0.0.1:40000", "service": ["address_receiver", "addresses"]}]
    answer += [{"URI": f"tcp://127.0.0.1:{port}", "service": [service_of(name)]} for name, port in PORTS.items()]
    remote: dict[str, set[int]] = {}
    for subscriber, publisher in required_links(PIDS):
        remote.setdefault(subscriber, set()).add(PORTS[publisher])
    sockets = {pid: Sockets(frozenset({PORTS[name]} if name in PORTS else ()), frozenset(remote.get(name, ())))
               for name, pid in PIDS.items()}
    return Observation(time, programs, None, markers, parse_registrations(answer), None, sockets)


def judged_twice(seen: Observation, judge: Judge | None = None) -> list[str]:
    """The reasons on the second of two reads of ``seen``, 0.3 s apart (connections steady by then)."""
    judge = judge or Judge()
    judge.reasons(seen)
    return judge.reasons(replace(seen, time=seen.time + 0.3))


def without_link(seen: Observation, subscriber: str, publisher: str) -> Observation:
    sockets = dict(seen.sockets)
    pid = PIDS[subscriber]
    sockets[pid] = replace(sockets[pid], remote=sockets[pid].remote - {PORTS[publisher]})
    return replace(seen, sockets=sockets)


def with_program(seen: Observation, name: str, **changes) -> Observation:
    return replace(seen, programs=tuple(replace(p, **changes) if p.name == name else p for p in seen.programs))


def test_a_ready_suite_is_ready_on_the_second_read_a_quarter_second_later():
    judge = Judge()
    first = judge.reasons(ready_suite(10.0))
    assert first and all("is new: seen for 0.00 s" in reason for reason in first)
    assert len(first) == len(required_links(PIDS)) == 5 + 6 + 6
    assert judge.due == 10.0 + STEADY_SECONDS
    assert judge.reasons(ready_suite(10.1)) != []  # two reads, but not 0.25 s apart
    assert judge.reasons(ready_suite(10.0 + STEADY_SECONDS)) == []


def test_the_links_required_are_the_bus_subscriptions():
    links = set(required_links(PIDS))
    assert ("segment_gatherer-btd", "trollstalker") in links and ("task_broker", "segment_gatherer-btd") in links
    assert ("msg_publisher", "trollstalker") in links and ("msg_publisher", "segment_gatherer-vis") in links
    assert ("task_broker", "trollstalker") in links  # the broker follows trollstalker's file messages too
    assert not any("monitor" in link for link in links)  # monitor follows no posttroll bus
    assert (service_of("trollstalker"), service_of("segment_gatherer-dnb")) == ("trollstalker_viirs",
                                                                                "segment_gatherer_dnb")


def test_a_stopped_gatherer_is_named_and_its_links_are_not_asked_for():
    seen = with_program(ready_suite(), "segment_gatherer-btd", state="STOPPED", pid=0)
    assert judged_twice(seen) == ["segment_gatherer-btd is STOPPED"]


def test_a_missing_connection_is_named_and_one_that_went_away_starts_again():
    assert judged_twice(without_link(ready_suite(), "segment_gatherer-tir", "trollstalker")) == [
        f"segment_gatherer-tir is not connected to trollstalker's publisher (port {PORTS['trollstalker']})"]
    judge = Judge()
    assert judged_twice(ready_suite(), judge) == []
    judge.reasons(without_link(ready_suite(11.0), "task_broker", "segment_gatherer-mir"))  # dropped, then back
    back = judge.reasons(ready_suite(11.1))
    port = PORTS["segment_gatherer-mir"]
    assert back == [f"task_broker's connection to segment_gatherer-mir's publisher (port {port}) is new: seen for "
                    "0.00 s of the 0.25 s it needs"]


def test_markers_missing_or_of_an_earlier_pid_are_not_ready():
    seen = ready_suite()
    markers = dict(seen.markers)
    del markers["monitor"]
    markers["task_broker"] = 99
    reasons = judged_twice(replace(seen, markers=markers))
    assert reasons == [f"task_broker's ready marker is of pid 99, an earlier run's (now pid {PIDS['task_broker']})",
                       "monitor has not said it is ready (no run/ready/monitor.json)"]


def test_cron_can_leave_itself_out():
    seen = with_program(ready_suite(), "cron", state="STARTING")
    seen = replace(seen, markers={k: v for k, v in seen.markers.items() if k != "cron"})
    assert judged_twice(seen) == ["cron is STARTING"]  # its marker is asked for once it is RUNNING
    assert judged_twice(with_program(seen, "cron", state="RUNNING")) == [
        "cron has not said it is ready (no run/ready/cron.json)"]
    assert judged_twice(seen, Judge(exclude={"cron"})) == []


def test_registrations_missing_or_left_by_a_killed_run():
    seen = ready_suite()
    stale = [r for r in seen.registrations if "segment_gatherer_vis" not in r.services]
    assert judged_twice(replace(seen, registrations=tuple(stale))) == [
        "segment_gatherer-vis has not registered its publisher (segment_gatherer_vis) with the nameserver"]
    # the gatherer restarted on another port and has not registered yet: only its old run's registration is there
    moved = with_program(seen, "segment_gatherer-vis", pid=555)
    sockets = {**moved.sockets, 555: Sockets(frozenset({43999}), frozenset({PORTS["trollstalker"]}))}
    reasons = judged_twice(replace(moved, sockets=sockets))
    assert reasons == [f"segment_gatherer-vis's registered publisher (tcp://127.0.0.1:{PORTS['segment_gatherer-vis']})"
                       " is not a port its pid 555 listens on (an earlier run's)"]
    # once it registers too, the one its pid listens on is the one followed
    fresh = parse_registrations([{"URI": "tcp://127.0.0.1:43999", "service": ["segment_gatherer_vis"]}])
    assert "port 43999" in judged_twice(replace(moved, sockets=sockets, registrations=seen.registrations + fresh))[0]


def test_supervisord_or_the_nameserver_not_answering():
    assert Judge().reasons(Observation(1.0, None, "FileNotFoundError: no socket")) == [
        "supervisord does not answer: FileNotFoundError: no socket"]
    reasons = judged_twice(replace(ready_suite(), registrations=None, nameserver_error="TimeoutError: 1 s"))
    assert reasons == ["the posttroll nameserver does not answer (TimeoutError: 1 s)"]


def test_unreadable_sockets_are_a_reason():
    seen = ready_suite()
    sockets = {**seen.sockets, PIDS["msg_publisher"]: Sockets(error="PermissionError: denied")}
    reasons = judged_twice(replace(seen, sockets=sockets))
    pid = PIDS["msg_publisher"]
    assert reasons[0] == f"cannot read the sockets of msg_publisher (pid {pid}): PermissionError: denied"
    assert len(reasons) == 1 + 6  # and none of its connections is seen


TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:A028 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 7001 1 0 100 0 0 10 0
   1: 0100007F:EB3E 0100007F:A028 01 00000000:00000000 00:00000000 00000000     0        0 7002 1 0 20 4 30 10 -1
   2: 0100007F:EB40 0100007F:A029 06 00000000:00000000 03:00000D2B 00000000     0        0 0 3 0
   3: short line
"""


def test_the_tcp_table_is_parsed():
    assert parse_tcp_table(TCP) == [(0xA028, 0, "0A", 7001), (0xEB3E, 0xA028, "01", 7002), (0xEB40, 0xA029, "06", 0)]
    registrations = parse_registrations([{"URI": "tcp://[::1]:5000", "service": "one"}, {"no": "uri"}, "junk"])
    assert [(r.services, r.port) for r in registrations] == [(("one",), 5000)]


def test_this_process_own_sockets_are_read_from_proc():
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    try:
        found = pid_sockets(os.getpid(), NetTables())
        port = listener.getsockname()[1]
        assert found.error is None
        assert port in found.listening and port in found.remote  # the client's connection to it
        assert client.getsockname()[1] in found.remote  # the accepted side's remote is the client's port
    finally:
        for sock in (accepted, client, listener):
            sock.close()
    assert pid_sockets(2**22 + 7, NetTables()).error  # no such process


def test_wait_ready_reads_again_when_the_connections_are_steady_and_gives_up_at_the_timeout():
    now = [0.0]
    reads = []

    def observe() -> Observation:
        reads.append(now[0])
        return ready_suite(now[0])

    class Clock(threading.Event):
        def wait(self, timeout=None):
            now[0] += timeout
            return False

    outcome = wait_ready(observe, 5.0, every=0.2, stopping=Clock(), clock=lambda: now[0])
    assert outcome.ready and reads == [0.0, 0.2, STEADY_SECONDS]
    reads.clear()
    now[0] = 0.0
    stuck = lambda: with_program(ready_suite(now[0]), "trollstalker", state="BACKOFF")  # noqa: E731
    outcome = wait_ready(stuck, 1.0, every=0.2, stopping=Clock(), clock=lambda: now[0])
    assert not outcome.ready and outcome.reasons[0] == "trollstalker is BACKOFF" and outcome.seconds >= 1.0
    stopped = threading.Event()
    stopped.set()
    assert wait_ready(stuck, 60.0, stopping=stopped).stopped
