"""Result tables: one row per case, the numbers people actually analyse.

``download`` writes ``DIR/results.csv`` and ``DIR/results.json`` from these functions on
every run. Both are deterministic bytes for the same state (rows sorted by case id, columns
sorted by socket slug, sorted JSON keys, ``\\n`` line endings), so a results directory
kept in git only changes where a result changed.

Columns (CSV):

``case_id``, ``job_pk``, ``status``
    the case, its current job (empty if never submitted) and that job's last status;
``input:<socket>``
    the source summary of each input, as the manifest described it
    (``files scans/p001/*.dcm (3 files)``, ``value 42``);
``output:<socket>``
    each *Value* output of a Succeeded job. Scalars are written as JSON scalars
    (``3``, ``0.25``, ``true``) except strings, which are written as themselves; objects
    and lists are written as compact JSON text with sorted keys. Empty when the job has no
    such output (or has not succeeded).
``file:<socket>``
    each *File* or *Image* output: the path of its downloaded file, relative to ``DIR``
    and with ``/`` (``p001/images/heatmap/out.mha``); an image of several files (``.mhd``
    and ``.zraw``) lists them all, separated by ``;``. Empty until the file is complete
    on disk, so the table is the index of the results folder.

The prefixes keep every name unambiguous: a socket may well be called ``status``.
``results.json`` holds the same rows with the values as real JSON (nothing stringified)
and each row's ``files`` as lists of paths.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gcbatch.api.models import Job, SocketValue
from gcbatch.status import StatusReport

TABLE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ResultRow:
    """One case in the result table.

    ``inputs`` maps input socket slug → source summary; ``values`` maps Value output socket
    slug → its JSON value (only for Succeeded jobs).
    """

    case_id: str
    job_pk: str | None
    status: str
    inputs: Mapping[str, str] = field(default_factory=dict, hash=False)
    values: Mapping[str, Any] = field(default_factory=dict, hash=False)
    #: File/Image output socket slug → its downloaded files (paths relative to DIR)
    files: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class ResultTable:
    rows: tuple[ResultRow, ...]
    input_sockets: tuple[str, ...]
    output_sockets: tuple[str, ...]
    file_sockets: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return (
            "case_id",
            "job_pk",
            "status",
            *(f"input:{slug}" for slug in self.input_sockets),
            *(f"output:{slug}" for slug in self.output_sockets),
            *(f"file:{slug}" for slug in self.file_sockets),
        )


def is_value_output(output: SocketValue) -> bool:
    """True for outputs of a Value socket (the ones that become table columns).

    The job list sends the full socket; if a server ever sends only the slug, an output
    with neither a file nor an image is a value.
    """
    if output.socket is not None and output.socket.super_kind:
        return output.socket.is_value
    return output.file is None and output.image is None


def value_outputs(job: Job | None) -> dict[str, Any]:
    """The Value outputs of a Succeeded job, by socket slug; empty for any other job."""
    if job is None or not job.succeeded:
        return {}
    return {out.socket_slug: out.value for out in job.outputs if is_value_output(out)}


def build_table(rows: Iterable[ResultRow], *, output_sockets: Iterable[str] = (),
                file_sockets: Iterable[str] = ()) -> ResultTable:
    """Sort rows by case id and gather the columns.

    ``output_sockets`` (``file_sockets``) add columns even when no row has a value (a
    file) for them yet (e.g. the algorithm's declared outputs), so the header does not
    change as jobs finish.
    """
    ordered = tuple(sorted(rows, key=lambda r: r.case_id))
    inputs = sorted({slug for row in ordered for slug in row.inputs})
    outputs = sorted({slug for row in ordered for slug in row.values} | set(output_sockets))
    files = sorted({slug for row in ordered for slug in row.files} | set(file_sockets))
    return ResultTable(ordered, tuple(inputs), tuple(outputs), tuple(files))


def csv_cell(value: Any) -> str:
    """How one JSON value is written into a CSV cell (see the module docstring)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False)  # numbers and booleans, JSON spelling


def to_csv(table: ResultTable) -> bytes:
    """RFC 4180 CSV with ``\\n`` line ends, UTF-8, header first."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow(
            [
                row.case_id,
                row.job_pk or "",
                row.status,
                *(row.inputs.get(slug, "") for slug in table.input_sockets),
                *(csv_cell(row.values.get(slug)) for slug in table.output_sockets),
                *(";".join(row.files.get(slug, ())) for slug in table.file_sockets),
            ]
        )
    return buffer.getvalue().encode("utf-8")


def to_json(table: ResultTable) -> bytes:
    """The same rows as JSON: ``{"format_version", "input_sockets", "output_sockets", "cases"}``."""
    document = {
        "format_version": TABLE_FORMAT_VERSION,
        "input_sockets": list(table.input_sockets),
        "output_sockets": list(table.output_sockets),
        "file_sockets": list(table.file_sockets),
        "cases": [
            {
                "case_id": row.case_id,
                "job_pk": row.job_pk,
                "status": row.status,
                "inputs": {slug: row.inputs[slug] for slug in sorted(row.inputs)},
                "outputs": {slug: row.values[slug] for slug in sorted(row.values)},
                "files": {slug: list(row.files[slug]) for slug in sorted(row.files)},
            }
            for row in table.rows
        ],
    }
    text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return text.encode("utf-8")


def result_table(
    report: StatusReport,
    jobs: Mapping[str, Job],
    input_summaries: Mapping[str, Mapping[str, str]],
    *,
    output_sockets: Iterable[str] = (),
    file_sockets: Iterable[str] = (),
    paths: Mapping[tuple[str, str], tuple[str, ...]] | None = None,
) -> ResultTable:
    """One row per case in ``report``: its inputs' summaries, its Value outputs and
    (``paths``: (case, socket) → files on disk) the files of its File/Image outputs."""
    by_case: dict[str, dict[str, tuple[str, ...]]] = {}
    for (case_id, slug), files in (paths or {}).items():
        by_case.setdefault(case_id, {})[slug] = tuple(files)
    rows = [
        ResultRow(
            case_id=row.case_id,
            job_pk=row.job_pk,
            status=row.status,
            inputs=dict(input_summaries.get(row.case_id, {})),
            values=value_outputs(jobs.get(row.case_id)),
            files=by_case.get(row.case_id, {}),
        )
        for row in report.rows
    ]
    return build_table(rows, output_sockets=output_sockets, file_sockets=file_sockets)
