"""The ``gcbatch`` command line.

The CLI is thin: each command module parses its flags, calls one core function and renders
the result. Errors are mapped to exit codes here, in one place (:func:`main`), from
:attr:`gcbatch.errors.GcbatchError.exit_code`:

0 success · 1 runtime failure · 2 invalid usage, manifest or lockfile ·
3 ``plan --detailed-exitcode`` found changes · 4 stopped by a quota ·
5 ``wait --timeout`` passed before every job ended · 130 Ctrl-C.

Command modules live beside this file (``validate.py``, ``plan.py``, ``apply.py``, ...) and
are listed in ``_COMMAND_MODULES`` by command name; a module exports ``COMMANDS``, a list of
click commands.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
from typing import Any

import click

from gcbatch import __version__
from gcbatch.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_INVALID, GcbatchError

# Command name → the module that defines it. Modules are imported only when their command
# is used (or help lists them), so `gcbatch sandbox serve` does not pay for jsonschema and
# `gcbatch validate` does not pay for httpx: start-up time is felt on every call.
_COMMAND_MODULES: dict[str, str] = {
    "init": "gcbatch.cli.authoring",
    "schema": "gcbatch.cli.authoring",
    "validate": "gcbatch.cli.validate",
    "plan": "gcbatch.cli.plan",
    "apply": "gcbatch.cli.apply",
    "status": "gcbatch.cli.results",
    "wait": "gcbatch.cli.results",
    "download": "gcbatch.cli.results",
    "sandbox": "gcbatch.cli.sandbox",
}


class _LazyGroup(click.Group):
    """Imports a command's module on first use; a module exports ``COMMANDS``."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = _COMMAND_MODULES.get(cmd_name)
        if module_name is None:
            return None
        module = importlib.import_module(module_name)
        commands: list[Any] = getattr(module, "COMMANDS", [])
        for command in commands:
            if command.name == cmd_name:
                return command  # type: ignore[no-any-return]
        return None


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="gcbatch")
def cli() -> None:
    """Run Grand Challenge algorithms on many cases, declaratively and exactly once.

    \b
    A typical day:
      gcbatch init --algorithm SLUG      a starting study.yaml from the algorithm's sockets
      gcbatch validate study.yaml        check the manifest offline, every problem at once
      gcbatch plan study.yaml            what apply would do, case by case
      gcbatch apply study.yaml           upload and submit; safe to re-run at any time
      gcbatch status study.yaml          job statuses for every case
      gcbatch wait study.yaml            until every job has ended
      gcbatch download study.yaml --out results/

    Add --sandbox to try any of these offline against the built-in emulator.

    \b
    Exit codes: 0 ok, 1 runtime failure, 2 invalid input (nothing was sent),
    3 plan found changes (with --detailed-exitcode), 4 stopped by a quota,
    5 wait timed out with jobs still running, 130 Ctrl-C.
    """


def _escape_what_the_output_cannot_encode() -> None:
    """Output that the stream's encoding cannot hold (Windows writes cp1252 to a file or
    pipe; gcbatch's text has arrows and dashes) comes out as ``\\u2192``, not as a
    traceback after the work is done."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if isinstance(stream, io.TextIOWrapper) and encoding not in ("utf8", "utf8sig"):
            with contextlib.suppress(ValueError, OSError):
                stream.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> None:
    """Entry point: the single error boundary of the CLI."""
    _escape_what_the_output_cannot_encode()
    try:
        code = cli.main(args=argv, prog_name="gcbatch", standalone_mode=False)
    except GcbatchError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_INVALID if isinstance(exc, click.UsageError) else exc.exit_code)
    except BrokenPipeError:
        sys.exit(EXIT_FAILURE)
    sys.exit(code if isinstance(code, int) else 0)
