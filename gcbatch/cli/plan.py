"""``gcbatch plan MANIFEST``: what apply would do, case by case, with the reason.

Thin: flags → :func:`gcbatch.operations.plan.plan` (online when a server is at hand) → a
view → exit code. ``--detailed-exitcode``: 0 when there is nothing to do, 3 when apply
would change something (or, offline, cannot tell: archive generators, in-doubt cases).
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from gcbatch.api.settings import TOKEN_ENV
from gcbatch.cli.common import (
    ConnectionOptions,
    Targeting,
    connection_options,
    json_option,
    manifest_argument,
    target_options,
)
from gcbatch.errors import EXIT_CHANGES, EXIT_INVALID, EXIT_OK
from gcbatch.operations.plan import plan as plan_study
from gcbatch.operations.session import connect
from gcbatch.operations.study import open_study
from gcbatch.plan import ActionKind
from gcbatch.views.view import make_view


def wants_online(connection: ConnectionOptions, offline: bool) -> bool:
    """Online with a token (``--token-file``, ``$GRAND_CHALLENGE_AUTHORIZATION``) or
    ``--sandbox``; ``--offline`` forces the offline plan. Without a token the plan is
    offline however the server was named (``--server``, ``GCBATCH_SERVER``, the
    manifest): an anonymous user sees too little of the server to plan with."""
    if offline:
        return False
    if connection.sandbox or connection.token_file is not None:
        return True
    return bool(os.environ.get(TOKEN_ENV, "").strip())


@click.command()
@manifest_argument
@connection_options
@json_option
@target_options
@click.option("--detailed-exitcode", is_flag=True, default=False,
              help="Exit 0 when there is nothing to do, 3 when apply would change something.")
@click.option("--offline", is_flag=True, default=False,
              help="Do not ask the server (no token needed): lockfile statuses, archive "
              "generators not expanded, no interface check.")
@click.option("--max-active", type=click.IntRange(1, 10_000), default=None, metavar="N",
              help="The forecast assumes at most N active jobs (apply's flag; default: the "
              "server's limit when known, else the platform's usual 16).")
@click.option("--retry-failed", is_flag=True, default=False,
              help="Preview `apply --retry-failed`: cases whose job failed show as "
              "retry (online, the jobs' statuses now).")
def plan(
    manifest: Path,
    connection: ConnectionOptions,
    as_json: bool,
    targeting: Targeting,
    detailed_exitcode: bool,
    offline: bool,
    max_active: int | None,
    retry_failed: bool,
) -> int:
    """Show what apply would do, case by case: + submit, ~ resubmit (which inputs
    changed), = unchanged, - orphan, ? in doubt, ! blocked, … needs server.

    Online (with a token, or --sandbox) it also asks the server: current job statuses,
    archive generators, image: URLs you may see, the interface and socket-kind check (a
    mistyped socket gets a "did you mean"), and a quota forecast, all with GETs; and,
    when cases would be sent afresh, whether the server would run a job now at all (its
    algorithm image ready, your credits) with ONE job POST without inputs, which the
    platform refuses by construction (no interface matches it): it makes no job. Offline (--offline, or no token,
    whichever way the server was named): the manifest, the input files (hashes are
    cached) and the lockfile only.

    \b
    Exit codes: 0 the plan is shown; 2 some case is ! blocked (it does not fit the
    algorithm: apply would refuse to send anything, or leave it out with --keep-going);
    3 with --detailed-exitcode when apply would change something.
    """
    study = open_study(manifest, connection)
    view = make_view(as_json)
    online = wants_online(connection, offline)
    try:
        if online:
            with connect(study, connection, on_event=view.event) as session:
                result = plan_study(study, targeting=targeting, session=session,
                                    retry_failed=retry_failed, max_active=max_active)
        else:
            result = plan_study(study, targeting=targeting, retry_failed=retry_failed)
    finally:
        view.close()
    view.show_plan(result, token_missing=not online and not offline)
    if result.plan.count()[ActionKind.BLOCKED.value]:
        return EXIT_INVALID
    if detailed_exitcode and result.plan.has_changes:
        return EXIT_CHANGES
    return EXIT_OK


COMMANDS = [plan]
