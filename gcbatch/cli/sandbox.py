"""``gcbatch sandbox serve``, ``inspect`` and ``seed``: the emulator for humans.

``serve`` runs the Grand Challenge emulator on a port until Ctrl-C; ``inspect`` reads
what a running sandbox holds and what requests it saw (its ``/_sandbox/`` endpoints, which
need the admin token ``serve`` prints, or sets from ``GCBATCH_SANDBOX_ADMIN_TOKEN``);
``seed`` writes a world for ``--sandbox`` derived from a manifest.

``serve`` on an address other than loopback says loudly that the sandbox (its test
tokens, its data) is then open to the network, and its banner shows the address it
really listens on.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import click

from gcbatch.api.trust import Trust, certificate_advice, resolve_trust, ssl_context, tls_failure
from gcbatch.cli.sandbox_seed import seed_command
from gcbatch.errors import (
    CertificateError,
    ConfigError,
    GcbatchError,
    TransportError,
)
from gcbatch.views.inspection import render_stats, request_rows, table

__all__ = ["COMMANDS"]

# --job-duration spreads a job's life over its statuses in these proportions (the
# defaults of SandboxConfig: 1 s validating, 1 s queued, 0.5 s provisioned, 2 s
# executing, 0.5 s executed).
_PHASES = (
    ("validating_seconds", 1.0),
    ("queued_seconds", 1.0),
    ("provisioned_seconds", 0.5),
    ("executing_seconds", 2.0),
    ("executed_seconds", 0.5),
)

FAULTS_HELP = """Inject a fault (repeatable): [TARGET:]ACTION[:RATE][:KEY=VALUE,...].
TARGET is '*' (default), a method, and/or a path glob ('POST algorithms/jobs/',
'GET,HEAD /api/v1/uploads/*'; paths not starting with '/' are under /api/v1/; '~' starts
a regex). ACTION: 429, 500, 502, 503, 504 (any 4xx/5xx), reset, drop_after_commit,
latency=MS. RATE: 0..1 (default 1). KEYS: retry_after=S, ms=MS, skip=N, times=N,
close=rst|fin. Example: --faults 'POST algorithms/jobs/:drop_after_commit:0.1'
--faults '*:429:0.05:retry_after=1'."""


def _parse_setting(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise ConfigError(f"--set {text!r}: expected NAME=VALUE, e.g. --set failure_rate=0.1")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return name.strip(), value


def _config_changes(
    *,
    active_jobs_limit: int | None,
    credits: int | None,
    job_cost: int | None,
    job_duration: float | None,
    failure_rate: float | None,
    max_uploads: int | None,
    no_dedup: bool,
    settings: Sequence[str],
) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if active_jobs_limit is not None:
        changes["max_active_jobs"] = active_jobs_limit
    if credits is not None:
        changes["credits_per_month"] = credits
    if job_cost is not None:
        changes["job_cost"] = job_cost
    if job_duration is not None:
        total = sum(share for _, share in _PHASES)
        for name, share in _PHASES:
            changes[name] = job_duration * share / total
    if failure_rate is not None:
        changes["failure_rate"] = failure_rate
    if max_uploads is not None:
        changes["max_live_uploads"] = max_uploads
    if no_dedup:
        changes["dedup"] = False
    for text in settings:
        name, value = _parse_setting(text)
        changes[name] = value
    return changes


@click.group("sandbox")
def sandbox() -> None:
    """The built-in Grand Challenge emulator: serve it, inspect it.

    \b
    The sandbox speaks the same REST API as grand-challenge.org (the official gcapi
    client works against it), keeps its state in a SQLite file, and can inject the
    failures a real deployment shows (see `gcbatch sandbox serve --help`).
    """


@sandbox.command("serve")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Keep it on loopback: anyone who reaches the port can use "
    "the sandbox's well-known test tokens (a warning is printed otherwise).",
)
@click.option(
    "--port",
    type=int,
    default=8000,
    show_default=True,
    help="Port to listen on (0: any free port; the URL printed says which).",
)
@click.option(
    "--db",
    "db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(".gcbatch/sandbox.db"),
    show_default=True,
    help="SQLite file holding jobs and uploads; reuse it to keep state across runs.",
)
@click.option(
    "--ephemeral",
    is_flag=True,
    help="Use a fresh database in a temporary folder, removed on exit (ignores --db).",
)
@click.option(
    "--seed",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Seed YAML declaring users, sockets, algorithms, archives "
    "[default: the built-in world with user demo / token demo-token].",
)
@click.option(
    "--tls",
    is_flag=True,
    help="Serve https with a certificate made at start; clients must trust the "
    "printed CA file (gcapi only talks https: SSL_CERT_FILE=<ca file>).",
)
@click.option(
    "--cert-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where --tls writes its CA, certificate and key [default: a temp folder].",
)
@click.option(
    "--latency-ms",
    type=click.FloatRange(min=0),
    default=0,
    show_default=True,
    help="Milliseconds added before every API answer (not /_sandbox/).",
)
@click.option("--faults", "fault_specs", multiple=True, metavar="SPEC", help=FAULTS_HELP)
@click.option(
    "--faults-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='A JSON fault plan: {"seed": 1, "latency_ms": 0, "rules": [SPEC or '
    "object, ...]}; --faults rules are added after its rules.",
)
@click.option(
    "--fault-seed",
    type=int,
    help="Seed for the fault dice, to replay a run exactly [default: random, printed].",
)
@click.option(
    "--active-jobs-limit",
    type=click.IntRange(min=0),
    help="Active jobs per user before 'You have too many active jobs' [default: 16].",
)
@click.option(
    "--credits", type=click.IntRange(min=0), help="Credits per user per month [default: 1000]."
)
@click.option(
    "--job-cost",
    type=click.IntRange(min=20),
    help="Credits a job costs (at least 20) [default: 20].",
)
@click.option(
    "--job-duration",
    type=click.FloatRange(min=0),
    help="Seconds from submission to Succeeded, spread over the statuses "
    "[default: 5]. 0 makes jobs finish at once.",
)
@click.option(
    "--failure-rate",
    type=click.FloatRange(0, 1),
    help="Chance that a job ends Failed [default: 0].",
)
@click.option(
    "--max-uploads",
    type=click.IntRange(min=0),
    help="Live uploads per user before 'You have created too many uploads' [default: 2000].",
)
@click.option("--no-dedup", is_flag=True, help="Switch off the server's duplicate-inputs check.")
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="NAME=VALUE",
    help="Any other sandbox setting (value in JSON), e.g. --set page_size=10; "
    "see GET /_sandbox/config for the names.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON line when ready (base_url, api_url, cafile, users, ...) "
    "on stdout, and the human banner on stderr.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every request to stderr.")
def serve(
    host: str,
    port: int,
    db: Path,
    ephemeral: bool,
    seed: Path | None,
    tls: bool,
    cert_dir: Path | None,
    latency_ms: float,
    fault_specs: tuple[str, ...],
    faults_file: Path | None,
    fault_seed: int | None,
    active_jobs_limit: int | None,
    credits: int | None,
    job_cost: int | None,
    job_duration: float | None,
    failure_rate: float | None,
    max_uploads: int | None,
    no_dedup: bool,
    settings: tuple[str, ...],
    as_json: bool,
    verbose: bool,
) -> None:
    """Serve the Grand Challenge emulator until Ctrl-C.

    \b
    Examples:
      gcbatch sandbox serve                      http://127.0.0.1:8000/api/v1/
      gcbatch sandbox serve --tls --port 8443    https, for the official gcapi client
      gcbatch sandbox serve --job-duration 0 --active-jobs-limit 4
      gcbatch sandbox serve --faults '*:503:0.2' --faults 'POST algorithms/jobs/:reset:0.1'

    \b
    Then, in another terminal:
      export GCBATCH_SERVER=http://127.0.0.1:8000/api/v1/ GRAND_CHALLENGE_AUTHORIZATION=demo-token
      gcbatch apply study.yaml
      gcbatch sandbox inspect --url http://127.0.0.1:8000

    Faults never apply to /_sandbox/ (the admin endpoints: GET stats, requests, config,
    faults; POST config, faults), so tests can always read and reset the sandbox. They
    need the admin token printed at start (header X-Gcbatch-Sandbox-Admin); set
    GCBATCH_SANDBOX_ADMIN_TOKEN to choose it.
    """
    from gcbatch.sandbox import ADMIN_TOKEN_ENV, start_sandbox
    from gcbatch.sandbox.config import SandboxConfig
    from gcbatch.sandbox.faults import FaultPlan, FaultSpecError, parse_fault_spec
    from gcbatch.sandbox.server import CertificateError

    try:
        plan = FaultPlan.load(faults_file.read_text()) if faults_file else FaultPlan()
        extra = tuple(parse_fault_spec(s) for s in fault_specs)
    except FaultSpecError as exc:
        raise ConfigError(f"--faults: {exc}") from None
    plan = FaultPlan(
        plan.rules + extra,
        plan.latency_ms + latency_ms,
        fault_seed if fault_seed is not None else plan.seed,
    )
    changes = _config_changes(
        active_jobs_limit=active_jobs_limit,
        credits=credits,
        job_cost=job_cost,
        job_duration=job_duration,
        failure_rate=failure_rate,
        max_uploads=max_uploads,
        no_dedup=no_dedup,
        settings=settings,
    )
    try:
        SandboxConfig().with_mapping(changes)  # fail fast on a bad name or value
    except ValueError as exc:
        raise ConfigError(str(exc)) from None

    if not ephemeral:
        db.parent.mkdir(parents=True, exist_ok=True)
    banner_stream = sys.stderr if as_json else sys.stdout
    try:
        sb = start_sandbox(
            db=None if ephemeral else db,
            seed=seed,
            host=host,
            port=port,
            tls=tls,
            faults=plan,
            access_log=sys.stderr if verbose else None,
            cert_dir=cert_dir,
            admin_token=os.environ.get(ADMIN_TOKEN_ENV) or None,
        )
    except CertificateError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    with sb:
        if changes:
            sb.admin.set_config(**changes)
        info = {
            "base_url": sb.base_url,
            "api_url": sb.api_url,
            "cafile": str(sb.cafile) if sb.cafile else None,
            "db": None if ephemeral else str(db.resolve()),
            "pid": os.getpid(),
            "port": sb.port,
            "users": {name: sb.token(name) for name in sb.users},
            "fault_seed": sb.faults.seed,
            "admin_token": sb.admin_token,
            "listening": _listening(sb.server.bound_host, sb.port),
        }
        if as_json:
            click.echo(json.dumps(info, sort_keys=True))
            sys.stdout.flush()
        if sb.server.listens_beyond_loopback:
            _warn_open(sb, info)
        _print_banner(banner_stream, sb, info, plan, seed)
        _wait_for_interrupt()
        click.echo("sandbox stopped", err=True)


def _print_banner(
    stream: Any, sb: Any, info: Mapping[str, Any], plan: Any, seed: Path | None
) -> None:
    def out(line: str = "") -> None:
        click.echo(line, file=stream)

    out(f"gcbatch sandbox serving {sb.api_url}")
    out(f"  listening {info['listening']}"
        + ("  (OPEN TO THE NETWORK)" if sb.server.listens_beyond_loopback else
           "  (this machine only)"))
    out(f"  database  {info['db'] or '(temporary, removed on exit)'}")
    out(f"  seed      {seed or 'built-in default'}")
    users = ", ".join(f"{name} (token {token})" for name, token in info["users"].items())
    out(f"  users     {users}  (sandbox test tokens)")
    if sb.cafile:
        out(f"  TLS CA    {sb.cafile}")
        out(f"            trust it: --ca-bundle {sb.cafile} (gcbatch; or GCBATCH_CA_BUNDLE),")
        out(f"            SSL_CERT_FILE={sb.cafile} (gcapi), curl --cacert")
    if plan.latency_ms:
        out(f"  latency   +{plan.latency_ms:g} ms per API request")
    for rule in plan.rules:
        out(f"  fault     {rule.to_spec()}")
    if plan.rules:
        out(f"  fault seed {info['fault_seed']} (replay with --fault-seed)")
    first = next(iter(info["users"].items()), None)
    if first:
        cacert = f" --cacert {sb.cafile}" if sb.cafile else ""
        out(
            f'  try       curl{cacert} -H "Authorization: Bearer {first[1]}" '
            f"{sb.api_url}algorithms/"
        )
        ca_env = f"GCBATCH_CA_BUNDLE={sb.cafile} " if sb.cafile else ""
        out(
            f"  use       {ca_env}GCBATCH_SERVER={sb.api_url} "
            f"GRAND_CHALLENGE_AUTHORIZATION={first[1]} gcbatch apply study.yaml"
        )
    out(f"  admin     token {info['admin_token']} (header X-Gcbatch-Sandbox-Admin; "
        "needed by /_sandbox/ and inspect)")
    out(
        f"  inspect   gcbatch sandbox inspect --url {sb.base_url} "
        f"--admin-token {info['admin_token']}"
        + (f" --ca-bundle {sb.cafile}" if sb.cafile else "")
    )
    out("Press Ctrl-C to stop.")
    stream.flush()


def _listening(host: str, port: int) -> str:
    """The address the socket is really bound to, as ``host:port``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _warn_open(sb: Any, info: Mapping[str, Any]) -> None:
    """The loud warning for a sandbox that other machines can reach (on stderr)."""
    everywhere = sb.server.bound_host in ("0.0.0.0", "::", "")
    where = "every network interface" if everywhere else "a network interface"
    lines = [
        "!" * 78,
        f"WARNING: the sandbox listens on {info['listening']}, {where}: it is reachable",
        "from other machines, not only this one. Anyone who reaches it can use its",
        "well-known test tokens (" + ", ".join(info["users"].values()) + "), read and change",
        "its jobs and uploads. Its admin API still needs the admin token. Use --host",
        "127.0.0.1 unless you mean to share it on a network you trust.",
        "!" * 78,
    ]
    for line in lines:
        click.echo(line, err=True)


