"""The production image, built from the repo's Dockerfile on a local debootstrap trixie base and run with podman.

On by default where podman, buildah, runc and debootstrap are installed (``scripts/container-image tools`` installs
them); ``AVO_CONTAINER_TEST=0`` turns it off. The image build is cached (scripts/container-image): the first run
takes a few minutes (debootstrap about one, pip about one), later runs with unchanged sources reuse the image.
The container runs with host networking, which inside the tests' loopback-only namespace means 127.0.0.1 only,
on free ports, with a host folder as its ``/viirs`` volume; every container started is removed by its id.
This local build leaves supercronic out (it cannot be downloaded here): the image's cron program runs the crontab
with avo_cron instead, and the test checks that the image says so.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import yaml
from posttroll.message import Message

from avoviirscollector.gatherers import program_names
from avoviirscollector.viirs import PRODUCTS
from tests.e2e.harness import Sub, only_loopback
from tests.support import free_ports, wait_until
from tests.test_tle import Celestrak

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "container-image"
TOOLS = ("podman", "buildah", "runc", "debootstrap")
SDR_NAME = "SVM16_npp_d20261123_t1000000_e1001255_b12345_c20261123101500000000_cspp_dev.h5"
#: run by the container's python3: [uid, command line] of every process in it, as JSON
PROCESS_LIST = ("import os, json; out = []\n"
                "for p in os.listdir('/proc'):\n"
                "    if p.isdigit():\n"
                "        try:\n"
                "            uid = [l for l in open(f'/proc/{p}/status') if l.startswith('Uid:')][0].split()[1]\n"
                "            cmd = open(f'/proc/{p}/cmdline', 'rb').read().replace(b'\\0', b' ').decode()\n"
                "        except OSError:\n"
                "            continue\n"
                "        out.append((int(uid), cmd))\n"
                "print(json.dumps(out))")


def _skip_reason() -> str | None:
    if os.environ.get("AVO_CONTAINER_TEST", "1") == "0":
        return "container test turned off (AVO_CONTAINER_TEST=0)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (scripts/container-image tools installs them with apt-get)"
    return None


needs_podman = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


@functools.cache
def podman_env() -> dict[str, str]:
    out = subprocess.run([str(SCRIPT), "env"], capture_output=True, text=True, check=True).stdout
    env = dict(os.environ)
    for assignment in out.replace("export ", "").split():
        key, _, value = assignment.partition("=")
        env[key] = value
    return env


def podman(*args: str, check: bool = True, timeout: float = 120,
           enter: Sequence[str] = ()) -> subprocess.CompletedProcess:
    """podman with the test storage's environment; ``enter`` runs it elsewhere (a pair lab host's ``nsenter``)."""
    return subprocess.run([*enter, "podman", *args], env=podman_env(), capture_output=True, text=True, check=check,
                          timeout=timeout)


@pytest.fixture(scope="module")
def image() -> str:
    info = subprocess.run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"], env=podman_env(),
                          capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        pytest.skip(f"podman cannot run here: {info.stderr.strip().splitlines()[-1:]}")
    build = subprocess.run([str(SCRIPT), "build"], capture_output=True, text=True, timeout=900)
    if build.returncode == 3:  # no network to build from, said precisely on stderr
        pytest.skip(build.stderr.strip().splitlines()[-1])
    assert build.returncode == 0, build.stderr[-4000:]
    return build.stdout.strip().splitlines()[-1]


@pytest.fixture
def container(image, tmp_path):
    """The suite's container, started as production starts it, always removed."""
    viirs = tmp_path / "viirs"
    viirs.mkdir()
    os.chown(viirs, 2001, 2001)
    task, update, publish = free_ports(3)
    run = podman("run", "-d", "--runtime", "runc", "--network", "host",
                 "-v", f"{viirs}:/viirs",
                 "-e", f"TASK_PORT={task}", "-e", f"UPDATE_PORT={update}", "-e", f"PUBLISH_PORT={publish}",
                 "-e", "VIIRS_RETENTION=7", "-e", "GINA_URL=http://127.0.0.1:9",
                 image)
    cid = run.stdout.strip()
    try:
        yield {"id": cid, "viirs": viirs, "task": task, "update": update, "publish": publish}
    finally:
        podman("rm", "-f", "-t", "5", cid, check=False)


