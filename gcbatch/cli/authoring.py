"""``gcbatch init`` and ``gcbatch schema``: start a study from an algorithm's interfaces.

Thin: flags → :func:`gcbatch.operations.init.init` / :func:`gcbatch.operations.schema.schema`
→ a view → exit 0 (2 when the algorithm is not found or a file is in the way; nothing is
written then).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from gcbatch.cli.common import ConnectionOptions, json_option
from gcbatch.errors import EXIT_OK
from gcbatch.operations.init import init as init_study
from gcbatch.operations.schema import schema as write_algorithm_schema
from gcbatch.views.view import make_view

__all__ = ["COMMANDS", "init", "schema"]

F = TypeVar("F", bound=Callable[..., Any])


def _server_options(func: F) -> F:
    """``--algorithm``, ``--server``, ``--token-file``, ``--sandbox``."""
    for option in reversed([
        click.option("--algorithm", "slug", metavar="SLUG", required=True,
                     help="The algorithm's slug (the last part of its page URL)."),
        click.option("--server", metavar="URL", default=None,
                     help="API base URL (default: $GCBATCH_SERVER, or "
                     "https://grand-challenge.org/api/v1/). https only, except loopback."),
        click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
                     default=None, help="Read the API token from this file (default: "
                     "$GRAND_CHALLENGE_AUTHORIZATION; public algorithms need none)."),
        click.option("--sandbox", is_flag=True, default=False,
                     help="Ask the built-in emulator instead (offline; its state goes to "
                     ".gcbatch/ beside the file written)."),
    ]):
        func = option(func)
    return func


@click.command("init")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@_server_options
@json_option
def init(path: Path | None, slug: str, server: str | None, token_file: Path | None,
         sandbox: bool, as_json: bool) -> int:
    """Write a starting manifest for an algorithm (PATH, default study.yaml).

    \b
    The algorithm's interfaces are read from the server (GETs only) or the sandbox, and
    two files are written, never over an existing one:
      PATH                                  a manifest with one block per interface:
                                            each socket's slug, kind and sources
      <slug>.manifest.schema.json           its JSON Schema (see `gcbatch schema`),
                                            which PATH's first line names for editors
    Then fill in what is marked FILL-IN and run `gcbatch validate PATH`.
    """
    connection = ConnectionOptions(server=server, token_file=token_file, sandbox=sandbox)
    view = make_view(as_json)
    try:
        result = init_study(path, slug, connection, on_event=view.event)
    finally:
        view.close()
    view.show_init(result)
    return EXIT_OK


@click.command("schema")
@_server_options
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the schema here (default: <slug>.manifest.schema.json in the "
              "current folder; '-': stdout). Only a schema gcbatch made is replaced.")
@json_option
def schema(slug: str, server: str | None, token_file: Path | None, sandbox: bool,
           out: Path | None, as_json: bool) -> int:
    """Write the JSON Schema of one algorithm's manifests.

    It is gcbatch's manifest schema narrowed to the algorithm: its socket slugs (a
    mistyped one is an error), the sources each socket's kind accepts, and value types
    where the kind fixes one. Editors use it through a manifest's first line,
    `# yaml-language-server: $schema=<file>`; on the command line:
    `check-jsonschema --schemafile <file> study.yaml`. Run it again to refresh the file
    when the algorithm changes.
    """
    connection = ConnectionOptions(server=server, token_file=token_file, sandbox=sandbox)
    view = make_view(as_json)
    try:
        result = write_algorithm_schema(slug, connection, out, on_event=view.event)
    finally:
        view.close()
    view.show_schema(result)
    return EXIT_OK


COMMANDS = [init, schema]
