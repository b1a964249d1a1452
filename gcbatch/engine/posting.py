"""The job POST, exactly once: journal first, never a blind retry, reconcile the doubt.

For each attempt: take a slot (:meth:`~gcbatch.engine.slots.Slots.reserve`), journal the
intent at stage ``post`` (fsynced), send the POST once, and record what the answer proves:

- a job → ``submitted``;
- "too many active jobs" → nothing was created: learn the cap, wait for a slot, POST again
  (the intent goes back to stage ``upload``: a definite answer never leaves a doubt);
- "out of credits" → nothing was created: stop every POST of the run (exit 4);
- 429 / no connection → nothing was sent: try again after a pause, a few times;
- "a result for these inputs already exists" → find that job (:meth:`Posting.adopt_duplicate`);
- another 4xx → refused: the case fails;
- "Invalid hyperlink - Object does not exist" for our own upload (on a resend) → a job
  consumed it: the case is looked up, never counted as refused;
- no definite answer (timeout, reset, 5xx, an unreadable 201) → *in doubt*: the case is
  parked (:mod:`gcbatch.engine.parking`) until a job carrying its handles appears
  (adopted) or the answer window closes (sent again, with the same uploads; if they are
  gone by then, a job consumed them: looked up again, never sent with fresh ones).

Resends are bounded: at most ``max_posts_per_case`` unanswered POSTs per case and
``max_resends`` resends per run; past either the case stays in doubt (exit 1).
"""

from __future__ import annotations

import calendar
import time
from dataclasses import replace

from gcbatch.api.uploads import SourceChangedError
from gcbatch.engine.context import CaseParked, RunContext
from gcbatch.engine.outcomes import Outcome
from gcbatch.engine.parking import Parked, Parking
from gcbatch.engine.prepare import build_sent
from gcbatch.engine.reconcile import (
    Adopt,
    Ambiguous,
    NoJob,
    Reconciler,
    Wait,
    choose_hint,
    describe_jobs,
    find_existing,
)
from gcbatch.engine.sent import Sent, Stage, job_inputs
from gcbatch.engine.slots import Slots
from gcbatch.engine.uploading import Uploading, journal_intent
from gcbatch.errors import (
    ApiError,
    DuplicateJobError,
    GcbatchError,
    InDoubtError,
    NotFoundError,
    OutOfCreditsError,
    RateLimitedError,
    RequestRejectedError,
    TooManyActiveJobsError,
    TransportError,
)
from gcbatch.events import CreditsExhausted, LookingForJob, Resending
from gcbatch.lockfile import CaseEntry
from gcbatch.sources import Case
from gcbatch.statuses import TERMINAL_STATUSES

__all__ = ["Posting", "consumed_our_upload"]

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


def consumed_our_upload(exc: RequestRejectedError) -> bool:
    """The refusal says an upload we named is gone: ``inputs[0].user_upload: Invalid
    hyperlink - Object does not exist.`` (a job consumed it, or it expired)."""
    text = str(exc)
    return "user_upload" in text and "Invalid hyperlink - Object does not exist" in text


