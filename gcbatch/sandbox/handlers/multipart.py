"""The multipart actions of an upload (``uploads/<pk>/<s3 upload id>/<action>/``).

They stand in for S3's multipart API, and fail like the platform does when S3 refuses:
a plain-text 500 naming boto3's error (``server_crash``), as recorded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gcbatch.sandbox import dicom
from gcbatch.sandbox.context import Ctx
from gcbatch.sandbox.handlers.uploads import own_upload
from gcbatch.sandbox.http import Response
from gcbatch.sandbox.parsing import json_object_body, required_list
from gcbatch.sandbox.render import iso_seconds
from gcbatch.sandbox.responses import (
    MSG_NO_CREDENTIALS,
    HttpError,
    detail,
    json_response,
    server_crash,
)
from gcbatch.sandbox.seed import User
from gcbatch.sandbox.store import UploadRow

_MAX_PART_NUMBER = 10000  # S3's


def _target(ctx: Ctx, pk: str, s3_id: str) -> UploadRow:
    """The upload an action names: the user's own, with that multipart upload id."""
    up = own_upload(ctx, pk)
    if up.s3_upload_id != s3_id or not s3_id:
        raise HttpError(detail(404, "Not found.", allow=ctx.allow))
    return up


def list_parts(ctx: Ctx, pk: str, s3_id: str) -> Response:
    up = _target(ctx, pk, s3_id)
    assert ctx.user is not None
    parts = [
        {
            "ETag": p.etag,
            "PartNumber": p.number,
            "LastModified": iso_seconds(p.modified),
            "Size": p.size,
        }
        for p in ctx.store.parts(up.pk)
    ]
    return json_response(
        200, ctx.render.upload(ctx.base_url, up, ctx.user) | {"parts": parts}, allow=ctx.allow
    )


def _begin(ctx: Ctx, pk: str, s3_id: str) -> tuple[User, UploadRow, dict[str, Any]]:
    """The checks every PATCH action starts with: token, upload, body."""
    if ctx.user is None:
        raise HttpError(detail(401, MSG_NO_CREDENTIALS, allow=ctx.allow))
    up = _target(ctx, pk, s3_id)
    return ctx.user, up, json_object_body(ctx.req, ctx.allow)


def presign(ctx: Ctx, pk: str, s3_id: str) -> Response:
    user, up, body = _begin(ctx, pk, s3_id)
    # The platform's view asks `can_upload_more` before it reads the body: False for an
    # upload that is not Initialized, and when this upload's parts plus the user's
    # completed, unused uploads reach the size quota (UPLOADS_MAX_SIZE_UNVERIFIED).
    since = ctx.now() - ctx.config.upload_expiry_seconds
    used = ctx.store.pending_bytes(up.pk) + ctx.store.completed_upload_bytes(user.name, since)
    if up.status != "Initialized" or used >= ctx.config.max_upload_bytes:
        return detail(403, "Upload limit reached", allow=ctx.allow)
    numbers = required_list(body, "part_numbers", ctx.allow,
                            missing="The `part_numbers` field is required")
    errs: dict[str, list[str]] = {}
    clean: list[int] = []
    for i, n in enumerate(numbers):
        if isinstance(n, bool) or not isinstance(n, (int, str)):
            errs[str(i)] = ["A valid integer is required."]
            continue
        try:
            value = int(n)
        except ValueError:
            errs[str(i)] = ["A valid integer is required."]
            continue
        if value < 1:
            errs[str(i)] = ["Ensure this value is greater than or equal to 1."]
        elif value > _MAX_PART_NUMBER:
            errs[str(i)] = [f"Ensure this value is less than or equal to {_MAX_PART_NUMBER}."]
        else:
            clean.append(value)
    if errs:
        return json_response(400, {"part_numbers": errs}, allow=ctx.allow)
    expires = int(ctx.now() + ctx.config.presign_expiry_seconds)
    urls = {str(n): ctx.signer.part_url(ctx.base_url, up, n, expires) for n in clean}
    return json_response(
        200,
        ctx.render.upload(ctx.base_url, up, user) | {"presigned_urls": urls},
        allow=ctx.allow,
    )


