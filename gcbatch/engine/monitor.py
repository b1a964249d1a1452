"""The slot monitor: a thread that sees our active jobs end and frees their slots.

Under the active-jobs limit the ideal makespan is ``ceil(N / limit) * job duration``: a
slot must be refilled the moment a job ends. Only the job list or a job's detail tells
when that is, so while a worker waits for a slot this thread polls our active jobs: one
request for the newest end of the algorithm's job list (where the jobs we just made are),
then one GET per job the tail did not hold (jobs of an earlier run), in parallel.

Nobody waiting → no polling at all (statuses are ``status``'s business; apply only needs
them to refill slots). The pace follows the jobs' observed duration: sleep until the
oldest active job is due, then poll briskly (a 40th of the duration), backing off (to a
20th) while it is overdue; without any duration yet, start fast and grow gently.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

from gcbatch.api.http import PAGE_LIMIT_MAX
from gcbatch.engine.context import RunContext
from gcbatch.errors import ApiError, TransportError
from gcbatch.statuses import TERMINAL_STATUSES

__all__ = ["SlotMonitor"]

#: Poll up to this many active jobs with one GET each (in parallel); more, with the list.
_POLL_EACH_MAX = 32
#: The fastest status polling goes (for jobs that end within a second or so).
_POLL_FLOOR = 0.01
#: Until a first job of ours has ended (duration unknown), polls back off only to this.
_POLL_UNKNOWN_MAX = 2.0


class SlotMonitor:
    """Polls our active jobs while someone waits for a slot (see the module docstring)."""

    def __init__(self, run: RunContext, done: threading.Event) -> None:
        self.run = run
        self._done = done
        self._last_poll = 0.0
        self._durations: list[float] = []
        self._lock = threading.Lock()
        self._pollers: ThreadPoolExecutor | None = None
        #: the job list's length when last read, and how many jobs the run had made then
        self._list_count = 0
        self._created_at_read = 0
        self._thread = threading.Thread(target=self._guarded, name="gcbatch-monitor",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout=timeout)
        if self._pollers is not None:
            self._pollers.shutdown(wait=True)

    # -- the loop -----------------------------------------------------------------------------

    def _guarded(self) -> None:
        """The loop, guarded: an unexpected error (a bug, an answer that makes no sense)
        stops the run at once (the executor reports it, exit 1) rather than leaving
        workers waiting forever for slots nobody frees."""
        try:
            self._loop()
        except BaseException as exc:
            self.run.broke(f"the slot monitor stopped: {type(exc).__name__}: {exc}")

    def _loop(self) -> None:
        options = self.run.options
        interval = options.poll_min
        while not self._done.is_set():
            active = self.run.slots.wait_for_waiters(self._done, timeout=0.5)
            if active is None:
                continue
            wait = self._last_poll + interval - self.run.clock()
            if wait > 0:
                self._done.wait(min(wait, options.poll_max))
                continue
            self._last_poll = self.run.clock()
            ended = self.poll(sorted(active))
            interval = self._next_interval(ended, interval)

    def poll(self, pks: list[str]) -> int:
        """Refresh our active jobs' statuses; free the slots of those that ended."""
        run = self.run
        statuses = self._statuses(pks)
        updates: list[tuple[str, str, str]] = []
        ended: set[str] = set()
        for pk, status in statuses.items():
            case_id = run.case_of(pk)
            entry = run.store.entry(case_id) if case_id is not None else None
            if case_id is not None and entry is not None and entry.job is not None \
                    and entry.job.pk == pk and entry.job.status != status:
                updates.append((case_id, pk, status))
            if status in TERMINAL_STATUSES:
                ended.add(pk)
        if updates:
            run.store.statuses(updates)
        if ended:
            now = run.clock()
            for pk in ended:
                started = run.job_ended(pk)
                if started is not None:
                    with self._lock:
                        self._durations.append(now - started)
            run.slots.ended(ended)
        return len(ended)

    # -- pace ---------------------------------------------------------------------------------

    def median_duration(self, quantile: float = 0.5) -> float | None:
        """How long our jobs take, as observed (else the server's average, else None).

        Observed durations run from the POST to the poll that saw the end, so they are
        never shorter than the truth; a low quantile tracks it from above (the due-time
        prediction uses 0.1, or slow polling would keep predicting slow jobs)."""
        with self._lock:
            seen = sorted(self._durations[-50:])
        if seen:
            return seen[min(len(seen) - 1, int(len(seen) * quantile))]
        return self.run.algorithm.average_duration or None

    def _next_interval(self, ended: int, interval: float) -> float:
        options = self.run.options
        median = self.median_duration()
        if median is None:
            if ended:
                return options.poll_min
            return min(_POLL_UNKNOWN_MAX, options.poll_max, interval * 1.25)
        low, high = self._bounds(median)
        starts = self.run.start_times(self.run.slots.active())
        if starts:
            quick = self.median_duration(0.1) or median
            until_due = min(starts) + quick - self.run.clock()
            if until_due > 0:
                return max(low, min(options.poll_max, until_due))
        return low if ended else min(high, max(low, interval * 1.5))

    def _bounds(self, median: float) -> tuple[float, float]:
        """(interval while jobs are due, the most it backs off to while they are overdue):
        a 40th and a 20th of the jobs' duration, within [_POLL_FLOOR, poll_max]."""
        options = self.run.options
        low = max(_POLL_FLOOR, min(options.poll_min, median / 40))
        return low, max(low, min(options.poll_max, median / 20))

    # -- reading statuses -----------------------------------------------------------------------

    def _statuses(self, pks: list[str]) -> dict[str, str]:
        statuses = self._tail_statuses(set(pks))
        missing = [pk for pk in pks if pk not in statuses]
        if len(missing) > _POLL_EACH_MAX:
            with contextlib.suppress(ApiError, TransportError):
                statuses.update({pk: job.status for pk, job in self.run.view.jobs(
                    self.run.algorithm.pk, missing).items()})
            return statuses
        if missing:
            client = self.run.client

            def one(pk: str) -> tuple[str, str | None]:
                try:
                    return pk, client.get_job(pk).status
                except (ApiError, TransportError):
                    return pk, None

            if self._pollers is None:
                self._pollers = ThreadPoolExecutor(max_workers=_POLL_EACH_MAX,
                                                   thread_name_prefix="gcbatch-poll")
            statuses.update(
                {pk: st for pk, st in self._pollers.map(one, missing) if st is not None})
        return statuses

    def _tail_statuses(self, wanted: set[str]) -> dict[str, str]:
        limit = min(PAGE_LIMIT_MAX, max(32, 2 * len(wanted)))
        found: dict[str, str] = {}
        for _ in range(2):  # a second try when our estimate of the list's length was off
            created = self.run.created
            estimate = self._list_count + created - self._created_at_read
            offset = max(0, estimate - limit)
            try:
                results, count = self.run.view.tail(self.run.algorithm.pk, limit=limit,
                                                    offset=offset)
            except (ApiError, TransportError) as exc:
                if isinstance(exc, ApiError) and exc.status == 200:
                    raise  # an answer that makes no sense: stop (the guard), never guess
                return found
            self._list_count, self._created_at_read = count, created
            for item in results:
                if isinstance(item, dict) and item.get("pk") in wanted:
                    found[str(item["pk"])] = str(item.get("status") or "")
            if len(found) == len(wanted) or offset + len(results) >= count:
                return found  # all found, or this was the tail: the rest are older
        return found
