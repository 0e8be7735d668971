"""avo_wait_for: start a program only once a named publisher is registered with the posttroll nameserver.

``avo_wait_for SERVICE -- COMMAND [ARGS...]`` asks the local nameserver for SERVICE every half second (for at most
``--timeout`` seconds, default 60, then starts the command anyway with a warning) and then execs COMMAND in its
place (same pid, so supervisord's signals reach the program itself).

Why: a posttroll subscriber asks the nameserver once at start and then relies on address announcements; a
publisher announced while the subscriber's connection to the announcer is still being set up is missed for good.
segment_gatherer (unmodified, from pytroll-collectors) subscribes that way to trollstalker, so supervisord starts
each gatherer through this, after trollstalker has registered. Signals while waiting: SIGTERM or SIGINT end it
with status 0 within a second, without starting the command (a stop before the start is a clean stop).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

from avoviirscollector.signals import stop_on_signals


def registered(service: str) -> bool:
    from posttroll.ns import get_pub_address

    try:
        return bool(get_pub_address(service, timeout=1, nameserver="localhost"))
    except Exception:  # nameserver not up yet
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="avo_wait_for", description=__doc__.split("\n\n")[0])
    parser.add_argument("service")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (avo_wait_for SERVICE -- COMMAND ...)")
    stopping = threading.Event()
    stop_on_signals(stopping.set)
    deadline = time.monotonic() + args.timeout
    while not registered(args.service):
        if stopping.wait(0.5):
            return 0
        if time.monotonic() > deadline:
            print(f"avo_wait_for: {args.service} not registered after {args.timeout:.0f} s; starting anyway",
                  file=sys.stderr, flush=True)
            break
    if stopping.is_set():
        return 0
    os.execv(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