def wait_all_running(cid: str, timeout: float = 90) -> dict:
    """The container's ``avo_status --json`` once every program in it is RUNNING."""
    last: list[dict] = []

    def report() -> dict | None:
        out = podman("exec", cid, "avo_status", "--json", "--quick", "--wait", "1.5", check=False)
        if out.stdout.strip().startswith("{"):
            last[:] = [json.loads(out.stdout)]
        running = last and last[0]["programs"] and all(p["state"] == "RUNNING" for p in last[0]["programs"])
        return last[0] if running else None

    def logs() -> str:
        tail = podman("logs", "--tail", "60", cid, check=False)
        return f"every program RUNNING (last report {last[-1:]}); the container's log:\n{tail.stdout}{tail.stderr}"

    return wait_until(report, timeout, logs, every=1.0)


def _first_message(port: int, prefix: str, settle: float, place: Callable[[], object], timeout: float) -> str | None:
    """The first raw message a SUB on 127.0.0.1:``port`` for topics ``prefix`` gets within ``timeout`` seconds of
    ``place()``, which is called ``settle`` seconds after it connected; None when none came."""
    sub = Sub(port, prefix)
    try:
        time.sleep(settle)  # PUB/SUB: let the subscription reach the publisher first
        place()
        return sub.recv_raw(timeout)
    finally:
        sub.close()


def _place_in_sdr(viirs: Path) -> None:
    """An SDR file renamed into ``viirs``/sdr from tmp/, owned by the container's user (from this host)."""
    tmp = viirs / "tmp" / (SDR_NAME + ".part")
    tmp.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 1024)
    os.chown(tmp, 2001, 2001)
    os.replace(tmp, viirs / "sdr" / SDR_NAME)


def _place_in_sdr_inside(cid: str, name: str) -> None:
    """A file ``name`` written in /viirs/tmp and moved into /viirs/sdr by a shell inside the container ``cid``."""
    podman("exec", cid, "sh", "-c", f"echo x > /viirs/tmp/{name} && mv /viirs/tmp/{name} /viirs/sdr/")


def _tle_refresh(cid: str) -> tuple[subprocess.CompletedProcess, bytes]:
    """``tle_refresh`` run in the container ``cid`` from a local stand-in for the TLE source: the run, and the TLE
    set the stand-in served."""
    celestrak = Celestrak()
    try:
        tle = podman("exec", "-e", f"TLE_URL={celestrak.url}", cid, "tle_refresh", check=False)
    finally:
        celestrak.close()
    return tle, celestrak.body


