"""User uploads (``uploads/``): create, list, retrieve. Their multipart actions are in
``multipart.py``; the bytes go straight to storage (``storage.py``).

An upload is usable while it is live: not consumed by a job and less than
``upload_expiry_seconds`` old. A used or expired one is, to its owner, not found.

The quota on their number counts every live upload of the user, aborted ones too (the
platform counts its rows; a consumed upload's row is deleted), and refuses a new one when
there are *more than* ``max_live_uploads`` — without a lock on the real platform
(``unlocked_checks``), so a few more can slip through.
"""

from __future__ import annotations

import secrets
import string
import uuid

from gcbatch.sandbox.context import Ctx
from gcbatch.sandbox.http import Response
from gcbatch.sandbox.ids import is_uuid, norm_uuid
from gcbatch.sandbox.pagination import page, page_params
from gcbatch.sandbox.parsing import json_object_body
from gcbatch.sandbox.responses import (
    MSG_NO_CREDENTIALS,
    MSG_NULL,
    MSG_REQUIRED,
    HttpError,
    commit_hold,
    detail,
    json_response,
    unseen_since,
)
from gcbatch.sandbox.store import UploadRow

_S3_ID_CHARS = string.ascii_letters + string.digits


def upload_live(ctx: Ctx, up: UploadRow) -> bool:
    return up.created >= ctx.now() - ctx.config.upload_expiry_seconds


def own_upload(ctx: Ctx, pk: str) -> UploadRow:
    """The request user's live upload ``pk``, or the 404 the platform gives otherwise."""
    if not is_uuid(pk):
        raise HttpError(detail(404, "Not found.", allow=ctx.allow))
    up = ctx.store.upload(norm_uuid(pk))
    user = ctx.user
    if up is None or user is None or up.user != user.name or up.consumed or not upload_live(ctx, up):
        raise HttpError(detail(404, "No UserUpload matches the given query.", allow=ctx.allow))
    return up


def create(ctx: Ctx) -> Response:
    allow = ctx.allow
    user = ctx.user
    if user is None:
        return detail(401, MSG_NO_CREDENTIALS, allow=allow)
    body = json_object_body(ctx.req, allow)
    name = body.get("filename")
    if "filename" not in body:
        return json_response(400, {"filename": [MSG_REQUIRED]}, allow=allow)
    if name is None:
        return json_response(400, {"filename": [MSG_NULL]}, allow=allow)
    if not isinstance(name, (str, int, float)) or isinstance(name, bool):
        return json_response(400, {"filename": ["Not a valid string."]}, allow=allow)
    name = str(name)
    if not name.strip():
        return json_response(400, {"filename": ["This field may not be blank."]}, allow=allow)
    name = name.strip()
    if len(name) > 128:
        return json_response(
            400,
            {"filename": ["Ensure this field has no more than 128 characters."]},
            allow=allow,
        )
    if "/" in name or "\\" in name or name in (".", "..") or "\x00" in name:
        return json_response(400, {"filename": [f"{name} is not a valid filename"]}, allow=allow)
    now = ctx.now()
    since = now - ctx.config.upload_expiry_seconds
    count = ctx.store.live_upload_count(user.name, since)
    if ctx.config.unlocked_checks:  # the count is read before concurrent requests commit
        count -= ctx.store.uploads_created_after(
            user.name, since, unseen_since(ctx.config, ctx.arrived, now))
    if count > ctx.config.max_live_uploads:  # the platform's "count() > 2000"
        return json_response(
            400,
            {"non_field_errors": ["You have created too many uploads. Please try again later."]},
            allow=allow,
        )
    pk = str(uuid.uuid4())
    s3_id = "".join(secrets.choice(_S3_ID_CHARS) for _ in range(56))
    ctx.store.insert_upload(pk, user.name, now, name, s3_id)
    up = ctx.store.upload(pk)
    assert up is not None
    return json_response(201, ctx.render.upload(ctx.base_url, up, user), allow=allow,
                         extra=commit_hold(ctx.config))


def listing(ctx: Ctx) -> Response:
    req, user = ctx.req, ctx.user
    limit, offset = page_params(req, ctx.config)
    if user is None:
        return page(req, 0, [], limit, offset, ctx.allow)
    since = ctx.now() - ctx.config.upload_expiry_seconds
    count, rows = ctx.store.live_uploads(user.name, since, limit, offset)
    results = [ctx.render.upload(ctx.base_url, r, user) for r in rows]
    return page(req, count, results, limit, offset, ctx.allow)


def retrieve(ctx: Ctx, pk: str) -> Response:
    up = own_upload(ctx, pk)
    assert ctx.user is not None
    return json_response(200, ctx.render.upload(ctx.base_url, up, ctx.user), allow=ctx.allow)
