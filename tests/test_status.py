"""The pure half of gcbatch.status: vocabulary, durations, aggregation, rendering."""

from __future__ import annotations

import pytest

from gcbatch.status import (
    CaseStatus,
    StatusReport,
    build_report,
    format_duration,
    is_problem,
    status_sort_key,
)
from gcbatch.statuses import MISSING, NOT_SUBMITTED, is_terminal
from gcbatch.views.text import render_status_summary as render_summary
from gcbatch.views.text import render_status_table as render_table


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0, "0s"), (45.4, "45s"), (737, "12m17s"), (7380, "2h03m"),
     (3 * 86400 + 4 * 3600 + 5, "3d04h"), (-61, "-1m01s")],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_terminal_and_problem_statuses() -> None:
    assert is_terminal("Succeeded") and is_terminal("Failed") and is_terminal("Cancelled")
    for running in ("Validating inputs", "Queued", "Executing", "Some Future Status", None):
        assert not is_terminal(running)
    assert is_problem("Failed") and is_problem("Cancelled") and is_problem(MISSING)
    assert not is_problem("Succeeded") and not is_problem("Queued")


def test_status_order_follows_the_lifecycle_with_unknown_last() -> None:
    statuses = ["Succeeded", "Zeta", "Queued", "Failed", "Alpha", "Validating inputs"]
    assert sorted(statuses, key=status_sort_key) == [
        "Validating inputs", "Queued", "Succeeded", "Failed", "Alpha", "Zeta",
    ]


def _report() -> StatusReport:
    records = {
        "c3": ("job-3", "Queued"),
        "c1": ("job-1", "Executing"),
        "c2": ("job-2", None),
        "c4": (None, None),
        "c5": ("job-gone", "Queued"),
    }
    server = {
        "job-1": ("Succeeded", 65.0),
        "job-2": ("Failed", None),
        "job-3": ("Queued", None),
        "job-unrelated": ("Succeeded", None),
    }
    return build_report(records, server)


def test_build_report_combines_lockfile_and_server() -> None:
    report = _report()
    assert [r.case_id for r in report.rows] == ["c1", "c2", "c3", "c4", "c5"]
    by_id = {r.case_id: r for r in report.rows}
    assert by_id["c1"] == CaseStatus("c1", "job-1", "Succeeded", 65.0, "Executing")
    assert by_id["c1"].changed
    assert not by_id["c3"].changed
    assert by_id["c4"].status == NOT_SUBMITTED and by_id["c4"].job_pk is None
    assert by_id["c5"].status == MISSING and not by_id["c5"].changed
    assert report.counts() == {
        NOT_SUBMITTED: 1, "Queued": 1, "Succeeded": 1, "Failed": 1, MISSING: 1,
    }
    assert report.any_problem
    assert not report.all_terminal
    assert [r.case_id for r in report.running()] == ["c3"]


def test_all_terminal_ignores_unsubmitted_and_missing() -> None:
    report = build_report(
        {"a": ("j1", None), "b": (None, None), "c": ("gone", None)},
        {"j1": ("Succeeded", None)},
    )
    assert report.all_terminal
    assert report.all_succeeded is False  # the missing job did not succeed
    ok = build_report({"a": ("j1", None), "b": (None, None)}, {"j1": ("Succeeded", None)})
    assert ok.all_succeeded and not ok.any_problem


def test_unknown_status_is_not_terminal() -> None:
    report = build_report({"a": ("j1", None)}, {"j1": ("Hibernating", None)})
    assert not report.all_terminal


def test_render_summary_and_table() -> None:
    report = _report()
    assert render_summary(report) == (
        "5 cases: 1 Not submitted, 1 Queued, 1 Succeeded, 1 Failed, 1 Missing"
    )
    assert render_summary(StatusReport(())) == "0 cases"
    table = render_table(report.rows)
    lines = table.splitlines()
    assert lines[0].split() == ["CASE", "JOB", "STATUS", "DURATION"]
    assert lines[1].split() == ["c1", "job-1", "Succeeded", "1m05s"]
    assert lines[4].split() == ["c4", "-", "Not", "submitted", "-"]
    # aligned: the status column starts at the same offset on every line
    offsets = {line.index(word) for line, word in zip(lines[1:], ["Succeeded", "Failed", "Queued"], strict=False)}
    assert len(offsets) == 1
    assert table.endswith("\n")


def test_as_json_shape() -> None:
    data = _report().as_json()
    assert data["summary"]["total"] == 5
    assert data["cases"][0] == {"case": "c1", "job": "job-1", "status": "Succeeded",
                                "duration_s": 65.0}


def test_merged_and_unsettled() -> None:
    report = _report()
    assert report.unsettled() == ("c3", "c5")  # Queued, and Missing (may reappear)
    newer = build_report({"c3": ("job-3", "Queued")}, {"job-3": ("Succeeded", 2.0)})
    merged = report.merged(newer)
    assert [r.case_id for r in merged.rows] == ["c1", "c2", "c3", "c4", "c5"]
    assert merged.rows[2].status == "Succeeded" and merged.unsettled() == ("c5",)
