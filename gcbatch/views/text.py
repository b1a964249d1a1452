"""Human text for every result gcbatch shows: findings, plans, summaries, status tables.

Functions here turn values into text; they never print (:mod:`gcbatch.views.human` decides
where the text goes: results on stdout, messages on stderr). Colour is used only when asked
for (:func:`use_color`: a terminal, and ``NO_COLOR`` unset), so piped output is plain.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, TYPE_CHECKING

import click

from gcbatch.engine.admission import Forecast
from gcbatch.engine.downloads import DownloadSummary
from gcbatch.engine.outcomes import ApplySummary, Outcome
from gcbatch.engine.ownership import Examination, describe_candidate
from gcbatch.engine.reconcile import Adopt
from gcbatch.errors import Finding
from gcbatch.plan import Action, ActionKind, Plan
from gcbatch.status import CaseStatus, StatusReport, format_duration
from gcbatch.statuses import FAILED_STATUSES

if TYPE_CHECKING:
    from gcbatch.operations.adopt import AdoptResult

__all__ = [
    "human_bytes",
    "mib",
    "render_action",
    "render_adopt",
    "render_apply_summary",
    "render_download",
    "render_findings",
    "render_forecast",
    "render_in_doubt",
    "render_missing_outputs",
    "render_plan",
    "render_plan_summary",
    "render_status_summary",
    "render_status_table",
    "use_color",
]


def use_color(stream: IO[str] | None = None) -> bool:
    """Colour only on a terminal and when ``NO_COLOR`` is not set (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    stream = stream if stream is not None else sys.stdout
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


def render_findings(findings: Iterable[Finding]) -> str:
    """``file:line:col: message`` lines."""
    return "\n".join(f.render() for f in findings)


# --------------------------------------------------------------------------- plan


_COLORS: dict[ActionKind, str | None] = {
    ActionKind.SUBMIT: "green",
    ActionKind.RESUBMIT: "yellow",
    ActionKind.UNCHANGED: None,
    ActionKind.ORPHAN: "magenta",
    ActionKind.IN_DOUBT: "red",
    ActionKind.BLOCKED: "red",
    ActionKind.NEEDS_SERVER: "cyan",
    ActionKind.RETRY_FAILED: "yellow",
}

_LABELS: dict[ActionKind, str] = {
    ActionKind.SUBMIT: "submit",
    ActionKind.RESUBMIT: "resubmit",
    ActionKind.UNCHANGED: "unchanged",
    ActionKind.ORPHAN: "orphan",
    ActionKind.IN_DOUBT: "in doubt",
    ActionKind.BLOCKED: "blocked",
    ActionKind.NEEDS_SERVER: "needs server",
    ActionKind.RETRY_FAILED: "retry failed",
}

_SUMMARY_WORDS: dict[ActionKind, str] = {
    ActionKind.SUBMIT: "to submit",
    ActionKind.RESUBMIT: "to resubmit",
    ActionKind.RETRY_FAILED: "to retry",
    ActionKind.IN_DOUBT: "in doubt",
    ActionKind.BLOCKED: "blocked",
    ActionKind.NEEDS_SERVER: "needing the server",
    ActionKind.UNCHANGED: "unchanged",
    ActionKind.ORPHAN: "orphaned",
}


def render_action(action: Action, *, width: int = 0, color: bool = False) -> str:
    """``+ patient-001  submit (new case)``."""
    label = _LABELS[action.kind]
    text = f"{action.symbol} {action.case_id.ljust(width)}  {label}"
    if action.reason:
        text += f" ({action.reason})"
    fg = _COLORS[action.kind]
    return click.style(text, fg=fg) if color and fg else text


def render_plan_summary(plan: Plan) -> str:
    """``Plan: 2 to submit, 1 to resubmit, 3 unchanged.`` (kinds with 0 left out)."""
    counts = plan.count()
    parts = [f"{counts[k.value]} {_SUMMARY_WORDS[k]}" for k in _SUMMARY_WORDS
             if counts[k.value]]
    if not parts:
        return "Plan: no cases."
    text = "Plan: " + ", ".join(parts) + "."
    if not plan.has_changes:
        text += " Nothing to do."
    return text


def render_plan(plan: Plan, *, color: bool = False,
                details: Mapping[str, Sequence[str]] | None = None) -> str:
    """The whole plan: one line per action (``details``: lines to show under a case's
    action, indented), then the summary line."""
    width = max((len(a.case_id) for a in plan.actions), default=0)
    width = min(width, 40)
    lines = []
    for action in plan.actions:
        lines.append(render_action(action, width=width, color=color))
        if details and action.case_id in details:
            lines += [f"    {line}" for line in details[action.case_id]]
    lines.append(render_plan_summary(plan))
    return "\n".join(lines)


def render_in_doubt(examination: Examination, manifest: str) -> list[str]:
    """What apply would do with an in-doubt case now, and the jobs that may be its
    (each saying whose it is where the upload names tell), for ``plan``."""
    verdict, outlook = examination.verdict, examination.outlook
    if isinstance(verdict, Adopt):
        head = f"apply would adopt job {verdict.job.pk}: {verdict.reason}"
    elif outlook == "ambiguous":
        head = f"apply leaves it in doubt ({verdict.reason}): choose one"
    elif outlook == "wait":
        head = f"apply waits for it ({verdict.reason})"
    else:
        head = (f"no job carries its handles ({verdict.reason}): apply sends it again once "
                "its answer window has passed")
    lines = [head]
    shown = examination.candidates
    if shown:
        lines.append("jobs that look like this case's:")
        width = max(len(c.job.status) for c in shown)
        lines += [f"  {c.job.pk}  {c.job.status.ljust(width)}  {describe_candidate(c)}"
                  for c in shown]
    if examination.more:
        lines.append(f"  … and {examination.more} more job(s) with the same values, not "
                     "listed (their uploads carry other names)")
    if shown and outlook != "adopt":
        lines.append(f"to record one: gcbatch adopt {manifest} {examination.case_id} JOB "
                     "(or apply --resubmit-in-doubt to send it again)")
    return lines


def render_forecast(outlook: Forecast) -> str:
    """``quota: 40 job(s), at most 16 active at a time → 3 wave(s), ...``."""
    if outlook.jobs == 0:
        return "quota: nothing to submit"
    text = (f"quota: {outlook.jobs} job(s), at most {outlook.limit} active at a time"
            f" → {outlook.waves} wave(s)")
    if outlook.already_active:
        text += f" ({outlook.already_active} of your jobs are active already)"
    if outlook.makespan is not None:
        text += f", about {_human_seconds(outlook.makespan)} at the algorithm's average duration"
    return f"{text}; {outlook.note}"


def _human_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --------------------------------------------------------------------------- apply


def render_apply_summary(summary: ApplySummary) -> str:
    """``3 submitted, 2 unchanged (1.2 s)`` and, under it, what needs the user."""
    c = summary.counts()
    parts = [f"{c['submitted']} submitted"]
    if c["adopted"]:
        parts.append(f"{c['adopted']} adopted (found on the server)")
    parts.append(f"{c['unchanged']} unchanged")
    if c["waiting"]:
        parts.append(f"{c['waiting']} wait")
    if c["skipped"]:
        parts.append(f"{c['skipped']} changed but kept (use --replace)")
    if c["failed"]:
        parts.append(f"{c['failed']} failed")
    if c["in_doubt"]:
        parts.append(f"{c['in_doubt']} in doubt")
    lines = [", ".join(parts) + f" ({summary.elapsed:.1f} s)"]
    if summary.stopped_by_credits:
        lines.append(
            f"stopped: you have run out of algorithm credits; {c['submitted']} submitted, "
            f"{c['waiting']} wait. Run apply again when credits are available: it "
            "submits exactly the cases that wait."
        )
    if summary.interrupted:
        lines.append(f"interrupted: {c['waiting']} case(s) not submitted; "
                     "run apply again to continue")
    for outcome in summary.of(Outcome.FAILED, Outcome.IN_DOUBT):
        lines.append(f"  {outcome.kind.value.replace('_', ' ')}: {outcome.case}: "
                     f"{outcome.message}")
    skipped = summary.of(Outcome.SKIPPED)
    for outcome in skipped[:20]:
        lines.append(f"  kept: {outcome.case}: {outcome.message}")
    if len(skipped) > 20:
        lines.append(f"  ... and {len(skipped) - 20} more changed case(s)")
    return "\n".join(lines)


def render_adopt(result: AdoptResult) -> str:
    """``adopted: p001 → job 0190… (Queued): carries this case's upload names (…)``."""
    job = result.job
    how = "adopted with --force" if result.forced else "adopted"
    lines = [f"{how}: {result.case_id} → job {job.pk} ({job.status}): "
             f"{describe_candidate(result.candidate)}"]
    if result.replaced:
        lines.append(f"its earlier job {result.replaced} stays in its history")
    if job.status in FAILED_STATUSES:
        lines.append("the job has ended without a result: `gcbatch apply --retry-failed` "
                     "sends the case again")
    lines.append(f"recorded in {result.lockfile_path}")
    return "\n".join(lines)


def mib(n: int) -> str:
    """``12.0 KiB``, ``3.4 MiB``, ``1.25 GiB`` (progress lines)."""
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    if n < 1024**3:
        return f"{n / (1024 * 1024):.1f} MiB"
    return f"{n / 1024**3:.2f} GiB"


# --------------------------------------------------------------------------- status, download


def render_status_summary(report: StatusReport) -> str:
    """One line: ``"12 cases: 3 Queued, 8 Succeeded, 1 Failed"``."""
    counts = report.counts()
    noun = "case" if len(report.rows) == 1 else "cases"
    if not counts:
        return f"0 {noun}"
    body = ", ".join(f"{n} {status}" for status, n in counts.items())
    return f"{len(report.rows)} {noun}: {body}"


def render_status_table(rows: Iterable[CaseStatus]) -> str:
    """A plain, aligned text table (case, job, status, duration); stable for piping."""
    header = ("CASE", "JOB", "STATUS", "DURATION")
    lines = [header] + [
        (row.case_id, row.job_pk or "-", row.status, format_duration(row.duration_s))
        for row in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=True)]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out) + "\n"


def human_bytes(count: int) -> str:
    """``512 B``, ``1.5 KiB``, ..., ``2.0 TiB``."""
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover - loop always returns


def render_missing_outputs(missing: Iterable[tuple[str, str]]) -> list[str]:
    """One line per case whose Succeeded job lacks outputs it should have."""
    by_case: dict[str, list[str]] = {}
    for case_id, socket in missing:
        by_case.setdefault(case_id, []).append(socket)
    return [f"{case_id}: the job Succeeded but its output(s) {', '.join(sockets)} are "
            "missing (nothing to download for them)" for case_id, sockets in by_case.items()]


def render_download(summary: DownloadSummary, tables: tuple[object, object]) -> str:
    """What a download did, and where the tables are."""
    return (
        f"downloaded {summary.files_downloaded} file(s) "
        f"({human_bytes(summary.bytes_downloaded)}), {summary.files_skipped} already "
        f"complete; {summary.values_written} value(s) written, {summary.values_unchanged} "
        f"unchanged\ntables: {tables[0]} {tables[1]}"
    )
