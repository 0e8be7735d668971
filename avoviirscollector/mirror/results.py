"""What one run of mirror_gina did, and what that means. Pure: no files, no sockets.

A :class:`RoundResult` holds how each file of one listing round ended (placed, skipped, failed: whose fault, and
whether its partial file waits for the next run), whether a listing failed, whether the round was stopped, and the
newest granule listed per satellite. A :class:`RunResult` holds the rounds of a run and what stood in the way
before them (a state folder or a queue's lock that could not be made). The run's exit status
(:meth:`RunResult.exit_status`) and whether a round counts as a success in the health record
(:meth:`RunResult.round_succeeded`) are decided here, and nowhere else.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from avoviirscollector.mirror.download import Fault


@dataclass(frozen=True)
class FileResult:
    """How one file of a round ended: placed (``Fault.NONE``), skipped (``Fault.SKIPPED``: another run placed or
    is fetching it) or failed (any other fault: whose fault it was decides what the next runs do)."""

    fault: Fault
    reason: str = ""
    partial_kept: bool = False  # failed, and the partial file waits in tmp/ for the next run to resume
    size: int = 0  # bytes placed


@dataclass
class RoundResult:
    """What one listing round did (a run makes one, or one every MIRROR_POLL_SECONDS until the next run's turn)."""

    files: dict[str, FileResult] = field(default_factory=dict)  # name -> how it ended, in the order they ended
    listing_failed: bool = False
    stopped: bool = False
    satellites: dict[str, dt.datetime | None] = field(default_factory=dict)  # newest granule listed (None: failed)

    def note(self, name: str, fault: Fault, reason: str = "", partial_kept: bool = False, size: int = 0) -> None:
        self.files[name] = FileResult(fault, reason, partial_kept, size)

    @property
    def placed(self) -> list[str]:
        return [name for name, end in self.files.items() if end.fault is Fault.NONE]

    @property
    def skipped(self) -> list[str]:
        return [name for name, end in self.files.items() if end.fault is Fault.SKIPPED]

    @property
    def failed(self) -> list[str]:
        return [name for name, end in self.files.items() if end.fault not in (Fault.NONE, Fault.SKIPPED)]

    @property
    def resuming(self) -> set[str]:
        """Failed, with the partial file kept for the next run."""
        return {name for name, end in self.files.items() if end.partial_kept}

    @property
    def own_faults(self) -> dict[str, str]:
        """The failures of the files' own fault (name -> reason): these count toward backoff and giving up."""
        return {name: end.reason for name, end in self.files.items() if end.fault is Fault.FILE}

    @property
    def bytes_placed(self) -> int:
        return sum(end.size for end in self.files.values() if end.fault is Fault.NONE)


@dataclass
class RunResult:
    """What one run did: whether it could start, whether every queue lock could be made, and its rounds."""

    cannot_start: bool = False  # a state folder (sdr/, tmp/, state/) could not be created
    lock_failed: bool = False  # a queue's lock file could not be created (that queue was not served)
    rounds: list[RoundResult] = field(default_factory=list)

    def exit_status(self) -> int:
        """0 when nothing failed (also when every queue was busy with another run); 1 when the run could not start,
        a queue's lock could not be made, a listing or a file failed, or the run was stopped."""
        went_wrong = any(r.failed or r.listing_failed or r.stopped for r in self.rounds)
        return 1 if self.cannot_start or self.lock_failed or went_wrong else 0

    def round_succeeded(self, round_: RoundResult, unplaced: set[str]) -> bool:
        """Whether ``round_`` counts as a success in the health record: every lock was made, every listing was had,
        it was not stopped, and of the wanted files it tried (or held back after failing) none is left ``unplaced``
        (neither placed, skipped nor given up on) but those whose partial file waits for the next run."""
        return not (self.lock_failed or round_.listing_failed or round_.stopped) and unplaced <= round_.resuming
