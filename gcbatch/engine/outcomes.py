"""What an apply did, case by case: the outcome vocabulary and the run's summary value."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import Any

from gcbatch.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_QUOTA

__all__ = ["ApplySummary", "CaseOutcome", "Outcome"]


class Outcome(str, Enum):
    """What happened to one targeted case in this run (``str``: it is JSON output)."""

    SUBMITTED = "submitted"    # a job was created (or found right after a lost answer)
    ADOPTED = "adopted"        # a job from an earlier attempt was found on the server
    UNCHANGED = "unchanged"    # its locked job stands; nothing was sent
    FAILED = "failed"          # refused by the server or pre-flight; nothing stands
    IN_DOUBT = "in_doubt"      # a POST may have made a job: the user decides
    WAITING = "waiting"        # not sent in this run (stopped, out of credits)
    SKIPPED = "skipped"        # its inputs changed; kept without --replace
    BLOCKED = "blocked"        # does not fit the algorithm; left out by --keep-going


@dataclass(frozen=True)
class CaseOutcome:
    case: str
    kind: Outcome
    message: str = ""
    job_pk: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"case": self.case, "outcome": self.kind.value, "message": self.message,
                "job": self.job_pk}


@dataclass(frozen=True)
class ApplySummary:
    """Every targeted case's outcome and how the run ended."""

    outcomes: tuple[CaseOutcome, ...]
    stopped_by_credits: bool = False
    #: why sending stopped early: "credits", "uploads" (an upload quota that could not
    #: free itself), "not_ready" (the algorithm's image); "" when it did not
    stop_reason: str = ""
    interrupted: bool = False
    elapsed: float = 0.0
    bytes_uploaded: int = 0
    requests: int = 0

    def of(self, *kinds: Outcome) -> tuple[CaseOutcome, ...]:
        return tuple(o for o in self.outcomes if o.kind in kinds)

    def counts(self) -> dict[str, int]:
        """Cases per outcome, every outcome listed (0 too), in the vocabulary's order."""
        counted = Counter(o.kind for o in self.outcomes)
        return {kind.value: counted[kind] for kind in Outcome}

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.stopped_by_credits or self.stop_reason in ("credits", "uploads"):
            return EXIT_QUOTA
        if self.stop_reason:
            return EXIT_FAILURE
        if self.of(Outcome.FAILED, Outcome.IN_DOUBT, Outcome.BLOCKED):
            return EXIT_FAILURE
        return EXIT_OK

    def as_json(self) -> dict[str, Any]:
        return {
            "summary": self.counts(),
            "stopped_by_credits": self.stopped_by_credits,
            "stopped_by": self.stop_reason or None,
            "interrupted": self.interrupted,
            "elapsed_seconds": round(self.elapsed, 3),
            "bytes_uploaded": self.bytes_uploaded,
            "requests": self.requests,
            "exit_code": self.exit_code,
            "cases": [o.as_json() for o in sorted(self.outcomes, key=lambda o: o.case)],
        }
