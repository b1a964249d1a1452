"""``gcbatch adopt MANIFEST CASE JOB``: record one of the listed jobs for a case in doubt.

Thin: flags → :func:`gcbatch.operations.adopt.adopt` → a view → exit code (0 recorded;
2 refused, nothing recorded; 1 the server could not be asked).
"""

from __future__ import annotations

from pathlib import Path

import click

from gcbatch.cli.common import ConnectionOptions, connection_options, json_option, manifest_argument
from gcbatch.errors import EXIT_OK
from gcbatch.operations.adopt import adopt as adopt_job
from gcbatch.operations.session import connect
from gcbatch.operations.study import open_study
from gcbatch.views.view import make_view

__all__ = ["COMMANDS", "adopt"]


@click.command("adopt")
@manifest_argument
@click.argument("case")
@click.argument("job")
@connection_options
@json_option
@click.option("--force", is_flag=True, default=False,
              help="Also take a job that cannot be told apart from another study's (its "
              "uploads not attached yet, or named by another attempt of a case with this "
              "id). Never takes a job made for another case or with other values.")
def adopt(manifest: Path, case: str, job: str, connection: ConnectionOptions,
          as_json: bool, force: bool) -> int:
    """Resolve a case left in doubt: record JOB as the job of CASE.

    A case is in doubt when its job POST went out and no answer said whether the server
    made a job (a timeout, a gateway's 504, a lost connection). apply settles most such
    cases by itself, by the names it gives every upload; when several jobs carry them, or
    the one that may be the case's cannot be told yet, it leaves the case in doubt and
    lists the jobs. You choose:

    \b
      gcbatch plan study.yaml --case p001     the jobs that may be p001's, and whose
                                              each one is ("case p002's job", "made for
                                              case x (another study's...)", "Cancelled")
      gcbatch adopt study.yaml p001 JOB       record JOB for p001 (its pk or API URL)
      gcbatch apply study.yaml --resubmit-in-doubt   or send p001 again instead

    Before recording, adopt checks that JOB exists on the server, runs this study's
    algorithm, is not the job of another case of the lockfile, and carries what the case
    sent: its values, and uploads named for it. A job made for another case is refused;
    one that cannot be told apart needs --force. Only GETs are sent; the lockfile is
    written under its lock (not while an apply runs). Then status, wait and download
    follow JOB for the case.

    Exit 0 recorded, 2 refused (nothing recorded), 1 the server could not be asked.
    """
    study = open_study(manifest, connection)
    view = make_view(as_json)
    try:
        with connect(study, connection, on_event=view.event) as session:
            result = adopt_job(study, session, case, job, force=force)
    finally:
        view.close()
    view.show_adopt(result)
    return EXIT_OK


COMMANDS = [adopt]
