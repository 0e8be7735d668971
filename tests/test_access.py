"""access.py: the ZAP handler on real ZeroMQ sockets (127.0.0.2 plays the foreign host), the HTTP gate on a real
http.server, the once-an-hour refusal log and the counter file that status reads."""

from __future__ import annotations

import http.client
import http.server
import json
import logging
import threading

import pytest
import zmq

from avoviirscollector.access import (
    DualStackServer,
    GatedServerMixin,
    RefusalLog,
    bind_dual_stack,
    make_gate,
    read_refusals,
    start_access_control,
)
from avoviirscollector.config import load_settings
from tests.support import free_port, wait_until

FOREIGN = "127.0.0.2"


def settings(tmp_path, allowed: str | None = "127.0.0.1"):
    env = {"VIIRS_BASE": str(tmp_path)}
    if allowed is not None:
        env["ALLOWED_CLIENTS"] = allowed
    s = load_settings(env)
    s.state_dir.mkdir(parents=True, exist_ok=True)
    return s


def connect(context: zmq.Context, kind: int, port: int, source: str | None = None) -> zmq.Socket:
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://{source}:0;127.0.0.1:{port}" if source else f"tcp://127.0.0.1:{port}")
    return sock


@pytest.fixture
def rep_server(tmp_path):
    """A REP echo server behind start_access_control, plus its log records."""
    context = zmq.Context()
    log = logging.getLogger("test_access_server")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    log.addHandler(handler)
    zap = start_access_control(context, settings(tmp_path), log)
    assert zap is not None
    port = free_port()
    rep = context.socket(zmq.REP)
    rep.bind(f"tcp://*:{port}")
    ipc = context.socket(zmq.REP)
    ipc.bind(f"ipc://{tmp_path}/ctl")
    stop = threading.Event()

    def serve():
        poller = zmq.Poller()
        poller.register(rep, zmq.POLLIN)
        poller.register(ipc, zmq.POLLIN)
        while not stop.is_set():
            for sock, _ in poller.poll(50):
                sock.send(b"echo " + sock.recv())
        rep.close()
        ipc.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port, records, zap
    stop.set()
    thread.join(5)
    log.removeHandler(handler)
    context.term()  # ends the ZAP handler too
    zap.join(5)
    assert not zap.is_alive()


def test_allowed_peer_is_served_foreign_peer_never_reaches_the_socket(rep_server, tmp_path):
    port, records, zap = rep_server
    client = zmq.Context()
    try:
        ok = connect(client, zmq.REQ, port)
        ok.send(b"hello")
        assert ok.poll(5000) and ok.recv() == b"echo hello"
        foreign = connect(client, zmq.REQ, port, source=FOREIGN)
        foreign.send(b"give me a task")  # queued on the client: the handshake never completes, so never delivered
        assert not foreign.poll(1500)
        local = client.socket(zmq.REQ)
        local.connect(f"ipc://{tmp_path}/ctl")  # operators' socket: a local peer with no IP address
        local.send(b"list")
        assert local.poll(5000) and local.recv() == b"echo list"
        for sock in (ok, foreign, local):
            sock.close(linger=0)
    finally:
        client.term()
    refused = [r.getMessage() for r in records if "refused" in r.getMessage()]
    assert len(refused) == 1, refused  # the client reconnected every 100 ms: logged once
    assert refused[0].startswith(f"refused a connection from {FOREIGN} to test_access_server: not in ALLOWED_CLIENTS")
    assert zap.gate.refusals.total >= 1


def test_without_allowed_clients_nothing_is_started(tmp_path):
    context = zmq.Context()
    try:
        assert start_access_control(context, settings(tmp_path, None), logging.getLogger("x")) is None
        assert make_gate(settings(tmp_path, None), "x", logging.getLogger("x")) is None
    finally:
        context.term()


def test_refusals_logged_once_an_hour_counted_always_and_kept_across_restarts(tmp_path, caplog):
    now = [1000.0]
    log = logging.getLogger("refusal_test")
    refusals = RefusalLog("prog", log, tmp_path, clock=lambda: now[0], wall=lambda: 1.7e9 + now[0])
    with caplog.at_level(logging.WARNING, logger="refusal_test"):
        for _ in range(500):
            refusals.refused("192.0.2.9", "prog")
            now[0] += 1.0  # one a second for 500 s
        refusals.refused("2001:db8::1", "prog")
        now[0] += 3600
        refusals.refused("192.0.2.9", "prog")
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split()[4] for line in lines] == ["192.0.2.9", "2001:db8::1", "192.0.2.9"]
    refusals.flush(force=True)
    saved = json.loads((tmp_path / "refused-prog.json").read_text())
    assert saved["total"] == 502 and saved["peers"]["192.0.2.9"]["count"] == 501
    again = RefusalLog("prog", log, tmp_path)
    assert again.total == 502
    (tmp_path / "refused-other.json").write_text("{not json")
    assert [(r["program"], r["total"]) for r in read_refusals(tmp_path)] == [("prog", 502)]


