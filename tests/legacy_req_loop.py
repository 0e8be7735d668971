"""A deployed worker's REQ in the workers' world: run by .venv-legacy's Python (posttroll 1.5.1 and the pyzmq beside
it), standalone (no import from this repository). ``legacy_req_loop.py HOST PORT``: one plain REQ socket, no options,
as viirsprocessor's watcher makes it. Prints the versions as a JSON line, then for each JSON line ``{"send": text}``
on stdin sends ``text`` and prints ``{"reply": text}`` when the reply comes (latin-1), or ``{"reply": null}`` after
60 s (the deployed worker would wait for ever; a test should not)."""

import json
import sys

import posttroll
import zmq


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    context = zmq.Context()
    client = context.socket(zmq.REQ)
    if ":" in host:
        client.setsockopt(zmq.IPV6, 1)  # a connect option of the test's, for the IPv6 address only
        host = f"[{host}]"
    client.connect(f"tcp://{host}:{port}")
    print(json.dumps({"posttroll": posttroll.__version__, "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(),
                      "python": sys.version.split()[0]}), flush=True)
    for line in sys.stdin:
        client.send(json.loads(line)["send"].encode("latin-1"))
        reply = client.recv().decode("latin-1") if client.poll(60000) else None
        print(json.dumps({"reply": reply}), flush=True)
    client.close(linger=0)
    context.term()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
