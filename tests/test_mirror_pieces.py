"""Piece planning and work stealing (pure)."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avoviirscollector.mirror.pieces import IntervalSet, PiecePlan, far_slower

K = 1024


def test_interval_set_merges_and_reports_gaps():
    s = IntervalSet()
    s.add(10, 20)
    s.add(30, 40)
    s.add(20, 30)  # touching intervals merge
    s.add(0, 5)
    assert s.intervals() == [(0, 5), (10, 40)]
    assert s.gaps(50) == [(5, 10), (40, 50)]
    assert s.prefix_end() == 5
    assert s.covered() == 35
    assert s.contains(12, 40) and not s.contains(4, 11)


def test_probe_then_even_split_over_all_connections():
    plan = PiecePlan(4, probe_size=1 * K, min_piece=1 * K)
    assert plan.needs_probe
    probe = plan.probe(0)
    assert (probe.start, probe.end) == (0, 1 * K)
    plan.set_total(400 * K)
    # the probing connection keeps the first quarter; the three others split the rest evenly
    assert plan.owned[0].end == 100 * K
    pieces = [plan.take(slot) for slot in (1, 2, 3)]
    assert [(p.start, p.end) for p in pieces] == [(100 * K, 200 * K), (200 * K, 300 * K), (300 * K, 400 * K)]
    assert plan.free_gaps() == []
    # the probe's request ends; the same connection goes on with the rest of its quarter
    assert plan.accept(0, 0, 1 * K) == 1 * K
    plan.wrote(0, 1 * K)
    follow = plan.finished(0)
    assert (follow.start, follow.end) == (1 * K, 100 * K)


def test_idle_connection_steals_half_of_the_largest_remainder_and_victim_is_cut():
    plan = PiecePlan(2, total=200 * K, probe_size=1 * K, min_piece=4 * K)
    a = plan.take(0)
    b = plan.take(1)
    assert (a.start, a.end, b.start, b.end) == (0, 100 * K, 100 * K, 200 * K)
    plan.wrote(0, plan.accept(0, 0, 100 * K))  # connection 0 is fast and done
    assert plan.finished(0) is None
    plan.wrote(1, plan.accept(1, 100 * K, 10 * K))  # connection 1 is slow: 90 K left
    stolen = plan.steal(0)
    assert (stolen.start, stolen.end) == (155 * K, 200 * K)
    assert plan.owned[1].end == 155 * K
    # the slow connection may keep only up to its new end; the rest of its response is cut
    assert plan.accept(1, 110 * K, 50 * K) == 45 * K
    plan.wrote(1, 45 * K)
    assert plan.cut(1)


def test_no_steal_below_minimum_and_release_makes_remainder_free():
    plan = PiecePlan(2, total=20 * K, min_piece=8 * K)
    plan.take(0)
    assert plan.take(1) is not None
    plan.wrote(1, plan.accept(1, plan.owned[1].pos, 10 * K))
    plan.finished(1)
    assert plan.steal(1) is None  # 10 K left on connection 0: not worth two pieces of 8 K
    plan.wrote(0, plan.accept(0, 0, 3 * K))
    plan.release(0)  # connection 0 failed after 3 K
    assert plan.free_gaps() == [(3 * K, 10 * K)]
    retry = plan.take(0)
    assert (retry.start, retry.end) == (3 * K, 10 * K)  # from the byte where it stopped


def test_single_stream_voids_everything_and_restarts_from_zero():
    plan = PiecePlan(3, total=30 * K, min_piece=1 * K)
    for slot in range(3):
        plan.take(slot)
    plan.wrote(1, plan.accept(1, 10 * K, 5 * K))
    plan.to_single_stream(2, 30 * K)
    assert plan.owned.keys() == {2} and plan.done.covered() == 0
    assert plan.take(0) is None
    plan.wrote(2, plan.accept(2, 0, 7 * K))
    plan.release(2)  # the stream broke: a server without ranges can only be asked again from byte 0
    again = plan.take(0)
    assert (again.start, again.end) == (0, 30 * K) and plan.done.covered() == 0


def test_resume_plans_only_missing_bytes():
    plan = PiecePlan(2, total=100 * K, done=[(0, 40 * K), (60 * K, 70 * K)], min_piece=1 * K)
    assert plan.free_gaps() == [(40 * K, 60 * K), (70 * K, 100 * K)]
    got = []
    while (req := plan.take(len(got))) is not None:
        got.append((req.start, req.end))
    covered = IntervalSet(got + [(0, 40 * K), (60 * K, 70 * K)])
    assert covered.intervals() == [(0, 100 * K)]


def test_busy_slot_cannot_take():
    plan = PiecePlan(1, total=10 * K)
    plan.take(0)
    with pytest.raises(ValueError):
        plan.take(0)


def _hand_out(plan: PiecePlan, connections: int, busy: dict[int, int]) -> None:
    """Every idle connection asks for a piece (the probe first), as the downloader's connections do."""
    for slot in range(connections):
        if slot in busy:
            continue
        req = plan.probe(slot) if plan.needs_probe else plan.take(slot) or plan.steal(slot)
        if req:
            busy[slot] = req.end


