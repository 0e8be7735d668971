"""Signal handling shared by every daemon and job: SIGTERM and SIGINT only ask the program to stop.

Two stages, so that a stop at any moment of a start is a clean one:

1. :func:`hold_stop_signals`, called by the console-script entry points (entry.py) before anything heavy is
   imported, installs handlers that only remember the signal. A stop that comes while the program imports zmq,
   posttroll or pyorbital is no longer death by signal: the entry sees :func:`stop_requested` and exits 0 before
   the program touched anything.
2. :func:`stop_on_signals`, called by the program once it has something to stop, installs the real handlers; a
   signal remembered by stage 1 is carried over (``stop()`` is called at once), so none is lost in between.

One SIGINT comes before stage 1 and is not death by signal: CPython, between importing ``site`` and running the
console script's first line, checks whether the script is a zip archive; a KeyboardInterrupt raised there is
printed ("Failed checking if argv[0] is an import path entry") and dropped, and the script runs on as if no stop
had come. ``PyErr_Print`` leaves it in ``sys.last_exc``: :func:`hold_stop_signals` takes it for the SIGINT it was.

Programs without handlers of their own (cleanup, tle_refresh) get the default dispositions back from
:func:`restore_default_signals` once they are imported.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_requested: list[int] = []  # the stop signals remembered by the first stage's handlers


def _remember(signum: int, _frame: object) -> None:
    _requested.append(signum)


def hold_stop_signals() -> None:
    """Remember SIGTERM and SIGINT instead of dying of them (the first stage; see the module docstring).

    A SIGINT that CPython's own start dropped (``sys.last_exc``, see the module docstring) is remembered too."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _remember)
    if isinstance(getattr(sys, "last_exc", None), KeyboardInterrupt):
        _requested.append(signal.SIGINT)


def stop_requested() -> bool:
    """Whether a stop signal came since :func:`hold_stop_signals`."""
    return bool(_requested)


def restore_default_signals() -> None:
    """SIGTERM kills and SIGINT raises KeyboardInterrupt again, as in a plain Python program."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def stop_on_signals(stop: Callable[[], None]) -> None:
    """On SIGTERM or SIGINT call ``stop()`` (which only sets a flag); the program's loop then drains and exits.

    A stop signal that came before (held by :func:`hold_stop_signals`) calls ``stop()`` at once."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda *_: stop())
    if _requested:
        stop()
