"""``gcbatch validate MANIFEST...``: every problem in every manifest, offline and at once.

Findings go to stdout as ``file:line:col: message`` (or a JSON list with ``--json``); the
verdict goes to stderr. Exit 0 when every manifest is valid, 2 otherwise. The checks are
:mod:`gcbatch.operations.validate`'s.
"""

from __future__ import annotations

from pathlib import Path

import click

from gcbatch.errors import EXIT_INVALID, EXIT_OK
from gcbatch.operations.validate import validate as validate_manifests
from gcbatch.views.view import make_view


@click.command()
@click.argument("manifests", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, default=False,
              help="Print the findings as a JSON list of {file, line, col, path, message}.")
@click.option("--manifests-only", is_flag=True, default=False,
              help="Skip YAML files that are not gcbatch manifests (no schema modeline and no "
              "top-level algorithm:/cases:); for pre-commit hooks given every YAML file.")
def validate(manifests: tuple[Path, ...], as_json: bool, manifests_only: bool) -> int:
    """Check manifests offline: every problem at once, with file:line:col.

    Exit 0 when all are valid, 2 when any is not.
    """
    result = validate_manifests(manifests, manifests_only=manifests_only)
    make_view(as_json).show_validation(result)
    return EXIT_INVALID if result.invalid else EXIT_OK


COMMANDS = [validate]
