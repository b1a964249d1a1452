"""What ``apply`` would do, case by case, with the reason: a pure function of values.

:func:`make_plan` takes the expanded cases, the lockfile (or None) and optionally a
:class:`ServerFacts` (what the server said: job statuses, the algorithm's interfaces, and
anything the online preflight found), and returns a :class:`Plan`. No I/O: the CLI and the
executor gather the inputs; tests drive it with tables.

Actions (``Action.kind`` and its symbol):

``submit`` (+)        no job yet for this case
``resubmit`` (~)      the inputs changed since the job was submitted (``changed`` names the
                      sockets); apply only does it with ``--replace``
``unchanged`` (=)     the job was submitted with these inputs
``orphan`` (-)        in the lockfile, no longer in the manifest (apply leaves it alone)
``in_doubt`` (?)      a submission was started and its outcome is unknown; apply reconciles
``blocked`` (!)       the server says this case cannot run as written (``reason``)
``needs_server`` (…)  an archive generator: its cases are only known online
``retry_failed`` (↻)  the job ended Failed/Cancelled and ``retry_failed`` was asked for
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from operator import attrgetter
from typing import Any

from gcbatch.lockfile import CaseEntry, Lockfile
from gcbatch.perf import frozen_instance
from gcbatch.sources import Case, PendingGenerator
from gcbatch.statuses import FAILED_STATUSES


class ActionKind(str, Enum):
    """What apply would do with one case (``str``: the value is ``plan --json``'s word)."""

    SUBMIT = "submit"
    RESUBMIT = "resubmit"
    UNCHANGED = "unchanged"
    ORPHAN = "orphan"
    IN_DOUBT = "in_doubt"
    BLOCKED = "blocked"
    NEEDS_SERVER = "needs_server"
    RETRY_FAILED = "retry_failed"


SYMBOLS: Mapping[ActionKind, str] = {
    ActionKind.SUBMIT: "+",
    ActionKind.RESUBMIT: "~",
    ActionKind.UNCHANGED: "=",
    ActionKind.ORPHAN: "-",
    ActionKind.IN_DOUBT: "?",
    ActionKind.BLOCKED: "!",
    ActionKind.NEEDS_SERVER: "…",
    ActionKind.RETRY_FAILED: "↻",
}
#: Kinds after which the lockfile and the server agree with the manifest (nothing to do).
QUIET_KINDS = frozenset({ActionKind.UNCHANGED, ActionKind.ORPHAN})
#: Kinds after which apply sends something (``resubmit`` too, with ``--replace``).
SENDING_KINDS = frozenset({ActionKind.SUBMIT, ActionKind.RETRY_FAILED, ActionKind.IN_DOUBT})


@dataclass(frozen=True)
class ServerFacts:
    """What the server said, for an online plan. Every field is optional knowledge.

    ``interfaces``: the algorithm's input socket sets (a case must match one exactly);
    ``job_status``: job pk → current status (overrides the lockfile's last seen status);
    ``blocked``: case id → reason found by the online preflight (unknown socket, wrong kind,
    value failing a schema, ...), shown as is.
    """

    interfaces: tuple[frozenset[str], ...] | None = None
    job_status: Mapping[str, str] = field(default_factory=dict, hash=False)
    blocked: Mapping[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    case_id: str
    reason: str = ""
    changed: tuple[str, ...] = ()  # resubmit: the sockets whose input changed
    job_pk: str | None = None  # the case's current job, if any
    status: str | None = None  # its status (server view, else lockfile)
    fingerprint: str = ""  # the manifest's fingerprint ("" for orphans / needs_server)

    @property
    def symbol(self) -> str:
        return SYMBOLS[self.kind]

    def as_json(self) -> dict[str, Any]:
        return {
            "case": self.case_id,
            "action": self.kind.value,
            "symbol": self.symbol,
            "reason": self.reason,
            "changed": list(self.changed),
            "job": self.job_pk,
            "status": self.status,
            "fingerprint": self.fingerprint or None,
        }


@dataclass(frozen=True)
class Plan:
    algorithm: str
    actions: tuple[Action, ...]  # by case id; needs_server (by manifest order) last

    def count(self) -> dict[str, int]:
        """Actions per kind, every kind listed (0 too), keyed by the kind's word."""
        counts = Counter(a.kind for a in self.actions)
        return {kind.value: counts.get(kind, 0) for kind in ActionKind}

    @property
    def has_changes(self) -> bool:
        """Whether apply would do anything (or cannot tell offline): ``--detailed-exitcode``."""
        return any(a.kind not in QUIET_KINDS for a in self.actions)

    def as_json(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "actions": [a.as_json() for a in self.actions],
            "summary": self.count(),
            "has_changes": self.has_changes,
        }


def _short(pk: str) -> str:
    return pk[:8] + "…" if len(pk) > 9 else pk


def changed_sockets(old: Mapping[str, str], new: Mapping[str, str]) -> tuple[str, ...]:
    """Sockets added, removed or with another digest, sorted."""
    return tuple(sorted(s for s in set(old) | set(new) if old.get(s) != new.get(s)))


def _interface_problem(case: Case, interfaces: Sequence[frozenset[str]]) -> str | None:
    sockets = frozenset(case.sockets)
    if sockets in interfaces:
        return None
    shown = " | ".join("{" + ", ".join(sorted(i)) + "}" for i in interfaces)
    return (f"inputs {{{', '.join(sorted(sockets))}}} match none of the algorithm's "
            f"interfaces: {shown}")


def _for_case(case: Case, entry: CaseEntry | None, view: ServerFacts | None,
              retry_failed: bool) -> Action:
    action = _from_lockfile(case, entry, view, retry_failed)
    if view is None or action.kind == ActionKind.UNCHANGED:
        # a job that exists stays valid, whatever the algorithm's interfaces became since:
        # apply sends nothing for it, so nothing can block it
        return action
    if case.id in view.blocked:
        return Action(ActionKind.BLOCKED, case.id, view.blocked[case.id], fingerprint=case.fingerprint)
    if view.interfaces is not None:
        problem = _interface_problem(case, view.interfaces)
        if problem is not None:
            return Action(ActionKind.BLOCKED, case.id, problem, fingerprint=case.fingerprint)
    return action


def _from_lockfile(case: Case, entry: CaseEntry | None, view: ServerFacts | None,
                   retry_failed: bool) -> Action:
    if entry is not None and entry.pending is not None and entry.pending.may_have_posted:
        pending = entry.pending
        note = "" if pending.fingerprint == case.fingerprint else \
            "; the inputs have changed since"
        return Action(ActionKind.IN_DOUBT, case.id,
                      f"a submission started {pending.started_at} has no known outcome"
                      f"{note}; apply reconciles it with the server first",
                      fingerprint=case.fingerprint)
    if entry is None or entry.job is None:
        return Action(ActionKind.SUBMIT, case.id, "new case", fingerprint=case.fingerprint)
    job = entry.job
    status = job.status
    if view is not None and job.pk in view.job_status:
        status = view.job_status[job.pk]
    if entry.fingerprint != case.fingerprint:
        changed = changed_sockets(entry.inputs, case.digests())
        if not changed:  # same inputs, another fingerprint: the algorithm slug changed
            reason = "the fingerprint changed (algorithm)"
        else:
            reason = f"inputs changed: {', '.join(changed)}"
        return Action(ActionKind.RESUBMIT, case.id, reason, changed, job.pk, status, case.fingerprint)
    if status in FAILED_STATUSES and retry_failed:
        return Action(ActionKind.RETRY_FAILED, case.id, f"job {_short(job.pk)} ended {status}",
                      (), job.pk, status, case.fingerprint)
    return _unchanged(case.id, entry, view)  # (the fingerprints are equal)


def settled_fingerprints(lockfile: Lockfile | None, *, retry_failed: bool = False,
                         job_status: Mapping[str, str] | None = None) -> dict[str, str]:
    """case id → fingerprint, for every locked case that :func:`make_plan` calls
    ``unchanged`` as long as the manifest still gives it that fingerprint (a job, nothing
    in doubt, and not a failed job that ``retry_failed`` would send again; ``job_status``:
    the server view's statuses, as make_plan would see them). What
    :func:`gcbatch.sources.expand` takes as ``settled``."""
    if lockfile is None:
        return {}
    now = job_status or {}
    return {
        cid: e.fingerprint for cid, e in lockfile.cases.items()
        if e.job is not None and e.pending is None and e.fingerprint
        and not (retry_failed and now.get(e.job.pk, e.job.status) in FAILED_STATUSES)
    }


def _unchanged(case_id: str, entry: CaseEntry, view: ServerFacts | None) -> Action:
    job = entry.job
    assert job is not None  # settled_fingerprints only lists entries with a job
    status = job.status
    if view is not None and view.job_status and job.pk in view.job_status:
        status = view.job_status[job.pk]
    # (built directly: a re-apply of a locked study makes one per case, 100,000 of them)
    return frozen_instance(Action, {
        "kind": ActionKind.UNCHANGED, "case_id": case_id,
        "reason": f"job {_short(job.pk)}, {status or 'status unknown'}",
        "changed": (), "job_pk": job.pk, "status": status, "fingerprint": entry.fingerprint})


_BY_CASE = attrgetter("case_id")


def make_plan(
    cases: Iterable[Case],
    lockfile: Lockfile | None,
    server_view: ServerFacts | None = None,
    *,
    algorithm: str = "",
    needs_server: Sequence[PendingGenerator] = (),
    retry_failed: bool = False,
    settled: Iterable[str] = (),
) -> Plan:
    """One action per case, per orphaned lockfile entry and per archive generator.

    ``settled``: ids of cases that expansion found to match their lockfile entry (see
    :func:`settled_fingerprints`); each is ``unchanged`` without its :class:`Case`.
    """
    entries: Mapping[str, CaseEntry] = lockfile.cases if lockfile is not None else {}
    actions: list[Action] = []
    seen: set[str] = set()
    for case in cases:
        seen.add(case.id)
        actions.append(_for_case(case, entries.get(case.id), server_view, retry_failed))
    settled = list(settled)
    seen.update(settled)
    actions += [_unchanged(case_id, entries[case_id], server_view) for case_id in settled]
    for case_id in entries.keys() - seen:
        entry = entries[case_id]
        reason = "in the lockfile, no longer in the manifest"
        if needs_server:
            # an archive generator not expanded offline may still make this case
            reason = "in the lockfile, not among the cases known offline (an archive " \
                "generator may still make it)"
        if entry.pending is not None:
            reason += "; a submission for it has no known outcome"
        actions.append(Action(
            ActionKind.ORPHAN, case_id, reason,
            job_pk=entry.job.pk if entry.job else None,
            status=entry.job.status if entry.job else None))
    actions.sort(key=_BY_CASE)
    for gen in needs_server:
        actions.append(Action(ActionKind.NEEDS_SERVER, f"cases[{gen.index}]",
                              f"one case per item of archive {gen.archive!r}, "
                              f"as {gen.id_template}; plan with a server to see them"))
    return Plan(algorithm or (lockfile.algorithm.slug if lockfile else ""), tuple(actions))