def _wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM; both stop the sandbox cleanly."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@sandbox.command("inspect")
@click.option(
    "--url",
    required=True,
    metavar="URL",
    help="The sandbox's base URL or API URL, e.g. http://127.0.0.1:8000.",
)
@click.option(
    "--ca-bundle",
    "--cafile",
    "ca_bundle",
    type=click.Path(path_type=Path),
    metavar="PATH",
    help="CA file to verify an https sandbox (printed by serve --tls); --cafile is the "
    "same. Default: the environment's, as for every command (README 'Connecting').",
)
@click.option(
    "--truststore",
    is_flag=True,
    default=False,
    help="Trust the operating system's certificates (needs gcbatch[truststore]).",
)
@click.option(
    "--admin-token",
    envvar="GCBATCH_SANDBOX_ADMIN_TOKEN",
    required=True,
    metavar="TOKEN",
    help="The sandbox's admin token (printed by `sandbox serve`) "
    "[env: GCBATCH_SANDBOX_ADMIN_TOKEN].",
)
@click.option(
    "--since",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Only requests after this sequence number.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Show at most this many of the latest requests in the table (0: none).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print {"stats", "requests", "faults"} as JSON on stdout.',
)
def inspect(url: str, ca_bundle: Path | None, truststore: bool, admin_token: str, since: int,
            limit: int, as_json: bool) -> None:
    """What a running sandbox holds (jobs, uploads per user) and the requests it saw.

    Tests and humans use it to prove "no duplicate jobs" and "nothing was sent". The
    request table shows paths without their query strings (a presigned URL's signature
    is hundreds of characters); --json has them whole.
    """
    from gcbatch.sandbox import SandboxAdmin

    base = url.split("/api/v1", 1)[0].rstrip("/")
    trust = resolve_trust(ca_bundle, truststore)
    admin = SandboxAdmin(base, admin_token=admin_token, verify=ssl_context(trust))
    try:
        stats = admin.stats()
        requests = admin.requests(since=since)
        faults = admin.faults()
    except Exception as exc:  # httpx errors, non-JSON answers, admin errors
        raise _inspect_error(base, exc, trust) from None
    finally:
        admin.close()
    if as_json:
        click.echo(
            json.dumps(
                {"stats": stats, "requests": requests, "faults": faults}, indent=2, sort_keys=True
            )
        )
        return
    click.echo(f"sandbox {base}")
    click.echo()
    click.echo(render_stats(stats))
    rows = request_rows(requests)
    if limit and rows:
        shown = rows[-limit:]
        click.echo()
        click.echo(f"requests ({len(rows)} after #{since}; latest {len(shown)}):")
        click.echo(table(shown))
    if faults.get("rules"):
        click.echo()
        click.echo("faults:")
        click.echo(
            table(
                [
                    {
                        "rule": r.get("spec", ""),
                        "seen": r.get("seen", 0),
                        "fired": r.get("fired", 0),
                    }
                    for r in faults["rules"]
                ]
            )
        )


def _inspect_error(base: str, exc: Exception, trust: Trust) -> GcbatchError:
    """Why ``inspect`` could not read ``base``, in a sentence (never a page of HTML)."""
    failure = tls_failure(exc)
    if failure is not None:
        return CertificateError(f"cannot read the sandbox at {base}: "
                                + certificate_advice(failure, base, trust))
    status = getattr(exc, "status", None)
    if status in (401, 403):
        return TransportError(f"the sandbox at {base} refused the admin token (HTTP "
                              f"{status}); use the one `gcbatch sandbox serve` printed")
    if status is not None or isinstance(exc, ValueError):
        return TransportError(
            f"{base} is not a gcbatch sandbox: its /_sandbox/ endpoints did not answer as a "
            f"sandbox does ({f'HTTP {status}' if status else 'not JSON'}). `sandbox inspect` "
            "reads only a sandbox started by `gcbatch sandbox serve`")
    detail = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    return TransportError(f"cannot read the sandbox at {base}: {detail}")


sandbox.add_command(seed_command)

COMMANDS = [sandbox]
