"""Piece planning for one file downloaded over several connections. Pure: no sockets, no files.

A file of ``total`` bytes is covered by *owned ranges*, one per busy connection (``slot``): the connection owns
``[pos, end)`` and has asked the server for ``[pos, request_end)``. Bytes it has received are *done*. What is
neither done nor owned is *free*. An idle connection first takes a piece of the lowest free gap (at most
``chunk`` bytes: the first connections split the file evenly, in pieces of at most ``max_piece`` bytes, so that on a
big file the connections move through it side by side from the start and the md5, which can only run over the
contiguous prefix, keeps up with the download instead of reading back most of the file after its last byte); when
nothing is free it may steal the second half of the largest owned remainder (as aria2 does), so one slow
connection never sets the finish time. The victim's ``end`` shrinks; the downloader cuts its transfer there.

Before the size is known, one connection asks for a small *probe* ``[0, probe_size)``; the first response
tells the size and :meth:`PiecePlan.set_total` plans the rest.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

MiB = 1024 * 1024


class IntervalSet:
    """Disjoint half-open integer intervals, merged and sorted."""

    def __init__(self, intervals: list[tuple[int, int]] | tuple = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in intervals:
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        # first interval whose end >= start (touching intervals merge)
        i = bisect.bisect_left(self._ends, start)
        j = i
        while j < len(self._starts) and self._starts[j] <= end:
            start = min(start, self._starts[j])
            end = max(end, self._ends[j])
            j += 1
        self._starts[i:j] = [start]
        self._ends[i:j] = [end]

    def covered(self) -> int:
        return sum(e - s for s, e in zip(self._starts, self._ends, strict=True))

    def prefix_end(self) -> int:
        """End of the interval that starts at 0 (0 when byte 0 is missing)."""
        if self._starts and self._starts[0] == 0:
            return self._ends[0]
        return 0

    def contains(self, start: int, end: int) -> bool:
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def gaps(self, total: int) -> list[tuple[int, int]]:
        """The parts of ``[0, total)`` not covered."""
        out = []
        pos = 0
        for s, e in zip(self._starts, self._ends, strict=True):
            if s > pos:
                out.append((pos, min(s, total)))
            pos = max(pos, e)
            if pos >= total:
                break
        if pos < total:
            out.append((pos, total))
        return [(s, e) for s, e in out if e > s]

    def intervals(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends, strict=True))

    def clear(self) -> None:
        self._starts.clear()
        self._ends.clear()


@dataclass
class Owned:
    """What one connection is responsible for: ``[pos, end)``; it asked the server for ``[.., request_end)``."""

    pos: int
    end: int
    request_end: int

    @property
    def remaining(self) -> int:
        return max(0, self.end - self.pos)


@dataclass(frozen=True)
class Request:
    """A range request to send: bytes ``[start, end)`` (``end`` exclusive)."""

    slot: int
    start: int
    end: int


class PiecePlan:
    """Which connection fetches which bytes of one file, and what is done."""

    def __init__(
        self, connections: int, total: int | None = None, done: list[tuple[int, int]] | tuple = (),
        probe_size: int = MiB, min_piece: int = 256 * 1024, max_piece: int = 8 * MiB,
    ) -> None:
        if connections < 1:
            raise ValueError("connections must be >= 1")
        self.connections = connections
        self.total = total
        self.done = IntervalSet(done)
        self.owned: dict[int, Owned] = {}
        self.probe_size = probe_size
        self.min_piece = min_piece
        self.max_piece = max(max_piece, min_piece)
        self.single_stream = False
        self.chunk = self._chunk_for(self.free_bytes()) if total is not None else 0

    # -- state -------------------------------------------------------------------------------------------
    def _chunk_for(self, free: int, sharing: int | None = None) -> int:
        sharing = sharing or self.connections
        return min(self.max_piece, max(self.min_piece, -(-free // sharing))) if free else self.min_piece

    def free_gaps(self) -> list[tuple[int, int]]:
        if self.total is None:
            return []
        taken = IntervalSet(self.done.intervals())
        for own in self.owned.values():
            taken.add(own.pos, own.end)
        return taken.gaps(self.total)

    def free_bytes(self) -> int:
        return sum(e - s for s, e in self.free_gaps())

    @property
    def complete(self) -> bool:
        if self.total is None:
            return False
        return self.total == 0 or self.done.contains(0, self.total)

    @property
    def needs_probe(self) -> bool:
        return self.total is None and not self.owned

    # -- assignment --------------------------------------------------------------------------------------
    def probe(self, slot: int) -> Request:
        """The first request when the size is unknown: ``[0, probe_size)``."""
        assert self.needs_probe
        self.owned[slot] = Owned(0, self.probe_size, self.probe_size)
        return Request(slot, 0, self.probe_size)

    def set_total(self, total: int) -> None:
        """The size became known (from the probe's response): plan an even split of the rest."""
        if self.total is not None:
            return
        self.total = total
        for own in self.owned.values():
            own.end = min(own.end, total)
            own.request_end = min(own.request_end, total)
        busy = len(self.owned)
        share = min(-(-total // self.connections), self.max_piece)
        # the probing connection keeps the first share and continues after its probe
        for own in self.owned.values():
            if own.pos == 0 and own.end < share:
                own.end = min(share, total)
        free = self.free_bytes()
        self.chunk = self._chunk_for(free, max(1, self.connections - busy))

    def take(self, slot: int) -> Request | None:
        """A piece of the lowest free gap for an idle connection, or None when nothing is free."""
        if slot in self.owned:
            raise ValueError(f"slot {slot} is busy")
        if self.single_stream:
            if self.owned or self.complete:
                return None
            # a server that ignores ranges can only be asked for the whole file again
            self.done.clear()
            self.owned[slot] = Owned(0, self.total, self.total)
            return Request(slot, 0, self.total)
        gaps = self.free_gaps()
        if not gaps:
            return None
        start, end = gaps[0]
        end = min(end, start + self.chunk)
        self.owned[slot] = Owned(start, end, end)
        return Request(slot, start, end)

    def steal(self, slot: int, min_bytes: int | None = None) -> Request | None:
        """Take the second half of the largest owned remainder, when it is at least ``min_bytes`` long."""
        if slot in self.owned:
            raise ValueError(f"slot {slot} is busy")
        if self.single_stream or self.total is None or not self.owned:
            return None
        min_bytes = max(min_bytes or 0, 2 * self.min_piece)
        victim_slot, victim = max(self.owned.items(), key=lambda item: item[1].remaining)
        if victim.remaining < min_bytes:
            return None
        mid = victim.pos + victim.remaining // 2
        new = Owned(mid, victim.end, victim.end)
        victim.end = mid
        self.owned[slot] = new
        return Request(slot, new.pos, new.end)

    def largest_remaining(self) -> int:
        return max((own.remaining for own in self.owned.values()), default=0)

    # -- progress ----------------------------------------------------------------------------------------
    def accept(self, slot: int, offset: int, length: int) -> int:
        """``length`` bytes arrived for ``slot`` at ``offset``: how many of them to keep (the rest is cut).

        The caller writes the kept bytes, then calls :meth:`wrote`.
        """
        own = self.owned[slot]
        if offset != own.pos:
            raise ValueError(f"slot {slot}: data at {offset}, expected {own.pos}")
        return max(0, min(length, own.end - offset))

    def wrote(self, slot: int, length: int) -> None:
        own = self.owned[slot]
        self.done.add(own.pos, own.pos + length)
        own.pos += length

    def cut(self, slot: int) -> bool:
        """True when the connection has everything it owns (its transfer may stop now)."""
        own = self.owned.get(slot)
        return own is not None and own.pos >= own.end

    def finished(self, slot: int) -> Request | None:
        """The slot's transfer ended without error. Returns the follow-up request when it still owns bytes."""
        own = self.owned.get(slot)
        if own is None:
            return None
        if own.pos < own.end:
            own.request_end = own.end
            return Request(slot, own.pos, own.end)
        del self.owned[slot]
        return None

    def release(self, slot: int) -> None:
        """The slot's transfer failed or was abandoned: what it had not received becomes free again."""
        self.owned.pop(slot, None)

    def to_single_stream(self, slot: int, total: int) -> None:
        """The server ignored ranges: ``slot`` now receives the whole file from byte 0; everything else is void."""
        self.single_stream = True
        self.total = total
        self.done.clear()
        self.owned = {slot: Owned(0, total, total)}


def far_slower(rates: dict[int, float], factor: float) -> list[int]:
    """The slots whose rate (bytes/s over the same recent window) is below ``1/factor`` of the fastest *other*
    slot's: a connection that stalls or crawls while the server sends the others at full speed. Nothing is far
    slower when there is nothing to compare with (one transfer alone, or every one as slow as the others)."""
    out = []
    for slot, rate in rates.items():
        best = max((r for s, r in rates.items() if s != slot), default=0.0)
        if best > 0 and rate * factor < best:
            out.append(slot)
    return out
