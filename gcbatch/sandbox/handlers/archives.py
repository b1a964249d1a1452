"""Archives (``archives/``) and their items (``archives/items/``), read-only: both come
from the seed. Writing items is refused by the route table (``common.refuse_write``)."""

from __future__ import annotations

from gcbatch.sandbox.context import Ctx
from gcbatch.sandbox.http import Response
from gcbatch.sandbox.ids import is_uuid, norm_uuid
from gcbatch.sandbox.pagination import paginate
from gcbatch.sandbox.responses import detail, json_response


def listing(ctx: Ctx) -> Response:
    archives = ctx.visibility.archives(ctx.user)
    slug = ctx.req.first("slug")
    if slug:
        archives = [a for a in archives if a.slug == slug]
    archives.sort(key=lambda a: a.pk)
    return paginate(
        ctx.req, ctx.config, [ctx.render.archive(ctx.base_url, a) for a in archives], ctx.allow
    )


def retrieve(ctx: Ctx, pk: str) -> Response:
    archive = ctx.seed.archive(pk.lower()) if is_uuid(pk) else None
    if archive is None or archive not in ctx.visibility.archives(ctx.user):
        return detail(
            404,
            "No Archive matches the given query." if is_uuid(pk) else "Not found.",
            allow=ctx.allow,
        )
    return json_response(200, ctx.render.archive(ctx.base_url, archive), allow=ctx.allow)


def items(ctx: Ctx) -> Response:
    archives = ctx.visibility.archives(ctx.user)
    wanted = ctx.req.query.get("archive")
    if wanted:
        value = wanted[-1]
        if value:
            if not is_uuid(value):
                return json_response(
                    400, {"archive": [f"“{value}” is not a valid UUID."]}, allow=ctx.allow
                )
            archive = ctx.seed.archive(norm_uuid(value))
            if archive is None or archive not in archives:
                return json_response(
                    400,
                    {
                        "archive": [
                            "Select a valid choice. That choice is not one of the available choices."
                        ]
                    },
                    allow=ctx.allow,
                )
            archives = [archive]
    found = sorted(((a, i) for a in archives for i in a.items), key=lambda ai: ai[1].pk)
    return paginate(
        ctx.req,
        ctx.config,
        [ctx.render.item(ctx.base_url, a, i) for a, i in found],
        ctx.allow,
    )


def item(ctx: Ctx, pk: str) -> Response:
    if is_uuid(pk):
        pk = norm_uuid(pk)
        for archive in ctx.visibility.archives(ctx.user):
            for entry in archive.items:
                if entry.pk == pk:
                    return json_response(
                        200, ctx.render.item(ctx.base_url, archive, entry), allow=ctx.allow
                    )
        return detail(404, "No ArchiveItem matches the given query.", allow=ctx.allow)
    return detail(404, "Not found.", allow=ctx.allow)
