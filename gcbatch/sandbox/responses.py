"""The shapes of the sandbox's answers: DRF's JSON errors, S3's XML errors, plain pages.

Every message here is the platform's, word for word (``tests/data/gc-observed/`` wins over
prose), because clients match on them. A handler that must stop early raises
:class:`HttpError` with the answer, which keeps validation code linear.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from gcbatch.sandbox.config import SandboxConfig
from gcbatch.sandbox.http import Response

# The ``Allow`` header of each kind of view (DRF lists the methods of the view class).
ALLOW_LIST_RO = "GET, HEAD, OPTIONS"
ALLOW_LIST_RW = "GET, POST, HEAD, OPTIONS"
ALLOW_ITEM = "GET, PUT, PATCH, HEAD, OPTIONS"
ALLOW_PATCH = "PATCH, OPTIONS"
ALLOW_MEDIA = "GET, HEAD"

MSG_REQUIRED = "This field is required."
MSG_NULL = "This field may not be null."
MSG_NO_MATCH = "Invalid hyperlink - No URL match."
MSG_WRONG_MATCH = "Invalid hyperlink - Incorrect URL match."
MSG_NO_OBJECT = "Invalid hyperlink - Object does not exist."
MSG_PERMISSION = "You do not have permission to perform this action."
MSG_NO_CREDENTIALS = "Authentication credentials were not provided."


class HttpError(Exception):
    """Raised inside a handler to answer with ``response`` (keeps handlers linear)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def _dumps(obj: Any) -> bytes:
    # DRF's JSONRenderer: compact separators, UTF-8 (not ASCII-escaped).
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def json_response(
    status: int, obj: Any, *, allow: str | None = None, extra: Sequence[tuple[str, str]] = ()
) -> Response:
    headers: list[tuple[str, str]] = [("Content-Type", "application/json")]
    if allow:
        headers.append(("Allow", allow))
    headers.extend(extra)
    return Response(status, tuple(headers), _dumps(obj))


def detail(status: int, message: str, *, allow: str | None = None) -> Response:
    """DRF's ``{"detail": message}``; a 401 also names the scheme, as DRF does."""
    extra: tuple[tuple[str, str], ...] = ()
    if status == 401:
        extra = (("WWW-Authenticate", "Bearer"),)
    return json_response(status, {"detail": message}, allow=allow, extra=extra)


def text_response(
    status: int, text: str, content_type: str = "text/plain; charset=utf-8"
) -> Response:
    return Response(status, (("Content-Type", content_type),), text.encode("utf-8"))


def not_found_page() -> Response:
    """Django's 404 for a URL no view serves (an HTML page, not JSON)."""
    return text_response(404, "Not Found", "text/html; charset=utf-8")


def method_not_allowed(method: str, allow: str | None) -> Response:
    return detail(405, f'Method "{method}" not allowed.', allow=allow)


def s3_error(status: int, code: str, message: str) -> Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return text_response(status, body, "application/xml")


def server_crash(path: str, exc_name: str, text: str) -> Response:
    """What the recorded platform answers for a failed S3 call: a plain-text 500."""
    return text_response(500, f"{exc_name} at {path}\n{text}\n")


#: An internal header: the app holds the answer this many seconds, outside the store's
#: lock, before sending it (and strips the header). See ``SandboxConfig.commit_seconds``.
HOLD_HEADER = "X-Sandbox-Hold"


def commit_hold(config: SandboxConfig) -> tuple[tuple[str, str], ...]:
    """The headers that make the app hold a creating POST's answer until its "commit"."""
    if config.unlocked_checks and config.commit_seconds > 0:
        return ((HOLD_HEADER, repr(float(config.commit_seconds))),)
    return ()


def unseen_since(config: SandboxConfig, arrived: float, now: float) -> float:
    """What an unlocked check cannot see: what was created after this (its arrival, or
    the last ``commit_seconds``: not committed yet)."""
    return min(arrived, now - config.commit_seconds)
