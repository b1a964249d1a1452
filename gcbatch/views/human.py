"""The human view: results as text on stdout, progress and messages on stderr.

One object per command run: its :meth:`HumanView.event` is the command's event hook (live
displays are made on first use, so a command shows only its own kind of progress), and
one ``show_*`` method per result writes that result. Wording lives in
:mod:`gcbatch.views.text`; this module decides where it goes.
"""

from __future__ import annotations

import sys
import threading
from typing import IO, TYPE_CHECKING

from gcbatch.events import (
    ApplyProgress,
    BytesReceived,
    CaseProblem,
    CreditsExhausted,
    DownloadPlanned,
    Event,
    FileDone,
    LookingForJob,
    PollFailed,
    RequestRetried,
    Resending,
    StatusesNotRecorded,
    UploadsPaused,
    WaitProgress,
)
from gcbatch.statuses import JobStatus
from gcbatch.views.progress import (
    ApplyDisplay,
    DownloadDisplay,
    WaitDisplay,
    make_progress,
)
from gcbatch.views.text import (
    render_adopt,
    render_apply_summary,
    render_download,
    render_findings,
    render_forecast,
    render_in_doubt,
    render_missing_outputs,
    render_plan,
    render_status_summary,
    render_status_table,
    use_color,
)

if TYPE_CHECKING:
    from gcbatch.engine.outcomes import ApplySummary
    from gcbatch.operations.adopt import AdoptResult
    from gcbatch.operations.download import DownloadResult
    from gcbatch.operations.init import InitResult
    from gcbatch.operations.plan import PlanResult
    from gcbatch.operations.refresh import Refresh
    from gcbatch.operations.schema import SchemaResult
    from gcbatch.operations.validate import ValidateResult
    from gcbatch.polling import WaitOutcome
    from gcbatch.status import StatusReport

__all__ = ["HumanView"]


