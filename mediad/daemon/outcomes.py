"""What happens to a job that failed: retried after a backoff, waited out, failed for good, or
skipped (its source left alone).
Pure policy: no files, no database, no clock; the daemon applies the decision."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mediad.errors import Reason

MAX_BACKOFF = 3600.0  # seconds: no retry waits longer than an hour


class Action(StrEnum):
    RETRY = "retry"  # transient: again after `delay`, the attempt counted
    WAIT = "wait"    # the machine's (a full output disk): again after `delay`, not counted
    FAIL = "fail"    # permanent, or out of attempts
    SKIP = "skip"    # the file is fine, the profile's result was not wanted: recorded, not
                     # retried, the source left where it is (no failed_dir, no note)


@dataclass(frozen=True)
class Decision:
    action: Action
    delay: float = 0.0  # seconds before the job may start again
    message: str = ""   # the error as recorded (says when the daemon gave up)


def decide(reason: Reason, message: str, *, transient: bool, attempts: int, waits: int,
           max_attempts: int, backoff: float) -> Decision:
    """The decision for a failure of a job that failed `attempts` times before (counted) and
    waited `waits` times in a row for room (a full output disk)."""
    if reason is Reason.SKIPPED_LARGER:
        return Decision(Action.SKIP, 0.0, message)
    if reason is Reason.DISK_FULL:
        # Not the job's fault: as long as it takes, backing off up to an hour.
        return Decision(Action.WAIT, min(MAX_BACKOFF, backoff * 2 ** min(waits, 20)), message)
    attempt = attempts + 1
    if transient and attempt < max_attempts:
        return Decision(Action.RETRY, min(MAX_BACKOFF, backoff * 2 ** (attempt - 1)), message)
    if transient:
        message = f"{message} (gave up after {attempt} attempts)"
    return Decision(Action.FAIL, 0.0, message)
