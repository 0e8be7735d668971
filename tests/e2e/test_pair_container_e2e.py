"""The pair's containers: on each host of the pair's lab (pair.py) the suite's image and the keepalived image
(Dockerfile.keepalived, built on it by ``scripts/container-image keepalived``), run as docker-compose.pair.yml runs
them: host networking, the suite as user 2001, keepalived as root with NET_ADMIN and NET_RAW, one host folder as
both containers' ``/viirs`` (the role file is how keepalived's container tells the suite's its role).

- The pair comes up from the images alone: one host holds the service address, the other is the standby, the
  brokers' link is whole, a worker on the address gets every granule placed on both hosts.
- keepalived's container killed whole on the active (``podman kill``: SIGKILL to its first process takes the
  notify reader with it; nobody says STOP and its address stays on the interface): the other host takes the address
  within 5 s, the killed host's broker stops serving once its role file is stale (3 s untouched) and says why, the
  worker is served by the new active. The container started again takes the stale address off (keepalived starts
  as BACKUP) and the pair is whole again.
- Both containers of the new active killed (its whole suite and keepalived, the host itself up): the address back
  on the other host within 5 s, the worker served there. Every granule in exactly one task.

Skipped like test_container.py without podman, buildah, runc and debootstrap, or without images built (``make test``
builds them before entering the tests' namespace), and like test_pair_e2e.py without root, keepalived or ping."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import time

import pytest

from avoviirscollector.viirs import PRODUCTS
from tests.e2e import chaos
from tests.e2e.pair import PairLab, PairWorker, drained
from tests.e2e.pair_chaos import PORTS
from tests.support import wait_until
from tests.test_container import SCRIPT, needs_podman, podman

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420), needs_podman]
MOVE_LIMIT = 5.0  # s: the goal for the address to be on the standby
UPDATE_PORT = int(PORTS["UPDATE_PORT"])


@pytest.fixture(scope="module")
def images() -> tuple[str, str]:
    """(the suite's image, keepalived's image), built (or reused) by scripts/container-image."""
    built = subprocess.run([str(SCRIPT), "keepalived"], capture_output=True, text=True, timeout=900)
    if built.returncode == 3:  # no network to build from in here, said precisely on stderr
        pytest.skip(built.stderr.strip().splitlines()[-1])
    assert built.returncode == 0, built.stderr[-4000:]
    suite = subprocess.run([str(SCRIPT), "tag"], capture_output=True, text=True, check=True).stdout.strip()
    return suite, built.stdout.strip().splitlines()[-1]


class Containers:
    """The two containers of each host, started in the host's namespace with podman (host networking there)."""

    def __init__(self, lab: PairLab, images: tuple[str, str]) -> None:
        self.lab, (self.suite_image, self.keepalived_image) = lab, images
        self.ids: dict[tuple[str, str], str] = {}  # (host, "suite" | "keepalived") -> container id

    def podman(self, host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = podman(*args, check=False, enter=self.lab.hosts[host].ns.command())
        assert not check or result.returncode == 0, f"podman {' '.join(args)} on {host}: {result.stderr[-2000:]}"
        return result

    def start(self, host: str) -> None:
        """docker-compose.pair.yml's two services on ``host``."""
        base = self.lab.hosts[host].base
        os.chown(base, 2001, 2001)
        pair = [arg for key, value in self.lab.hosts[host].env().items() if key.startswith("PAIR_")
                for arg in ("-e", f"{key}={value}")]
        common = ["run", "-d", "--runtime", "runc", "--network", "host", "-v", f"{base}:/viirs", *pair]
        self.ids[(host, "suite")] = self.podman(
            host, *common, *[arg for key, value in PORTS.items() for arg in ("-e", f"{key}={value}")],
            "-e", "RECOVERY_HOURS=12", "-e", "GINA_URL=http://127.0.0.1:9", self.suite_image).stdout.strip()
        self.ids[(host, "keepalived")] = self.podman(
            host, *common, "--user", "0:0", "--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW", "-e", "VIIRS_BASE=/viirs",
            self.keepalived_image).stdout.strip()

    def ready(self, host: str) -> None:
        """The suite's container says it is ready (its own healthcheck's command)."""
        ready = self.podman(host, "exec", self.ids[(host, "suite")], "avo_status", "--quick", "--wait-ready",
                            "--timeout", "120", check=False)
        assert ready.returncode == 0, ready.stdout[-2000:] + ready.stderr[-2000:] + self.logs(host, "suite")

    def kill(self, host: str, kind: str) -> None:
        self.podman(host, "kill", self.ids[(host, kind)])

    def restart(self, host: str, kind: str) -> None:
        self.podman(host, "start", self.ids[(host, kind)])

    def logs(self, host: str, kind: str) -> str:
        out = self.podman(host, "logs", "--tail", "40", self.ids[(host, kind)], check=False)
        return f"\n--- {host} {kind}:\n{out.stdout}{out.stderr}"

    def remove(self) -> None:
        for cid in self.ids.values():
            podman("rm", "-f", "-t", "2", cid, check=False)


def pair_state(lab: PairLab) -> dict[str, dict]:
    """Each host's broker's ``pair`` status ({} when it publishes none)."""
    return {name: (lab.status(name, UPDATE_PORT) or {}).get("pair", {}) for name in lab.hosts}


def whole_with(lab: PairLab, active: str) -> bool:
    state = pair_state(lab)
    return (lab.holders() == {active} and state[active].get("serving") is True and state[active].get("link") ==
            "whole" and all(s.get("serving") is False for name, s in state.items() if name != active))


def place_granule(lab: PairLab, orbit: int, start: dt.datetime) -> None:
    """One satellite-granule's files (every product's) into each host's tmp/, renamed into sdr/, as mirror_gina."""
    for host in lab.hosts.values():
        for name in chaos.satellite_granule_names("npp", orbit, start):
            tmp = host.base / "tmp" / name
            tmp.write_bytes(b"not hdf5, the daemons only look at names")
            os.replace(tmp, host.base / "sdr" / name)


def granules_received(worker: PairWorker) -> list:
    return [key for raw in list(worker.received) for key in chaos.read_task(raw).granules]


def keepalived_container_killed(lab: PairLab, containers: Containers, worker: PairWorker, active: str,
                                 start: dt.datetime) -> None:
    """keepalived's container killed whole on ``active``: nobody says STOP and the address stays there; the other
    host takes it, ``active``'s broker stops on its stale role file, the worker is served by the other (a granule
    placed at ``start``); the container started again, the pair is whole with the other host active."""
    standby = next(name for name in lab.hosts if name != active)
    t0 = time.monotonic()
    containers.kill(active, "keepalived")
    moved = wait_until(lambda: standby in lab.holders() and time.monotonic() - t0, 10, f"the address on {standby}",
                       every=0.05)
    stopped = wait_until(lambda: pair_state(lab)[active].get("serving") is False and time.monotonic() - t0, 15,
                         lambda: f"{active}'s broker no longer serving: {pair_state(lab)}")
    left_on = active in lab.holders()
    assert pair_state(lab)[active]["role stale"] is True and pair_state(lab)[active]["role"] == "MASTER"
    log = (lab.hosts[active].base / "log" / "task_broker.log").read_text()
    assert "keepalived's reader has not touched it" in log, log[-2000:]
    print(f"\nkeepalived's container killed on {active}: address on {standby} after {moved:.2f} s, {active}'s "
          f"broker stopped serving after {stopped:.2f} s; the address left on {active} too: {left_on}")
    assert moved <= MOVE_LIMIT
    wait_until(lambda: pair_state(lab)[standby].get("serving") is True, 10, f"{standby} serving")
    handed = len(granules_received(worker))
    place_granule(lab, 70001, start)
    wait_until(lambda: len(granules_received(worker)) == handed + len(PRODUCTS), 60,
               lambda: f"the granule's tasks from {standby}: {pair_state(lab)}")
    containers.restart(active, "keepalived")
    wait_until(lambda: whole_with(lab, standby), 30,
               lambda: f"the pair whole again, {standby} active: {lab.holders()} {pair_state(lab)}")


def host_containers_killed(lab: PairLab, containers: Containers, worker: PairWorker, active: str,
                           start: dt.datetime) -> None:
    """Both containers of ``active`` killed (its suite and keepalived; the host itself up): the address on the
    other host within MOVE_LIMIT, the worker served there (a granule placed at ``start``), its queue drained."""
    other = next(name for name in lab.hosts if name != active)
    t0 = time.monotonic()
    containers.kill(active, "suite")
    containers.kill(active, "keepalived")
    moved = wait_until(lambda: lab.holders() >= {other} and time.monotonic() - t0, 10, f"the address on {other}",
                       every=0.05)
    wait_until(lambda: pair_state(lab)[other].get("serving") is True, 15,
               lambda: f"{other} serving again: {pair_state(lab)}")
    print(f"both containers of {active} killed: the address on {other} after {moved:.2f} s")
    assert moved <= MOVE_LIMIT
    handed = len(granules_received(worker))
    place_granule(lab, 70001, start)
    wait_until(lambda: len(granules_received(worker)) == handed + len(PRODUCTS), 60,
               lambda: f"the granule's tasks from {other}: {pair_state(lab)}")
    wait_until(lambda: drained(lab.status(other, UPDATE_PORT)), 30, f"{other}'s queue drained")


def test_the_pairs_images_fail_over_when_keepalived_or_the_whole_suite_is_killed(lab, images, tmp_path):
    containers = Containers(lab, images)
    worker = PairWorker(lab, "w1", int(PORTS["TASK_PORT"]), UPDATE_PORT, 0.2, tuple(PRODUCTS))
    first = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0) - dt.timedelta(hours=1)
    granule = [first + dt.timedelta(seconds=86 * i) for i in range(3)]
    try:
        for host in lab.hosts:
            containers.start(host)
        for host in lab.hosts:
            containers.ready(host)
        active = wait_until(lambda: len(h := lab.holders()) == 1 and next(iter(h)), 30, "one host holding the address")
        standby = next(name for name in lab.hosts if name != active)
        wait_until(lambda: whole_with(lab, active), 30, lambda: f"the pair whole: {pair_state(lab)}")
        worker.start()
        place_granule(lab, 70001, granule[0])
        wait_until(lambda: len(granules_received(worker)) == len(PRODUCTS), 60,
                   lambda: f"the first granule's tasks from {active}: {pair_state(lab)}")
        keepalived_container_killed(lab, containers, worker, active, granule[1])
        host_containers_killed(lab, containers, worker, standby, granule[2])
        time.sleep(2.0)  # the worker asks again: a task handed out twice would come now
    finally:
        worker.stop()
        logs = "".join(containers.logs(host, kind) for host, kind in containers.ids) if containers.ids else ""
        containers.remove()
    result = chaos.account({(product, "Suomi-NPP", start) for product in PRODUCTS for start in granule},
                           list(worker.received))
    assert result.ok, result.summary() + logs
    assert not worker.hung
