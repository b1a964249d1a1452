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
from gcbatch.errors import EXIT_CHANGES, EXIT_OK
from gcbatch.operations.plan import plan as plan_study
from gcbatch.operations.session import connect
from gcbatch.operations.study import open_study
from gcbatch.views.view import make_view


def wants_online(connection: ConnectionOptions, offline: bool) -> bool:
    """Online when asked for a server (``--sandbox``/``--server``) or a token is at hand;
    ``--offline`` forces the offline plan. Without a token the server shows too little."""
    if offline:
        return False
    if connection.sandbox or connection.server or connection.token_file is not None:
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
def plan(
    manifest: Path,
    connection: ConnectionOptions,
    as_json: bool,
    targeting: Targeting,
    detailed_exitcode: bool,
    offline: bool,
) -> int:
    """Show what apply would do, case by case: + submit, ~ resubmit (which inputs
    changed), = unchanged, - orphan, ? in doubt, ! blocked, … needs server.

    Online (with a token, --server or --sandbox) it also asks the server, with GETs only:
    current job statuses, archive generators, the interface and socket-kind check, and a
    quota forecast. Offline (--offline, or no token): the manifest, the input files
    (hashes are cached) and the lockfile only.
    """
    study = open_study(manifest, connection)
    view = make_view(as_json)
    online = wants_online(connection, offline)
    try:
        if online:
            with connect(study, connection, on_event=view.event) as session:
                result = plan_study(study, targeting=targeting, session=session)
        else:
            result = plan_study(study, targeting=targeting)
    finally:
        view.close()
    view.show_plan(result, token_missing=not online and not offline)
    if detailed_exitcode and result.plan.has_changes:
        return EXIT_CHANGES
    return EXIT_OK


COMMANDS = [plan]
