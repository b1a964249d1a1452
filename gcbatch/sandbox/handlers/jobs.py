"""Algorithm jobs (``algorithms/jobs/``): list, retrieve, create.

Creating follows the platform's serializer step by step, because clients see the
order: field errors (the algorithm, then each input on its own, all reported together),
then the object-level checks — image ready, credits, active jobs, an interface matching
the inputs exactly, and the duplicate check — each answered alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gcbatch.sandbox import lifecycle as lc
from gcbatch.sandbox.config import MONTH_SECONDS
from gcbatch.sandbox.context import Ctx
from gcbatch.sandbox.handlers.job_inputs import (
    ParsedInput,
    existing_civ,
    interfaces_message,
    parse_input,
)
from gcbatch.sandbox.http import Response
from gcbatch.sandbox.ids import is_uuid, model_choices, norm_uuid
from gcbatch.sandbox.pagination import page, page_params
from gcbatch.sandbox.parsing import json_object_body, type_name
from gcbatch.sandbox.responses import (
    MSG_NO_CREDENTIALS,
    MSG_NO_OBJECT,
    MSG_NULL,
    MSG_REQUIRED,
    commit_hold,
    detail,
    json_response,
    unseen_since,
)
from gcbatch.sandbox.seed import Algorithm
from gcbatch.sandbox.store import JobRow, input_key
from gcbatch.sandbox.urls import hyperlink, image_url


def listing(ctx: Ctx) -> Response:
    req, user = ctx.req, ctx.user
    limit, offset = page_params(req, ctx.config)
    errors: dict[str, list[str]] = {}
    algorithm: str | None = None
    raw = req.query.get("algorithm_image__algorithm")
    if raw and raw[-1]:
        value = raw[-1]
        if not is_uuid(value):
            errors["algorithm_image__algorithm"] = [f"“{value}” is not a valid UUID."]
        else:
            alg = ctx.seed.algorithm(norm_uuid(value))
            if alg is None or not alg.visible_to(None if user is None else user.name):
                errors["algorithm_image__algorithm"] = [
                    "Select a valid choice. That choice is not one of the available choices."
                ]
            else:
                algorithm = alg.slug
    images: dict[str, list[str]] = {"input_image": [], "output_image": []}
    for param in images:
        pks, error = model_choices(req.query.get(param, ()), _image_exists(ctx))
        if error is not None:
            errors[param] = [error]
        images[param] = pks
    if errors:
        return json_response(400, errors, allow=ctx.allow)
    if user is None:
        return page(req, 0, [], limit, offset, ctx.allow)
    inputs = images["input_image"]
    outputs = images["output_image"]
    if outputs:
        ctx.outputs.ensure_for_user(user)
    # A multiple-choice filter matches jobs having ANY of the given images.
    count, rows = _filtered_jobs(ctx, user.name, algorithm, inputs, outputs, limit, offset)
    rows = ctx.outputs.ensure(rows)
    civs = ctx.store.jobs_civs([j.pk for j in rows])
    results = [ctx.render.job(ctx.base_url, j, civs) for j in rows]
    return page(req, count, results, limit, offset, ctx.allow)


def _image_exists(ctx: Ctx) -> Callable[[str], bool]:
    return lambda pk: ctx.store.image(pk) is not None


def _filtered_jobs(
    ctx: Ctx,
    user: str,
    algorithm: str | None,
    inputs: list[str],
    outputs: list[str],
    limit: int,
    offset: int,
) -> tuple[int, list[JobRow]]:
    st = ctx.store
    if len(inputs) <= 1 and len(outputs) <= 1:
        return st.list_jobs(
            user,
            algorithm=algorithm,
            input_images=inputs,
            output_image=outputs[0] if outputs else None,
            limit=limit,
            offset=offset,
        )
    # Several values: union per filter, then page in Python (rare; small sets).
    _, everything = st.list_jobs(
        user, algorithm=algorithm, input_images=[], output_image=None, limit=10**9, offset=0
    )

    def has(job: JobRow, role: str, wanted: list[str]) -> bool:
        if not wanted:
            return True
        return any(c.image in wanted for c in st.job_civs(job.pk, role))

    picked = [j for j in everything if has(j, "in", inputs) and has(j, "out", outputs)]
    return len(picked), picked[offset : offset + limit]


def retrieve(ctx: Ctx, pk: str) -> Response:
    if not is_uuid(pk):
        return detail(404, "Not found.", allow=ctx.allow)
    job = ctx.store.job(norm_uuid(pk))
    user = ctx.user
    if job is None or user is None or job.user != user.name:
        return detail(404, "No Job matches the given query.", allow=ctx.allow)
    job = ctx.outputs.ensure([job])[0]
    return json_response(200, ctx.render.job(ctx.base_url, job), allow=ctx.allow)


def create(ctx: Ctx) -> Response:
    allow = ctx.allow
    user = ctx.user
    if user is None:
        return detail(401, MSG_NO_CREDENTIALS, allow=allow)
    body = json_object_body(ctx.req, allow)
    cfg = ctx.config
    st = ctx.store
    errors: dict[str, Any] = {}

    # Field: algorithm.
    alg: Algorithm | None = None
    if "algorithm" not in body:
        errors["algorithm"] = [MSG_REQUIRED]
    elif body["algorithm"] is None:
        errors["algorithm"] = [MSG_NULL]
    else:
        pk, err = hyperlink(body["algorithm"], "algorithm")
        if err is None:
            assert pk is not None
            alg = ctx.seed.algorithm(pk)
            if alg is None or not alg.visible_to(user.name):
                err = MSG_NO_OBJECT
        if err is not None:
            alg = None
            errors["algorithm"] = [err]

    # Field: inputs (each validated on its own, DRF ListSerializer style).
    parsed: list[ParsedInput] = []
    if "inputs" not in body:
        errors["inputs"] = [MSG_REQUIRED]
    elif body["inputs"] is None:
        errors["inputs"] = [MSG_NULL]
    elif not isinstance(body["inputs"], list):
        errors["inputs"] = {
            "non_field_errors": [
                f'Expected a list of items but got type "{type_name(body["inputs"])}".'
            ]
        }
    else:
        item_errors: list[dict[str, Any]] = []
        for item in body["inputs"]:
            result, err_obj = parse_input(ctx, item, user)
            item_errors.append(err_obj)
            if result is not None:
                parsed.append(result)
        if any(item_errors):
            errors["inputs"] = item_errors
    if errors:
        return json_response(400, errors, allow=allow)
    assert alg is not None

    # Object-level checks, in the platform's order.
    def reject(message: str) -> Response:
        return json_response(400, {"non_field_errors": [message]}, allow=allow)

    if not alg.active_image or cfg.image_not_ready(alg.slug):
        return reject("Algorithm image is not ready to be used")
    now = ctx.now()
    cost = max(cfg.job_cost, alg.credits_per_job)
    limit = user.credits if user.credits is not None else cfg.credits_per_month
    active, used = st.admission(user.name, now - MONTH_SECONDS)
    if cfg.unlocked_checks:
        # The platform counts active jobs without a lock: jobs that requests in flight
        # with this one create are not committed yet when it counts (see config).
        active -= st.active_created_after(user.name, unseen_since(cfg, ctx.arrived, now))
    if used + cost > limit:
        return reject("You have run out of algorithm credits")
    if active >= cfg.max_active_jobs:
        return reject("You have too many active jobs, please try again after they have completed")
    given = {p.socket.slug for p in parsed}
    if len(given) != len(parsed) or not any(given == set(i.inputs) for i in alg.interfaces):
        return reject(interfaces_message(ctx.seed, alg))
    existing_only = all(p.source in ("value", "image") for p in parsed)
    found: list[int | None] = [
        existing_civ(st, p) if p.source in ("value", "image") else None for p in parsed
    ]
    if existing_only and cfg.dedup and all(c is not None for c in found):
        # Only when every input already exists can the platform match an earlier job
        # (status and creator do not matter).
        key = input_key([c for c in found if c is not None])
        if st.duplicate_exists(alg.slug, key):
            return reject(
                "A result for these inputs with the current image and model already exists."
            )

    # Create.
    job_pk = ctx.world.ids.new()
    shown: list[tuple[ParsedInput, int]] = []
    civs: list[int] = []
    pending: list[ParsedInput] = []
    for p, existing in zip(parsed, found, strict=True):
        if existing is not None:
            civ = existing
        elif p.source == "value":
            civ = st.insert_value_civ(p.socket.slug, p.value_json)
        elif p.source == "image":
            assert p.image is not None
            civ = st.image_civ(p.socket.slug, p.image)
        else:
            pending.append(p)
            continue
        civs.append(civ)
        shown.append((p, civ))
    # A job whose inputs all exist gets its duplicate-check key now; one with uploads
    # gets it when validation has turned them into inputs (jobrunner).
    key_now = input_key(civs) if existing_only else None
    schedule = lc.make_schedule(cfg)
    first_boundary = lc.boundaries(now, schedule)[0]
    ctx.world.jobs.note_due(first_boundary)
    st.insert_job(
        pk=job_pk,
        user=user.name,
        algorithm=alg.slug,
        created=now,
        next_at=first_boundary,
        schedule=schedule,
        outcome=lc.decide_outcome(alg, cfg, job_pk),
        input_key=key_now,
        cost=cost,
    )
    st.attach(job_pk, civs, "in")
    for p in pending:
        st.add_pending(job_pk, p.socket.slug, p.uploads, p.image_name)
    base = ctx.base_url
    return json_response(
        201,
        {
            "pk": job_pk,
            "inputs": [
                {
                    "interface": p.socket.slug,
                    "value": p.value if p.source == "value" else None,
                    "file": None,
                    "image": image_url(base, p.image)
                    if p.source == "image" and p.image is not None
                    else None,
                    "pk": civ,
                    "image_name": None,
                }
                for p, civ in shown
            ],
            "status": lc.VALIDATING,
        },
        allow=allow,
        extra=commit_hold(cfg),
    )
