"""The ``gcbatch`` command line.

The CLI is thin: each command module parses its flags, calls one core function and renders
the result. Errors are mapped to exit codes here, in one place (:func:`main`), from
:attr:`gcbatch.errors.GcbatchError.exit_code`:

0 success · 1 runtime failure · 2 invalid usage, manifest or lockfile ·
3 ``plan --detailed-exitcode`` found changes · 4 stopped by a quota ·
5 ``wait --timeout`` passed before every job ended · 130 Ctrl-C.

Command modules live beside this file (``validate.py``, ``plan.py``, ``apply.py``, ...) and
are listed in ``_COMMAND_MODULES``; a module exports ``COMMANDS``, a list of click commands.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from gcbatch import __version__
from gcbatch.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_INVALID, GcbatchError

_COMMAND_MODULES = (
    "gcbatch.cli.validate",
    "gcbatch.cli.plan",
    "gcbatch.cli.apply",
    "gcbatch.cli.results",
    "gcbatch.cli.sandbox",
)


class _Group(click.Group):
    """Loads the command modules that exist (so a partial checkout still runs)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in _COMMAND_MODULES:
            try:
                module = importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name == name:
                    continue
                raise
            for command in getattr(module, "COMMANDS", ()):
                self.add_command(command)


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="gcbatch")
def cli() -> None:
    """Run Grand Challenge algorithms on many cases, declaratively and exactly once.

    \b
    A typical day:
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


def main(argv: list[str] | None = None) -> None:
    """Entry point: the single error boundary of the CLI."""
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
