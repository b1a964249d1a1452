"""The benchmark harness's pure helpers: medians, ratios, targets and the result table.

No timings are asserted anywhere (machines are noisy); these tests only check that the
arithmetic and the rendering that turn measurements into the README's table are right.
The harness is loaded from its file because ``benchmarks/`` is a folder of scripts, not a
package.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

HARNESS_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "harness.py"


def _load_harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gcbatch_bench_harness", HARNESS_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


h = _load_harness()


def test_median_odd_even_and_empty() -> None:
    assert h.median([3.0, 1.0, 2.0]) == 2.0
    assert h.median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert math.isnan(h.median([]))


def test_ratio_handles_missing_and_zero() -> None:
    assert h.ratio(64.0, 4.0) == 16.0
    assert h.ratio(None, 4.0) is None
    assert h.ratio(1.0, None) is None
    assert h.ratio(1.0, 0.0) is None
    assert h.ratio(math.nan, 1.0) is None


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0.0421, "42 ms"), (3.4209, "3.42 s"), (12.06, "12.1 s"), (2702.0, "2,702 s"), (None, "-")],
)
def test_fmt_seconds(value: float | None, shown: str) -> None:
    assert h.fmt_seconds(value) == shown


def test_fmt_ratio_mib_count() -> None:
    assert h.fmt_ratio(16.04) == "16.0x"
    assert h.fmt_ratio(1.084) == "1.08x"
    assert h.fmt_ratio(135.2) == "135x"
    assert h.fmt_ratio(None) == "-"
    assert h.fmt_mib(83.4 * h.MIB) == "83.4 MiB"
    assert h.fmt_count(2001.4) == "2,001"
    assert h.fmt_count(None) == "-"


def test_target_direction_and_missing_measurement() -> None:
    faster = h.Target("speed-up", 15.0, 16.2, "x", at_most=False)
    assert faster.met
    assert "met" in faster.render() and ">=" in faster.render()
    slow = h.Target("speed-up", 15.0, 9.0, "x", at_most=False)
    assert not slow.met and "MISSED" in slow.render()
    assert h.Target("re-apply", 5.0, 4.99, "s").met
    assert not h.Target("re-apply", 5.0, 5.01, "s").met
    assert not h.Target("memory", 200.0, None, "MiB").met  # no figure is a miss, not a pass
    assert h.Target("mutating requests", 0, 0).met


def test_ideal_makespan() -> None:
    assert h.ideal_makespan(160, 16, 2.0) == 20.0
    assert h.ideal_makespan(161, 16, 2.0) == 22.0
    assert h.ideal_makespan(0, 16, 2.0) == 0.0
    with pytest.raises(ValueError):
        h.ideal_makespan(10, 0, 2.0)


def test_count_requests_skips_admin_and_counts_mutations() -> None:
    log = [
        {"method": "GET", "path": "/api/v1/algorithms/"},
        {"method": "POST", "path": "/api/v1/algorithms/jobs/"},
        {"method": "put", "path": "/api/v1/uploads/x/"},
        {"method": "GET", "path": "/_sandbox/stats"},
        {"method": "POST", "path": "/_sandbox/faults"},
    ]
    assert h.count_requests(log) == (3, 2)


def test_summarize_runs_takes_medians() -> None:
    side = h.summarize_runs(
        "gcbatch",
        [3.0, 1.0, 2.0],
        requests=[10, 12, 11],
        peaks=[100, 300, 200],
        cpus=[0.5, 0.7, 0.6],
        extra={"makespan_s": [21.0, 23.0, 22.0]},
    )
    assert side.wall_s == 2.0
    assert side.requests == 11
    assert side.peak_rss_bytes == 200
    assert side.mutating_requests is None
    assert side.cpu_s == 0.6
    assert side.repeats == 3
    assert side.extra == {"makespan_s": 22.0}


def test_render_table_pads_and_aligns() -> None:
    text = h.render_table(("a", "b", "n"), [["x", "long cell", "1"], ["yy", "", "1,234"]])
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1  # every line padded to the same width
    assert lines[1].endswith(":|")  # numbers right-aligned in Markdown too
    assert lines[2] == "| x  | long cell |     1 |"
    with pytest.raises(ValueError):
        h.render_table(("a", "b"), [["only one"]])


def _scenario() -> object:
    gcapi = h.SideResult(
        "gcapi", 64.0, requests=2003, mutating_requests=1000, peak_rss_bytes=80 * h.MIB
    )
    gcbatch = h.SideResult(
        "gcbatch",
        4.0,
        requests=1004,
        mutating_requests=1000,
        peak_rss_bytes=60 * h.MIB,
        cpu_s=1.25,
        extra={"makespan_s": 21.5},
    )
    capped = h.SideResult("gcapi (docs' 300 s retry)", 20.0, completed=False)
    return h.ScenarioResult(
        1,
        "value-only submit",
        "1000 cases",
        (gcapi, gcbatch, capped),
        targets=(h.Target("gcapi/gcbatch wall time", 15.0, 16.0, "x", at_most=False),),
        notes=("a note",),
    )


def test_result_rows_ratio_on_gcbatch_row_and_capped_marked() -> None:
    res = _scenario()
    assert res.speed_ratio() == 16.0
    rows = h.result_rows([res])
    assert rows[0][0] == "1. value-only submit" and rows[1][0] == ""
    assert rows[0][-1] == "-"
    assert rows[1][-1] == "16.0x"
    assert rows[1][3] == "1,004" and rows[1][5] == "60.0 MiB" and rows[1][6] == "1.25 s"
    assert rows[2][2].startswith("> ") and "capped" in rows[2][2]
    failed = h.ScenarioResult(5, "re-apply", "", error="boom")
    assert h.result_rows([failed]) == [["5. re-apply", "(failed)", "-", "-", "-", "-", "-", "-"]]


def test_render_results_lists_targets_extras_and_notes() -> None:
    text = h.render_results([_scenario(), h.ScenarioResult(5, "re-apply", "", error="boom")])
    assert "| 1. value-only submit | gcapi" in text
    assert "gcbatch: makespan_s = 21.5 s" in text
    assert "target: gcapi/gcbatch wall time: 16.0x (target >= 15.0x) - met" in text
    assert "- a note" in text
    assert "ERROR: boom" in text


def test_results_json_is_strict_json() -> None:
    nan_side = h.SideResult("gcbatch", math.nan)
    res = h.ScenarioResult(2, "t", "p", (nan_side,))
    data = h.results_json([_scenario(), res], {"nproc": "2"})
    text = json.dumps(data, allow_nan=False)  # raises if a NaN slipped through
    back = json.loads(text)
    assert back["machine"] == {"nproc": "2"}
    assert back["scenarios"][0]["speed_ratio_gcapi_over_gcbatch"] == 16.0
    assert back["scenarios"][0]["targets"][0]["met"] is True
    assert back["scenarios"][1]["sides"][0]["wall_s"] is None


def test_machine_info_has_the_fields_the_report_prints() -> None:
    info = h.machine_info()
    for key in ("date", "nproc", "cpu", "python", "os"):
        assert info[key]
