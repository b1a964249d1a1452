"""Images (``cases/images/``): the user's own (made from uploads or output by their jobs),
the images of jobs they ran, and those in archives they may see."""

from __future__ import annotations

from gcbatch.sandbox.context import Ctx
from gcbatch.sandbox.http import Response
from gcbatch.sandbox.ids import is_uuid, model_choices, norm_uuid
from gcbatch.sandbox.pagination import page, page_params
from gcbatch.sandbox.responses import detail, json_response


def listing(ctx: Ctx) -> Response:
    req, user = ctx.req, ctx.user
    limit, offset = page_params(req, ctx.config)
    if user is None:
        return page(req, 0, [], limit, offset, ctx.allow)
    # Outputs are made lazily; an image a job output must exist before it can be listed.
    ctx.outputs.ensure_for_user(user)
    name = req.query.get("name")
    # The three filters are django-filter model choices on all jobs / all archives, not
    # only those the user may see (a pk that names nothing is a 400, not an empty page).
    found: dict[str, list[str]] = {}
    errors: dict[str, list[str]] = {}
    for param in ("job_input", "job_output"):
        pks, error = model_choices(
            req.query.get(param, ()), lambda pk: ctx.store.job(pk) is not None
        )
        if error is not None:
            errors[param] = [error]
        found[param] = pks
    among: list[str] | None = None
    if "archive" in req.query:
        pks, error = model_choices(
            req.query["archive"], lambda pk: ctx.seed.archive(pk) is not None
        )
        if error is not None:
            errors["archive"] = [error]
        among = []
        for pk in pks:
            archive = ctx.seed.archive(pk)
            assert archive is not None
            among.extend(v.image.pk for i in archive.items for v in i.values if v.image)
    if errors:
        return json_response(400, errors, allow=ctx.allow)
    count, rows = ctx.store.list_images(
        user.name,
        ctx.visibility.seed_image_pks(user),
        name=name[-1] if name and name[-1] else None,
        job_inputs=found["job_input"],
        job_outputs=found["job_output"],
        among=among,
        limit=limit,
        offset=offset,
        dicom=[(key, uids[-1]) for key in ("study_instance_uid", "series_instance_uid")
               if (uids := req.query.get(key)) and uids[-1]],
    )
    return page(
        req, count, [ctx.render.image(ctx.base_url, r) for r in rows], limit, offset, ctx.allow
    )


def retrieve(ctx: Ctx, pk: str) -> Response:
    if not is_uuid(pk):
        return detail(404, "Not found.", allow=ctx.allow)
    img = ctx.store.image(norm_uuid(pk))
    if img is None or not ctx.visibility.image(img, ctx.user):
        return detail(404, "No Image matches the given query.", allow=ctx.allow)
    return json_response(200, ctx.render.image(ctx.base_url, img), allow=ctx.allow)
