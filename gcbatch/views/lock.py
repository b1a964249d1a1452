"""The wording of ``gcbatch lock merge/rebuild/move``: results as text, and as JSON."""

from __future__ import annotations

from typing import Any

from gcbatch.operations.lock_merge import MergeOutcome
from gcbatch.operations.lock_move import MoveOutcome
from gcbatch.operations.lock_rebuild import RebuildOutcome

__all__ = ["merge_json", "merge_text", "move_json", "move_text", "rebuild_text"]

#: how many cases a listing names before it counts the rest
LISTED = 20


def merge_text(outcome: MergeOutcome) -> str:
    sources = ", ".join(str(p) for p in outcome.inputs)
    if outcome.conflicts:
        lines = [f"lock merge refused: {len(outcome.conflicts)} case(s) have two different "
                 f"jobs in {sources}; nothing was written:"]
        lines += [f"  {c.describe()}" for c in outcome.conflicts[:LISTED]]
        if len(outcome.conflicts) > LISTED:
            lines.append(f"  ... and {len(outcome.conflicts) - LISTED} more")
        lines.append("Each case has one job only. Check on the server which job is the "
                     "case's (`gcbatch status` with each lockfile), keep that lockfile's "
                     "entry (edit the other, or drop it from the merge), then merge again.")
        return "\n".join(lines)
    text = (f"merged {len(outcome.inputs)} lockfile(s) into {outcome.output}: "
            f"{outcome.cases} cases, {outcome.jobs} with a job")
    if outcome.shared:
        text += f", {outcome.shared} found in more than one"
    if outcome.in_doubt:
        text += (f"; {outcome.in_doubt} in doubt (kept: the next apply looks for their "
                 "jobs, and `gcbatch plan` lists them)")
    return text


def merge_json(outcome: MergeOutcome) -> dict[str, Any]:
    return {"output": str(outcome.output), "inputs": [str(p) for p in outcome.inputs],
            "written": outcome.written, "cases": outcome.cases, "jobs": outcome.jobs,
            "in_doubt": outcome.in_doubt, "shared": outcome.shared,
            "conflicts": [{"case": c.case_id, "kind": c.kind,
                           "sides": [{"value": v, "file": f} for v, f in c.sides],
                           "description": c.describe()} for c in outcome.conflicts]}


def rebuild_text(outcome: RebuildOutcome) -> str:
    lines = [f"wrote {outcome.lockfile_path}: {len(outcome.adopted)} case(s) adopted, "
             f"{len(outcome.no_job)} with no job, {len(outcome.ambiguous)} ambiguous "
             f"({outcome.jobs_read} jobs read, {outcome.names_read} image names looked up; "
             "nothing was sent)"]
    if outcome.no_job:
        shown = ", ".join(outcome.no_job[:LISTED])
        more = f" and {len(outcome.no_job) - LISTED} more" if len(outcome.no_job) > LISTED \
            else ""
        lines.append(f"no job found (apply will submit them): {shown}{more}")
    if outcome.ambiguous:
        lines.append("ambiguous (recorded in doubt: apply sends them nowhere; pick one with "
                     "`gcbatch adopt MANIFEST CASE JOB --force`):")
        for case_id, jobs in outcome.ambiguous[:LISTED]:
            lines.append(f"  {case_id}: " + ", ".join(jobs))
        if len(outcome.ambiguous) > LISTED:
            lines.append(f"  ... and {len(outcome.ambiguous) - LISTED} more")
    return "\n".join(lines)


def move_text(outcome: MoveOutcome) -> str:
    if not outcome.written:
        text = f"{outcome.lockfile_path} already belongs to {outcome.new_server}: nothing to move"
    else:
        text = (f"moved {outcome.lockfile_path} from {outcome.old_server} to "
                f"{outcome.new_server}: all {outcome.jobs} jobs found there (same server), "
                "kept")
        if outcome.in_doubt:
            text += (f"; {outcome.in_doubt} case(s) in doubt kept in doubt (the next apply "
                     "looks for their jobs at the new URL)")
    if outcome.manifest_names_old:
        text += (f"\nthe manifest still names server: {outcome.old_server}; change it to "
                 f"{outcome.new_server} (or pass --server) for the next commands")
    return text


def move_json(outcome: MoveOutcome) -> dict[str, Any]:
    return {"lockfile": str(outcome.lockfile_path), "old_server": outcome.old_server,
            "new_server": outcome.new_server, "jobs": outcome.jobs,
            "in_doubt": outcome.in_doubt, "written": outcome.written,
            "manifest_names_old": outcome.manifest_names_old}
