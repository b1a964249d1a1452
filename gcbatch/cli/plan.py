"""``gcbatch plan MANIFEST``: what apply would do, case by case, with the reason.

The command is built around one core function, :func:`compute_plan`, which takes the
manifest, the lockfile path and optionally what the server said (a
:class:`~gcbatch.plan.ServerView` and the archives' items). Offline (this module as it
stands) it is called without them: archive generators show as "needs server", and job
statuses are the lockfile's last seen ones. An online plan gathers the server's view first
and calls the same function.

Output: the plan on stdout (text, or JSON with ``--json``); hashing statistics on stderr.
``--detailed-exitcode``: 0 when there is nothing to do, 3 when apply would change something
(or, offline, cannot tell: archive generators, in-doubt cases).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import click

from gcbatch import lockfile as lockfile_mod
from gcbatch.admission import Forecast, forecast
from gcbatch.cli.common import (
    ConnectionOptions,
    Targeting,
    connection_options,
    json_option,
    manifest_argument,
    target_options,
)
from gcbatch.errors import EXIT_CHANGES, EXIT_OK
from gcbatch.hashing import FileHasher, HashStats, default_cache_path
from gcbatch.lockfile import Lockfile
from gcbatch.manifest import Manifest, load_manifest
from gcbatch.plan import Plan, ServerView, make_plan, settled_fingerprints
from gcbatch.report import dumps_json, render_plan, use_color
from gcbatch.sources import ArchiveItemLike, Expansion, expand


@dataclass(frozen=True)
class PlanResult:
    plan: Plan
    manifest: Manifest
    expansion: Expansion
    lockfile_path: Path
    lockfile: Lockfile | None
    hash_stats: HashStats


def compute_plan(
    manifest_path: Path,
    *,
    lockfile_path: Path | None = None,
    server: str | None = None,
    server_view: ServerView | None = None,
    archive_items: Mapping[str, Sequence[ArchiveItemLike]] | None = None,
    targeting: Targeting | None = None,
    retry_failed: bool = False,
    hash_cache: bool = True,
) -> PlanResult:
    """Load, expand (hashing with the stat cache), read the lockfile, plan.

    ``server``: the server the lockfile must belong to (None: not checked).
    ``lockfile_path``: default ``<stem>.lock`` beside the manifest.
    Raises ManifestError / LockfileError (exit 2) before anything else happens.
    """
    manifest = load_manifest(manifest_path)
    path = lockfile_path or lockfile_mod.lockfile_path_for(manifest.path)
    lockfile = lockfile_mod.load(path, server=server, algorithm=manifest.algorithm)
    hasher = FileHasher(default_cache_path(manifest.path) if hash_cache else None)
    # cases still locked as they are come back as ids only (see expand's `settled`)
    settled = settled_fingerprints(
        lockfile, retry_failed=retry_failed,
        job_status=server_view.job_status if server_view is not None else None)
    expansion = expand(manifest, archive_items, hasher, settled=settled)
    hasher.save()
    cases = expansion.cases
    settled_ids: Sequence[str] = expansion.settled
    if targeting is not None and not targeting.everything:
        targeting.check_known(expansion.case_ids)
        cases = tuple(c for c in cases if targeting.matches(c.id))
        settled_ids = [cid for cid in settled_ids if targeting.matches(cid)]
        if lockfile is not None:
            lockfile = replace(lockfile, cases={k: v for k, v in lockfile.cases.items()
                                                if targeting.matches(k)})
    plan = make_plan(cases, lockfile, server_view, algorithm=manifest.algorithm,
                     needs_server=expansion.needs_server, retry_failed=retry_failed,
                     settled=settled_ids)
    return PlanResult(plan, manifest, expansion, path, lockfile, hasher.stats)


def offline_server(connection: ConnectionOptions, manifest: Path) -> str:
    """The server a lockfile must belong to, resolved without any request."""
    if connection.sandbox:
        from gcbatch.session import SANDBOX_URL

        return SANDBOX_URL
    from gcbatch.manifest import parse_manifest
    from gcbatch.settings import resolve_server

    parsed, _ = parse_manifest(manifest)  # errors are reported by compute_plan
    return resolve_server(connection.server, manifest_server=parsed.server if parsed else None)


def lockfile_for(connection: ConnectionOptions, manifest: Path) -> Path:
    if connection.lockfile is not None:
        return connection.lockfile
    return lockfile_mod.lockfile_path_for(manifest, sandbox=connection.sandbox)


def emit(result: PlanResult, *, as_json: bool, extra: Mapping[str, object] | None = None,
         extra_text: str = "") -> None:
    """The plan to stdout; hashing statistics to stderr. ``extra``/``extra_text``: what an
    online plan adds (server, quota forecast) to the JSON / after the text."""
    stats = result.hash_stats
    if as_json:
        data = result.plan.as_json()
        data["lockfile"] = str(result.lockfile_path)
        data["hashing"] = stats.as_json()
        data.update(extra or {})
        click.echo(dumps_json(data))
        return
    click.echo(render_plan(result.plan, color=use_color()))
    if extra_text:
        click.echo(extra_text)
    if stats.hits or stats.misses:
        mib = stats.bytes_read / (1024 * 1024)
        click.echo(f"hashed {stats.files_read} file(s) ({mib:.1f} MiB read), "
                   f"{stats.hits} unchanged file(s) from the hash cache", err=True)


def wants_online(connection: ConnectionOptions, offline: bool) -> bool:
    """Online when asked for a server (``--sandbox``/``--server``) or a token is at hand;
    ``--offline`` forces the offline plan. Without a token the server shows too little."""
    if offline:
        return False
    if connection.sandbox or connection.server or connection.token_file is not None:
        return True
    from gcbatch.settings import TOKEN_ENV

    return bool(os.environ.get(TOKEN_ENV, "").strip())


def online_plan(
    manifest_path: Path,
    connection: ConnectionOptions,
    targeting: Targeting,
    *,
    max_active: int = 16,
) -> tuple[PlanResult, Forecast, str]:
    """The offline plan plus the server's view (GETs only): archive generators expanded,
    job statuses of locked cases from one list request, every case checked against the
    algorithm's interfaces and socket kinds (failures show as ``! blocked``), and a quota
    forecast. Returns (result, forecast, server URL)."""
    from gcbatch.preflight import blocked_cases, fetch_online_view
    from gcbatch.session import connect

    loaded = load_manifest(manifest_path)
    lock_path = lockfile_for(connection, manifest_path)
    with connect(connection, manifest_path, manifest_server=loaded.server) as session:
        # a corrupt or foreign lockfile stops us before the first request
        locked = lockfile_mod.load(lock_path, server=session.server, algorithm=loaded.algorithm)
        pks = [e.job.pk for e in locked.cases.values() if e.job] if locked else []
        view = fetch_online_view(session.client, loaded, pks)
        server_view = ServerView(interfaces=view.algorithm.input_sets, job_status=view.job_status)
        result = compute_plan(manifest_path, lockfile_path=lock_path, server=session.server,
                              server_view=server_view, archive_items=view.archive_items,
                              targeting=targeting)
        # settled cases (unchanged, so never blocked) have no Case to check
        cases = [c for c in result.expansion.cases if targeting.matches(c.id)]
        blocked = blocked_cases(cases, view, client=session.client)
        if blocked:
            settled = [cid for cid in result.expansion.settled if targeting.matches(cid)]
            new_plan = make_plan(cases, result.lockfile, replace(server_view, blocked=blocked),
                                 algorithm=loaded.algorithm,
                                 needs_server=result.expansion.needs_server, settled=settled)
            result = replace(result, plan=new_plan)
        server = session.server
    counts = result.plan.count()
    jobs = counts["submit"] + counts["retry_failed"] + counts["in_doubt"]
    outlook = forecast(jobs, max_active=max_active, already_active=view.active_jobs,
                       average_duration=view.algorithm.average_duration)
    return result, outlook, server


@click.command()
@manifest_argument
@connection_options
@json_option
@target_options
@click.option("--detailed-exitcode", is_flag=True, default=False,
              help="Exit 0 when there is nothing to do, 3 when apply would change something.")
@click.option("--offline", is_flag=True, default=False,
              help="Do not ask the server (no token needed): lockfile statuses, archive "
              "generators not expanded, no interface check.")
def plan(
    manifest: Path,
    connection: ConnectionOptions,
    as_json: bool,
    targeting: Targeting,
    detailed_exitcode: bool,
    offline: bool,
) -> int:
    """Show what apply would do, case by case: + submit, ~ resubmit (which inputs
    changed), = unchanged, - orphan, ? in doubt, ! blocked, … needs server.

    Online (with a token, --server or --sandbox) it also asks the server, with GETs only:
    current job statuses, archive generators, the interface and socket-kind check, and a
    quota forecast. Offline (--offline, or no token): the manifest, the input files
    (hashes are cached) and the lockfile only.
    """
    if wants_online(connection, offline):
        result, outlook, server = online_plan(manifest, connection, targeting)
        emit(result, as_json=as_json,
             extra={"server": server, "online": True, "forecast": {
                 "jobs": outlook.jobs, "max_active": outlook.limit,
                 "already_active": outlook.already_active, "waves": outlook.waves,
                 "makespan_seconds": outlook.makespan, "note": outlook.note}},
             extra_text=outlook.render())
    else:
        result = compute_plan(
            manifest,
            lockfile_path=lockfile_for(connection, manifest),
            server=offline_server(connection, manifest),
            targeting=targeting,
        )
        emit(result, as_json=as_json, extra={"online": False})
        if not offline and not as_json:
            click.echo("offline plan: no API token (set GRAND_CHALLENGE_AUTHORIZATION, or "
                       "use --sandbox) so the server was not asked", err=True)
    if detailed_exitcode and result.plan.has_changes:
        return EXIT_CHANGES
    return EXIT_OK


COMMANDS = [plan]
