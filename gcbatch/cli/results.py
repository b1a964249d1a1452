"""``gcbatch status``, ``gcbatch wait`` and ``gcbatch download``: from jobs to results.

All three start the same way: read the manifest (no file contents are read: status needs
only case ids and source summaries), take the cases of the manifest and of the lockfile
(a locked case the manifest no longer has is still shown), apply ``--case``/``--select``,
and refresh the jobs' statuses with the job list (one request per 1000 jobs of the
algorithm), recording what changed in the lockfile. Then:

``status``    prints a summary line and a table; exit 1 if a job Failed, was Cancelled or
              is missing on the server.
``wait``      polls (backing off, at most ``--poll-interval`` apart) until every targeted
              job has ended; exit 0 all Succeeded, 1 some did not, 5 on ``--timeout``.
``download``  writes every output of the Succeeded jobs to ``--out DIR`` and regenerates
              ``DIR/results.csv`` and ``DIR/results.json`` (all cases, whatever the
              targeting); exit 1 if some file could not be downloaded.

Results (tables, JSON) go to stdout; progress and warnings to stderr.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from gcbatch import lockfile as lockmod
from gcbatch import results
from gcbatch.cli.common import (
    ConnectionOptions,
    Targeting,
    common_options,
    manifest_argument,
)
from gcbatch.download import DownloadSummary, download_outputs
from gcbatch.errors import EXIT_FAILURE, EXIT_OK, ConfigError
from gcbatch.manifest import Manifest, load_manifest
from gcbatch.session import Session, connected
from gcbatch.sources import expand
from gcbatch.status import StatusReport, render_summary, render_table
from gcbatch.wait import PollSchedule, WaitTimedOut, parse_duration, wait_for_jobs

__all__ = ["COMMANDS", "download", "status", "wait"]


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


@dataclass(frozen=True)
class _Scope:
    """The cases a command works on, and what the manifest says about their inputs."""

    manifest: Manifest
    all_ids: tuple[str, ...]  # in the manifest or the lockfile, sorted
    targeted: tuple[str, ...]
    summaries: dict[str, dict[str, str]]  # case id → input socket → source summary


def _scope(session: Session, manifest: Manifest, targeting: Targeting, *,
           archives: bool = False) -> _Scope:
    """Cases and input summaries. ``archives``: also expand ``foreach: {archive: ...}``
    generators (a couple of requests per archive; ``download`` wants their summaries for
    the result table, ``status``/``wait`` do not)."""
    # no hasher: only case ids and summaries are needed, never file contents
    expansion = expand(manifest, hasher=None)
    if archives and expansion.needs_server:
        from gcbatch.executor import fetch_archive_items

        items, _ = fetch_archive_items(session.client, manifest)
        expansion = expand(manifest, archive_items=items, hasher=None)
    locked = lockmod.load(session.lockfile, server=session.server, algorithm=manifest.algorithm)
    locked_ids = set(locked.cases) if locked is not None else set()
    manifest_ids = {case.id for case in expansion.cases}
    all_ids = tuple(sorted(manifest_ids | locked_ids))
    # archive generators are not expanded here (that needs the server); their cases are
    # known from the lockfile once applied
    targeting.check_known(all_ids)
    summaries = {
        case.id: {source.socket: source.summary for source in case.inputs}
        for case in expansion.cases
    }
    return _Scope(manifest, all_ids, tuple(targeting.filter(all_ids)), summaries)


class _Refresher:
    """Refreshes statuses (and records them); warns once if the lockfile is busy."""

    def __init__(self, session: Session, scope: _Scope) -> None:
        self.session = session
        self.scope = scope
        self._warned = False

    def __call__(self, ids: Sequence[str]) -> results.Refresh:
        slug = self.scope.manifest.algorithm
        client = self.session.client
        outcome = results.refresh(
            client,
            self.session.lockfile,
            server=self.session.server,
            algorithm_slug=slug,
            case_ids=ids,
            algorithm_pk=lambda: client.get_algorithm(slug).pk,
        )
        if outcome.lock_holder and not self._warned:
            self._warned = True
            _warn(f"statuses not recorded in the lockfile: {outcome.lock_holder}")
        return outcome


def _report_json(report: StatusReport, outcome: results.Refresh) -> dict[str, Any]:
    data = report.as_json()
    data["recorded"] = outcome.recorded
    return data


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))


# --------------------------------------------------------------------------- status


@click.command("status")
@manifest_argument
@common_options
def status(manifest: Path, connection: ConnectionOptions, as_json: bool,
           targeting: Targeting) -> int:
    """Refresh and show the job status of every case.

    One request per 1000 jobs of the algorithm, whatever the number of cases. Statuses
    are recorded in the lockfile. Exit 1 if any job Failed, was Cancelled or is missing.
    """
    loaded = load_manifest(manifest)
    with connected(connection, manifest, manifest_server=loaded.server) as session:
        scope = _scope(session, loaded, targeting)
        outcome = _Refresher(session, scope)(scope.targeted)
    report = outcome.report
    if as_json:
        _echo_json(_report_json(report, outcome))
    else:
        click.echo(render_summary(report))
        if report.rows:
            click.echo(render_table(report.rows), nl=False)
    return EXIT_FAILURE if report.any_problem else EXIT_OK


# --------------------------------------------------------------------------- wait


class _WaitDisplay:
    """Live progress: a rich bar on a terminal, a plain line per change otherwise."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self._last = ""
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    @contextmanager
    def running(self) -> Iterator[_WaitDisplay]:
        if not self.live:
            yield self
            return
        self._progress = Progress(
            TextColumn("waiting"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        with self._progress:
            self._task = self._progress.add_task("", total=None)
            yield self

    def update(self, report: StatusReport) -> None:
        jobs = report.jobs
        ended = len(jobs) - len(report.running())
        counts = ", ".join(f"{n} {s}" for s, n in report.counts().items())
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=len(jobs), completed=ended,
                                  description=counts)
            return
        line = f"{ended}/{len(jobs)} ended: {counts}"
        if line != self._last:
            self._last = line
            stamp = time.strftime("%H:%M:%S")
            click.echo(f"[{stamp}] {line}", err=True)

    def error(self, exc: Exception) -> None:
        _warn(f"refresh failed, retrying at the next poll: {exc}")


def _duration_option(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None


@click.command("wait")
@manifest_argument
@common_options
@click.option("--timeout", metavar="DURATION", default=None,
              help="Give up after this long (e.g. 90s, 15m, 2h) with exit code 5. "
              "Default: wait as long as it takes.")
@click.option("--poll-interval", metavar="DURATION", default="30s", show_default=True,
              help="Longest pause between two polls (polls start 2s apart and back off "
              "to this while nothing changes).")
def wait(manifest: Path, connection: ConnectionOptions, as_json: bool, targeting: Targeting,
         timeout: str | None, poll_interval: str) -> int:
    """Wait until every targeted job has ended.

    Exit 0 when all Succeeded, 1 when some Failed, were Cancelled or are missing, 5 when
    --timeout passed first. Statuses are recorded in the lockfile at every poll, so
    Ctrl-C (or a timeout) loses nothing: run it again to go on waiting.
    """
    timeout_s = _duration_option(timeout, "--timeout")
    maximum = _duration_option(poll_interval, "--poll-interval")
    assert maximum is not None
    if maximum <= 0:
        raise click.BadParameter("must be more than 0", param_hint="--poll-interval")
    schedule = PollSchedule(initial=min(2.0, maximum), factor=1.5, maximum=maximum)
    loaded = load_manifest(manifest)
    display = _WaitDisplay(_stderr())
    with connected(connection, manifest, manifest_server=loaded.server) as session:
        scope = _scope(session, loaded, targeting)
        refresher = _Refresher(session, scope)
        seen: list[StatusReport] = []

        def poll() -> StatusReport:
            # after the first poll only jobs that have not ended are asked about: when a
            # few stragglers remain, that is a few direct GETs instead of the whole list
            if not seen:
                seen.append(refresher(scope.targeted).report)
            else:
                seen[0] = seen[0].merged(refresher(seen[0].unsettled()).report)
            return seen[0]

        try:
            with display.running():
                outcome = wait_for_jobs(
                    poll,
                    timeout=timeout_s,
                    schedule=schedule,
                    clock=time.monotonic,
                    sleep=time.sleep,
                    on_report=display.update,
                    on_error=display.error,
                )
        except WaitTimedOut as exc:
            _print_wait_result(exc.report, as_json, timed_out=True)
            raise
    report = outcome.report
    _print_wait_result(report, as_json, timed_out=False)
    return EXIT_FAILURE if report.any_problem or not report.all_succeeded else EXIT_OK


def _print_wait_result(report: StatusReport, as_json: bool, *, timed_out: bool) -> None:
    if as_json:
        data = report.as_json()
        data["timed_out"] = timed_out
        _echo_json(data)
        return
    click.echo(render_summary(report))
    # the interesting rows: what did not succeed (the full table is `gcbatch status`)
    rows = [row for row in report.jobs if row.status != "Succeeded"]
    if rows:
        click.echo(render_table(rows), nl=False)
    unsubmitted = len(report.rows) - len(report.jobs)
    if unsubmitted:
        _warn(f"{unsubmitted} case(s) have no job yet (run `gcbatch apply`)")


# --------------------------------------------------------------------------- download


class _DownloadDisplay:
    """Files done/total and bytes received on a terminal; nothing per file otherwise
    (the summary line follows either way)."""

    def __init__(self, console: Console) -> None:
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._received = 0
        self._total = 0
        self.console = console

    @contextmanager
    def running(self) -> Iterator[_DownloadDisplay]:
        if not self.console.is_terminal:
            yield self
            return
        self._progress = Progress(
            TextColumn("downloading"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("files · {task.fields[received]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        with self._progress:
            self._task = self._progress.add_task("", total=0, received="0 B")
            yield self

    def add_total(self, files: int) -> None:
        self._total += files
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=self._total)

    def file_done(self, path: str, size: int, skipped: bool) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task)

    def bytes_received(self, count: int) -> None:
        self._received += count  # called from worker threads; a display value only
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, received=_human_bytes(self._received))


def _human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover - loop always returns


@click.command("download")
@manifest_argument
@common_options
@click.option("--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the results: DIR/<case id>/<output>, DIR/results.csv, "
              "DIR/results.json.")
@click.option("--workers", default=8, show_default=True, type=click.IntRange(1, 64),
              help="Files downloaded in parallel.")
def download(manifest: Path, connection: ConnectionOptions, as_json: bool,
             targeting: Targeting, out_dir: Path, workers: int) -> int:
    """Download the outputs of every Succeeded job and write the result tables.

    Files that are already there and complete are skipped, so re-running (also after a
    crash) fetches only what is missing. results.csv/results.json always cover every
    case, whatever --case/--select download.
    """
    loaded = load_manifest(manifest)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: not a directory")
    display = _DownloadDisplay(_stderr())
    with connected(connection, manifest, manifest_server=loaded.server) as session:
        scope = _scope(session, loaded, targeting, archives=True)
        outcome = _Refresher(session, scope)(scope.all_ids)
        targeted = set(scope.targeted)
        jobs = {cid: job for cid, job in outcome.jobs.items() if cid in targeted}
        with display.running():
            summary = download_outputs(session.client, jobs, out_dir, workers=workers,
                                       progress=display)
        declared = _declared_value_outputs(session, loaded.algorithm, outcome)
    table = results.result_table(outcome.report, outcome.jobs, scope.summaries,
                                 output_sockets=declared)
    csv_path, json_path = results.write_tables(out_dir, table)
    _print_download_result(summary, outcome.report, targeted, as_json, csv_path, json_path)
    return EXIT_FAILURE if summary.failures else EXIT_OK


def _declared_value_outputs(session: Session, slug: str,
                            outcome: results.Refresh) -> tuple[str, ...]:
    """The algorithm's Value output sockets (one request), so the table's columns do not
    depend on which jobs happen to have finished yet."""
    if not outcome.report.rows:
        return ()
    algorithm = session.client.get_algorithm(slug)
    return tuple(sorted({
        socket.slug
        for interface in algorithm.interfaces
        for socket in interface.outputs
        if socket.is_value
    }))


def _print_download_result(summary: DownloadSummary, report: StatusReport, targeted: set[str],
                           as_json: bool, csv_path: Path, json_path: Path) -> None:
    rows = [row for row in report.rows if row.case_id in targeted]
    without = [row for row in rows if row.status != "Succeeded"]
    if as_json:
        _echo_json({
            "download": summary.as_json(),
            "tables": [str(csv_path), str(json_path)],
            "cases_without_results": [row.as_json() for row in without],
        })
    else:
        click.echo(
            f"downloaded {summary.files_downloaded} file(s) ({_human_bytes(summary.bytes_downloaded)}), "
            f"{summary.files_skipped} already complete; {summary.values_written} value(s) "
            f"written, {summary.values_unchanged} unchanged"
        )
        click.echo(f"tables: {csv_path} {json_path}")
    for path, error in summary.failures:
        click.echo(f"error: {path}: {error}", err=True)
    if without:
        counts: dict[str, int] = {}
        for row in without:
            counts[row.status] = counts.get(row.status, 0) + 1
        listed = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        _warn(f"{len(without)} targeted case(s) have no results yet ({listed})")


COMMANDS = [status, wait, download]
