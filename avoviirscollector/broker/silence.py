"""When a worker's connection that stays silent gets the one reply that is always safe, "no task" (pure).

A deployed worker (plain REQ, blocking ``recv``, never resends) whose request died with the previous broker process
or host is connected again (its libzmq reconnects by itself, keeping the request's reply pipe) and waits for ever for
a reply nobody owes it. task_broker's listener (``zmtp/``) knows every connection from its handshake on, so after
:data:`SILENT_AFTER_S` of silence a connection is either such a worker or an idle one, and both are answered with an
empty reply: the waiting worker takes it as its reply ("no task") and asks again; an idle one drops it at its next
send, *if it has arrived by then*. So the push is surrounded by a hold: for :data:`HOLD_S` before it and after it
the broker's status says ``queue length`` 0 (deployed workers ask only while the last status they heard was above
0), so that no idle worker starts a request that could cross the push on the wire; the listener's push guard
answers a request that came within half a second of a push with "no task" too, for one that did.

:class:`SilentWorkers` decides when: given the connections silent for long enough at each step of the loop, it
starts a hold, names the connections to push once the hold has lasted :data:`HOLD_S`, and ends the hold
:data:`HOLD_S` later. Times are the monotonic clock's, passed in.
"""

from __future__ import annotations

#: a connection silent this long after its handshake is due the empty reply
SILENT_AFTER_S = 3.0
#: the status says no task waits this long before a push, and this long after it
HOLD_S = 1.0


class SilentWorkers:
    """The hold and the pushes (module docstring)."""

    def __init__(self, hold: float = HOLD_S) -> None:
        self.hold = hold
        self.push_at: float | None = None  # a hold has begun: the push is due then
        self.release_at = float("-inf")  # after a push: the hold ends then

    def step(self, silent: list[int], now: float) -> list[int]:
        """The connections to push now, of ``silent`` (those silent for :data:`SILENT_AFTER_S`, not pushed yet)."""
        if self.push_at is None:
            if silent:
                self.push_at = now + self.hold
            return []
        if now < self.push_at:
            return []
        self.push_at = None
        self.release_at = now + self.hold
        return silent

    def holding(self, now: float) -> bool:
        """True while the status must say that no task waits."""
        return self.push_at is not None or now < self.release_at