@needs_podman
def test_image_runs_the_suite_as_user_2001_healthy_and_publishing(container):
    cid = container["id"]
    report = wait_all_running(cid)
    names = {p["name"] for p in report["programs"]}
    assert {"nameserver", "trollstalker", "msg_publisher", "cron"} <= names
    assert {name.split(":")[-1] for name in names if "segment_gatherer" in name} == set(program_names(PRODUCTS))

    # the status command in its text form, as an operator runs it
    text = podman("exec", cid, "avo_status", "--wait", "1.5", check=False)
    assert text.returncode == 0 and "HEALTHY" in text.stdout, text.stdout + text.stderr
    assert "segment_gatherer-tir" in text.stdout and "disk:" in text.stdout

    # every process of the container runs as user 2001, supervisord among them
    processes = json.loads(podman("exec", cid, "python3", "-c", PROCESS_LIST).stdout)
    assert any("supervisord" in cmd for _, cmd in processes)
    assert {uid for uid, _ in processes} == {2001}, processes

    # supervisorctl works inside, the healthcheck passes, the local build says it has no supercronic
    ctl = podman("exec", cid, "supervisorctl", "-c", "/app/supervisord.conf", "status", check=False)
    assert "RUNNING" in ctl.stdout and "trollstalker" in ctl.stdout, ctl.stdout + ctl.stderr
    health = podman("healthcheck", "run", cid, check=False)
    assert health.returncode == 0, health.stdout + health.stderr
    marker = podman("exec", cid, "cat", "/app/SUPERCRONIC-SKIPPED")
    assert "avo_cron" in marker.stdout
    # no test double in the production image (it lives in tests/, which the image leaves out)
    double = podman("exec", cid, "sh", "-c", "ls /opt/venv/bin/gina_double /app/tests 2>&1; "
                    "python3 -c 'import avoviirscollector.gina_double' 2>&1", check=False)
    assert "No such file" in double.stdout and "ModuleNotFoundError" in double.stdout, double.stdout

    # a file placed in /viirs/sdr comes out on the publish port
    raw = _first_message(container["publish"], "pytroll://AVO/viirs/sdr", 0.5,
                         lambda: _place_in_sdr(container["viirs"]), 15)
    assert raw is not None, "no message on the publish port within 15 s"
    msg = Message.decode(raw)
    assert msg.data["uid"] == SDR_NAME and msg.data["uri"] == f"/viirs/sdr/{SDR_NAME}"

    # the cron jobs run in the image: cleanup (dry run) and the TLE refresh from a local server
    dry = podman("exec", cid, "cleanup", "--dry-run", check=False)
    assert dry.returncode == 0 and "dry run: would remove 0 files" in dry.stdout, dry.stdout + dry.stderr
    tle, served = _tle_refresh(cid)
    assert tle.returncode == 0 and "TLEs updated" in tle.stdout, tle.stdout + tle.stderr
    assert (container["viirs"] / "elements" / "tle.txt").read_bytes() == served

    # the log files in the volume are readable by the operator, and SIGTERM (podman stop) drains and exits 0
    assert (container["viirs"] / "log" / "trollstalker.log").stat().st_mode & 0o044 == 0o044
    started = time.monotonic()
    podman("stop", "-t", "60", cid, timeout=90)
    assert time.monotonic() - started < 45
    state = json.loads(podman("inspect", cid).stdout)[0]["State"]
    assert state["ExitCode"] == 0, state


def test_compose_file_has_the_spec_settings_ports_and_volume():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    service = compose["services"]["viirscollector"]
    assert service["user"] == "2001:2001" and service["restart"] == "always"
    assert sorted(p.split()[0] for p in service["ports"]) == ["19091:19091", "19191:19191", "29092:29092",
                                                                  "29093:29093"]
    assert service["volumes"] == [{"type": "volume", "source": "viirs", "target": "/viirs"}]
    assert "viirs" in compose["volumes"]
    assert service["logging"]["driver"] == "json-file" and service["logging"]["options"]["max-size"]
    from avoviirscollector import config

    documented = {line.split("|")[1].strip() for line in config.__doc__.splitlines() if line.startswith("| ")}
    variables = {name.strip() for row in documented for name in row.split(",")} - {"variable"}
    assert variables == set(service["environment"])


def test_compose_config_validates():
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose not installed (apt-get install docker-compose) to validate the file")
    base = {k: v for k, v in os.environ.items() if k != "VIIRS_RETENTION"}

    def rendered(**extra):
        out = subprocess.run([tool, "-f", str(REPO / "docker-compose.yml"), "config"], capture_output=True,
                             text=True, env=dict(base, **extra), timeout=60)
        assert out.returncode == 0, out.stderr
        return yaml.safe_load(out.stdout)["services"]["viirscollector"]["environment"]

    environment = rendered(VIIRS_RETENTION="7", MAILHOST="smtp.example.org", LOG_SENDER="a@example.org",
                           LOG_RECIPIENT="b@example.org")
    assert environment["VIIRS_RETENTION"] == "7" and environment["MAILHOST"] == "smtp.example.org"
    # unset or empty retention stays empty: cleanup then keeps everything (SPEC section 3)
    assert rendered()["VIIRS_RETENTION"] in ("", None)
    assert rendered(VIIRS_RETENTION="")["VIIRS_RETENTION"] in ("", None)


