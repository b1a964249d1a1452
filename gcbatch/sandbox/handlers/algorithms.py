"""Algorithms (``algorithms/``) and their container images (``algorithms/images/``).

The platform shows an algorithm's images only to its editors (``view_algorithmimage`` is
given to the editors group alone), and even they see an ``import_status``, not whether
the image is the active one. The sandbox has no editors: every user gets what a user of
the algorithm gets, an empty list, and any one image is not found. Whether the image is
ready shows only at a job POST ("Algorithm image is not ready to be used", the first of
the object-level checks), so a POST with no inputs, which no interface can match, asks
it without making a job (see ``jobs.create``)."""

from __future__ import annotations

from gcbatch.sandbox.context import Ctx
from gcbatch.sandbox.http import Response
from gcbatch.sandbox.ids import is_uuid
from gcbatch.sandbox.pagination import paginate
from gcbatch.sandbox.responses import detail, json_response


def listing(ctx: Ctx) -> Response:
    algs = ctx.visibility.algorithms(ctx.user)
    slug = ctx.req.first("slug")
    if slug:
        algs = [a for a in algs if a.slug == slug]
    return paginate(
        ctx.req, ctx.config, [ctx.render.algorithm(ctx.base_url, a) for a in algs], ctx.allow
    )


def retrieve(ctx: Ctx, pk: str) -> Response:
    alg = ctx.seed.algorithm(pk.lower()) if is_uuid(pk) else None
    if alg is None or not alg.visible_to(None if ctx.user is None else ctx.user.name):
        return detail(
            404,
            "No Algorithm matches the given query." if is_uuid(pk) else "Not found.",
            allow=ctx.allow,
        )
    return json_response(200, ctx.render.algorithm(ctx.base_url, alg), allow=ctx.allow)


def images(ctx: Ctx) -> Response:
    return paginate(ctx.req, ctx.config, [], ctx.allow)


def image_detail(ctx: Ctx, pk: str) -> Response:
    return detail(404, "Not found.", allow=ctx.allow)
