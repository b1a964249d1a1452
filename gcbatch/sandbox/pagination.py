"""DRF's LimitOffsetPagination: ``limit``/``offset`` in, ``count/next/previous/results`` out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from gcbatch.sandbox.config import SandboxConfig
from gcbatch.sandbox.http import Request, Response
from gcbatch.sandbox.responses import json_response


def page_params(req: Request, config: SandboxConfig) -> tuple[int, int]:
    """(limit, offset) asked for; a bad or missing value falls back silently, as in DRF."""
    limit = config.page_size
    raw = req.query.get("limit")
    if raw:
        try:
            value = int(raw[-1])
            if value > 0:
                limit = min(value, config.max_page_size)
        except ValueError:
            pass
    offset = 0
    raw = req.query.get("offset")
    if raw:
        try:
            value = int(raw[-1])
            if value >= 0:
                offset = value
        except ValueError:
            pass
    return limit, offset


def page(
    req: Request,
    count: int,
    results: list[Any],
    limit: int,
    offset: int,
    allow: str | None,
) -> Response:
    """One page of ``count`` results, with links to its neighbours."""

    def link(new_offset: int | None) -> str:
        query: dict[str, list[str]] = {k: list(v) for k, v in req.query.items()}
        query["limit"] = [str(limit)]
        if new_offset is None:
            query.pop("offset", None)
        else:
            query["offset"] = [str(new_offset)]
        return f"{req.base_url}{req.path}?{urlencode(sorted(query.items()), doseq=True)}"

    nxt = None if offset + limit >= count else link(offset + limit)
    if offset <= 0:
        prev = None
    elif offset - limit <= 0:
        prev = link(None)
    else:
        prev = link(offset - limit)
    return json_response(
        200, {"count": count, "next": nxt, "previous": prev, "results": results}, allow=allow
    )


def paginate(
    req: Request, config: SandboxConfig, items: Sequence[Any], allow: str | None
) -> Response:
    """The asked-for page of ``items`` (all in memory: the seed's short lists)."""
    limit, offset = page_params(req, config)
    return page(req, len(items), list(items[offset : offset + limit]), limit, offset, allow)
