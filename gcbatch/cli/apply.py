"""``gcbatch apply MANIFEST``: upload and submit, exactly once; safe to re-run at any time.

Thin: parse flags → :func:`gcbatch.operations.apply.apply` → a view → exit code (0 done, 1 some case failed or stays in doubt, 2 invalid input with nothing
sent, 4 stopped because the credits ran out, 130 Ctrl-C).

Ctrl-C once: no new case starts, requests in flight finish, the lockfile is checkpointed,
exit 130. Twice: exit at once; the journal already holds every intent, so the next apply
reconciles whatever was in flight and nothing is lost or duplicated.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import click

from gcbatch.cli.common import (
    ConnectionOptions,
    Targeting,
    connection_options,
    json_option,
    manifest_argument,
    target_options,
)
from gcbatch.engine.executor import Executor
from gcbatch.engine.options import (
    DEFAULT_ANSWER_WINDOW,
    DEFAULT_CONCURRENCY,
    DEFAULT_POST_TIMEOUT,
    ApplyOptions,
)
from gcbatch.errors import EXIT_INTERRUPTED, ConfigError
from gcbatch.interrupts import STOP_SIGNALS
from gcbatch.operations.apply import apply as apply_study
from gcbatch.operations.session import connect
from gcbatch.operations.study import open_study
from gcbatch.views.view import make_view

__all__ = ["COMMANDS", "apply"]


class _Interrupts:
    """Ctrl-C (or SIGTERM, Ctrl-Break) while apply runs: first → graceful stop; second →
    exit at once."""

    def __init__(self) -> None:
        self.executor: Executor | None = None
        self.count = 0
        self.installed = False  # only in the main thread (a real CLI run)
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            # ValueError: not the main thread (a test calling the command in a thread)
            with contextlib.suppress(ValueError):
                self._previous[sig] = signal.signal(sig, self._handle)
                self.installed = True

    def restore(self) -> None:
        if self.count:
            # once interrupted, keep our handler to the end: a second Ctrl-C while the
            # summary prints must still exit at once with 130, not a traceback
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count >= 2 or self.executor is None:
            # every intent is already fsynced in the journal: nothing to flush
            sys.stderr.write("interrupted again: exiting now (the next apply reconciles)\n")
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)
        sys.stderr.write("stopping: finishing what is in flight, then saving the lockfile "
                         "(Ctrl-C again to exit at once)\n")
        sys.stderr.flush()
        self.executor.request_stop()


@click.command("apply")
@manifest_argument
@connection_options
@json_option
@target_options
@click.option("--concurrency", type=click.IntRange(1, 256), default=DEFAULT_CONCURRENCY,
              show_default=True, help="Cases worked on at once (uploads and job POSTs).")
@click.option("--max-active", type=click.IntRange(1, 10_000), default=None,
              help="Keep at most this many of your jobs active. Default: auto, no limit of "
                   "gcbatch's own; when the server refuses with \"too many active jobs\" "
                   "(nothing is created), gcbatch keeps to what it holds then and refills a "
                   "slot as each job ends (Grand Challenge allows 16 by default).")
@click.option("--replace", is_flag=True,
              help="Resubmit cases whose inputs changed (the old job stays in the history).")
@click.option("--retry-failed", is_flag=True,
              help="Resubmit cases whose job ended Failed or Cancelled (kept in the history).")
@click.option("--keep-going", is_flag=True,
              help="Go on with the other cases when one is refused by the server.")
@click.option("--resubmit-in-doubt", is_flag=True,
              help="Send in-doubt cases again even when the server shows ambiguous matches.")
@click.option("--reconcile-wait", type=click.FloatRange(0, 3600), default=60.0, hidden=True,
              help="Seconds to wait for validating jobs while reconciling.")
@click.option("--answer-window", type=click.FloatRange(0, 86_400),
              default=DEFAULT_ANSWER_WINDOW, show_default=True,
              help="Seconds after an unanswered job POST before 'no job on the server' is "
                   "believed and the case sent again (longer than the platform's request "
                   "time limit).")
@click.option("--post-timeout", type=click.FloatRange(0.1, 3600),
              default=DEFAULT_POST_TIMEOUT, show_default=True,
              help="Seconds a job POST may wait for its answer.")
def apply(
    manifest: Path,
    connection: ConnectionOptions,
    as_json: bool,
    targeting: Targeting,
    concurrency: int,
    max_active: int | None,
    replace: bool,
    retry_failed: bool,
    keep_going: bool,
    resubmit_in_doubt: bool,
    reconcile_wait: float,
    answer_window: float,
    post_timeout: float,
) -> int:
    """Upload inputs and submit one job per case, exactly once.

    Re-running is always safe: cases with a job are left alone, interrupted submissions
    are reconciled with the server before anything is sent again, and the lockfile
    (MANIFEST's stem + .lock) records every job as it is created.
    """
    try:
        options = ApplyOptions(
            concurrency=concurrency, max_active=max_active, targeting=targeting,
            replace=replace, keep_going=keep_going, retry_failed=retry_failed,
            resubmit_in_doubt=resubmit_in_doubt, reconcile_wait=reconcile_wait,
            answer_window=answer_window, post_timeout=post_timeout,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    study = open_study(manifest, connection)
    view = make_view(as_json)
    interrupts = _Interrupts()
    interrupts.install()
    try:
        with connect(study, connection, on_event=view.event) as session:

            def wire(executor: Executor) -> None:
                interrupts.executor = executor
                if interrupts.count:
                    executor.request_stop()

            summary = apply_study(study, session, options, on_event=view.event,
                                  on_executor=wire)
    finally:
        view.close()
        interrupts.restore()
    view.show_apply(summary)
    if interrupts.count and interrupts.installed:
        # interrupted: the lockfile is saved and closed; leave now, so that a second
        # Ctrl-C cannot land in the interpreter's teardown (where Python has put back
        # the default handler) and kill us by signal instead of exiting 130
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(summary.exit_code)
    return summary.exit_code


COMMANDS = [apply]