def _transfer(plan: PiecePlan, busy: dict[int, int], written: bytearray, rng: random.Random) -> None:
    """Each busy connection fails (3 %) or receives a random number of bytes, kept where the plan says."""
    for slot in list(busy):
        own = plan.owned.get(slot)
        if own is None:
            del busy[slot]
            continue
        if rng.random() < 0.03:  # the piece fails
            plan.release(slot)
            del busy[slot]
            continue
        n = rng.randint(1, 40 * K)
        keep = plan.accept(slot, own.pos, min(n, busy[slot] - own.pos))
        written[own.pos:own.pos + keep] = b"\x01" * keep
        plan.wrote(slot, keep)
        if plan.cut(slot) or own.pos >= busy[slot]:
            follow = plan.finished(slot)
            if follow:
                busy[slot] = follow.end
            else:
                del busy[slot]


@settings(max_examples=150, deadline=None)
@given(total=st.integers(1, 3_000_000), connections=st.integers(1, 8), seed=st.integers(0, 2**32 - 1))
def test_any_schedule_covers_the_file_exactly(total, connections, seed):
    """Random speeds, failures and steals: the file ends complete, bytes land only where they belong."""
    rng = random.Random(seed)
    plan = PiecePlan(connections, probe_size=64 * K, min_piece=16 * K)
    written = bytearray(total)  # 1 where a byte was kept
    busy: dict[int, int] = {}
    for _ in range(100_000):
        if plan.complete:
            break
        _hand_out(plan, connections, busy)
        if plan.total is None and busy:
            plan.set_total(total)
        _transfer(plan, busy, written, rng)
    assert plan.complete
    assert all(written)
    assert plan.done.intervals() == [(0, total)]


def test_why_four_connections_gave_three_per_file():
    """While the probe of a file is out its size is unknown: the plan has nothing to give an idle connection
    (take and steal both say None). The downloader used to start the next file on each such connection, so four
    equal files each began on a connection of its own, and each file was shared by the connections that happened
    to come free later: three per file in the aria2c comparison. Once the size is known (one round trip) the plan
    gives every idle connection a share, so waiting that long for the probe's headers puts all four on the file."""
    MiB = 1 << 20
    plan = PiecePlan(4, probe_size=MiB)
    plan.probe(0)
    assert [plan.take(slot) for slot in (1, 2, 3)] == [None, None, None]
    assert [plan.steal(slot) for slot in (1, 2, 3)] == [None, None, None]
    plan.set_total(32 * MiB)
    pieces = [plan.take(slot) for slot in (1, 2, 3)]
    assert all(p is not None for p in pieces)
    assert sorted(plan.owned) == [0, 1, 2, 3]
    assert sorted((o.pos, o.end) for o in plan.owned.values()) == [(i * 8 * MiB, (i + 1) * 8 * MiB) for i in range(4)]


def test_far_slower_compares_each_transfer_with_the_fastest_other_one():
    """The stall shape of the aria2c comparison: one response trickles (a few kB/s) while three run at the 4 MB/s
    cap. It is singled out at once, however its own rate compares with the run's earlier pieces; equal rates, a
    transfer alone, or every one stalled single nothing out (nothing faster to hand the bytes to)."""
    assert far_slower({0: 58e3, 1: 4.0e6, 2: 3.9e6, 3: 4.1e6}, 8) == [0]
    assert far_slower({0: 0.0, 1: 4e6}, 8) == [0]
    assert far_slower({0: 3.9e6, 1: 4.0e6, 2: 4.1e6, 3: 4.0e6}, 8) == []
    assert far_slower({0: 0.6e6, 1: 4e6}, 8) == []  # slower, not far slower: the idle connections' rescue's case
    assert far_slower({0: 2e3}, 8) == []
    assert far_slower({0: 0.0, 1: 0.0}, 8) == []
    assert far_slower({}, 8) == []


def _left_to_hash_after_last_byte(plan: PiecePlan, total: int, step: int = 256 * K) -> int:
    """Four connections at one rate fetch the file (each takes the lowest free piece when idle, else steals): how
    many bytes are beyond the contiguous prefix (read back for the md5) when the last byte arrives."""
    plan.probe(0)
    plan.set_total(total)
    while not plan.complete:
        before = plan.done.prefix_end()
        for slot in range(plan.connections):
            if slot not in plan.owned and plan.take(slot) is None and plan.steal(slot) is None:
                continue
            own = plan.owned[slot]
            plan.wrote(slot, plan.accept(slot, own.pos, step))
            if plan.cut(slot):
                plan.finished(slot)
    return total - before


def test_big_file_md5_prefix_keeps_up_with_the_download():
    """One 300 MB file over four connections: split into four even shares, the md5 (which runs over the contiguous
    prefix only) had three quarters of the file to read back after its last byte (about 0.5 s of hashing before
    the file could be placed: the big shape of the aria2c comparison stayed at 0.95 of the cap sum). Pieces of at
    most max_piece, taken lowest first, keep the connections side by side and the prefix close behind them."""
    MiB = 1 << 20
    assert _left_to_hash_after_last_byte(PiecePlan(4, probe_size=MiB), 300_000_000) <= 4 * 8 * MiB
    even_split = PiecePlan(4, probe_size=MiB, max_piece=1 << 40)
    assert _left_to_hash_after_last_byte(even_split, 300_000_000) > 200_000_000
    # small files are still split evenly over the connections
    plan = PiecePlan(4, probe_size=MiB)
    plan.probe(0)
    plan.set_total(12_000_000)
    pieces = [plan.take(slot) for slot in (1, 2, 3)]
    assert sorted((o.pos, o.end) for o in plan.owned.values()) == [(i * 3_000_000, (i + 1) * 3_000_000)
                                                                    for i in range(4)], pieces
