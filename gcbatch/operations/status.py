"""``gcbatch status``: every targeted case's job status now, recorded in the lockfile."""

from __future__ import annotations

from gcbatch.events import Hook, ignore
from gcbatch.operations.refresh import Refresh, refresh, scope
from gcbatch.operations.session import Session
from gcbatch.operations.study import Study
from gcbatch.targeting import Targeting

__all__ = ["status"]


def status(study: Study, session: Session, targeting: Targeting, *,
           on_event: Hook = ignore) -> Refresh:
    """One refresh of the targeted cases (a list request per 1,000 jobs of the algorithm)."""
    cases = scope(study, targeting)
    return refresh(study, session, cases.targeted, on_event=on_event)
