"""Bad input, property-based: more than 10,000 random requests, valid and invalid, from several sockets at once
against the real broker process. Each gets exactly one reply of the right kind, no task is handed out twice, and
the broker still hands out tasks afterwards."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from posttroll.message import Message

from tests.broker_support import Broker, Status, request, seed_queue
from tests.zmtp_support import connected, silent_crowd, vanishing_peers

PRODUCTS = ["tir", "mir", "btd", "vis", "dnb"]
KEEP = "keep"  # a product no fuzzed request asks for: its task must still be there at the end
REQ_SOCKETS = 4
DEALER_SOCKETS = 2  # REQ-compatible (empty delimiter) but would also show a second reply to one request
EXAMPLES = 220
PER_EXAMPLE = 48  # 220 x 48 = 10,560 requests

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
product_names = st.sampled_from(PRODUCTS) | st.text(min_size=1, max_size=12).filter(lambda s: s != KEEP)
valid = st.builds(
    lambda products, testing: ("valid", json.dumps(
        {"desired products": products} if testing is None else {"desired products": products, "just testing": testing}
    ).encode()),
    st.lists(product_names, min_size=1, max_size=6),
    st.none() | st.booleans(),
)
wrong_products = st.one_of(
    json_values.filter(lambda v: not isinstance(v, list)), st.just([]),
    st.lists(st.none() | st.integers() | st.just("") | st.lists(st.text()), min_size=1, max_size=3),
)
mistyped = st.builds(
    lambda products, testing: ("error", json.dumps({"desired products": products, "just testing": testing}).encode()),
    wrong_products, st.booleans(),
) | st.builds(
    lambda testing: ("error", json.dumps({"desired products": ["tir"], "just testing": testing}).encode()),
    json_values.filter(lambda v: not isinstance(v, bool)),
)
garbage = st.one_of(
    st.binary(max_size=64).filter(lambda b: b"desired products" not in b).map(lambda b: ("error", b)),
    json_values.filter(lambda v: not isinstance(v, dict) or "desired products" not in v).map(
        lambda v: ("error", json.dumps(v).encode())),
    st.just(("error", b'{"desired products": ["tir"], "x": "' + b"y" * 70000 + b'"}')),
)
requests = st.one_of(valid, mistyped, garbage)


def check_reply(kind: str, payload: bytes, reply: bytes, handed: list[int]) -> None:
    if kind == "error":
        assert "error" in json.loads(reply), (payload[:100], reply[:200])
        return
    if reply == b"":
        return
    assert not reply.startswith(b"{"), (payload[:100], reply[:200])
    body = json.loads(payload)
    msg = Message.decode(reply.decode())
    assert msg.subject.rsplit("/", 1)[-1] in body["desired products"]
    if not body.get("just testing", False):
        handed.append(msg.data["orbit_number"])


def test_ten_thousand_random_requests_from_several_sockets_each_get_exactly_one_reply(tmp_path):
    base = tmp_path / "viirs"
    seed_queue(base, [KEEP] + PRODUCTS * 300, orbit=70000, files_of="tir")
    broker = Broker(base)
    context = zmq.Context()
    sockets = []
    try:
        broker.start()
        for index in range(REQ_SOCKETS + DEALER_SOCKETS):
            sock = context.socket(zmq.REQ if index < REQ_SOCKETS else zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(f"tcp://127.0.0.1:{broker.task_port}")
            sockets.append(sock)
        sent = [0]
        handed: list[int] = []

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(st.lists(requests, min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
        def run_batch(batch):
            for start in range(0, len(batch), len(sockets)):
                round_ = list(zip(sockets, batch[start:start + len(sockets)], strict=False))
                for sock, (_, payload) in round_:  # all outstanding at once
                    sock.send_multipart([payload] if sock.type == zmq.REQ else [b"", payload])
                    sent[0] += 1
                for sock, (kind, payload) in round_:
                    assert sock.poll(10000), f"no reply to {payload[:100]!r}"
                    frames = sock.recv_multipart()
                    if sock.type == zmq.DEALER:
                        assert frames[0] == b"" and len(frames) == 2, frames[:3]
                    check_reply(kind, payload, frames[-1], handed)

        run_batch()
        for sock in sockets[REQ_SOCKETS:]:
            assert not sock.poll(500), "a request got a second reply"
        assert sent[0] >= 10000
        assert len(handed) == len(set(handed)), "a task was handed out twice"
        assert broker.proc.poll() is None
        kept = Message.decode(request(broker.task_port, json.dumps({"desired products": [KEEP]}).encode()))
        assert kept.data["orbit_number"] == 70000
        with Status(broker.update_port) as status:
            got = status.next(3)
        assert got is not None and got["queue length"] == 1 + len(PRODUCTS) * 300 - len(handed) - 1
    finally:
        for sock in sockets:
            sock.close()
        context.term()
        broker.stop()


def _rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def test_thousands_of_peers_that_never_speak_or_vanish_mid_request_while_a_worker_is_served(tmp_path):
    """Against the task_broker process: four rounds of peers that go mid-request (a request then gone, half a
    frame, half a greeting, a REQ closed after its send) and 2,000 that connect and never speak (closed by the
    broker's handshake timeout), while a REQ asks throughout: every one of its requests answered once with the task
    it asked about (``just testing``), the broker's RSS flat, the task still there at the end."""
    base = tmp_path / "viirs"
    seed_queue(base, ["tir"])
    broker = Broker(base)
    broker.start()
    context = zmq.Context()
    asking = threading.Event()
    answered, wrong = [0], []

    def ask_all_along() -> None:
        req = connected(context, zmq.REQ, broker.task_port)
        body = json.dumps({"desired products": ["tir"], "just testing": True}).encode()
        while not asking.is_set():
            req.send(body)
            if not req.poll(10000):
                wrong.append("no reply within 10 s")
                return
            reply = req.recv()
            if not reply.startswith(b"pytroll://AVO/viirs/granule/tir "):
                wrong.append(reply[:80])
            answered[0] += 1
        req.close(linger=0)

    thread = threading.Thread(target=ask_all_along, daemon=True)
    thread.start()
    rss = []
    try:
        for _ in range(4):
            vanishing_peers(broker.task_port, context)
            silent_crowd(broker.task_port, 2000, 20)
            rss.append(_rss_kb(broker.proc.pid))
        before = answered[0]
        time.sleep(1)
        assert answered[0] > before, "the worker is no longer served"
    finally:
        asking.set()
        thread.join(15)
        context.term()
        broker.stop()
    print(f"\nrequests answered meanwhile: {answered[0]}; task_broker RSS after each round (kB): {rss}")
    assert wrong == [] and answered[0] > 100
    assert rss[-1] - rss[1] < 3 * 1024, rss