def _age_seconds(started_at: str) -> float | None:
    """Seconds since a lockfile time (``2026-11-27T14:00:00Z``); None if unreadable."""
    try:
        then = calendar.timegm(time.strptime(started_at, "%Y-%m-%dT%H:%M:%SZ"))
    except (ValueError, OverflowError):
        return None
    return max(0.0, time.time() - then)


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
        #: where in-doubt cases wait out the answer window (the executor sets it)
        self.parking: Parking | None = None

    # -- one attempt -----------------------------------------------------------------------------

    def submit(self, case: Case, sent: Sent, *, retrying: bool, posts: int = 0) -> None:
        """Upload what ``sent`` needs (ahead of a slot, bounded), then POST until settled
        (or parked: :class:`CaseParked`). ``posts``: unanswered POSTs of this case so far."""
        run = self.run
        ahead = _Ahead(run.slots)
        try:
            if sent.has_uploads:
                if not ahead.take():
                    raise run.stop_case(case.id, Outcome.WAITING, "not submitted (stopped)")
                journal_intent(run, case, sent.at_stage(Stage.UPLOAD))
                try:
                    sent = self.uploading.ensure(case, sent)
                except SourceChangedError as exc:
                    # this case's own input moved under us: it fails, before any POST;
                    # the other cases are not affected (no stop of the run)
                    run.store.rejected(case.id, str(exc))
                    raise run.stop_case(case.id, Outcome.FAILED, str(exc)) from None
            self._post_until_done(case, sent, retrying=retrying, ahead=ahead, posts=posts)
        finally:
            ahead.release()

    def _post_until_done(self, case: Case, sent: Sent, *, retrying: bool,
                         ahead: _Ahead, posts: int) -> None:
        run = self.run
        unsent_retries = 0
        for _ in range(_MAX_POST_ROUNDS):
            if not run.slots.reserve():
                stopped_by_credits = run.slots.stopped_by_credits
                if stopped_by_credits and sent.has_uploads:
                    # credits come back in weeks, uploads expire in a day: let them go
                    run.store.rejected(case.id, "out of algorithm credits")
                # on Ctrl-C the intent stays (stage "upload": certainly no job), so the
                # next run reuses these uploads without asking the server anything
                why = "out of credits" if stopped_by_credits else "stopped"
                raise run.stop_case(case.id, Outcome.WAITING, f"not submitted ({why})")
            # the slot is ours now: this case no longer counts as "uploaded ahead"
            ahead.release()
            posting = sent.at_stage(Stage.POST)
            journal_intent(run, case, posting)
            posted_at = run.clock()
            try:
                with run.tally.posting_one():
                    job = run.client.create_job(run.algorithm.api_url, job_inputs(posting),
                                                timeout=run.options.post_timeout)
            except TooManyActiveJobsError:
                run.slots.refused_too_many_active()
                # a definite "no": back to stage upload, so a stop while this case waits
                # for a slot leaves nothing in doubt (its uploads are reused next time)
                journal_intent(run, case, sent.at_stage(Stage.UPLOAD))
                continue
            except OutOfCreditsError:
                first = run.slots.credits_exhausted()
                run.store.rejected(case.id, "out of algorithm credits")
                if first:
                    run.emit(CreditsExhausted())
                raise run.stop_case(case.id, Outcome.WAITING,
                                    "not submitted (out of credits)") from None
            except (RateLimitedError, TransportError) as exc:
                # definitely not created: try again after a pause, a few times
                run.slots.released()
                unsent_retries += 1
                if unsent_retries > _MAX_UNSENT_RETRIES:
                    run.store.rejected(case.id, str(exc))
                    raise
                journal_intent(run, case, sent.at_stage(Stage.UPLOAD))
                delay = getattr(exc, "retry_after", None) or min(30.0, 0.5 * 2 ** unsent_retries)
                run.sleep(delay)
                continue
            except DuplicateJobError:
                run.slots.released()
                self.adopt_duplicate(case, posting, retrying=retrying)
                return
            except InDoubtError as exc:
                run.slots.in_doubt(case.id)
                self._park(Parked(case=case, sent=posting, posted_at=posted_at,
                                  why=str(exc), posts=posts + 1, retrying=retrying))
            except RequestRejectedError as exc:
                if not (sent.has_uploads and consumed_our_upload(exc)):
                    run.slots.released()
                    run.store.rejected(case.id, str(exc))
                    raise
                # our own upload is gone: the POST we sent before made a job after all
                # (or the upload expired); either way look before anything else
                run.slots.in_doubt(case.id)
                self._park(Parked(case=case, sent=posting, posted_at=posted_at,
                                  why="the server says this case's upload no longer exists "
                                      "(a job consumed it)",
                                  posts=posts, consumed=True, retrying=retrying))
            except ApiError as exc:
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

    def _park(self, parked: Parked) -> None:
        """Hand the case to the parking lot; its worker goes on with another case."""
        run = self.run
        run.emit(LookingForJob(parked.case.id, parked.why))
        assert self.parking is not None
        self.parking.park(parked)
        raise CaseParked()

    def resend(self, parked: Parked) -> None:
        """A parked attempt whose answer window closed without a job: send it again, within
        the bounds (per case, per run), else leave the case in doubt."""
        run = self.run
        case = parked.case
        if parked.posts >= run.options.max_posts_per_case:
            run.outcome(case.id, Outcome.IN_DOUBT,
                        f"{parked.why}; no job found after {parked.posts} job POST(s) without "
                        f"an answer (at most {run.options.max_posts_per_case} per case and "
                        "run); the next apply looks for its job again")
            return
        sent = parked.sent
        # inputs changed since: a fresh attempt under new names, so no two of our jobs can
        # ever carry the same handle
        fresh = parked.earlier and parked.fingerprint != case.fingerprint
        if not fresh and not parked.consumed and self._uploads_gone(sent):
            # gone since the last look (uploads live a day; this POST is minutes old): a
            # job took them, as "Invalid hyperlink" on a resend says. Look for it again;
            # fresh uploads would make a second job
            self._park(replace(parked, consumed=True, posted_at=run.clock(), looks=0,
                               why=f"{parked.why}; its upload is gone since (a job "
                                   "consumed it)"))
        if not run.take_resend():
            run.outcome(case.id, Outcome.IN_DOUBT,
                        f"{parked.why}; not sent again: this run already resent "
                        f"{run.options.max_resends} job POSTs; the next apply looks again")
            return
        if fresh:
            sent = build_sent(run, case)
        run.emit(Resending(case.id, f"no job after the answer window ({parked.why})"))
        self.submit(case, sent, retrying=parked.retrying, posts=parked.posts)

    def _uploads_gone(self, sent: Sent) -> bool:
        for f in sent.uploads:
            if not f.upload_pk:
                continue
            try:
                self.run.client.get_upload(f.upload_pk)
            except NotFoundError:
                return True
        return False

    def reconcile_pending(self, case: Case, entry: CaseEntry) -> Sent | None:
        """A case in doubt from an earlier run: adopt its job (None), park it while its
        answer window is still open (:class:`CaseParked`), or what to resend."""
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
        if sent.stage == Stage.UPLOAD:
            return sent  # its POST never went out: no job, resume its uploads
        age = _age_seconds(intent.started_at)
        if age is not None and age < run.options.answer_window \
                and not run.options.resubmit_in_doubt:
            run.emit(LookingForJob(case.id, "an earlier run's job POST is still within its "
                                            "answer window"))
            assert self.parking is not None
            self.parking.park(Parked(
                case=case, sent=sent, posted_at=run.clock() - age,
                why="an earlier run's job POST got no answer", earlier=True,
                fingerprint=intent.fingerprint, digests=tuple(sorted(intent.inputs.items()))))
            raise CaseParked()
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
                    f"{verdict.reason}: {describe_jobs(jobs)}; {choose_hint(case.id)}")
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
