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
import errno
import importlib
import io
import os
import sys
import traceback
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
    "adopt": "gcbatch.cli.adopt",
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


#: set to 1 to see the traceback of an internal error (a bug) as well
DEBUG_ENV = "GCBATCH_DEBUG"

_ENVIRONMENT_HINTS = {
    errno.ENOSPC: "the disk is full: free some space and run the command again",
    errno.EDQUOT: "the disk quota is used up: free some space and run the command again",
    errno.EROFS: "the folder is on a read-only file system: run from a writable copy",
    errno.EACCES: "permission denied: check who owns the file or folder",
    errno.EPERM: "operation not permitted: check who owns the file or folder",
}


def describe_os_error(exc: OSError) -> str:
    """An OSError from the environment (disk full, read-only folder, permissions) in one
    sentence: what failed where, what to do, and that nothing recorded is lost."""
    where = f"{exc.filename}: " if exc.filename else ""
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = _ENVIRONMENT_HINTS.get(exc.errno or 0, "")
    return (f"{where}{reason}" + (f" ({hint})" if hint else "")
            + ". What gcbatch recorded before this (lockfile, journal, completed downloads)"
            " is kept; running the command again carries on from there")


def _scrubbed(text: str) -> str:
    """``text`` without the API token of the environment, should an error carry it."""
    secret = os.environ.get("GRAND_CHALLENGE_AUTHORIZATION", "").strip().split()
    for part in secret:
        if len(part) >= 8 and part.lower() != "bearer":
            text = text.replace(part, "***")
    return text


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
    """Entry point: the single error boundary of the CLI.

    gcbatch's own errors exit with their code (2: bad input, nothing sent); an OSError is
    the environment (exit 1, one sentence naming the file); anything else is a bug: one
    line, exit 1, never a traceback (unless GCBATCH_DEBUG=1) and never the token.
    """
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
    except OSError as exc:
        click.echo(f"error: {_scrubbed(describe_os_error(exc))}", err=True)
        sys.exit(EXIT_FAILURE)
    except Exception as exc:  # a bug: say so in one line, keep the traceback for debugging
        if os.environ.get(DEBUG_ENV):
            click.echo(_scrubbed(traceback.format_exc()), err=True)
        detail = _scrubbed(str(exc))[:300]
        click.echo(f"error: internal error ({type(exc).__name__}{': ' + detail if detail else ''}"
                   f"); this is a bug in gcbatch, please report it with the command you ran "
                   f"({DEBUG_ENV}=1 shows where it happened)", err=True)
        sys.exit(EXIT_FAILURE)
    sys.exit(code if isinstance(code, int) else 0)
