"""The Grand Challenge API emulator: one object that takes a request and gives an answer.

``SandboxApp.handle(Request) -> Response`` is the whole emulator; the transports in
``server.py`` (real HTTP) and ``transport.py`` (in-process httpx) only move bytes. Every
behaviour follows the recorded exchanges in ``tests/data/gc-observed/`` (they win over
prose): status codes, body shapes, key order, error messages word for word. Where the
sandbox deliberately differs, the code says so and ``docs/fidelity.md`` lists it.

This module only composes: the store, the seed, the settings, the request log, and the
parts handlers use (:class:`~gcbatch.sandbox.context.World`); then it sends each request
through the route table (``routes.py``) to a handler (``handlers/``). A request to the
API: authenticate (Bearer token → seed user; no header → anonymous) → one SQLite
transaction: advance due jobs (``jobrunner.py``) → the handler → log the request (in
memory, for ``/_sandbox/requests``).

Deliberate differences from the recorded platform (each also in docs/fidelity.md):

- socket values carry the socket under ``"socket"`` as well as ``"interface"`` (newer
  servers and gcapi 0.16.1's models); ``gcapi/`` advertises 0.16.1, not 0.13.2;
- storage lives on the API's own host (``/_storage/...``, HMAC-signed URLs, ETag = md5),
  so a client that sends its token to the API host also sends it there; it is accepted
  (and logged as ``had_authorization``) unless ``storage_rejects_authorization`` is set,
  which answers 400 like S3 does;
- job pks are time-ordered (still version-4 shaped) to keep SQLite's writes per job few;
- a job lists only its creator's jobs (the platform also lists other users' public jobs);
- the rolling month of credits is counted in whole UTC days;
- images from uploads are stored as uploaded (no conversion; a DICOM series keeps its
  first file); image metadata comes from the MetaImage header only;
- outputs of a succeeded job are made when the job is first looked at, and their file and
  image bytes are recomputed on download (they are a pure function of the inputs).

Not emulated: the admin side, upload sessions (``upload_session`` is refused as a missing
object), reader studies, DICOM image sets, hanging protocols / view content (always
empty), the per-user 128 GiB tier for verified users, HTTP throttling (inject 429s with
the fault plan instead), and real S3 (a 500 plain-text page stands for boto3's errors,
as recorded).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gcbatch.sandbox.config import SandboxConfig
from gcbatch.sandbox.context import Ctx, Settings, World
from gcbatch.sandbox.gate import head_refusal
from gcbatch.sandbox.handlers.admin import collect_stats
from gcbatch.sandbox.http import Request, Response
from gcbatch.sandbox.ids import PrimaryKeys
from gcbatch.sandbox.jobrunner import JobRunner, RunTimes
from gcbatch.sandbox.outputs import Outputs
from gcbatch.sandbox.recording import recorder_from_env
from gcbatch.sandbox.render import Renderer
from gcbatch.sandbox.requestlog import RequestLog
from gcbatch.sandbox.responses import (
    HOLD_HEADER,
    HttpError,
    detail,
    json_response,
    method_not_allowed,
    not_found_page,
    text_response,
)
from gcbatch.sandbox.routes import ROUTES, Match, resolve
from gcbatch.sandbox.seed import Seed, User, load_seed
from gcbatch.sandbox.seeding import install_seed
from gcbatch.sandbox.signing import Signer
from gcbatch.sandbox.store import Store
from gcbatch.sandbox.visibility import Visibility

log = logging.getLogger("gcbatch.sandbox.app")


class SandboxApp:
    """The emulator (see the module docstring). Thread-safe: call :meth:`handle` from
    any number of threads."""

    def __init__(
        self,
        db_path: Path | None,
        seed: Path | str | Mapping[str, Any] | Seed | None = None,
        config: SandboxConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.seed: Seed = seed if isinstance(seed, Seed) else load_seed(seed)
        self._settings = Settings(
            config if config is not None else SandboxConfig().with_mapping(self.seed.config)
        )
        self.clock = clock
        self.store = Store(Path(db_path) if db_path is not None else None)
        self._log = RequestLog()
        # Issue 7: the test suite checks every answer against GC's OpenAPI schema; it
        # switches this on through the environment (None otherwise: no cost).
        self._recorder = recorder_from_env()
        with self.store.transaction():
            install_seed(self.store, self.seed, clock())
            run_times = RunTimes(self.store, self.seed)
        ids = PrimaryKeys()
        self._jobs = JobRunner(self.seed, self.store, clock, run_times)
        self._world = World(
            seed=self.seed,
            store=self.store,
            clock=clock,
            settings=self._settings,
            ids=ids,
            jobs=self._jobs,
            outputs=Outputs(self.seed, self.store, clock, ids),
            visibility=Visibility(self.seed, self.store),
            render=Renderer(self.seed, self.store, clock, run_times),
            signer=Signer(self.store.secret),
            log=self._log,
        )

    # -- public ---------------------------------------------------------------------------

    @property
    def config(self) -> SandboxConfig:
        return self._settings.config

    def set_config(self, config: SandboxConfig) -> None:
        self._settings.config = config

    def token(self, user: str) -> str:
        """The seed's token for ``user`` (seed tokens are test data, not secrets)."""
        found = self.seed.user(user)
        if found is None:
            raise KeyError(user)
        return found.token

    def close(self) -> None:
        self.store.close()

    def transport(self) -> Any:
        """An httpx transport that calls this app in-process (see ``transport.py``)."""
        from gcbatch.sandbox.transport import SandboxTransport  # owned by the transport layer

        return SandboxTransport(self)

    def wake(self) -> None:
        """Forget when the next job is due (call after changing jobs behind the app's back)."""
        self._jobs.wake()

    def stats(self) -> dict[str, Any]:
        """Per-user and total counts (jobs, active jobs, uploads, credits this month)."""
        return collect_stats(self._world, self.config)

    def requests_since(self, since: int) -> list[dict[str, Any]]:
        """The logged requests after sequence number ``since`` (oldest first)."""
        return self._log.since(since)

    def handle(self, request: Request) -> Response:
        started = self.clock()
        user: User | None = None
        had_auth = "authorization" in request.headers
        try:
            response, user = self._handle(request, started)
        except Exception:  # a bug in the sandbox: answer like a server error, keep serving
            # as Django without DEBUG: a plain page; the traceback only in the log
            log.exception("sandbox error on %s %s", request.method, request.path)
            response = text_response(500, "Sandbox internal error (details in its log)\n")
        hold = response.header(HOLD_HEADER)
        if hold:  # a creating POST "commits" late (SandboxConfig.commit_seconds)
            response = Response(response.status, tuple(
                h for h in response.headers if h[0] != HOLD_HEADER), response.body)
            time.sleep(float(hold))
        self._record(request, response.status, user, had_auth, started)
        if self._recorder is not None:
            self._recorder.record(request, response)
        return response

    def admit(self, request: Request, body_size: int | None) -> Response | None:
        """Asked by the HTTP server on a request's head, before it reads the body: the
        answer that refuses it on the head alone, or None (see ``gate.py``). A refusal
        is logged like any request."""
        started = self.clock()
        auth_error = None
        if request.path.startswith("/api/"):
            auth_error = self._authenticate(request)[1]
        refusal = head_refusal(self._world, self.config, request, body_size, auth_error)
        if refusal is not None:
            self._record(request, refusal.status, None, "authorization" in request.headers,
                         started)
        return refusal

    # -- dispatch -------------------------------------------------------------------------

    def _handle(self, req: Request, arrived: float) -> tuple[Response, User | None]:
        config = self.config  # one reading per request, even if an admin changes it
        match = resolve(req.method, req.path, ROUTES)
        if match is not None and match.route.bare:
            return self._call(match, Ctx(self._world, req, None, config, match.route.allow)), None
        user, auth_error = self._authenticate(req)
        if auth_error is not None:
            return auth_error, None
        with self.store.transaction():
            self._jobs.advance(self.clock(), config)
            try:
                if match is None:
                    response = not_found_page()
                else:
                    ctx = Ctx(self._world, req, user, config, match.route.allow, arrived)
                    response = self._call(match, ctx)
            except HttpError as err:
                response = err.response
        if req.method == "HEAD":
            response = Response(response.status, response.headers, b"")
        return response, user

    @staticmethod
    def _call(match: Match, ctx: Ctx) -> Response:
        route = match.route
        if not match.allowed:
            return method_not_allowed(ctx.req.method, route.allow)
        if ctx.req.method == "OPTIONS" and "OPTIONS" in route.methods:
            # DRF's metadata answer, which the sandbox leaves empty.
            return json_response(200, {}, allow=route.allow)
        return route.handler(ctx, **match.params)

    def _authenticate(self, req: Request) -> tuple[User | None, Response | None]:
        header = req.headers.get("authorization")
        if header is None:
            return None, None
        parts = header.split()
        if not parts or parts[0].lower() != "bearer":
            return None, None  # another scheme: DRF's token auth ignores it (anonymous)
        if len(parts) == 1:
            return None, detail(401, "Invalid token header. No credentials provided.")
        if len(parts) > 2:
            return None, detail(
                401, "Invalid token header. Token string should not contain spaces."
            )
        user = self.seed.user_by_token(parts[1])
        if user is None:
            return None, detail(401, "Invalid token.")
        return user, None

    def _record(
        self, req: Request, status: int, user: User | None, had_auth: bool, started: float
    ) -> None:
        # A method of its own (not inlined in handle) so a benchmark can count requests
        # by wrapping it (benchmarks/bench_manifest.py).
        self._log.record(req, status, None if user is None else user.name, had_auth, started)
