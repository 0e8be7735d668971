"""When silent workers are answered "no task" (broker/silence.py): a hold of the status before and after the push."""

from __future__ import annotations

from avoviirscollector.broker.silence import SilentWorkers


def test_a_silent_connection_is_pushed_after_a_second_of_hold_and_the_hold_ends_a_second_later():
    policy = SilentWorkers(hold=1.0)
    assert policy.step([], 10.0) == [] and not policy.holding(10.0)
    assert policy.step([7], 11.0) == [] and policy.holding(11.0)  # the hold begins: the status says 0 from now on
    assert policy.step([7], 11.5) == [] and policy.holding(11.5)
    assert policy.step([7, 8], 12.0) == [7, 8]  # a second of hold: every connection silent now is pushed
    assert policy.holding(12.5) and not policy.holding(13.0)  # and the hold lasts a second more
    assert policy.step([], 13.5) == [] and not policy.holding(13.5)


def test_connections_that_turn_silent_during_the_after_hold_wait_for_a_hold_of_their_own():
    policy = SilentWorkers(hold=1.0)
    policy.step([1], 0.0)
    assert policy.step([1], 1.0) == [1]
    assert policy.step([2], 1.2) == []  # a new hold begins (the status still says 0)
    assert policy.holding(2.1) and policy.step([2], 2.2) == [2]
    assert not policy.holding(3.3)
