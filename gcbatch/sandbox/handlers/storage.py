"""Storage: the S3 stand-in under ``/_storage/``, and the ``/media/`` links that lead there.

Two doors to the same bytes. ``/media/...`` is on the API side: it checks the user may
see the file or image, then answers 302 to a signed storage URL, like the platform.
``/_storage/...`` needs no token — the signature is the permission — and answers like
S3: XML errors, ``ETag`` = quoted md5. Upload parts are PUT there directly.

A client that sends its token to storage is accepted (storage lives on the API's host,
where gcapi does send it) unless ``storage_rejects_authorization`` asks for S3's 400.
"""

from __future__ import annotations

import hashlib

from gcbatch.sandbox.context import Ctx
from gcbatch.sandbox.http import Response
from gcbatch.sandbox.ids import is_uuid, norm_uuid
from gcbatch.sandbox.responses import (
    MSG_NO_CREDENTIALS,
    detail,
    not_found_page,
    s3_error,
)
from gcbatch.sandbox.signing import object_message, part_message

_HTML = "text/html; charset=utf-8"


def _no_such_key() -> Response:
    return s3_error(404, "NoSuchKey", "The specified key does not exist.")


def _bad_signature() -> Response:
    return s3_error(
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided.",
    )


def _no_such_upload() -> Response:
    return s3_error(404, "NoSuchUpload", "The specified multipart upload does not exist.")


def _auth_problem(ctx: Ctx) -> Response | None:
    if ctx.config.storage_rejects_authorization and "authorization" in ctx.req.headers:
        return s3_error(
            400,
            "InvalidArgument",
            "Only one auth mechanism allowed; only the "
            "X-Amz-Algorithm query parameter, Signature query string parameter or "
            "the Authorization header should be specified",
        )
    return None


def put_part(ctx: Ctx, upload: str) -> Response:
    """``PUT /_storage/uploads/<upload pk>?uploadId=..&partNumber=..``: one part's bytes."""
    problem = _auth_problem(ctx)
    if problem is not None:
        return problem
    req = ctx.req
    s3_id = req.first("uploadId") or ""
    number_text = req.first("partNumber") or ""
    expires_text = req.first("X-Sandbox-Expires") or ""
    signature = req.first("X-Sandbox-Signature") or ""
    if not (number_text.isdigit() and expires_text.isdigit() and is_uuid(upload)):
        return s3_error(403, "AccessDenied", "Invalid presigned URL")
    number = int(number_text)
    if not ctx.signer.valid(part_message(upload, s3_id, number, expires_text), signature):
        return _bad_signature()
    if int(expires_text) < ctx.now():
        return s3_error(403, "AccessDenied", "Request has expired")
    # Write the bytes outside the lock (parts may be large), then record them. No size
    # quota here: the platform checks it when it hands out presigned URLs, and S3 takes
    # any part (up to 5 GiB) it was given a URL for.
    etag = '"' + hashlib.md5(req.body).hexdigest() + '"'
    st = ctx.store
    with st.transaction():
        up = st.upload(upload)
        if up is None or up.status != "Initialized" or up.s3_upload_id != s3_id:
            return _no_such_upload()
    st.write_bytes(f"uploads/{upload}/part-{number}", req.body)
    with st.transaction():
        up = st.upload(upload)
        if up is None or up.status != "Initialized":
            return _no_such_upload()
        st.put_part(upload, number, etag, len(req.body), ctx.now())
    return Response(200, (("ETag", etag), ("Content-Type", _HTML)), b"")


def get_object(ctx: Ctx, key: str) -> Response:
    """``GET|HEAD /_storage/protected/<key>?X-Sandbox-...``: a file's or image's bytes."""
    response = _get_object(ctx, key)
    if ctx.req.method == "HEAD":
        return Response(response.status, response.headers, b"")
    return response


def _get_object(ctx: Ctx, key: str) -> Response:
    problem = _auth_problem(ctx)
    if problem is not None:
        return problem
    expires_text = ctx.req.first("X-Sandbox-Expires") or ""
    signature = ctx.req.first("X-Sandbox-Signature") or ""
    if not expires_text.isdigit():
        return s3_error(403, "AccessDenied", "Invalid presigned URL")
    if not ctx.signer.valid(object_message(key, expires_text), signature):
        return _bad_signature()
    if int(expires_text) < ctx.now():
        return s3_error(403, "AccessDenied", "Request has expired")
    try:
        with ctx.store.transaction():
            where = _object_path(ctx, key)
            data = None if where is None else ctx.outputs.stored_bytes(where)
    except OSError:
        data = None
    if data is None:
        return _no_such_key()
    ctype = "application/json" if key.endswith(".json") else "binary/octet-stream"
    etag = '"' + hashlib.md5(data).hexdigest() + '"'
    return Response(200, (("ETag", etag), ("Content-Type", ctype)), data)


def _object_path(ctx: Ctx, key: str) -> str | None:
    """Map a protected storage key to where its bytes are (see ``Outputs.stored_bytes``)."""
    parts = key.split("/")
    st = ctx.store
    if len(parts) == 6 and parts[0] == "components" and parts[1] == "componentinterfacevalue":
        if not parts[4].isdigit():
            return None
        civ = st.civ(int(parts[4]))
        if civ is None or civ.file is None or civ.file_name != parts[5]:
            return None
        return civ.file
    if len(parts) == 6 and parts[0] == "images" and is_uuid(parts[3]):
        img = st.image(norm_uuid(parts[3]))
        if img is None or img.file_pk != parts[4] or img.file_name != parts[5]:
            return None
        return img.path
    return None


def no_such_key(ctx: Ctx, key: str) -> Response:
    """Logos and anything else the sandbox links to but does not keep."""
    return _no_such_key()


def method_not_allowed(ctx: Ctx, key: str) -> Response:
    return s3_error(
        405, "MethodNotAllowed", "The specified method is not allowed against this resource."
    )


def media(ctx: Ctx, key: str) -> Response:
    """``/media/<key>``: a file output or an image file → 302 to a signed storage URL.

    Keys: ``components/componentinterfacevalue/<xx>/<yy>/<civ pk>/<name>`` and
    ``images/<xx>/<yy>/<image pk>/<file pk>/<name>``.
    """
    parts = key.split("/")
    st = ctx.store
    user = ctx.user
    allowed = False
    if len(parts) == 6 and parts[0] == "components" and parts[4].isdigit():
        civ = st.civ(int(parts[4]))
        if (
            civ is not None
            and civ.file is not None
            and civ.file_name == parts[5]
            and user is not None
        ):
            owners = {u for _, u in st.civ_jobs(civ.pk)}
            allowed = user.name in owners or ctx.visibility.civ_in_archive(civ, user)
    elif len(parts) == 6 and parts[0] == "images" and is_uuid(parts[3]):
        img = st.image(norm_uuid(parts[3]))
        allowed = (
            img is not None
            and img.file_pk == parts[4]
            and img.file_name == parts[5]
            and ctx.visibility.image(img, user)
        )
    if not allowed:
        if user is None:
            return detail(401, MSG_NO_CREDENTIALS)
        return not_found_page()
    expires = int(ctx.now() + ctx.config.presign_expiry_seconds)
    location = ctx.signer.object_url(ctx.base_url, key, expires)
    return Response(302, (("Location", location), ("Content-Type", _HTML)), b"")
