"""Sockets, which the API calls component interfaces (``components/interfaces/``)."""

from __future__ import annotations

from gcbatch.sandbox.context import Ctx
from gcbatch.sandbox.http import Response
from gcbatch.sandbox.pagination import paginate
from gcbatch.sandbox.responses import detail, json_response


def listing(ctx: Ctx) -> Response:
    slug = ctx.req.first("slug")
    sockets = [s for s in ctx.seed.sockets if not slug or s.slug == slug]
    sockets.sort(key=lambda s: s.pk)
    return paginate(ctx.req, ctx.config, [ctx.render.sockets[s.slug] for s in sockets], ctx.allow)


def retrieve(ctx: Ctx, pk: str) -> Response:
    socket = ctx.seed.socket_by_pk(int(pk)) if pk.isdigit() else None
    if socket is None:
        return detail(
            404,
            "No ComponentInterface matches the given query." if pk.isdigit() else "Not found.",
            allow=ctx.allow,
        )
    return json_response(200, ctx.render.sockets[socket.slug], allow=ctx.allow)
