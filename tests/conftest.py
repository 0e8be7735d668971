"""The fixtures any test module may ask for: the test TLE set (``elements``), posttroll's nameserver
(``nameserver``), the GINA double (``double``), a local SMTP server (``smtp``) and IPv6 addresses on lo
(``ipv6_hosts``); and, with pytest-xdist, each worker in a loopback-only network namespace of its own. Helpers
that are functions, not fixtures, are in ``tests/support``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


_NETNS = pytest.StashKey[str]()  # the worker's network namespace (set by pytest_configure)


def _enter_the_workers_namespace(config) -> None:
    """With pytest-xdist (``make test`` runs four), each worker moves into a loopback-only network namespace
    of its own before any test runs: the suite's fixed posttroll ports (nameserver 5557, 21200, 16543), the
    addresses tests add to lo and every free port found are then the worker's alone, exactly as when one pytest
    runs in the namespace of ``scripts/loopback-netns``. Only inside such a namespace (where this process may
    create another); tests run in the thread that calls this hook, and the processes they start inherit it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker or os.environ.get("AVO_IN_LOOPBACK_NETNS") != "1":
        return
    os.unshare(os.CLONE_NEWNET)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    config.stash[_NETNS] = os.readlink("/proc/thread-self/ns/net")


GINA_DOUBLE_MARK = "gina_double"
#: the fixtures that start programs as processes or need the loopback-only network namespace
PROCESS_FIXTURES = {"nameserver", "ipv6_hosts", "loopback_only"}


def pytest_addoption(parser):
    parser.addoption("--in-process", action="store_true",
                     help="only the tests that run in this process (make check): leave out those marked "
                          "'processes' and skip any other test at the moment it starts a process")


def pytest_configure(config):
    config.addinivalue_line("markers", f"{GINA_DOUBLE_MARK}(**options): the options of the module's or test's "
                            "``double`` fixture (GinaDouble keywords: slow_seconds=1.5, rate=...)")
    config.addinivalue_line("markers", "processes: starts programs as processes or needs the loopback-only network "
                            "namespace (set by tests/conftest.py on tests/e2e and on users of "
                            f"{', '.join(sorted(PROCESS_FIXTURES))}); --in-process leaves them out")
    _enter_the_workers_namespace(config)


def pytest_collection_modifyitems(config, items):
    e2e = Path(__file__).parent / "e2e"
    for item in items:
        if item.path.is_relative_to(e2e) or PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker("processes")
    if config.getoption("--in-process"):
        kept = [item for item in items if item.get_closest_marker("processes") is None]
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


@pytest.fixture(autouse=True, scope="session")
def _in_process_only(request):
    """With --in-process, a test that starts a process (a console script, a child Python, openssl...) is skipped
    at that moment, in its fixtures too: make test runs it."""
    if not request.config.getoption("--in-process"):
        yield
        return

    def skipped(popen, args, *rest, **options):
        program = args if isinstance(args, str | bytes) else args[0]
        pytest.skip(f"starts a process ({Path(os.fsdecode(program)).name}): make test runs it")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess.Popen, "_execute_child", skipped)
        patch.setattr(os, "fork", lambda: pytest.skip("forks a process: make test runs it"))
        yield


@pytest.fixture(autouse=True, scope="session")
def _in_the_workers_namespace(request):
    """A test running outside its worker's namespace would share ports with the other worker: fail loudly."""
    expected = request.config.stash.get(_NETNS, None)
    if expected is not None:
        assert os.readlink("/proc/thread-self/ns/net") == expected, "tests run outside the worker's network namespace"


@pytest.fixture
def loopback_only():
    """For a test that starts posttroll's nameserver or publishers on fixed or advertised addresses: it fails at
    once outside a loopback-only network namespace (scripts/loopback-netns, which make test uses), where posttroll
    would advertise, and multicast on, a real interface."""
    from tests.e2e.harness import only_loopback

    if not only_loopback():
        pytest.fail("this test must run in a loopback-only network namespace: run it with scripts/loopback-netns "
                    "(make test does)")


@pytest.fixture
def elements(tmp_path):
    """An elements/ folder holding the test TLE set."""
    from tests.broker_support import TLE_FILE

    path = tmp_path / "elements"
    path.mkdir()
    shutil.copy(TLE_FILE, path / "weather.txt")
    return path


@pytest.fixture(scope="module")
def nameserver(tmp_path_factory):
    """posttroll's nameserver (no multicast) as a process, for a module's tests."""
    from tests.broker_support import Nameserver

    ns = Nameserver(tmp_path_factory.mktemp("nameserver") / "nameserver.log")
    try:
        yield ns
    finally:
        ns.stop()


IPV6_ALLOWED, IPV6_FOREIGN = "2001:db8::2", "2001:db8::3"  # documentation addresses, on lo of the test namespace


@pytest.fixture(scope="session")
def ipv6_hosts():
    """Two IPv6 addresses of the documentation prefix on the loopback-only namespace's lo (nothing routes them
    further): (allowed, foreign). Skips outside that namespace (``make test`` always runs the tests inside one)."""
    if os.environ.get("AVO_IN_LOOPBACK_NETNS") != "1":
        pytest.skip("adds addresses to lo: only inside the loopback-only network namespace (scripts/loopback-netns)")
    for address in (IPV6_ALLOWED, IPV6_FOREIGN):
        done = subprocess.run(["ip", "-6", "addr", "replace", f"{address}/128", "dev", "lo", "nodad"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot add {address} to lo (no IPv6 here?): {done.stderr.strip()}")
    return IPV6_ALLOWED, IPV6_FOREIGN


@pytest.fixture
def double(request, tmp_path):
    """The GINA double (tests/gina_double.py) serving on a free port of 127.0.0.1, stopped after the test. Its
    options come from a ``gina_double`` mark on the test or its module: ``pytestmark =
    pytest.mark.gina_double(slow_seconds=3.0)``."""
    from tests.gina_double import GinaDouble

    mark = request.node.get_closest_marker(GINA_DOUBLE_MARK)
    with GinaDouble(tmp_path / "gina", **(mark.kwargs if mark else {})) as running:
        yield running


@pytest.fixture
def smtp():
    """A real SMTP server (aiosmtpd) on a free port of 127.0.0.1: the :class:`tests.support.mail.Inbox` it fills
    (its ``port``), stopped after the test."""
    from aiosmtpd.controller import Controller

    from tests.support import free_port
    from tests.support.mail import Inbox

    inbox = Inbox()
    inbox.port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=inbox.port)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()