class _Server(GatedServerMixin, http.server.ThreadingHTTPServer):
    daemon_threads = True


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        body = b"hello\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_http_gate(tmp_path, caplog):
    server = _Server(("0.0.0.0", 0), _Hello)
    server.gate = make_gate(settings(tmp_path, "127.0.0.1/32"), "monitor", logging.getLogger("monitor"))
    server.gate_where = "MONITOR_PORT"
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        ok = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        ok.request("GET", "/")
        assert ok.getresponse().read() == b"hello\n"
        ok.close()
        with caplog.at_level(logging.WARNING, logger="monitor"):
            for _ in range(3):
                foreign = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(FOREIGN, 0))
                with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
                    foreign.request("GET", "/")
                    foreign.getresponse()
                foreign.close()
            wait_until(lambda: server.gate.refusals.total >= 3, 5, "three refusals counted")
        assert [r.getMessage().split(":")[0] for r in caplog.records] == [
            f"refused a connection from {FOREIGN} to MONITOR_PORT"]
        assert server.gate.refusals.total == 3
    finally:
        server.shutdown()
        server.server_close()


class _DualServer(DualStackServer, _Server):
    pass


def test_http_gate_on_both_stacks_checks_ipv6_entries_and_ipv4_peers_as_ipv4(tmp_path, caplog, ipv6_hosts):
    """The monitor's way of listening (one socket on ::, IPv4 peers on it too): an IPv6 entry of ALLOWED_CLIENTS
    admits its address, another IPv6 address is refused, and 127.0.0.2 (which the socket sees as ::ffff:127.0.0.2)
    is refused and logged as 127.0.0.2; this host's 127.0.0.1 and ::1 are served."""
    allowed6, foreign6 = ipv6_hosts
    server = bind_dual_stack(_DualServer, _Server, 0, _Hello)
    assert isinstance(server, _DualServer)
    server.gate = make_gate(settings(tmp_path, allowed6), "monitor", logging.getLogger("monitor"))
    server.gate_where = "MONITOR_PORT"
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def get(host: str, source: str | None) -> bytes:
        conn = http.client.HTTPConnection(host, port, timeout=5, source_address=(source, 0) if source else None)
        try:
            conn.request("GET", "/")
            return conn.getresponse().read()
        finally:
            conn.close()

    try:
        assert get("::1", allowed6) == b"hello\n"
        assert get("127.0.0.1", None) == b"hello\n" and get("::1", None) == b"hello\n"
        with caplog.at_level(logging.WARNING, logger="monitor"):
            for host, source in (("::1", foreign6), ("127.0.0.1", FOREIGN), ("::1", foreign6)):
                with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
                    get(host, source)
            wait_until(lambda: server.gate.refusals.total >= 3, 5, "three refusals counted")
        assert sorted(r.getMessage().split(" to ")[0] for r in caplog.records) == sorted([
            f"refused a connection from {foreign6}", f"refused a connection from {FOREIGN}"])
        assert server.gate.refusals.total == 3
    finally:
        server.shutdown()
        server.server_close()


def test_supervise_warns_once_when_every_address_is_allowed_and_limits_the_internal_sockets(tmp_path, caplog):
    from avoviirscollector.cli import INTERNAL_ALLOW, access_environment

    log = logging.getLogger("avoviirscollector")
    env: dict[str, str] = {}
    with caplog.at_level(logging.INFO, logger="avoviirscollector"):
        access_environment(settings(tmp_path, None), env, log)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("ALLOWED_CLIENTS is not set: every address may connect")
    assert json.loads(env[INTERNAL_ALLOW])[0] == "127.0.0.1"
    caplog.clear()
    env = {INTERNAL_ALLOW: '["127.0.0.1", "10.9.9.9"]'}  # an operator's own choice is kept
    with caplog.at_level(logging.INFO, logger="avoviirscollector"):
        access_environment(settings(tmp_path, "192.0.2.0/24"), env, log)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert env[INTERNAL_ALLOW] == '["127.0.0.1", "10.9.9.9"]'
