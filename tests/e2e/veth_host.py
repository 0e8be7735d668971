"""The veth test host of SPEC section 12's proof, run by test_access_veth_e2e.py as ``python -m
tests.e2e.veth_host TMP`` in a network namespace of its own (``unshare --net``, root), so nothing here touches the
namespace the other tests share.

There: lo up; a veth pair, ``avo-suite`` (192.0.2.1/24) here and ``avo-host`` in a second namespace (192.0.2.2/24 and
192.0.2.3/24, no route beyond the /24); the supervised suite with ``ALLOWED_CLIENTS=127.0.0.1 192.0.2.3``. From the
second namespace, as a foreign host would, it tries every port: the public ones from 192.0.2.2 (refused) and from
192.0.2.3 (allowed, which proves the path works), and the internal posttroll ones from both. It prints one JSON
object with what each attempt got."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.e2e.harness import Suite
from tests.support import wait_until

SUITE_IP, REFUSED_IP, ALLOWED_IP = "192.0.2.1", "192.0.2.2", "192.0.2.3"

PROBE = textwrap.dedent('''
    import json, socket, sys
    from posttroll.message import Message
    from tests.support import ask, heard
    target, ports = sys.argv[1], json.loads(sys.argv[2])

    def tcp(source, port):
        try:
            with socket.create_connection((target, port), timeout=2, source_address=(source, 0)):
                return True
        except OSError:
            return False

    def answer(source, port, body):
        got = ask(port, body, 2.0, source, target)
        return None if got is None else got.decode("utf-8", "replace")[:200]

    lookup = Message("/oper/ns", "request", {"service": ""}).encode().encode()
    fake = Message("/address/segment_gatherer_tir", "info",
                   {"URI": "tcp://192.0.2.66:40000", "service": ["segment_gatherer_tir"]}).encode().encode()
    task = json.dumps({"desired products": ["tir"], "just testing": True}).encode()
    out = {}
    for source in sys.argv[3:]:
        out[source] = {
            "tcp": {name: tcp(source, port) for name, port in ports.items()},
            "task": answer(source, ports["task"], task),
            "update": heard(ports["update"], 2.5, source, target),
            "publish": heard(ports["publish"], 2.5, source, target),
            "nameserver": answer(source, ports["nameserver"], lookup),
            "register": answer(source, ports["broadcast"], fake),
            "announcements": heard(ports["announcements"], 1.5, source, target),
            "trollstalker": heard(ports["trollstalker"], 1.5, source, target),
        }
    print(json.dumps(out))
''')


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def main(tmp: Path) -> int:
    sh("ip", "link", "set", "lo", "up")
    suite = Suite(tmp, {"ALLOWED_CLIENTS": f"127.0.0.1 {ALLOWED_IP}"})  # checks that only lo exists: before the veth
    host = subprocess.Popen(["unshare", "--net", "sleep", "600"])
    try:
        netns = f"/proc/{host.pid}/ns/net"
        wait_until(lambda: os.readlink(netns) != os.readlink("/proc/self/ns/net"), 5, "the host's own namespace")
        sh("ip", "link", "add", "avo-suite", "type", "veth", "peer", "name", "avo-host")
        sh("ip", "link", "set", "avo-host", "netns", str(host.pid))
        sh("ip", "addr", "add", f"{SUITE_IP}/24", "dev", "avo-suite")
        sh("ip", "link", "set", "avo-suite", "up")
        for command in (["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", f"{REFUSED_IP}/24", "dev", "avo-host"],
                        ["ip", "addr", "add", f"{ALLOWED_IP}/24", "dev", "avo-host"],
                        ["ip", "link", "set", "avo-host", "up"]):
            sh("nsenter", f"--net={netns}", *command)
        suite.start()
        try:
            suite.wait_flowing()
            from posttroll.message import Message

            from tests.support import ask

            answer = ask(int(suite.env["POSTTROLL_NAMESERVER_PORT"]),
                         Message("/oper/ns", "request", {"service": ""}).encode().encode(), 5)
            uri = next(a["URI"] for a in Message.decode(answer.decode()).data if "trollstalker" in str(a))
            ports = {"task": suite.settings.task_port, "update": suite.settings.update_port,
                     "publish": suite.settings.publish_port,
                     "nameserver": int(suite.env["POSTTROLL_NAMESERVER_PORT"]),
                     "broadcast": int(suite.env["POSTTROLL_BROADCAST_PORT"]),
                     "announcements": int(suite.env["POSTTROLL_ADDRESS_PUBLISH_PORT"]),
                     "trollstalker": int(uri.rsplit(":", 1)[1])}
            probe = subprocess.run(["nsenter", f"--net={netns}", sys.executable, "-c", PROBE, SUITE_IP,
                                    json.dumps(ports), REFUSED_IP, ALLOWED_IP], capture_output=True, text=True,
                                   timeout=120)
            if probe.returncode != 0:
                print(json.dumps({"error": probe.stderr[-3000:]}))
                return 1
            result = json.loads(probe.stdout)
            listed = ask(ports["nameserver"], Message("/oper/ns", "request", {"service": ""}).encode().encode(), 5)
            result["registered"] = "192.0.2.66" in (listed or b"").decode()
            result["advertised"] = uri
            result["logs"] = {p: [line for line in (suite.base / "log" / f"{p}.log").read_text().splitlines()
                                  if "refused a connection" in line] for p in ("task_broker", "msg_publisher")}
            print(json.dumps(result))
            return 0
        finally:
            suite.stop()
    finally:
        host.kill()
        host.wait()


if __name__ == "__main__":
    os.environ.setdefault("AVO_IN_LOOPBACK_NETNS", "1")
    raise SystemExit(main(Path(sys.argv[1])))
