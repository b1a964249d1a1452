"""One frozen value per table row, and the column lists that fill them.

Each ``*_COLS`` string lists the columns in the order of its row's fields, so a query
``SELECT {COLS} ...`` maps straight onto ``Row(*row)``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JobRow:
    seq: int
    pk: str
    user: str
    algorithm: str
    created: float
    status: str
    active: int
    next_at: float | None
    schedule: str
    outcome: str
    input_key: str | None
    cost: int
    exec_duration: float | None
    invoke_duration: float | None
    error: str | None
    outputs_pending: int = 0  # Succeeded, outputs not made yet (made when first looked at)


@dataclass(frozen=True)
class CivRow:
    pk: int
    socket: str
    value: str | None  # JSON text
    file: str | None  # storage-relative path of the file's bytes
    file_name: str | None
    image: str | None  # image pk
    sha256: str | None = None  # a file's content hash (kept so outputs need no re-read)


@dataclass(frozen=True)
class UploadRow:
    pk: str
    user: str
    created: float
    filename: str
    s3_upload_id: str
    status: str
    size: int
    consumed: int


@dataclass(frozen=True)
class PartRow:
    upload: str
    number: int
    etag: str
    size: int
    modified: float


@dataclass(frozen=True)
class ImageRow:
    pk: str
    name: str
    owner: str | None
    file_pk: str
    file_name: str
    path: str  # absolute, or relative to the storage folder
    meta: str  # JSON: width, height, depth, spacing, ...
    created: float


JOB_COLS = (
    "seq, pk, user, algorithm, created, status, active, next_at, schedule, outcome, "
    "input_key, cost, exec_duration, invoke_duration, error, outputs_pending"
)
CIV_COLS = "pk, socket, value, file, file_name, image, sha256"
UPLOAD_COLS = "pk, user, created, filename, s3_upload_id, status, size, consumed"
IMAGE_COLS = "pk, name, owner, file_pk, file_name, path, meta, created"
