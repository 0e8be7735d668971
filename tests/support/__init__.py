"""What many test modules need, written once: free ports (:mod:`.ports`), one-shot ZeroMQ clients
(:mod:`.clients`), :func:`wait_until` for every "until this holds" in a test (:mod:`.waiting`), settings built as
the programs build theirs (:mod:`.settings`) and the nearest-rank percentile of figures (:mod:`.figures`).

The fixtures every module may ask for (the GINA double, the test TLE set, posttroll's nameserver) are in
``tests/conftest.py``. Import from here: ``from tests.support import free_port, wait_until``."""

from tests.support.clients import ask, endpoint, heard, request
from tests.support.figures import percentile
from tests.support.ports import free_port, free_ports, wait_for_port
from tests.support.settings import settings_for
from tests.support.waiting import WaitTimeout, seconds_until, wait_until

__all__ = ["WaitTimeout", "ask", "endpoint", "free_port", "free_ports", "heard", "percentile", "request",
           "seconds_until", "settings_for", "wait_for_port", "wait_until"]
