"""The console scripts' entry points: stop signals held from the first moment, then the program.

Every console script of the suite's daemons and jobs (setup.py ``CONSOLE_SCRIPTS``) starts here. This module
imports nothing heavy: it installs handlers that only remember SIGTERM and SIGINT (signals.py), then imports the
program's module (zmq, posttroll, pyorbital... take a good part of a second on a busy host) and calls its
``main()``. A stop that came meanwhile makes it exit 0 at once, before the program touched anything; a stop that
comes after is handed to the program's own handlers (``signals.stop_on_signals`` carries it over). So whatever the
moment of a SIGTERM or SIGINT during a start, the program either exits by its own handler with status 0 or exits 0
before it did anything; it is never killed half-way through its start by a default disposition.

cleanup and tle_refresh have no handlers of their own: once imported, they get the default dispositions back (a
stop during their import still exits 0 at once). ``avoviirscollector`` (supervise execs supervisord, which
handles signals itself) and ``avo_status`` (read-only, a few seconds) are not started through here.
"""

from __future__ import annotations

import importlib

from avoviirscollector import signals


def run_main(module: str, own_handlers: bool = True) -> int:
    """Hold the stop signals, import ``module``, and return its ``main()`` (0 when a stop came first)."""
    signals.hold_stop_signals()
    main = importlib.import_module(module).main
    if not own_handlers:
        signals.restore_default_signals()
    if signals.stop_requested():
        return 0
    return main()


def task_broker() -> int:
    return run_main("avoviirscollector.broker.server")


def msg_publisher() -> int:
    return run_main("avoviirscollector.msg_publisher")


def monitor() -> int:
    return run_main("avoviirscollector.monitor.server")


def avo_cron() -> int:
    return run_main("avoviirscollector.cron")


def avo_log_forwarder() -> int:
    return run_main("avoviirscollector.log_forwarder")


def avo_wait_for() -> int:
    return run_main("avoviirscollector.wait_for")


def mirror_gina() -> int:
    return run_main("avoviirscollector.mirror.cli")


def cleanup() -> int:
    return run_main("avoviirscollector.cleanup", own_handlers=False)


def tle_refresh() -> int:
    return run_main("avoviirscollector.tle", own_handlers=False)
