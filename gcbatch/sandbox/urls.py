"""The API's URLs both ways: building the links answers carry, and reading the links
clients send back (DRF's hyperlinked fields)."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from gcbatch.sandbox.ids import is_uuid, norm_uuid
from gcbatch.sandbox.responses import MSG_NO_MATCH, MSG_WRONG_MATCH

API = "/api/v1/"


def algorithm_url(base: str, algorithm_pk: str) -> str:
    return f"{base}{API}algorithms/{algorithm_pk}/"


def image_url(base: str, image_pk: str) -> str:
    return f"{base}{API}cases/images/{image_pk}/"


def archive_url(base: str, archive_pk: str) -> str:
    return f"{base}{API}archives/{archive_pk}/"


def civ_file_url(base: str, civ_pk: int, file_name: str | None) -> str:
    """A file value's link: ``/media/`` answers it with a redirect to signed storage."""
    return (
        f"{base}/media/components/componentinterfacevalue/"
        f"{(civ_pk // 256) % 256:02x}/{civ_pk % 256:02x}/{civ_pk}/{file_name}"
    )


def image_file_url(base: str, image_pk: str, file_pk: str, file_name: str) -> str:
    return f"{base}/media/images/{image_pk[0:2]}/{image_pk[2:4]}/{image_pk}/{file_pk}/{file_name}"


# The route each hyperlinked field of a job POST expects.
_HYPERLINKS = {
    "algorithm": re.compile(r"^/api/v1/algorithms/(?P<pk>[^/.]+)/$"),
    "upload": re.compile(r"^/api/v1/uploads/(?P<pk>[^/.]+)/$"),
    "image": re.compile(r"^/api/v1/cases/images/(?P<pk>[^/.]+)/$"),
    "upload_session": re.compile(r"^/api/v1/cases/upload-sessions/(?P<pk>[^/.]+)/$"),
}


def hyperlink(data: object, kind: str) -> tuple[str | None, str | None]:
    """Resolve an API URL to the pk it names: (pk, None) or (None, error message).

    ``kind`` is the route the field expects: "algorithm", "upload", "image" or
    "upload_session". Like DRF, only the URL's path counts (any host)."""
    if not isinstance(data, str):
        return None, f"Incorrect type. Expected URL string, received {type(data).__name__}."
    path = urlsplit(data).path if data.startswith(("http://", "https://")) else data
    path = unquote(path)
    m = _HYPERLINKS[kind].match(path)
    # algorithms/jobs/ and algorithms/images/ are other views, not algorithm pks.
    if m is None or (kind == "algorithm" and m.group("pk") in ("jobs", "images")):
        if path.startswith(API) and path.endswith("/"):
            return None, MSG_WRONG_MATCH
        return None, MSG_NO_MATCH
    pk = m.group("pk")
    if not is_uuid(pk):
        return None, f"“{pk}” is not a valid UUID."
    return norm_uuid(pk), None
