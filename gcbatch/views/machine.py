"""The machine view (``--json``): one JSON document on stdout, events as JSON lines on stderr.

stdout gets exactly one JSON document per command (stable key order, 2-space indent), so
``gcbatch status study.yaml --json | jq`` works; every progress event goes to stderr as
one compact JSON object per line (``{"event": "case_problem", ...}``, see
:func:`gcbatch.events.as_json`), so a script can follow a long apply too. Byte counters
are aggregated (one ``bytes_received`` line per second at most), apply's counters are
rate-limited the same way.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from gcbatch.events import ApplyProgress, BytesReceived, Event, as_json

if TYPE_CHECKING:
    from gcbatch.engine.outcomes import ApplySummary
    from gcbatch.operations.adopt import AdoptResult
    from gcbatch.operations.download import DownloadResult
    from gcbatch.operations.init import InitResult
    from gcbatch.operations.plan import PlanResult
    from gcbatch.operations.refresh import Refresh
    from gcbatch.operations.schema import SchemaResult
    from gcbatch.operations.validate import ValidateResult
    from gcbatch.polling import WaitOutcome
    from gcbatch.status import StatusReport

__all__ = ["JsonView", "dumps_json"]

#: rate-limited events are written at most this often (seconds)
_INTERVAL = 1.0


def dumps_json(data: Any) -> str:
    """JSON for ``--json`` output: stable key order, 2-space indent."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)


class JsonView:
    """JSON for scripts (see the module docstring)."""

    def __init__(self, out: IO[str] | None = None, err: IO[str] | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._out = out if out is not None else sys.stdout
        self._err = err if err is not None else sys.stderr
        self._clock = clock
        self._lock = threading.Lock()
        self._last_progress = -1e9
        self._pending_progress: ApplyProgress | None = None
        self._bytes = 0
        self._last_bytes = -1e9

    # -- events ---------------------------------------------------------------------------------

    def event(self, event: Event) -> None:
        with self._lock:
            now = self._clock()
            if isinstance(event, ApplyProgress):
                final = event.total and event.done == event.total
                if now - self._last_progress < _INTERVAL and not final:
                    self._pending_progress = event
                    return
                self._last_progress, self._pending_progress = now, None
            elif isinstance(event, BytesReceived):
                self._bytes += event.count
                if now - self._last_bytes < _INTERVAL:
                    return
                self._last_bytes = now
                event = BytesReceived(self._bytes)
                self._bytes = 0
            self._line(as_json(event))

    def _line(self, data: dict[str, Any]) -> None:
        try:
            self._err.write(json.dumps(data, sort_keys=True, ensure_ascii=False) + "\n")
            self._err.flush()
        except (OSError, ValueError):  # a closed pipe must not break the run
            pass

    def close(self) -> None:
        """Write what rate limiting held back (the last counters, the last bytes). Also
        runs after a Ctrl-C, which may have struck while the lock was held: it gives up
        waiting for it rather than hang."""
        if not self._lock.acquire(timeout=1.0):
            return
        try:
            if self._pending_progress is not None:
                self._line(as_json(self._pending_progress))
                self._pending_progress = None
            if self._bytes:
                self._line(as_json(BytesReceived(self._bytes)))
                self._bytes = 0
        finally:
            self._lock.release()

    def warn(self, text: str, *, once: bool = False) -> None:
        self._line({"event": "warning", "message": text})

    # -- results --------------------------------------------------------------------------------

    def _document(self, data: Any) -> None:
        self._out.write(dumps_json(data) + "\n")
        self._out.flush()

    def show_validation(self, result: ValidateResult) -> None:
        for warning in result.warnings:
            self.warn(warning.render())
        self._document([f.as_json() for f in result.findings])

    def show_plan(self, result: PlanResult, *, token_missing: bool = False) -> None:
        data = result.plan.as_json()
        data["lockfile"] = str(result.lockfile_path)
        data["hashing"] = result.hash_stats.as_json()
        data["online"] = result.server is not None
        if result.server is not None:
            data["server"] = result.server
        if result.in_doubt:
            data["in_doubt"] = [e.as_json() for e in result.in_doubt]
        outlook = result.forecast
        if outlook is not None:
            data["forecast"] = {
                "jobs": outlook.jobs, "max_active": outlook.limit,
                "already_active": outlook.already_active, "waves": outlook.waves,
                "makespan_seconds": outlook.makespan, "note": outlook.note}
        self._document(data)

    def show_apply(self, summary: ApplySummary) -> None:
        self._document(summary.as_json())

    def show_status(self, result: Refresh) -> None:
        data = result.report.as_json()
        data["recorded"] = result.recorded
        self._document(data)

    def show_wait(self, report: StatusReport, *, timed_out: bool) -> None:
        data = report.as_json()
        data["timed_out"] = timed_out
        self._document(data)

    def show_waited(self, outcome: WaitOutcome) -> None:
        self.show_wait(outcome.report, timed_out=False)

    def show_download(self, result: DownloadResult) -> None:
        self._document({
            "download": result.summary.as_json(),
            "tables": [str(path) for path in result.tables],
            "cases_without_results": [row.as_json() for row in result.without_results],
        })

    def show_adopt(self, result: AdoptResult) -> None:
        self._document(result.as_json())

    def show_init(self, result: InitResult) -> None:
        from gcbatch.views.authoring import init_json

        self._document(init_json(result))

    def show_schema(self, result: SchemaResult) -> None:
        if result.path is None:  # --out -: the schema itself is the document
            self._out.write(result.text)
            self._out.flush()
            return
        from gcbatch.views.authoring import schema_json

        self._document(schema_json(result))
