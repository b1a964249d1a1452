"""``gcbatch status``, ``gcbatch wait`` and ``gcbatch download``: from jobs to results.

Thin: flags → one operation (:mod:`gcbatch.operations.status`, ``.wait``, ``.download``)
→ a view → exit code.

``status``    a summary line and a table; exit 1 if a job Failed, was Cancelled or is
              missing on the server.
``wait``      polls (backing off, at most ``--poll-interval`` apart) until every targeted
              job has ended; exit 0 all Succeeded, 1 some did not, 5 on ``--timeout``.
``download``  writes every output of the Succeeded jobs to ``--out DIR`` and regenerates
              ``DIR/results.csv`` and ``DIR/results.json`` (all cases, whatever the
              targeting); exit 1 if some file could not be downloaded or a
              Succeeded job lacks outputs its interface declares.

Results (tables, JSON) go to stdout; progress and warnings to stderr.
"""

from __future__ import annotations

from pathlib import Path

import click

from gcbatch.cli.common import ConnectionOptions, Targeting, common_options, manifest_argument
from gcbatch.errors import EXIT_FAILURE, EXIT_OK, ConfigError
from gcbatch.operations.download import download as download_study
from gcbatch.operations.session import connect
from gcbatch.operations.status import status as status_study
from gcbatch.operations.study import open_study
from gcbatch.operations.wait import wait as wait_study
from gcbatch.polling import PollSchedule, WaitTimedOut, parse_duration
from gcbatch.views.view import make_view

__all__ = ["COMMANDS", "download", "status", "wait"]


@click.command("status")
@manifest_argument
@common_options
def status(manifest: Path, connection: ConnectionOptions, as_json: bool,
           targeting: Targeting) -> int:
    """Refresh and show the job status of every case.

    One request per 1000 jobs of the algorithm, whatever the number of cases. Statuses
    are recorded in the lockfile. Exit 1 if any job Failed, was Cancelled or is missing.
    """
    study = open_study(manifest, connection)
    view = make_view(as_json)
    try:
        with connect(study, connection, on_event=view.event) as session:
            result = status_study(study, session, targeting, on_event=view.event)
    finally:
        view.close()
    view.show_status(result)
    return EXIT_FAILURE if result.report.any_problem else EXIT_OK


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
    study = open_study(manifest, connection)
    view = make_view(as_json)
    try:
        with connect(study, connection, on_event=view.event) as session:
            outcome = wait_study(study, session, targeting, timeout=timeout_s,
                                 schedule=schedule, on_event=view.event)
    except WaitTimedOut as exc:
        view.close()
        view.show_wait(exc.report, timed_out=True)
        raise
    finally:
        view.close()
    view.show_waited(outcome)
    report = outcome.report
    return EXIT_FAILURE if report.any_problem or not report.all_succeeded else EXIT_OK


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
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: not a directory")
    study = open_study(manifest, connection)
    view = make_view(as_json)
    try:
        with connect(study, connection, on_event=view.event) as session:
            result = download_study(study, session, targeting, out_dir, workers=workers,
                                    on_event=view.event)
    finally:
        view.close()
    view.show_download(result)
    summary = result.summary
    return EXIT_FAILURE if summary.failures or summary.missing else EXIT_OK


COMMANDS = [status, wait, download]
