"""The operator's door, ``/_sandbox/...``: counts, the request log, the settings.

No token (a sandbox is local and its data is test data); every other path below
``/_sandbox/`` is a JSON 404 — including ``faults``, which the transports answer before
a request reaches the app.
"""

from __future__ import annotations

import json
from typing import Any

from gcbatch.sandbox.config import MONTH_SECONDS, SandboxConfig
from gcbatch.sandbox.context import Ctx, World
from gcbatch.sandbox.http import Response
from gcbatch.sandbox.responses import json_response

#: the per-user counters of GET /_sandbox/stats (and its totals)
_STAT_KEYS = ("jobs", "active_jobs", "uploads_live", "uploads_total", "credits_used")


def collect_stats(world: World, config: SandboxConfig) -> dict[str, Any]:
    """Per-user and total counts (jobs, active jobs, uploads, credits this month)."""
    now = world.clock()
    store = world.store
    with store.transaction():
        world.jobs.advance(now, config)

        def zero() -> dict[str, int]:
            return dict.fromkeys(_STAT_KEYS, 0)

        users: dict[str, dict[str, int]] = {u.name: zero() for u in world.seed.users}
        for name, jobs, active, _ in store.job_stats():
            entry = users.setdefault(name, zero())
            entry["jobs"] = jobs
            entry["active_jobs"] = active
        for name, live, total in store.upload_stats():
            entry = users.setdefault(name, zero())
            entry["uploads_live"] = live
            entry["uploads_total"] = total
        for name, entry in users.items():
            entry["credits_used"] = store.credits_used(name, now - MONTH_SECONDS)
        statuses = store.status_counts()
    totals = {key: sum(u[key] for u in users.values()) for key in _STAT_KEYS}
    totals["requests"] = world.log.last
    return {"users": users, "totals": totals, "statuses": statuses}


def stats(ctx: Ctx) -> Response:
    return json_response(200, collect_stats(ctx.world, ctx.config))


def requests(ctx: Ctx) -> Response:
    raw = ctx.req.first("since") or "0"
    since = int(raw) if raw.lstrip("-").isdigit() else 0
    entries = ctx.world.log.since(since)
    return json_response(200, {"requests": entries, "last": ctx.world.log.last})


def show_config(ctx: Ctx) -> Response:
    return json_response(200, {"config": ctx.config.as_dict()})


def change_config(ctx: Ctx) -> Response:
    """Change settings (``{"max_active_jobs": 2}``); ``reset_credits`` (true or a user
    name) forgets the credits spent so far."""
    try:
        body = json.loads(ctx.req.body.decode("utf-8") or "{}")
    except (UnicodeDecodeError, ValueError):
        return json_response(400, {"detail": "body must be a JSON object"})
    if not isinstance(body, dict):
        return json_response(400, {"detail": "body must be a JSON object"})
    reset = body.pop("reset_credits", None)
    try:
        new = ctx.config.with_mapping(body)
    except ValueError as exc:
        return json_response(400, {"detail": str(exc)})
    if reset is not None:
        if reset is not True and not isinstance(reset, str):
            return json_response(400, {"detail": "reset_credits must be true or a user name"})
        with ctx.store.transaction():
            ctx.store.reset_credits(None if reset is True else reset)
    ctx.world.settings.config = new
    return json_response(200, {"config": new.as_dict()})


#: at most this many history jobs per call (a million is a few hundred MB of database)
HISTORY_MAX = 1_000_000


def add_history(ctx: Ctx) -> Response:
    """``{"user": "demo", "algorithm": "<slug>", "jobs": 100000}``: that many ended jobs
    of the user on the algorithm, dated a month ago (no inputs, no outputs, no credits):
    the long history a real account has. The list is ordered by creation, so they go
    where the list ends now: add them before a study's jobs are made. Seconds for
    100,000, where making them through the API would take minutes."""
    try:
        body = json.loads(ctx.req.body.decode("utf-8") or "{}")
    except (UnicodeDecodeError, ValueError):
        body = None
    if not isinstance(body, dict):
        return json_response(400, {"detail": "body must be a JSON object"})
    user, slug, count = body.get("user", "demo"), body.get("algorithm"), body.get("jobs")
    status = body.get("status", "Succeeded")
    if (not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= HISTORY_MAX
            or not isinstance(user, str) or not isinstance(slug, str)
            or status not in ("Succeeded", "Failed", "Cancelled")):
        return json_response(400, {"detail": "expected {\"user\": str, \"algorithm\": slug, "
                                             f"\"jobs\": 0..{HISTORY_MAX}, \"status\": "
                                             "Succeeded|Failed|Cancelled}"})
    if not any(u.name == user for u in ctx.world.seed.users):
        return json_response(400, {"detail": f"no user {user!r} in the seed"})
    if ctx.world.seed.algorithm_by_slug(slug) is None:
        return json_response(400, {"detail": f"no algorithm {slug!r} in the seed"})
    pks = [ctx.world.ids.new() for _ in range(count)]
    with ctx.store.transaction():
        ctx.store.insert_history(pks, user=user, algorithm=slug,
                                 created=ctx.world.clock() - MONTH_SECONDS, status=status)
    return json_response(200, {"added": count, "user": user, "algorithm": slug})


def not_found(ctx: Ctx, rest: str) -> Response:
    return json_response(404, {"detail": "Not found."})
