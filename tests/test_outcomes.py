"""The daemon's outcome policy: retried, waited out or failed, with which backoff."""

from __future__ import annotations

from mediad.daemon.outcomes import MAX_BACKOFF, Action, Decision, decide
from mediad.errors import Reason


def _decide(reason: Reason, attempts: int = 0, waits: int = 0, transient: bool | None = None):
    return decide(reason, "boom", transient=reason.transient if transient is None else transient,
                  attempts=attempts, waits=waits, max_attempts=3, backoff=30.0)


def test_transient_failures_back_off_then_give_up() -> None:
    assert [(d.action, d.delay) for d in (_decide(Reason.WORKER_CRASHED, a) for a in range(2))] \
        == [(Action.RETRY, 30.0), (Action.RETRY, 60.0)]
    last = _decide(Reason.WORKER_CRASHED, 2)
    assert (last.action, last.message) == (Action.FAIL, "boom (gave up after 3 attempts)")


def test_permanent_failures_fail_at_once_with_their_message() -> None:
    for reason in (Reason.NOT_MEDIA, Reason.CORRUPT, Reason.SYMLINK):
        assert _decide(reason) == Decision(Action.FAIL, 0.0, "boom")


def test_a_full_output_disk_is_waited_out_for_as_long_as_it_takes() -> None:
    delays = [_decide(Reason.DISK_FULL, attempts=5, waits=w).delay for w in range(12)]
    assert all(_decide(Reason.DISK_FULL, attempts=9, waits=w).action is Action.WAIT
               for w in (0, 50, 10_000))
    assert delays[:4] == [30.0, 60.0, 120.0, 240.0] and delays[-1] == MAX_BACKOFF


def test_an_unwanted_result_is_a_skip_not_a_failure_of_the_file() -> None:
    # Recorded once (no retry) and the source left alone, however many attempts came before
    for attempts in (0, 2):
        assert _decide(Reason.SKIPPED_LARGER, attempts) == Decision(Action.SKIP, 0.0, "boom")


def test_a_worker_saying_transient_overrides_the_reason() -> None:
    assert _decide(Reason.CORRUPT, transient=True).action is Action.RETRY
