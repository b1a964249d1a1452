"""Every limit and timing of the sandbox in one frozen value.

The defaults are the real platform's (active jobs 16, 1000 credits a month, at least 20
credits a job, 2000 live uploads, page size 100 / max 1000). Durations are the sandbox's
own: short enough that a quickstart sees jobs finish, long enough that a client sees the
intermediate statuses. A seed file may override any field (``config:`` section) and
``POST /_sandbox/config`` may change them while the sandbox runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GIB = 1024**3

# Credits are counted over a rolling month, in whole UTC days (docs/fidelity.md).
MONTH_SECONDS = 30 * 86400.0


@dataclass(frozen=True)
class SandboxConfig:
    """Limits, timings and switches of one sandbox (see the module docstring)."""

    # Admission limits (checked when a job is created).
    max_active_jobs: int = 16
    credits_per_month: int = 1000
    job_cost: int = 20  # credits a job costs unless its algorithm says more; never below 20
    dedup: bool = True  # the server-side "A result for these inputs ... already exists."
    # The platform counts a user's active jobs and live uploads without a lock: requests
    # that arrive together all see the count from before any of them was created, so
    # together they can pass the limit (limit 2 -> 4 active jobs, seen on the real
    # application). On: a job or upload POST does not see the jobs or uploads created
    # after it arrived, nor those not committed yet (see commit_seconds). Off (default):
    # the checks are exact, one request at a time.
    unlocked_checks: bool = False
    # With unlocked_checks: how long a job or upload POST takes from its count to its
    # commit (the platform's request time). What it creates is invisible to other checks
    # for that long, and its answer comes only then, so a client that waits for each
    # answer is never over-admitted, while POSTs sent together are.
    commit_seconds: float = 0.0
    # Algorithms (slugs, comma-separated) whose image is not ready right now, on top of
    # the seed's ``active_image: false`` ones: "Algorithm image is not ready to be used".
    not_ready_algorithms: str = ""

    # Uploads.
    # More than this many uploads of a user (any status; consumed ones are deleted) and
    # POST uploads/ answers "You have created too many uploads" (the platform's ``> 2000``:
    # the 2,001st is still made).
    max_live_uploads: int = 2000
    # Bytes of a user's completed, unused uploads plus the parts of the upload asking:
    # at this many generate-presigned-urls answers 403 "Upload limit reached"
    # (UPLOADS_MAX_SIZE_UNVERIFIED). Checked there only: S3 takes any part it was given a
    # URL for.
    max_upload_bytes: int = 2 * GIB
    min_part_bytes: int = 5 * 1024**2  # S3: every part but the last
    presign_expiry_seconds: float = 3600.0
    upload_expiry_seconds: float = 86400.0  # unconsumed uploads vanish after a day
    # Real S3 refuses a presigned request that also carries an Authorization header.
    # Off by default because in the sandbox storage lives on the API's host, where the
    # official client does send its token; tests of gcbatch switch it on.
    storage_rejects_authorization: bool = False

    # Job lifecycle: seconds spent in each status (0 allowed: the job jumps through).
    validating_seconds: float = 1.0
    queued_seconds: float = 1.0
    provisioned_seconds: float = 0.5
    executing_seconds: float = 2.0
    executed_seconds: float = 0.5
    failure_rate: float = 0.0  # chance that a job of a healthy algorithm ends Failed
    rng_seed: int = 0  # makes the failures reproducible (per job pk)
    # The recorded platform bug: a JSON-file socket given bytes that are not JSON leaves
    # the job in "Validating inputs" forever. False ends such jobs Cancelled instead.
    emulate_stuck_json_bug: bool = True
    # A DICOM image set becomes an image only after the platform's import (its own
    # de-identification, then AWS HealthImaging: minutes there; short here by default)
    dicom_import_seconds: float = 5.0

    # Pagination.
    page_size: int = 100
    max_page_size: int = 1000

    # What `GET gcapi/` advertises.
    gcapi_latest_version: str = "0.16.1"
    gcapi_lowest_supported_version: str = "0.13.0"

    def replace(self, **changes: Any) -> SandboxConfig:
        """A copy with ``changes`` applied, each checked like :meth:`from_mapping`."""
        return self.with_mapping(changes)

    def with_mapping(self, changes: Mapping[str, Any]) -> SandboxConfig:
        """A copy with the fields in ``changes`` set; unknown names or bad types raise
        ``ValueError`` naming the field (the admin endpoint turns that into a 400)."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        clean: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in fields:
                raise ValueError(f"unknown sandbox setting {name!r}")
            current = getattr(self, name)
            clean[name] = _coerce(name, current, value)
        new = dataclasses.replace(self, **clean)
        new.check()
        return new

    def check(self) -> None:
        """Raise ``ValueError`` when a value makes no sense (negative limits, ...)."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"{f.name} must not be negative")
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError("failure_rate must be between 0 and 1")
        if self.page_size < 1 or self.max_page_size < 1:
            raise ValueError("page sizes must be at least 1")

    def image_not_ready(self, slug: str) -> bool:
        """The algorithm ``slug`` is listed in ``not_ready_algorithms``."""
        return slug in {s.strip() for s in self.not_ready_algorithms.split(",")}

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def phase_durations(self) -> tuple[float, float, float, float, float]:
        """Seconds in Validating inputs, Queued, Provisioned, Executing, Executed."""
        return (
            self.validating_seconds,
            self.queued_seconds,
            self.provisioned_seconds,
            self.executing_seconds,
            self.executed_seconds,
        )


def _coerce(name: str, current: Any, value: Any) -> Any:
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer")
        return value
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number")
        return float(value)
    if isinstance(current, str):
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string")
        return value
    raise ValueError(f"{name} cannot be set")  # pragma: no cover - every field is typed above
