"""Answers that belong to no resource: a missing trailing slash, and writes the platform
refuses before any view runs."""

from __future__ import annotations

from urllib.parse import urlencode

from gcbatch.sandbox.context import Ctx
from gcbatch.sandbox.http import Response
from gcbatch.sandbox.responses import (
    MSG_NO_CREDENTIALS,
    MSG_PERMISSION,
    detail,
    not_found_page,
)


def append_slash(ctx: Ctx) -> Response:
    """Django's APPEND_SLASH for an API URL without its final slash: a GET (or HEAD) is
    redirected to the URL with it, query kept; any other method finds nothing."""
    req = ctx.req
    if req.method not in ("GET", "HEAD"):
        return not_found_page()
    query = urlencode([(k, v) for k, vs in req.query.items() for v in vs])
    location = f"{req.base_url}{req.path}/" + (f"?{query}" if query else "")
    return Response(301, (("Location", location),), b"")


def refuse_write(ctx: Ctx, **_: str) -> Response:
    """Creating or changing jobs and archive items is not emulated, and the platform's
    object permissions refuse a user without the model permission before any handler
    runs (capture 129): 403, not 405 — or 401 without a token."""
    if ctx.user is None:
        return detail(401, MSG_NO_CREDENTIALS, allow=ctx.allow)
    return detail(403, MSG_PERMISSION, allow=ctx.allow)
