"""The job POST, exactly once: journal first, never a blind retry, reconcile the doubt.

For each attempt: take a slot (:meth:`~gcbatch.engine.slots.Slots.reserve`), journal the
intent at stage ``post`` (fsynced), send the POST once, and record what the answer proves:

- a job → ``submitted``;
- "too many active jobs" → nothing was created: learn the cap, wait for a slot, POST again;
- "out of credits" → nothing was created: stop every POST of the run (exit 4); so does
  "Algorithm image is not ready" (exit 1). The case's uploads stay journalled for the
  next apply, and a stop after any of these refusals leaves no false doubt;
- 429 / no connection → nothing was sent: try again after a pause, a few times;
- "a result for these inputs already exists" → find that job (:meth:`Posting.adopt_duplicate`);
- another 4xx → refused: the case fails;
- no definite answer (timeout, reset, 5xx, an unreadable 201) → *in doubt*: look for the
  job on the server (:mod:`gcbatch.engine.reconcile`) before anything is sent again.
"""

from __future__ import annotations

from gcbatch.engine.context import RunContext
from gcbatch.engine.outcomes import Outcome
from gcbatch.engine.prepare import build_sent
from gcbatch.engine.reconcile import (
    Adopt,
    Ambiguous,
    NoJob,
    Reconciler,
    Wait,
    describe_jobs,
    find_existing,
)
from gcbatch.engine.sent import Sent, Stage, job_inputs
from gcbatch.engine.slots import Slots
from gcbatch.engine.uploading import Uploading, journal_intent, not_sent_reason
from gcbatch.errors import (
    ApiError,
    DuplicateJobError,
    GcbatchError,
    InDoubtError,
    OutOfCreditsError,
    RateLimitedError,
    RequestRejectedError,
    TooManyActiveJobsError,
    TransportError,
)
from gcbatch.events import CreditsExhausted, LookingForJob, Resending
from gcbatch.lockfile import CaseEntry
from gcbatch.preflight import refusal_kind
from gcbatch.sources import Case
from gcbatch.statuses import TERMINAL_STATUSES

__all__ = ["Posting"]

#: How often a definitely-unsent job POST (429, connection refused) is tried again.
_MAX_UNSENT_RETRIES = 8
#: A bound on the POST loop of one case (refusals for the active-jobs limit included).
_MAX_POST_ROUNDS = 10_000


class _Ahead:
    """A case's token for "uploading ahead of a slot" (bounded by free slots + lookahead):
    taken before its uploads, given back once it holds a slot or ends, never twice."""

    def __init__(self, slots: Slots) -> None:
        self._slots = slots
        self._held = False

    def take(self) -> bool:
        self._held = self._slots.acquire_prepare()
        return self._held

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots.release_prepare()


def _short(pk: str) -> str:
    return pk[:8] + "…" if len(pk) > 9 else pk


