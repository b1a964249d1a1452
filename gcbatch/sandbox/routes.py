"""The sandbox's map of the API: which handler answers which method on which URL.

Routes are tried in order; the first whose pattern matches the whole path and whose
methods include the request's wins. A pattern is a regular expression in which
``{name}`` stands for one path segment — possibly empty, as in the platform
(``algorithms//`` asks for an algorithm with an empty pk: not found) — and
``{name:path}`` for the rest of the path, slashes included; each is passed to the
handler as a keyword argument.

When routes match the path but none takes the method, the answer is a 405 with the
first one's ``Allow`` (DRF); when none matches, Django's 404 page. ``READ`` routes also
answer HEAD (the body is dropped) and OPTIONS (DRF's metadata answer, which the sandbox
leaves empty: ``{}`` and the ``Allow`` header). ``allow`` is what those answers and the
handler's own carry in their ``Allow`` header.

Every route but the ``bare`` ones runs in the API pipeline (``SandboxApp``): the token
is checked, the request is one transaction in which due jobs advance first, and a HEAD
answer loses its body. ``bare`` routes (storage and the admin door) get the request as
it is: no token, their own transactions.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from gcbatch.sandbox.handlers import (
    admin,
    algorithms,
    archives,
    common,
    gcapi,
    images,
    jobs,
    multipart,
    sockets,
    storage,
    uploads,
)
from gcbatch.sandbox.http import Response
from gcbatch.sandbox.responses import (
    ALLOW_ITEM,
    ALLOW_LIST_RO,
    ALLOW_LIST_RW,
    ALLOW_MEDIA,
    ALLOW_PATCH,
)
from gcbatch.sandbox.urls import API

# Called as handler(ctx, **path parameters); tests/sandbox/test_routes.py checks that
# each handler's parameters are its pattern's.
Handler = Callable[..., Response]

# Method sets of the table. READ adds OPTIONS, which the app answers itself.
GET: Final = ("GET",)
GET_HEAD: Final = ("GET", "HEAD")
READ: Final = ("GET", "HEAD", "OPTIONS")
POST: Final = ("POST",)
PUT: Final = ("PUT",)
PATCH: Final = ("PATCH",)
EDIT: Final = ("PUT", "PATCH", "DELETE")
ANY: Final = ("*",)

_PARAM = re.compile(r"\{(\w+)(:path)?\}")
_SPECIAL = re.compile(r"[{(.\[\\^$|*?+]")


def _compile(pattern: str) -> re.Pattern[str]:
    def group(m: re.Match[str]) -> str:
        return f"(?P<{m.group(1)}>{'.*' if m.group(2) else '[^/]*'})"

    return re.compile(_PARAM.sub(group, pattern), re.DOTALL)


def _literal_prefix(pattern: str) -> str:
    """The plain text every matching path starts with (a quantifier takes the character
    before it along)."""
    special = _SPECIAL.search(pattern)
    if special is None:
        return pattern
    end = special.start()
    if special.group() in "*?+":
        end -= 1
    return pattern[:end]


@dataclass(frozen=True)
class Route:
    """One row of the table; the pattern is compiled once, here."""

    methods: tuple[str, ...]  # the methods served (``ANY``: every one)
    pattern: str
    handler: Handler
    allow: str | None = None  # the ``Allow`` header of this URL's answers
    bare: bool = False  # outside the API pipeline (no token, no shared transaction)
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)
    # Checked before the regex: a cheap way past most routes (this runs per request).
    prefix: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", _compile(self.pattern))
        object.__setattr__(self, "prefix", _literal_prefix(self.pattern))

    def takes(self, method: str) -> bool:
        return method in self.methods or self.methods == ANY


class Match(NamedTuple):
    route: Route
    params: dict[str, str]
    allowed: bool  # False: the URL is served, but not with this method (405)


def resolve(method: str, path: str, routes: tuple[Route, ...]) -> Match | None:
    """The route for ``method`` on ``path`` (see the module docstring); None: no route
    serves ``path`` at all."""
    refused: Route | None = None
    for route in routes:
        if not path.startswith(route.prefix):
            continue
        m = route.regex.fullmatch(path)
        if m is None:
            continue
        if route.takes(method):
            return Match(route, m.groupdict(), True)
        if refused is None:
            refused = route
    return None if refused is None else Match(refused, {}, False)


# Any API path without its final slash (and, as in the original router, the bare root).
_API_NO_SLASH = API + "(?:.*[^/])?"
_UPLOAD = API + "uploads/{pk}/{s3_id}/"

ROUTES: tuple[Route, ...] = (
    # -- the API ----------------------------------------------------------------------------
    Route(ANY, _API_NO_SLASH, common.append_slash),
    Route(READ, API + "gcapi/", gcapi.versions, ALLOW_LIST_RO),
    Route(READ, API + "algorithms/", algorithms.listing, ALLOW_LIST_RO),
    Route(POST, API + "algorithms/jobs/", jobs.create, ALLOW_LIST_RW),
    Route(READ, API + "algorithms/jobs/", jobs.listing, ALLOW_LIST_RW),
    Route(EDIT, API + "algorithms/jobs/{pk}/", common.refuse_write, ALLOW_LIST_RO),
    Route(READ, API + "algorithms/jobs/{pk}/", jobs.retrieve, ALLOW_LIST_RO),
    Route(READ, API + "algorithms/images/", algorithms.images, ALLOW_LIST_RO),
    Route(READ, API + "algorithms/images/{pk}/", algorithms.image_detail, ALLOW_LIST_RO),
    Route(READ, API + "algorithms/{pk}/", algorithms.retrieve, ALLOW_LIST_RO),
    Route(READ, API + "components/interfaces/", sockets.listing, ALLOW_LIST_RO),
    Route(READ, API + "components/interfaces/{pk}/", sockets.retrieve, ALLOW_LIST_RO),
    Route(POST, API + "uploads/", uploads.create, ALLOW_LIST_RW),
    Route(READ, API + "uploads/", uploads.listing, ALLOW_LIST_RW),
    Route(READ, API + "uploads/{pk}/", uploads.retrieve, ALLOW_LIST_RO),
    Route(READ, _UPLOAD + "list-parts/", multipart.list_parts, ALLOW_LIST_RO),
    Route(PATCH, _UPLOAD + "generate-presigned-urls/", multipart.presign, ALLOW_PATCH),
    Route(PATCH, _UPLOAD + "complete-multipart-upload/", multipart.complete, ALLOW_PATCH),
    Route(PATCH, _UPLOAD + "abort-multipart-upload/", multipart.abort, ALLOW_PATCH),
    Route(READ, API + "cases/images/", images.listing, ALLOW_LIST_RO),
    Route(READ, API + "cases/images/{pk}/", images.retrieve, ALLOW_LIST_RO),
    Route(READ, API + "archives/", archives.listing, ALLOW_LIST_RO),
    Route(POST, API + "archives/items/", common.refuse_write, ALLOW_LIST_RW),
    Route(READ, API + "archives/items/", archives.items, ALLOW_LIST_RW),
    Route(EDIT, API + "archives/items/{pk}/", common.refuse_write, ALLOW_ITEM),
    Route(READ, API + "archives/items/{pk}/", archives.item, ALLOW_ITEM),
    Route(READ, API + "archives/{pk}/", archives.retrieve, ALLOW_LIST_RO),
    # -- file links in API answers: checked here, then redirected to signed storage -------
    Route(GET_HEAD, "/media/{key:path}", storage.media, ALLOW_MEDIA),
    # -- storage: no token, the signature is the permission; S3's answers ------------------
    Route(PUT, "/_storage/uploads/{upload:path}", storage.put_part, bare=True),
    Route(GET_HEAD, "/_storage/protected/{key:path}", storage.get_object, bare=True),
    Route(GET_HEAD, "/_storage/{key:path}", storage.no_such_key, bare=True),
    Route(ANY, "/_storage/{key:path}", storage.method_not_allowed, bare=True),
    # -- the operator's door: no token; a trailing slash or several are fine ---------------
    Route(GET, "/_sandbox/stats/*", admin.stats, bare=True),
    Route(GET, "/_sandbox/requests/*", admin.requests, bare=True),
    Route(GET, "/_sandbox/config/*", admin.show_config, bare=True),
    Route(POST, "/_sandbox/config/*", admin.change_config, bare=True),
    Route(POST, "/_sandbox/history/*", admin.add_history, bare=True),
    Route(ANY, "/_sandbox/{rest:path}", admin.not_found, bare=True),
)