def complete(ctx: Ctx, pk: str, s3_id: str) -> Response:
    user, up, body = _begin(ctx, pk, s3_id)
    given = required_list(body, "parts", ctx.allow, missing="The `parts` field is required")
    path = ctx.req.path
    if up.status != "Initialized":
        return server_crash(path, "RuntimeError", "upload is not initialized")
    st = ctx.store
    stored = {p.number: p for p in st.parts(up.pk)}
    if not given:
        return server_crash(path, "ClientError", "MalformedXML: no parts")
    chosen = []
    last = 0
    for entry in given:
        if not isinstance(entry, dict):
            return server_crash(path, "ClientError", "MalformedXML")
        number = entry.get("PartNumber")
        etag = entry.get("ETag")
        if not isinstance(number, int) or isinstance(number, bool):
            return server_crash(path, "ClientError", "MalformedXML")
        part = stored.get(number)
        if part is None or not isinstance(etag, str) or etag.strip('"') != part.etag.strip('"'):
            return server_crash(
                path,
                "ClientError",
                "InvalidPart: one or more of the specified parts could not be found",
            )
        if number <= last:
            return server_crash(path, "ClientError", "InvalidPartOrder")
        last = number
        chosen.append(part)
    for part in chosen[:-1]:
        if part.size < ctx.config.min_part_bytes:
            return server_crash(
                path,
                "ClientError",
                "EntityTooSmall: your proposed upload "
                "is smaller than the minimum allowed object size",
            )
    target = st.path(f"uploads/{up.pk}/object")
    target.parent.mkdir(parents=True, exist_ok=True)
    if len(chosen) == 1:
        st.path(f"uploads/{up.pk}/part-{chosen[0].number}").replace(target)
    else:
        with target.open("wb") as out:
            for part in chosen:
                with st.path(f"uploads/{up.pk}/part-{part.number}").open("rb") as fh:
                    while True:
                        chunk = fh.read(1 << 20)
                        if not chunk:
                            break
                        out.write(chunk)
    for number in stored:
        st.path(f"uploads/{up.pk}/part-{number}").unlink(missing_ok=True)
    size = sum(p.size for p in chosen)
    st.delete_parts(up.pk)
    st.update_upload(up.pk, status="Completed", size=size)
    _flag_patient_data(ctx, up, target)
    fresh = st.upload(up.pk)
    assert fresh is not None
    return json_response(200, ctx.render.upload(ctx.base_url, fresh, user), allow=ctx.allow)


def abort(ctx: Ctx, pk: str, s3_id: str) -> Response:
    user, up, _ = _begin(ctx, pk, s3_id)
    if up.status != "Initialized":
        return server_crash(ctx.req.path, "RuntimeError", "upload is not initialized")
    st = ctx.store
    st.delete_parts(up.pk)
    st.remove_tree(f"uploads/{up.pk}")
    st.update_upload(up.pk, status="Aborted", s3_upload_id="")
    fresh = st.upload(up.pk)
    assert fresh is not None
    return json_response(200, ctx.render.upload(ctx.base_url, fresh, user), allow=ctx.allow)


#: what the patient-data check reads of an upload (DICOM headers come first)
_PATIENT_DATA_HEAD = 4 * 1024 * 1024


def _flag_patient_data(ctx: Ctx, up: UploadRow, target: Path) -> None:
    """Record a completed upload that is DICOM holding patient data (the sandbox's
    check, ``GET /_sandbox/patient-data``: tests prove with it that none arrived)."""
    with target.open("rb") as fh:
        head = fh.read(_PATIENT_DATA_HEAD)
    parsed = dicom.parse_dicom(head)
    found = dicom.patient_tags(parsed) if parsed is not None else []
    if found:
        entry = {"upload": up.pk, "filename": up.filename, "user": up.user, "tags": found}
        with ctx.store.path(dicom.PATIENT_DATA_LOG).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