class HumanView:
    """Text for people (see the module docstring)."""

    def __init__(self, out: IO[str] | None = None, err: IO[str] | None = None) -> None:
        self._out = out if out is not None else sys.stdout
        self._err = err if err is not None else sys.stderr
        self._lock = threading.Lock()
        self._apply: ApplyDisplay | None = None
        self._wait: WaitDisplay | None = None
        self._download: DownloadDisplay | None = None
        self._warned: set[str] = set()

    # -- output ---------------------------------------------------------------------------------

    def _print(self, text: str, *, err: bool = False, end: str = "\n") -> None:
        stream = self._err if err else self._out
        stream.write(text + end)
        stream.flush()

    def warn(self, text: str, *, once: bool = False) -> None:
        if once:
            if text in self._warned:
                return
            self._warned.add(text)
        self._print(f"warning: {text}", err=True)

    # -- events ---------------------------------------------------------------------------------

    def event(self, event: Event) -> None:
        """The command's event hook (called from any thread; the displays serialise their
        own output, and only making one takes this view's lock)."""
        if isinstance(event, ApplyProgress):
            self._apply_display().update(event)
        elif isinstance(event, CaseProblem):
            self._apply_display().log(
                f"{event.outcome.replace('_', ' ')}: {event.case}: {event.message}")
        elif isinstance(event, LookingForJob):
            self._apply_display().log(f"{event.case}: {event.why}; looking for the job on "
                                      "the server")
        elif isinstance(event, Resending):
            action = ("resubmitting because of --resubmit-in-doubt" if event.forced
                      else "sending it again")
            self._apply_display().log(f"{event.case}: {event.reason}; {action}")
        elif isinstance(event, UploadsPaused):
            self._apply_display().log(
                f"too many uploads on the server; pausing uploads {event.seconds:.0f} s")
        elif isinstance(event, CreditsExhausted):
            self._apply_display().log(
                "out of algorithm credits: no more jobs will be submitted")
        elif isinstance(event, WaitProgress):
            self._wait_display().update(event)
        elif isinstance(event, PollFailed):
            self.warn(f"refresh failed, retrying at the next poll: {event.message}")
        elif isinstance(event, StatusesNotRecorded):
            self.warn(f"statuses not recorded in the lockfile: {event.holder}", once=True)
        elif isinstance(event, DownloadPlanned):
            self._download_display().planned(event.files)
        elif isinstance(event, FileDone):
            self._download_display().file_done()
        elif isinstance(event, BytesReceived):
            self._download_display().received(event.count)
        elif isinstance(event, RequestRetried):
            pass  # retries are routine; the result (or its error) says what matters

    def _apply_display(self) -> ApplyDisplay:
        with self._lock:
            if self._apply is None:
                self._apply = make_progress(self._err)
            return self._apply

    def _wait_display(self) -> WaitDisplay:
        with self._lock:
            if self._wait is None:
                self._wait = WaitDisplay(self._err)
            return self._wait

    def _download_display(self) -> DownloadDisplay:
        with self._lock:
            if self._download is None:
                self._download = DownloadDisplay(self._err)
            return self._download

    def close(self) -> None:
        """Stop live displays (before the result is written under them). Takes no lock:
        it also runs after a Ctrl-C, which may have struck while a lock was held."""
        displays = (self._apply, self._wait, self._download)
        self._apply = self._wait = self._download = None
        for display in displays:
            if display is not None:
                display.close()

    # -- results --------------------------------------------------------------------------------

    def show_validation(self, result: ValidateResult) -> None:
        for warning in result.warnings:
            self.warn(warning.render())
        for checked in result.checked:
            if not checked.findings:
                self._print(f"{checked.path}: ok ({checked.summary})", err=True)
        findings = result.findings
        if findings:
            self._print(render_findings(findings))
        if result.invalid:
            n, checked_n = len(findings), len(result.checked)
            self._print(f"{n} problem{'s' if n != 1 else ''} in {result.invalid} of "
                        f"{checked_n} manifest{'s' if checked_n != 1 else ''}", err=True)

    def show_plan(self, result: PlanResult, *, token_missing: bool = False) -> None:
        details = {e.case_id: render_in_doubt(e, str(result.manifest or "MANIFEST"))
                   for e in result.in_doubt}
        self._print(render_plan(result.plan, color=use_color(self._out), details=details))
        if result.forecast is not None:
            self._print(render_forecast(result.forecast))
        stats = result.hash_stats
        if stats.hits or stats.misses:
            read = stats.bytes_read / (1024 * 1024)
            self._print(f"hashed {stats.files_read} file(s) ({read:.1f} MiB read), "
                        f"{stats.hits} unchanged file(s) from the hash cache", err=True)
        if token_missing:
            self._print("offline plan: no API token (set GRAND_CHALLENGE_AUTHORIZATION, or "
                        "use --sandbox) so the server was not asked", err=True)

    def show_apply(self, summary: ApplySummary) -> None:
        self._print(render_apply_summary(summary))

    def show_status(self, result: Refresh) -> None:
        report = result.report
        self._print(render_status_summary(report))
        if report.rows:
            self._print(render_status_table(report.rows), end="")

    def show_wait(self, report: StatusReport, *, timed_out: bool) -> None:
        self._print(render_status_summary(report))
        # the interesting rows: what did not succeed (the full table is `gcbatch status`)
        rows = [row for row in report.jobs if row.status != JobStatus.SUCCEEDED]
        if rows:
            self._print(render_status_table(rows), end="")
        unsubmitted = len(report.rows) - len(report.jobs)
        if unsubmitted:
            self.warn(f"{unsubmitted} case(s) have no job yet (run `gcbatch apply`)")

    def show_waited(self, outcome: WaitOutcome) -> None:
        self.show_wait(outcome.report, timed_out=False)

    def show_download(self, result: DownloadResult) -> None:
        self._print(render_download(result.summary, result.tables))
        for path, error in result.summary.failures:
            self._print(f"error: {path}: {error}", err=True)
        for line in render_missing_outputs(result.summary.missing):
            self._print(f"error: {line}", err=True)
        without = result.without_results
        if without:
            counts: dict[str, int] = {}
            for row in without:
                counts[row.status] = counts.get(row.status, 0) + 1
            listed = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            self.warn(f"{len(without)} targeted case(s) have no results yet ({listed})")

    def show_adopt(self, result: AdoptResult) -> None:
        self._print(render_adopt(result))

    def show_init(self, result: InitResult) -> None:
        from gcbatch.views.authoring import render_init

        self._print(render_init(result))

    def show_schema(self, result: SchemaResult) -> None:
        if result.path is None:  # --out -: the schema itself is the result
            self._print(result.text, end="")
            return
        from gcbatch.views.authoring import render_schema

        self._print(render_schema(result))
