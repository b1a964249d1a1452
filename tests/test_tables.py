"""gcbatch.tables: result rows, columns, CSV/JSON bytes."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from gcbatch.api.models import Job
from gcbatch.tables import ResultRow, build_table, csv_cell, to_csv, to_json, value_outputs


def _socket(slug: str, super_kind: str, relative_path: str = "") -> dict[str, Any]:
    return {"slug": slug, "super_kind": super_kind, "kind": "x", "pk": 1,
            "relative_path": relative_path or slug}


def _job(status: str, outputs: list[dict[str, Any]]) -> Job:
    return Job.from_json({"pk": "j1", "api_url": "http://x/api/v1/algorithms/jobs/j1/",
                          "status": status, "inputs": [], "outputs": outputs})


def test_value_outputs_only_for_succeeded_jobs_and_value_sockets() -> None:
    outputs: list[dict[str, Any]] = [
        {"interface": _socket("nodule-count", "Value"), "value": 3, "file": None, "image": None},
        {"interface": _socket("report", "File"), "value": None,
         "file": "http://x/media/r.json", "image": None},
        {"interface": _socket("heatmap", "Image"), "value": None, "file": None,
         "image": "http://x/api/v1/cases/images/i1/"},
        {"interface": _socket("findings", "Value"), "value": {"b": [1, 2], "a": None},
         "file": None, "image": None},
    ]
    assert value_outputs(_job("Succeeded", outputs)) == {
        "nodule-count": 3, "findings": {"b": [1, 2], "a": None},
    }
    assert value_outputs(_job("Failed", outputs)) == {}
    assert value_outputs(None) == {}
    # slug-only socket values (no super kind): a value is what has no file and no image
    slug_only: list[dict[str, Any]] = [{"interface": "n", "value": 1}, {"interface": "f", "file": "http://x/f"}]
    assert value_outputs(_job("Succeeded", slug_only)) == {"n": 1}


def test_csv_cells() -> None:
    assert csv_cell(None) == ""
    assert csv_cell("plain text, with comma") == "plain text, with comma"
    assert csv_cell(3) == "3"
    assert csv_cell(0.25) == "0.25"
    assert csv_cell(True) == "true"
    assert csv_cell({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'


def _rows() -> list[ResultRow]:
    return [
        ResultRow("p2", "j2", "Failed", {"ct-image": "file scans/p2.mha"}, {}),
        ResultRow("p1", "j1", "Succeeded",
                  {"ct-image": "file scans/p1.mha", "lung-volume": "value 42"},
                  {"nodule-count": 3, "malignancy-risk": 0.5,
                   "findings": {"nodules": [{"x": 1}]}}),
        ResultRow("p3", None, "Not submitted", {"ct-image": "file scans/p3.mha"}, {}),
    ]


def test_build_table_sorts_rows_and_columns() -> None:
    table = build_table(_rows(), output_sockets=["zeta-score"])
    assert [r.case_id for r in table.rows] == ["p1", "p2", "p3"]
    assert table.columns == (
        "case_id", "job_pk", "status", "input:ct-image", "input:lung-volume",
        "output:findings", "output:malignancy-risk", "output:nodule-count", "output:zeta-score",
    )


def test_csv_bytes() -> None:
    data = to_csv(build_table(_rows()))
    assert data.decode() == (
        "case_id,job_pk,status,input:ct-image,input:lung-volume,"
        "output:findings,output:malignancy-risk,output:nodule-count\n"
        'p1,j1,Succeeded,file scans/p1.mha,value 42,"{""nodules"":[{""x"":1}]}",0.5,3\n'
        "p2,j2,Failed,file scans/p2.mha,,,,\n"
        "p3,,Not submitted,file scans/p3.mha,,,,\n"
    )
    parsed = list(csv.DictReader(io.StringIO(data.decode())))
    assert json.loads(parsed[0]["output:findings"]) == {"nodules": [{"x": 1}]}


def test_outputs_are_deterministic_regardless_of_input_order() -> None:
    rows = _rows()
    reordered = [
        ResultRow(r.case_id, r.job_pk, r.status, dict(reversed(list(r.inputs.items()))),
                  dict(reversed(list(r.values.items()))))
        for r in reversed(rows)
    ]
    assert to_csv(build_table(rows)) == to_csv(build_table(reordered))
    assert to_json(build_table(rows)) == to_json(build_table(reordered))


def test_json_keeps_real_values() -> None:
    document = json.loads(to_json(build_table(_rows())))
    assert document["format_version"] == 1
    assert document["output_sockets"] == ["findings", "malignancy-risk", "nodule-count"]
    first = document["cases"][0]
    assert first == {
        "case_id": "p1", "job_pk": "j1", "status": "Succeeded",
        "inputs": {"ct-image": "file scans/p1.mha", "lung-volume": "value 42"},
        "outputs": {"findings": {"nodules": [{"x": 1}]}, "malignancy-risk": 0.5,
                    "nodule-count": 3},
        "files": {},
    }
    assert document["cases"][2]["job_pk"] is None
    assert to_json(build_table(_rows())).endswith(b"}\n")


def test_file_outputs_are_path_columns() -> None:
    rows = [ResultRow("p1", "j1", "Succeeded",
                      files={"heatmap": ("p1/images/heatmap/a.mhd", "p1/images/heatmap/a.zraw"),
                             "report": ("p1/report.json",)}),
            ResultRow("p2", None, "Not submitted")]
    table = build_table(rows, file_sockets=["heatmap", "report", "mask"])
    assert table.columns[-3:] == ("file:heatmap", "file:mask", "file:report")
    lines = to_csv(table).decode().splitlines()
    assert lines[1].endswith(",p1/images/heatmap/a.mhd;p1/images/heatmap/a.zraw,,p1/report.json")
    assert lines[2].endswith(",,,")
    document = json.loads(to_json(table))
    assert document["file_sockets"] == ["heatmap", "mask", "report"]
    assert document["cases"][0]["files"]["report"] == ["p1/report.json"]
    assert document["cases"][1]["files"] == {}


def test_empty_table() -> None:
    table = build_table([])
    assert to_csv(table) == b"case_id,job_pk,status\n"
    assert json.loads(to_json(table))["cases"] == []