class Posting:
    """Carries a case from its uploads to a job (thread-safe; one per run)."""

    def __init__(self, run: RunContext, uploading: Uploading) -> None:
        self.run = run
        self.uploading = uploading
        options = run.options
        self.reconciler = Reconciler.for_view(
            run.view, run.algorithm.pk, wait_timeout=options.reconcile_wait,
            poll_interval=min(1.0, max(0.1, options.reconcile_wait / 30)), sleep=run.sleep,
            clock=run.clock)

    # -- one attempt -----------------------------------------------------------------------------

    def submit(self, case: Case, sent: Sent, *, retrying: bool) -> None:
        """Upload what ``sent`` needs (ahead of a slot, bounded), then POST until settled."""
        run = self.run
        ahead = _Ahead(run.slots)
        holding = False  # finished uploads wait for this case's POST (upload quotas)
        try:
            if sent.has_uploads:
                if not ahead.take():
                    raise run.stop_case(case.id, Outcome.WAITING, not_sent_reason(run))
                journal_intent(run, case, sent.at_stage(Stage.UPLOAD))
                sent = self.uploading.ensure(case, sent)
                run.slots.holding_uploads(1)
                holding = True
            self._post_until_done(case, sent, retrying=retrying, ahead=ahead)
        finally:
            if holding:
                run.slots.holding_uploads(-1)
            ahead.release()

    def _keep_for_later(self, case: Case, sent: Sent) -> None:
        """The server definitely made no job, and this run POSTs no more: the uploads stay
        journalled (stage "upload": the next apply POSTs with them while they live — the
        same POST, later); a value-only case has nothing to keep, and is not in doubt."""
        if sent.has_uploads:
            journal_intent(self.run, case, sent.at_stage(Stage.UPLOAD))
        else:
            self.run.store.rejected(case.id, "not submitted")

    def _post_until_done(self, case: Case, sent: Sent, *, retrying: bool,
                         ahead: _Ahead) -> None:
        run = self.run
        unsent_retries = 0
        refused = False  # the last POST was refused for a quota: certainly no job
        for _ in range(_MAX_POST_ROUNDS):
            if not run.slots.reserve():
                # the intent stays at stage "upload" (certainly no job), so the next run
                # reuses these uploads without asking the server anything
                if refused:
                    self._keep_for_later(case, sent)
                raise run.stop_case(case.id, Outcome.WAITING, not_sent_reason(run))
            # the slot is ours now: this case no longer counts as "uploaded ahead"
            ahead.release()
            posting = sent.at_stage(Stage.POST)
            journal_intent(run, case, posting)
            refused = False
            try:
                with run.tally.posting_one():
                    job = run.client.create_job(run.algorithm.api_url, job_inputs(posting))
            except TooManyActiveJobsError:
                run.slots.refused_too_many_active()
                refused = True
                continue
            except OutOfCreditsError:
                first = run.slots.credits_exhausted()
                self._keep_for_later(case, sent)
                if first:
                    run.emit(CreditsExhausted())
                raise run.stop_case(case.id, Outcome.WAITING,
                                    "not submitted (out of credits)") from None
            except (RateLimitedError, TransportError) as exc:
                # definitely not created: try again after a pause, a few times
                run.slots.released()
                refused = True
                unsent_retries += 1
                if unsent_retries > _MAX_UNSENT_RETRIES:
                    run.store.rejected(case.id, str(exc))
                    raise
                delay = getattr(exc, "retry_after", None) or min(30.0, 0.5 * 2 ** unsent_retries)
                run.sleep(delay)
                continue
            except DuplicateJobError:
                run.slots.released()
                self.adopt_duplicate(case, posting, retrying=retrying)
                return
            except InDoubtError as exc:
                run.slots.in_doubt(case.id)
                again = self._reconcile_now(case, posting, str(exc))
                if again is None:
                    return
                sent = again
                continue
            except (RequestRejectedError, ApiError) as exc:
                if refusal_kind(exc) == "not_ready":  # the image changed during the run
                    run.slots.image_not_ready()
                    self._keep_for_later(case, sent)
                    raise run.stop_case(case.id, Outcome.WAITING,
                                        not_sent_reason(run)) from None
                run.slots.released()
                run.store.rejected(case.id, str(exc))
                raise
            run.slots.created(job.pk)
            run.job_created(job.pk)
            run.record_job(case.id, job, case.fingerprint, case.digests(), adopted=False)
            run.outcome(case.id, Outcome.SUBMITTED, f"job {job.pk}", job.pk)
            return
        raise GcbatchError(f"{case.id}: gave up submitting after {_MAX_POST_ROUNDS} rounds")

    # -- doubt --------------------------------------------------------------------------------------

    def _reconcile_now(self, case: Case, sent: Sent, why: str) -> Sent | None:
        """In this run, right after a POST without a definite answer: the attempt to send
        again, or None when the case is settled (adopted, or left in doubt)."""
        run = self.run
        run.emit(LookingForJob(case.id, why))
        # a request the server is still processing may commit a moment later
        run.sleep(0.5)
        try:
            verdict = self.reconciler.reconcile(sent, run.claimed, refresh=True,
                                                recent=True, should_stop=lambda: False)
        except (ApiError, TransportError) as exc:
            run.slots.resolved(case.id, None)
            run.outcome(case.id, Outcome.IN_DOUBT, f"{why}; the server could not be asked "
                        f"({exc}); the next apply reconciles it")
            return None
        if isinstance(verdict, Adopt):
            job = verdict.job
            run.record_job(case.id, job, case.fingerprint, case.digests(), adopted=True)
            run.slots.resolved(case.id, job.pk, job_active=job.status not in TERMINAL_STATUSES)
            run.outcome(case.id, Outcome.SUBMITTED, f"job {job.pk} (found after: {why})",
                        job.pk)
            return None
        run.slots.resolved(case.id, None)
        if isinstance(verdict, NoJob):
            run.emit(Resending(case.id, f"no job was made ({verdict.reason})"))
            if sent.has_uploads:
                return self.uploading.ensure(case, sent)
            return sent
        if run.options.resubmit_in_doubt:
            return self.uploading.ensure(case, build_sent(run, case))
        jobs = verdict.jobs if isinstance(verdict, (Ambiguous, Wait)) else ()
        run.outcome(case.id, Outcome.IN_DOUBT,
                    f"{verdict.reason}: {describe_jobs(jobs)}; run apply again later, or "
                    "decide and use --resubmit-in-doubt")
        return None

    def reconcile_pending(self, case: Case, entry: CaseEntry) -> Sent | None:
        """A case in doubt from an earlier run: adopt its job (None), or what to resend."""
        run = self.run
        intent = entry.pending
        assert intent is not None
        try:
            sent: Sent | None = Sent.from_json(intent.payload)
        except ValueError:
            sent = None
        if sent is None:
            # an intent we cannot read (another tool/version): never guess
            if run.options.resubmit_in_doubt:
                return build_sent(run, case)
            run.outcome(case.id, Outcome.IN_DOUBT, "an earlier submission's record is "
                        "unreadable; check the server, then use --resubmit-in-doubt")
            return None
        verdict = self.reconciler.reconcile(sent, run.claimed, should_stop=lambda: run.stopping)
        if isinstance(verdict, Adopt):
            run.record_job(case.id, verdict.job, intent.fingerprint, intent.inputs,
                           adopted=True)
            if verdict.job.status not in TERMINAL_STATUSES:
                run.slots.track_active({verdict.job.pk})
            run.outcome(case.id, Outcome.ADOPTED, f"job {verdict.job.pk}: {verdict.reason}",
                        verdict.job.pk)
            return None
        if isinstance(verdict, NoJob):
            run.emit(Resending(case.id, f"earlier submission made no job ({verdict.reason})"))
            return sent
        if run.options.resubmit_in_doubt:
            run.emit(Resending(case.id, f"still in doubt ({verdict.reason})", forced=True))
            return build_sent(run, case)
        jobs = verdict.jobs if isinstance(verdict, (Ambiguous, Wait)) else ()
        run.outcome(case.id, Outcome.IN_DOUBT,
                    f"{verdict.reason}: {describe_jobs(jobs)}; decide, then run apply with "
                    "--resubmit-in-doubt to send it again")
        return None

    # -- the server's duplicate check ---------------------------------------------------------------

    def adopt_duplicate(self, case: Case, sent: Sent, *, retrying: bool) -> None:
        """"A result for these inputs already exists": find that job; never a second one."""
        run = self.run
        jobs = self.reconciler.jobs(refresh=True)
        free, owned = find_existing(sent, jobs, run.claimed_by())
        entry = run.store.entry(case.id)
        current = entry.job.pk if entry is not None and entry.job is not None else None
        if len(free) == 1:
            job = free[0]
            run.record_job(case.id, job, case.fingerprint, case.digests(), adopted=True)
            run.outcome(case.id, Outcome.ADOPTED, f"job {job.pk} already had these inputs",
                        job.pk)
            return
        own = [j for j, owner in owned if owner == case.id]
        if own and not retrying and not (len(own) == 1 and own[0].pk == current):
            job = own[-1]
            run.record_job(case.id, job, case.fingerprint, case.digests(), adopted=True)
            run.outcome(case.id, Outcome.ADOPTED,
                        f"job {job.pk} from this case's history had these inputs", job.pk)
            return
        if retrying and own:
            message = ("the server refuses to run identical value inputs again (it keeps one "
                       f"job per set of inputs, even a failed one: {_short(own[-1].pk)})")
        elif owned:
            others = ", ".join(sorted({owner for _, owner in owned}))
            message = f"the server already has a job with exactly these inputs, owned by {others}"
        elif free:
            message = f"several jobs already have these inputs: {describe_jobs(free)}"
        else:
            message = ("the server says a job with these inputs exists, but it is not visible "
                       "to you (another user's?)")
        run.store.rejected(case.id, message)
        run.outcome(case.id, Outcome.FAILED, message)
        run.fail_hard()
