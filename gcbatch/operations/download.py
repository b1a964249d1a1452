"""``gcbatch download``: every output of the Succeeded jobs, then the result tables.

Outputs land as ``DIR/<case id>/<socket relative_path>`` (:mod:`gcbatch.engine.downloads`:
atomic, resumable, a second run fetches only what is missing). ``DIR/results.csv`` and
``DIR/results.json`` are rewritten on every run and always cover every case, whatever
``--case``/``--select`` downloaded; their Value columns are the algorithm's declared Value
outputs, so they do not depend on which jobs happen to have finished yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gcbatch.api.models import Algorithm
from gcbatch.engine.downloads import DownloadSummary, atomic_write_bytes, download_outputs
from gcbatch.events import Hook, ignore
from gcbatch.operations.refresh import Refresh, refresh, scope
from gcbatch.operations.session import Session
from gcbatch.operations.study import Study
from gcbatch.status import CaseStatus
from gcbatch.statuses import JobStatus
from gcbatch.tables import ResultTable, result_table, to_csv, to_json
from gcbatch.targeting import Targeting

__all__ = ["RESULTS_CSV", "RESULTS_JSON", "DownloadResult", "download"]

RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"


@dataclass(frozen=True)
class DownloadResult:
    summary: DownloadSummary
    refresh: Refresh
    targeted: frozenset[str]
    tables: tuple[Path, Path]

    @property
    def without_results(self) -> tuple[CaseStatus, ...]:
        """Targeted cases whose job has not Succeeded (or that have no job)."""
        return tuple(row for row in self.refresh.report.rows
                     if row.case_id in self.targeted and row.status != JobStatus.SUCCEEDED)


def download(study: Study, session: Session, targeting: Targeting, out_dir: Path, *,
             workers: int = 8, on_event: Hook = ignore) -> DownloadResult:
    """Fetch what is missing under ``out_dir`` and rewrite the tables."""
    items = None
    if study.archive_slugs:  # the table wants those cases' input summaries too
        items, _ = session.view.archive_items(study.archive_slugs)
    cases = scope(study, targeting, archive_items=items)
    fresh = refresh(study, session, cases.all_ids, on_event=on_event)
    targeted = frozenset(cases.targeted)
    jobs = {cid: job for cid, job in fresh.jobs.items() if cid in targeted}
    # what the jobs should have produced (one request): outputs they lack are reported
    algorithm = session.client.get_algorithm(study.algorithm) if fresh.report.rows else None
    summary = download_outputs(session.client, jobs, out_dir, workers=workers,
                               on_event=on_event, algorithm=algorithm)
    table = result_table(fresh.report, fresh.jobs, cases.summaries,
                         output_sockets=_declared_value_outputs(algorithm))
    return DownloadResult(summary, fresh, targeted, write_tables(out_dir, table))


def _declared_value_outputs(algorithm: Algorithm | None) -> tuple[str, ...]:
    """The algorithm's Value output sockets, sorted."""
    if algorithm is None:
        return ()
    return tuple(sorted({socket.slug for interface in algorithm.interfaces
                         for socket in interface.outputs if socket.is_value}))


def write_tables(out_dir: Path, table: ResultTable) -> tuple[Path, Path]:
    """Write ``results.csv`` and ``results.json`` into ``out_dir`` atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / RESULTS_CSV, out_dir / RESULTS_JSON
    atomic_write_bytes(csv_path, to_csv(table))
    atomic_write_bytes(json_path, to_json(table))
    return csv_path, json_path

