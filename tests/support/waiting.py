"""One way for a test to wait for something: :func:`wait_until` polls a condition and fails with a message that
says what never happened (and the condition's last value), instead of a fixed sleep or a loop of its own."""

from __future__ import annotations

import time
from collections.abc import Callable


class WaitTimeout(AssertionError, TimeoutError):
    """A condition that did not hold in time: a test failure (AssertionError) and, for the harness's callers that
    try again or give up on a slow machine, a TimeoutError."""


def wait_until[T](condition: Callable[[], T], timeout: float = 10.0, what: str | Callable[[], str] = "the condition",
               every: float = 0.05) -> T:
    """Call ``condition`` every ``every`` seconds until it returns a true value, and return that value; after
    ``timeout`` seconds raise :class:`WaitTimeout` naming ``what`` (a text, or a callable giving one at that
    moment: a log's tail, say) and the last value. The condition is always asked once more at the deadline, so a
    slow last poll does not fail a test whose condition came true meanwhile. Exceptions of the condition pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(min(every, max(0.0, deadline - time.monotonic())))
    text = what() if callable(what) else what
    shown = repr(value)
    if len(shown) > 300:
        shown = shown[:300] + "..."
    raise WaitTimeout(f"{text}: not within {timeout:g} s (last: {shown})")


def seconds_until(condition: Callable[[], object], timeout: float, every: float = 0.05) -> float | None:
    """A measurement: the seconds until ``condition`` returns a true value, or None when it did not within
    ``timeout`` seconds."""
    began = time.monotonic()
    try:
        wait_until(condition, timeout, every=every)
    except WaitTimeout:
        return None
    return time.monotonic() - began
