"""Click options shared by the commands that talk to a server (plan/apply/status/wait/download).

Every such command takes the manifest as its argument and the same connection, output and
targeting flags, so a user learns them once::

    gcbatch <command> MANIFEST [--server URL] [--token-file PATH] [--sandbox]
                               [--lockfile PATH] [--json] [--case ID ...] [--select GLOB ...]

Use the decorators, which collect the flags into frozen values (so a command's signature
stays short and the values can be passed on to core code unchanged)::

    @click.command()
    @manifest_argument
    @connection_options          # → connection: ConnectionOptions
    @json_option                 # → as_json: bool
    @target_options              # → targeting: Targeting
    def status(manifest: Path, connection: ConnectionOptions, as_json: bool,
               targeting: Targeting) -> int:
        study = open_study(manifest, connection)
        ...

``common_options`` applies the last three at once. Resolution of the server URL and the
token (flags, environment, manifest, defaults, the https/loopback rule) happens in
:func:`gcbatch.operations.study.open_study` and :func:`gcbatch.operations.session.connect`,
not here: this module only parses.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

# the values live below the CLI (operations and the engine use them without click)
from gcbatch.operations.study import ConnectionOptions
from gcbatch.targeting import Targeting

__all__ = [
    "ConnectionOptions",
    "Targeting",
    "common_options",
    "connection_options",
    "json_option",
    "manifest_argument",
    "target_options",
]

F = TypeVar("F", bound=Callable[..., Any])


manifest_argument = click.argument(
    "manifest",
    type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path),
)
"""The manifest (``study.yaml``) as a positional argument, checked to exist."""


def connection_options(func: F) -> F:
    """Add ``--server``, ``--token-file``, ``--sandbox``, ``--lockfile`` → ``connection``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["connection"] = ConnectionOptions(
            server=kwargs.pop("server"),
            token_file=kwargs.pop("token_file"),
            sandbox=kwargs.pop("sandbox"),
            lockfile=kwargs.pop("lockfile"),
        )
        return func(*args, **kwargs)

    options = [
        click.option(
            "--server",
            metavar="URL",
            default=None,
            help="API base URL (default: $GCBATCH_SERVER, the manifest's server:, "
            "or https://grand-challenge.org/api/v1/). https only, except loopback.",
        ),
        click.option(
            "--token-file",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Read the API token from this file "
            "(default: $GRAND_CHALLENGE_AUTHORIZATION).",
        ),
        click.option(
            "--sandbox",
            is_flag=True,
            default=False,
            help="Use the built-in emulator (state in .gcbatch/ beside the manifest; "
            "lockfile <stem>.sandbox.lock).",
        ),
        click.option(
            "--lockfile",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Use this lockfile instead of the one beside the manifest.",
        ),
    ]
    decorated: Any = wrapper
    for option in reversed(options):
        decorated = option(decorated)
    return decorated  # type: ignore[no-any-return]


def json_option(func: F) -> F:
    """Add ``--json`` (machine-readable stdout) → ``as_json: bool``."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        default=False,
        help="Write machine-readable JSON to stdout (messages still go to stderr).",
    )(func)


def target_options(func: F) -> F:
    """Add ``--case ID`` (repeatable) and ``--select GLOB`` (repeatable) → ``targeting``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["targeting"] = Targeting(
            case_ids=tuple(kwargs.pop("case_ids")),
            select=tuple(kwargs.pop("select_globs")),
        )
        return func(*args, **kwargs)

    decorated: Any = click.option(
        "--select",
        "select_globs",
        metavar="GLOB",
        multiple=True,
        help="Only cases whose id matches this glob (e.g. 'patient-0*'); repeatable.",
    )(wrapper)
    decorated = click.option(
        "--case",
        "case_ids",
        metavar="ID",
        multiple=True,
        shell_complete=complete_case_ids,
        help="Only this case; repeatable.",
    )(decorated)
    return decorated  # type: ignore[no-any-return]


def complete_case_ids(ctx: click.Context, param: click.Parameter,
                      incomplete: str) -> list[str]:
    """Shell completion of ``--case``: the manifest's case ids (expanded offline, as
    ``validate`` does: globs run, nothing hashed; archive items need the server and are
    left out). Whatever goes wrong completes nothing."""
    manifest = ctx.params.get("manifest")
    if manifest is None:
        # "--case" waiting for its value stops click's parse before the positional
        # argument is processed; it is then among the arguments left unparsed
        manifest = next((a for a in ctx.args if a.endswith((".yaml", ".yml"))), None)
        if manifest is None:
            return []
    try:
        from gcbatch.manifest import parse_manifest
        from gcbatch.sources import expand

        parsed, _ = parse_manifest(manifest)
        if parsed is None:
            return []
        ids = [case.id for case in expand(parsed, hasher=None, collect=True).cases]
    except Exception:  # completion must never print a traceback into a shell
        return []
    return [cid for cid in ids if cid.startswith(incomplete)]


def common_options(func: F) -> F:
    """``connection_options`` + ``json_option`` + ``target_options`` in one decorator."""
    return connection_options(json_option(target_options(func)))
