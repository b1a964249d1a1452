"""Rendering for people and machines: findings, plans (and, from other modules, progress
and summaries).

Functions here turn values into text; they never print. The CLI decides where the text
goes (results on stdout, messages on stderr). Colour is used only when asked for
(:func:`use_color`: a terminal, and ``NO_COLOR`` unset), so piped output is plain.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from typing import IO, Any

import click

from gcbatch.errors import Finding
from gcbatch.plan import SYMBOLS, Action, Plan

_COLORS = {
    "submit": "green",
    "resubmit": "yellow",
    "unchanged": None,
    "orphan": "magenta",
    "in_doubt": "red",
    "blocked": "red",
    "needs_server": "cyan",
    "retry_failed": "yellow",
}

_LABELS = {
    "submit": "submit",
    "resubmit": "resubmit",
    "unchanged": "unchanged",
    "orphan": "orphan",
    "in_doubt": "in doubt",
    "blocked": "blocked",
    "needs_server": "needs server",
    "retry_failed": "retry failed",
}

_SUMMARY_WORDS = {
    "submit": "to submit",
    "resubmit": "to resubmit",
    "retry_failed": "to retry",
    "in_doubt": "in doubt",
    "blocked": "blocked",
    "needs_server": "needing the server",
    "unchanged": "unchanged",
    "orphan": "orphaned",
}


def use_color(stream: IO[str] | None = None) -> bool:
    """Colour only on a terminal and when ``NO_COLOR`` is not set (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    stream = stream if stream is not None else sys.stdout
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


def dumps_json(data: Any) -> str:
    """JSON for ``--json`` output: stable key order, 2-space indent."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)


def render_findings(findings: Iterable[Finding]) -> str:
    """``file:line:col: message`` lines."""
    return "\n".join(f.render() for f in findings)


def findings_json(findings: Iterable[Finding]) -> str:
    return dumps_json([f.as_json() for f in findings])


def render_action(action: Action, *, width: int = 0, color: bool = False) -> str:
    """``+ patient-001  submit (new case)``."""
    label = _LABELS[action.kind]
    text = f"{action.symbol} {action.case_id.ljust(width)}  {label}"
    if action.reason:
        text += f" ({action.reason})"
    fg = _COLORS[action.kind]
    return click.style(text, fg=fg) if color and fg else text


def render_summary(plan: Plan) -> str:
    """``Plan: 2 to submit, 1 to resubmit, 3 unchanged.`` (kinds with 0 left out)."""
    counts = plan.count()
    parts = [f"{counts[k]} {_SUMMARY_WORDS[k]}" for k in _SUMMARY_WORDS if counts[k]]
    if not parts:
        return "Plan: no cases."
    text = "Plan: " + ", ".join(parts) + "."
    if not plan.has_changes:
        text += " Nothing to do."
    return text


def render_plan(plan: Plan, *, color: bool = False) -> str:
    """The whole plan: one line per action, then the summary line."""
    width = max((len(a.case_id) for a in plan.actions), default=0)
    width = min(width, 40)
    lines = [render_action(a, width=width, color=color) for a in plan.actions]
    lines.append(render_summary(plan))
    return "\n".join(lines)


def plan_legend() -> str:
    return "  ".join(f"{sym} {_LABELS[k]}" for k, sym in SYMBOLS.items())
