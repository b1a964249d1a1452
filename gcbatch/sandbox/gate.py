"""What the HTTP server may refuse on a request's head, before it reads the body.

A sandbox on a workstation must not buffer a gigabyte for a client that has no right to
send it. The platform decides several things before it parses a body (Django REST
framework authenticates first; S3 checks a presigned URL's signature first), so the same
answers can be given on the head alone, and the body never read:

- an API request with a token that is no user's: 401, exactly the app's answer;
- an API request without a token whose body is large (more than :data:`ANONYMOUS_BODY`,
  or chunked, of unknown size): 401 "Authentication credentials were not provided.",
  the answer of every endpoint that takes a body (a small anonymous body is read and the
  app answers it as always, so the platform's answers to those stay word for word);
- a storage part PUT whose presigned URL is malformed, forged or expired: S3's 403.

Only :mod:`gcbatch.sandbox.server` (real sockets) asks; the in-process transport has no
body to spare and goes straight to the app.
"""

from __future__ import annotations

from gcbatch.sandbox.config import SandboxConfig
from gcbatch.sandbox.context import World
from gcbatch.sandbox.http import Request, Response
from gcbatch.sandbox.ids import is_uuid
from gcbatch.sandbox.responses import MSG_NO_CREDENTIALS, detail, s3_error
from gcbatch.sandbox.signing import part_message

__all__ = ["ANONYMOUS_BODY", "head_refusal"]

#: the largest body read from a client without a token (an anonymous POST's JSON)
ANONYMOUS_BODY = 64 * 1024
_API = "/api/"
_PARTS = "/_storage/uploads/"


def head_refusal(world: World, config: SandboxConfig, request: Request,
                 body_size: int | None, auth_error: Response | None) -> Response | None:
    """The answer refusing ``request`` (its body not read; ``body_size`` None when
    chunked) or None to read the body. ``auth_error``: the app's answer to its token."""
    if request.path.startswith(_API):
        if auth_error is not None:
            return auth_error
        has_body = body_size is None or body_size > 0
        if (has_body and "authorization" not in request.headers
                and (body_size is None or body_size > ANONYMOUS_BODY)):
            return detail(401, MSG_NO_CREDENTIALS)
        return None
    if request.method == "PUT" and request.path.startswith(_PARTS):
        return _part_refusal(world, config, request)
    return None


def _part_refusal(world: World, config: SandboxConfig, request: Request) -> Response | None:
    """What ``storage.put_part`` answers before it looks at the bytes, in its order."""
    if config.storage_rejects_authorization and "authorization" in request.headers:
        return None  # the handler's S3 400 comes first; its body is a part's, not large
    upload = request.path[len(_PARTS):]
    s3_id = request.first("uploadId") or ""
    number = request.first("partNumber") or ""
    expires = request.first("X-Sandbox-Expires") or ""
    signature = request.first("X-Sandbox-Signature") or ""
    if not (number.isdigit() and expires.isdigit() and is_uuid(upload)):
        return s3_error(403, "AccessDenied", "Invalid presigned URL")
    if not world.signer.valid(part_message(upload, s3_id, int(number), expires), signature):
        return s3_error(403, "SignatureDoesNotMatch", "The request signature we calculated "
                        "does not match the signature you provided.")
    if int(expires) < world.clock():
        return s3_error(403, "AccessDenied", "Request has expired")
    return None
