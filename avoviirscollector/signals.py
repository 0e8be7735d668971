"""Signal handling shared by every daemon and job: SIGTERM and SIGINT only ask the program to stop."""

from __future__ import annotations

import signal
from collections.abc import Callable


def stop_on_signals(stop: Callable[[], None]) -> None:
    """On SIGTERM or SIGINT call ``stop()`` (which only sets a flag); the program's loop then drains and exits."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop())