@contextlib.contextmanager
def _docker_api(sock: Path):
    """podman's Docker API served on the unix socket ``sock`` while in the block (stopped after it)."""
    service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"], env=podman_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        service.terminate()
        service.wait(timeout=10)


def _compose_up(compose: list[str], env: dict[str, str], project: str) -> str:
    """``up -d`` of the ``compose`` command with ``env``: the id of the ``project``'s container."""
    up = subprocess.run([*compose, "up", "-d", "--no-build"], env=env, capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stdout + up.stderr
    return podman("ps", "-q", "--filter", f"name={project}").stdout.split()[0]


def _refused_by_the_publisher(cid: str) -> list[str]:
    """The lines of the container's log where msg_publisher refused a connection."""
    logs = podman("logs", cid, check=False)
    return [line for line in (logs.stdout + logs.stderr).splitlines()
            if "refused a connection" in line and "msg_publisher" in line]


@needs_podman
def test_compose_up_through_podmans_docker_api(image, tmp_path):
    """``docker-compose up`` of the repo's file (image swapped for the local build) through podman's Docker API.

    Bridge networking (the file's port mappings) creates interfaces and iptables rules: allowed only inside the
    tests' private network namespace, which takes them away when it ends. Then again with ALLOWED_CLIENTS set to
    an address nobody here has: the subscriber on the mapped port is refused, seen as the bridge's gateway.
    """
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    if not only_loopback():
        pytest.skip("bridge networking is tried only inside a loopback-only network namespace (scripts/loopback-netns)")
    sock = tmp_path / "podman.sock"
    override = tmp_path / "local-image.yml"
    override.write_text(f"services:\n  viirscollector:\n    image: {image}\n")
    project = f"avotest{os.getpid()}"
    compose = [tool, "-p", project, "-f", str(REPO / "docker-compose.yml"), "-f", str(override)]
    env = dict(podman_env(), DOCKER_HOST=f"unix://{sock}")
    with _docker_api(sock):
        try:
            wait_until(sock.exists, 10, f"podman's API socket {sock}")
            cid = _compose_up(compose, env, project)
            report = wait_all_running(cid)
            assert len(report["programs"]) >= 9
            inspect = json.loads(podman("inspect", cid).stdout)[0]
            assert inspect["Config"]["User"] == "2001:2001"
            assert inspect["HostConfig"]["RestartPolicy"]["Name"] == "always"
            assert inspect["HostConfig"]["LogConfig"]["Type"] in ("json-file", "k8s-file")
            # the port mapping of docker-compose.yml
            raw = _first_message(29092, "pytroll://AVO/viirs/sdr", 0.5, lambda: _place_in_sdr_inside(cid, SDR_NAME), 15)
            assert raw is not None, "nothing on the mapped publish port within 15 s"
            assert Message.decode(raw).data["uid"] == SDR_NAME

            # ALLOWED_CLIENTS through the same compose path: an address nobody here has. The suite must refuse this
            # host's subscriber on the mapped port, say once which address it saw, and stay healthy (its own status
            # comes from 127.0.0.1 inside the container).
            env["ALLOWED_CLIENTS"] = "192.0.2.77"
            cid = _compose_up(compose, env, project)
            wait_all_running(cid)
            name = SDR_NAME.replace("b12345", "b12346")
            raw = _first_message(29092, "", 1.0, lambda: _place_in_sdr_inside(cid, name), 5)
            assert raw is None, "a refused subscriber got a message"
            refused = _refused_by_the_publisher(cid)
            assert len(refused) == 1, refused
            seen = refused[0].split("refused a connection from ")[1].split()[0]
            print(f"\nthrough podman's port mapping the suite saw this host's connection come from {seen}")
            assert seen != "127.0.0.1"  # the port mapping does not keep the source (README: Who may connect)
            health = podman("healthcheck", "run", cid, check=False)
            assert health.returncode == 0, health.stdout + health.stderr
        finally:
            subprocess.run([*compose, "down", "-v", "-t", "30"], env=env, capture_output=True, timeout=120)
