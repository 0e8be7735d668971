"""What a mirror_gina run's result means: the exit status and a round's success in the health record, decided in
mirror/results.py alone."""

from avoviirscollector.mirror.download import Fault
from avoviirscollector.mirror.results import RoundResult, RunResult


def round_of(**files) -> RoundResult:
    result = RoundResult()
    for name, (fault, kept) in files.items():
        result.note(name, fault, "why", partial_kept=kept, size=10)
    return result


def test_a_round_sorts_its_files_by_how_they_ended():
    result = round_of(a=(Fault.NONE, False), b=(Fault.SKIPPED, False), c=(Fault.FILE, False),
                      d=(Fault.TRANSIENT, True), e=(Fault.LOCAL, False))
    assert result.placed == ["a"] and result.skipped == ["b"] and result.failed == ["c", "d", "e"]
    assert result.resuming == {"d"} and result.own_faults == {"c": "why"} and result.bytes_placed == 10


def test_exit_status_is_one_when_anything_went_wrong_and_zero_otherwise():
    assert RunResult().exit_status() == 0  # every queue busy with another run
    assert RunResult(rounds=[round_of(a=(Fault.NONE, False), b=(Fault.SKIPPED, False))]).exit_status() == 0
    assert RunResult(cannot_start=True).exit_status() == 1
    assert RunResult(lock_failed=True).exit_status() == 1
    assert RunResult(lock_failed=True, rounds=[RoundResult()]).exit_status() == 1
    assert RunResult(rounds=[RoundResult(listing_failed=True)]).exit_status() == 1
    assert RunResult(rounds=[RoundResult(stopped=True)]).exit_status() == 1
    # a file that failed, even one that resumes next run, fails the run; a later good round does not undo it
    assert RunResult(rounds=[round_of(a=(Fault.TRANSIENT, True)), RoundResult()]).exit_status() == 1


def test_a_round_succeeds_for_the_health_record_when_only_resuming_files_are_left():
    run = RunResult()
    resuming = round_of(a=(Fault.NONE, False), d=(Fault.TRANSIENT, True))
    assert run.round_succeeded(resuming, {"d"}) and run.round_succeeded(RoundResult(), set())
    assert not run.round_succeeded(resuming, {"d", "waiting-in-backoff"})
    assert not run.round_succeeded(RoundResult(listing_failed=True), set())
    assert not run.round_succeeded(RoundResult(stopped=True), set())
    assert not RunResult(lock_failed=True).round_succeeded(RoundResult(), set())
