"""The Grand Challenge API emulator: routing, validation and rendering.

``SandboxApp.handle(Request) -> Response`` is the whole emulator; the transports in
``server.py`` (real HTTP) and ``transport.py`` (in-process httpx) only move bytes. Every
behaviour here follows the recorded exchanges in ``shared/gc-observed/`` (they win over
prose): status codes, body shapes, key order, error messages word for word. Where the
sandbox deliberately differs, the comment says so and ``docs/fidelity.md`` lists it.

Request path: authenticate (Bearer token → seed user; no header → anonymous) → one SQLite
transaction: advance due jobs (lifecycle) → route → render JSON (compact separators, as
DRF does) → log the request (in memory, for ``/_sandbox/requests``).

URLs the sandbox serves besides the API:

- ``/media/components/componentinterfacevalue/<xx>/<yy>/<civ pk>/<name>`` and
  ``/media/images/<xx>/<yy>/<image pk>/<file pk>/<name>``: a file output / image file;
  answers 302 to a signed storage URL, like the platform.
- ``/_storage/protected/...?X-Sandbox-Expires=..&X-Sandbox-Signature=..``: the bytes (no
  token needed; the signature is the permission), ``ETag`` = quoted md5.
- ``/_storage/uploads/<upload pk>?uploadId=..&partNumber=..&X-Sandbox-...``: the presigned
  part PUT (no token), answers 200 with ``ETag`` = quoted md5 of the part.
- ``/_sandbox/stats``, ``/_sandbox/requests?since=N``, ``/_sandbox/config`` (admin).

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

import dataclasses
import hashlib
import hmac
import json
import re
import secrets
import string
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

from gcbatch.sandbox import lifecycle as lc
from gcbatch.sandbox.config import SandboxConfig
from gcbatch.sandbox.http import Request, Response
from gcbatch.sandbox.recording import recorder_from_env
from gcbatch.sandbox.seed import Algorithm, Archive, Seed, Socket, User, load_seed
from gcbatch.sandbox.store import CivRow, ImageRow, JobRow, Store, UploadRow

API = "/api/v1/"
MONTH_SECONDS = 30 * 86400.0
REQUEST_LOG_SIZE = 100_000  # newest entries kept for /_sandbox/requests (bounded memory)
DUE_RECHECK_SECONDS = 0.25

ALLOW_LIST_RO = "GET, HEAD, OPTIONS"
ALLOW_LIST_RW = "GET, POST, HEAD, OPTIONS"
ALLOW_PATCH = "PATCH, OPTIONS"

_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
)
_S3_ID_CHARS = string.ascii_letters + string.digits

_SOURCES_MESSAGE = (
    "You must provide at least one of ['image', 'value', 'file', 'user_upload', "
    "'upload_session', ('image_name', 'user_uploads')]."
)
_MSG_REQUIRED = "This field is required."
_MSG_NULL = "This field may not be null."
_MSG_NO_MATCH = "Invalid hyperlink - No URL match."
_MSG_WRONG_MATCH = "Invalid hyperlink - Incorrect URL match."
_MSG_NO_OBJECT = "Invalid hyperlink - Object does not exist."
_MSG_PERMISSION = "You do not have permission to perform this action."
_MSG_NO_CREDENTIALS = "Authentication credentials were not provided."


#: the per-user counters of GET /_sandbox/stats (and its totals)
_STAT_KEYS = ("jobs", "active_jobs", "uploads_live", "uploads_total", "credits_used")


class HttpError(Exception):
    """Raised inside a handler to answer with ``response`` (keeps handlers linear)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def _required_list(body: Mapping[str, Any], key: str, allow: str) -> list[Any]:
    """``body[key]`` as a list, or DRF's 400 for a missing field or a non-list value."""
    if key not in body:
        raise HttpError(json_response(400, {key: [_MSG_REQUIRED]}, allow=allow))
    value = body[key]
    if not isinstance(value, list):
        raise HttpError(json_response(
            400,
            {key: [f'Expected a list of items but got type "{_type_name(value)}".']},
            allow=allow,
        ))
    return value


def _dumps(obj: Any) -> bytes:
    # DRF's JSONRenderer: compact separators, UTF-8 (not ASCII-escaped).
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def json_response(
    status: int, obj: Any, *, allow: str | None = None, extra: Sequence[tuple[str, str]] = ()
) -> Response:
    headers: list[tuple[str, str]] = [("Content-Type", "application/json")]
    if allow:
        headers.append(("Allow", allow))
    headers.extend(extra)
    return Response(status, tuple(headers), _dumps(obj))


def detail(status: int, message: str, *, allow: str | None = None) -> Response:
    extra: tuple[tuple[str, str], ...] = ()
    if status == 401:
        extra = (("WWW-Authenticate", "Bearer"),)
    return json_response(status, {"detail": message}, allow=allow, extra=extra)


def text_response(
    status: int, text: str, content_type: str = "text/plain; charset=utf-8"
) -> Response:
    return Response(status, (("Content-Type", content_type),), text.encode("utf-8"))


def s3_error(status: int, code: str, message: str) -> Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return text_response(status, body, "application/xml")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_seconds(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_uuid(text: str) -> bool:
    return bool(_UUID_RE.match(text))


def norm_uuid(text: str) -> str:
    return str(uuid.UUID(text))


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
        self._config = (
            config if config is not None else SandboxConfig().with_mapping(self.seed.config)
        )
        self.clock = clock
        self.store = Store(Path(db_path) if db_path is not None else None)
        self._log: deque[tuple[int, tuple[Any, ...]]] = deque(maxlen=REQUEST_LOG_SIZE)
        self._log_seq = 0
        self._log_lock = threading.Lock()
        self._pk_lock = threading.Lock()
        self._next_due = float("-inf")
        self._due_checked = float("-inf")
        self._last_stamp = 0
        # Issue 7: the test suite checks every answer against GC's OpenAPI schema; it
        # switches this on through the environment (None otherwise: no cost).
        self._recorder = recorder_from_env()
        self._socket_json = {s.slug: s.as_json() for s in self.seed.sockets}
        self._durations: dict[str, tuple[float, int]] = {}
        self._seed_image_pks_by_user: dict[str | None, tuple[str, ...]] = {}
        with self.store.transaction():
            self._install_seed()
            for alg in self.seed.algorithms:
                row = self.store.conn.execute(
                    "SELECT COALESCE(SUM(exec_duration), 0), COUNT(*) FROM jobs "
                    "WHERE algorithm=? AND status='Succeeded'",
                    (alg.slug,),
                ).fetchone()
                self._durations[alg.slug] = (float(row[0]), int(row[1]))

    # -- public ---------------------------------------------------------------------------

    @property
    def config(self) -> SandboxConfig:
        return self._config

    def set_config(self, config: SandboxConfig) -> None:
        self._config = config

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

    def handle(self, request: Request) -> Response:
        started = self.clock()
        user: User | None = None
        had_auth = "authorization" in request.headers
        try:
            response, user = self._handle(request)
        except Exception:  # a bug in the sandbox: answer like a server error, keep serving
            response = text_response(500, "Sandbox internal error\n\n" + traceback.format_exc())
        self._record(request, response.status, user, had_auth, started)
        if self._recorder is not None:
            self._recorder.record(request, response)
        return response

    def requests_since(self, since: int) -> list[dict[str, Any]]:
        """The logged requests after sequence number ``since`` (oldest first)."""
        with self._log_lock:
            picked = [(seq, e) for seq, e in self._log if seq > since]
        return [
            {
                "seq": seq,
                "method": method,
                "path": path,
                "query": urlencode([(k, v) for k, vs in query.items() for v in vs]),
                "status": status,
                "user": user,
                "had_authorization": had_auth,
                "time": started,
            }
            for seq, (method, path, query, status, user, had_auth, started) in picked
        ]

    # -- seed -------------------------------------------------------------------------------

    def _install_seed(self) -> None:
        st = self.store
        now = self.clock()
        for archive in self.seed.archives:
            for item in archive.items:
                for value in item.values:
                    socket = self.seed.socket(value.socket)
                    assert socket is not None
                    if value.has_value:
                        st.seed_civ(
                            value.civ_pk, socket.slug, value_json=lc.canonical_json(value.value)
                        )
                    elif value.image is not None:
                        data = value.image.path.read_bytes()
                        meta = lc.parse_image(data, value.image.path.name) or lc.ImageMeta(
                            "MHD", None, None, None
                        )
                        st.insert_image(
                            pk=value.image.pk,
                            name=value.image.name,
                            owner=None,
                            file_pk=value.image.file_pk,
                            file_name=value.image.path.name,
                            path=str(value.image.path),
                            meta=json.dumps(meta.as_json()),
                            created=now,
                        )
                        existing = st.conn.execute(
                            "SELECT pk FROM civs WHERE socket=? AND image=?",
                            (socket.slug, value.image.pk),
                        ).fetchone()
                        if existing is None:
                            st.seed_civ(value.civ_pk, socket.slug, image=value.image.pk)
                    elif value.file is not None:
                        key = f"seed-file:{archive.slug}/{item.pk}/{socket.slug}"
                        if st.meta(key) is None:
                            pk = st.seed_civ(
                                value.civ_pk,
                                socket.slug,
                                file=str(value.file),
                                file_name=value.file.name,
                            )
                            st.set_meta(key, str(pk))

    def _item_civ(self, archive: Archive, item_pk: str, socket: str, value: Any) -> CivRow | None:
        st = self.store
        if value.has_value:
            row = st.conn.execute(
                "SELECT pk FROM civs WHERE socket=? AND value_key=?",
                (socket, lc.canonical_json(value.value)),
            ).fetchone()
        elif value.image is not None:
            row = st.conn.execute(
                "SELECT pk FROM civs WHERE socket=? AND image=? ORDER BY pk LIMIT 1",
                (socket, value.image.pk),
            ).fetchone()
        else:
            found = st.meta(f"seed-file:{archive.slug}/{item_pk}/{socket}")
            row = None if found is None else (int(found),)
        return None if row is None else st.civ(int(row[0]))

    # -- dispatch -------------------------------------------------------------------------

    def _handle(self, req: Request) -> tuple[Response, User | None]:
        path = req.path
        if path.startswith("/_storage/"):
            return self._storage(req), None
        if path.startswith("/_sandbox/"):
            return self._admin(req), None
        user, auth_error = self._authenticate(req)
        if auth_error is not None:
            return auth_error, None
        with self.store.transaction():
            self._advance(self.clock())
            try:
                if path.startswith(API):
                    response = self._api(req, user, path[len(API) :])
                elif path.startswith("/media/"):
                    response = self._media(req, user, path)
                else:
                    response = text_response(404, "Not Found", "text/html; charset=utf-8")
            except HttpError as err:
                response = err.response
        if req.method == "HEAD":
            response = Response(response.status, response.headers, b"")
        return response, user

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
        # A tuple now, a dict (with the query encoded) only when someone asks: this runs
        # on every request.
        entry = (
            req.method,
            req.path,
            req.query,
            status,
            None if user is None else user.name,
            had_auth,
            started,
        )
        with self._log_lock:
            self._log_seq += 1
            self._log.append((self._log_seq, entry))

    def _api(self, req: Request, user: User | None, rest: str) -> Response:
        if not rest.endswith("/"):
            if req.method in ("GET", "HEAD"):
                query = urlencode([(k, v) for k, vs in req.query.items() for v in vs])
                location = f"{req.base_url}{req.path}/" + (f"?{query}" if query else "")
                return Response(301, (("Location", location),), b"")
            return text_response(404, "Not Found", "text/html; charset=utf-8")
        segs = rest[:-1].split("/") if rest != "/" else [""]
        m = req.method
        n = len(segs)
        if segs == ["gcapi"]:
            return self._only(
                req,
                ALLOW_LIST_RO,
                lambda: json_response(
                    200,
                    {
                        "latest_version": self.config.gcapi_latest_version,
                        "lowest_supported_version": self.config.gcapi_lowest_supported_version,
                    },
                    allow=ALLOW_LIST_RO,
                ),
            )
        if segs[0] == "algorithms":
            if n == 1:
                return self._only(req, ALLOW_LIST_RO, lambda: self._algorithms(req, user))
            if segs[1] == "jobs":
                if n == 2:
                    if m == "POST":
                        return self._create_job(req, user)
                    return self._only(
                        req, ALLOW_LIST_RW, lambda: self._jobs(req, user), extra="POST"
                    )
                if n == 3:
                    if m in ("PUT", "PATCH", "DELETE"):
                        # Recorded: 403, not 405 (the permission check runs first).
                        if user is None:
                            return detail(401, _MSG_NO_CREDENTIALS, allow=ALLOW_LIST_RO)
                        return detail(403, _MSG_PERMISSION, allow=ALLOW_LIST_RO)
                    return self._only(
                        req, ALLOW_LIST_RO, lambda: self._job_detail(req, user, segs[2])
                    )
            elif segs[1] == "images":
                if n == 2:
                    return self._only(req, ALLOW_LIST_RO, lambda: self._empty_list(req))
                if n == 3:
                    return self._only(
                        req, ALLOW_LIST_RO, lambda: detail(404, "Not found.", allow=ALLOW_LIST_RO)
                    )
            elif n == 2:
                return self._only(
                    req, ALLOW_LIST_RO, lambda: self._algorithm_detail(req, user, segs[1])
                )
        elif segs[0] == "components" and n >= 2 and segs[1] == "interfaces":
            if n == 2:
                return self._only(req, ALLOW_LIST_RO, lambda: self._sockets(req))
            if n == 3:
                return self._only(req, ALLOW_LIST_RO, lambda: self._socket_detail(segs[2]))
        elif segs[0] == "uploads":
            if n == 1:
                if m == "POST":
                    return self._create_upload(req, user)
                return self._only(
                    req, ALLOW_LIST_RW, lambda: self._uploads(req, user), extra="POST"
                )
            if n == 2:
                return self._only(
                    req, ALLOW_LIST_RO, lambda: self._upload_detail(req, user, segs[1])
                )
            if n == 4:
                action = segs[3]
                if action == "list-parts":
                    return self._only(
                        req, ALLOW_LIST_RO, lambda: self._list_parts(req, user, segs[1], segs[2])
                    )
                if action in (
                    "generate-presigned-urls",
                    "complete-multipart-upload",
                    "abort-multipart-upload",
                ):
                    if m != "PATCH":
                        return self._not_allowed(req, ALLOW_PATCH)
                    return self._upload_action(req, user, segs[1], segs[2], action)
        elif segs[0] == "cases" and n >= 2 and segs[1] == "images":
            if n == 2:
                return self._only(req, ALLOW_LIST_RO, lambda: self._images(req, user))
            if n == 3:
                return self._only(
                    req, ALLOW_LIST_RO, lambda: self._image_detail(req, user, segs[2])
                )
        elif segs[0] == "archives":
            if n == 1:
                return self._only(req, ALLOW_LIST_RO, lambda: self._archives(req, user))
            if segs[1] == "items":
                # Creating or editing archive items is not emulated (docs/fidelity.md): the
                # platform's DjangoObjectPermissions refuse a user without the model
                # permission before any handler runs, as for job PUT/PATCH (capture 129).
                if (n == 2 and m == "POST") or (n == 3 and m in ("PUT", "PATCH", "DELETE")):
                    allow = ALLOW_LIST_RW if n == 2 else "GET, PUT, PATCH, HEAD, OPTIONS"
                    if user is None:
                        return detail(401, _MSG_NO_CREDENTIALS, allow=allow)
                    return detail(403, _MSG_PERMISSION, allow=allow)
                if n == 2:
                    return self._only(
                        req, ALLOW_LIST_RW, lambda: self._archive_items(req, user), extra="POST"
                    )
                if n == 3:
                    return self._only(
                        req,
                        "GET, PUT, PATCH, HEAD, OPTIONS",
                        lambda: self._archive_item_detail(req, user, segs[2]),
                    )
            elif n == 2:
                return self._only(
                    req, ALLOW_LIST_RO, lambda: self._archive_detail(req, user, segs[1])
                )
        return text_response(404, "Not Found", "text/html; charset=utf-8")

    def _only(
        self, req: Request, allow: str, fn: Callable[[], Response], extra: str = ""
    ) -> Response:
        """Serve GET/HEAD with ``fn``; OPTIONS with an empty description; else 405."""
        if req.method in ("GET", "HEAD"):
            return fn()
        if req.method == "OPTIONS":
            return json_response(200, {}, allow=allow)
        if extra and req.method == extra:  # pragma: no cover - routed before
            return fn()
        return self._not_allowed(req, allow)

    def _not_allowed(self, req: Request, allow: str) -> Response:
        return detail(405, f'Method "{req.method}" not allowed.', allow=allow)

    # -- pagination ---------------------------------------------------------------------

    def _page_params(self, req: Request) -> tuple[int, int]:
        cfg = self.config
        limit = cfg.page_size
        raw = req.query.get("limit")
        if raw:
            try:
                value = int(raw[-1])
                if value > 0:
                    limit = min(value, cfg.max_page_size)
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

    def _page(
        self,
        req: Request,
        count: int,
        results: list[Any],
        limit: int,
        offset: int,
        allow: str = ALLOW_LIST_RO,
    ) -> Response:
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

    def _list(self, req: Request, items: Sequence[Any], allow: str = ALLOW_LIST_RO) -> Response:
        limit, offset = self._page_params(req)
        return self._page(
            req, len(items), list(items[offset : offset + limit]), limit, offset, allow
        )

    def _empty_list(self, req: Request) -> Response:
        return self._list(req, [])

    # -- rendering ------------------------------------------------------------------------

    def _alg_url(self, base: str, alg: Algorithm) -> str:
        return f"{base}{API}algorithms/{alg.pk}/"

    def _render_algorithm(self, base: str, alg: Algorithm) -> dict[str, Any]:
        total, count = self._durations.get(alg.slug, (0.0, 0))
        average = (
            alg.average_duration
            if alg.average_duration is not None
            else (round(total / count, 6) if count else None)
        )
        return {
            "api_url": self._alg_url(base, alg),
            "url": f"{base}/algorithms/{alg.slug}/",
            "description": alg.description,
            "pk": alg.pk,
            "title": alg.title,
            "logo": f"{base}/_storage/public/logos/algorithm/{alg.pk}/logo.png",
            "slug": alg.slug,
            "average_duration": average,
            "interfaces": [
                {
                    "inputs": [self._socket_json[s] for s in iface.inputs],
                    "outputs": [self._socket_json[s] for s in iface.outputs],
                }
                for iface in alg.interfaces
            ],
        }

    def _civ_file_url(self, base: str, civ: CivRow) -> str:
        pk = civ.pk
        return (
            f"{base}/media/components/componentinterfacevalue/"
            f"{(pk // 256) % 256:02x}/{pk % 256:02x}/{pk}/{civ.file_name}"
        )

    def _image_url(self, base: str, image_pk: str) -> str:
        return f"{base}{API}cases/images/{image_pk}/"

    def _render_civ(self, base: str, civ: CivRow) -> dict[str, Any]:
        socket = self._socket_json[civ.socket]
        return {
            "interface": socket,
            # Newer servers (and gcapi 0.16.1's models) also carry the socket under this
            # name; the recorded server did not. Deliberate superset.
            "socket": socket,
            "value": None if civ.value is None else json.loads(civ.value),
            "file": None if civ.file is None else self._civ_file_url(base, civ),
            "image": None if civ.image is None else self._image_url(base, civ.image),
            "pk": civ.pk,
        }

    def _render_job(
        self, base: str, job: JobRow, civs: Mapping[tuple[str, str], list[CivRow]] | None = None
    ) -> dict[str, Any]:
        alg = self.seed.algorithm_by_slug(job.algorithm)
        assert alg is not None
        if civs is None:
            civs = self.store.jobs_civs([job.pk])
        status, exec_d, invoke_d = self._shown_status(job)
        return {
            "pk": job.pk,
            "url": f"{base}/algorithms/{alg.slug}/jobs/{job.pk}/",
            "api_url": f"{base}{API}algorithms/jobs/{job.pk}/",
            "algorithm_image": f"{base}{API}algorithms/images/{alg.image_pk}/",
            "inputs": [self._render_civ(base, c) for c in civs.get((job.pk, "in"), ())],
            "outputs": [self._render_civ(base, c) for c in civs.get((job.pk, "out"), ())],
            "status": status,
            "hanging_protocol": None,
            "optional_hanging_protocols": [],
            "view_content": {},
            "exec_duration": None if exec_d is None else lc.iso_duration(exec_d),
            "invoke_duration": None if invoke_d is None else lc.iso_duration(invoke_d),
            "algorithm": self._alg_url(base, alg),
        }

    def _shown_status(self, job: JobRow) -> tuple[str, float | None, float | None]:
        """(status, exec duration, invoke duration) as the client sees them now."""
        if job.status in lc.TERMINAL or job.status == lc.VALIDATING:
            return job.status, job.exec_duration, job.invoke_duration
        phase = lc.phase_at(job.created, job.schedule, self.clock())
        status = lc.PHASES[min(max(phase, 1), len(lc.PHASES) - 1)]
        if status == lc.EXECUTED:
            d = lc.parse_schedule(job.schedule)
            return status, d[3], d[2] + d[3] + d[4]
        return status, None, None

    def _render_upload(self, base: str, up: UploadRow, user: User) -> dict[str, Any]:
        return {
            "pk": up.pk,
            "created": iso(up.created),
            "filename": up.filename,
            "key": f"uploads/{user.number}/{up.pk}",
            "s3_upload_id": up.s3_upload_id,
            "status": up.status,
            "api_url": f"{base}{API}uploads/{up.pk}/",
        }

    def _render_image(self, base: str, img: ImageRow) -> dict[str, Any]:
        meta = lc.ImageMeta.from_json(json.loads(img.meta))
        file_url = f"{base}/media/images/{img.pk[0:2]}/{img.pk[2:4]}/{img.pk}/{img.file_pk}/{img.file_name}"
        return {
            "pk": img.pk,
            "name": img.name,
            "files": [
                {
                    "pk": img.file_pk,
                    "image": img.pk,
                    "file": file_url,
                    "image_type": "TIFF" if meta.image_type == "TIFF" else "MHD",
                }
            ],
            "dicom_image_set": None,
            "width": meta.width,
            "height": meta.height,
            "depth": meta.depth,
            "color_space": meta.color_space,
            "modality": None,
            "eye_choice": "NA",
            "stereoscopic_choice": None,
            "field_of_view": None,
            "shape_without_color": meta.shape_without_color(),
            "shape": meta.shape(),
            "voxel_width_mm": meta.voxel_width_mm,
            "voxel_height_mm": meta.voxel_height_mm,
            "voxel_depth_mm": meta.voxel_depth_mm,
            "api_url": self._image_url(base, img.pk),
            "patient_id": "",
            "patient_name": "",
            "patient_birth_date": None,
            "patient_age": "",
            "patient_sex": "",
            "study_date": None,
            "study_instance_uid": "",
            "series_instance_uid": "",
            "study_description": "",
            "series_description": "",
            "window_center": None,
            "window_width": None,
            "segments": None,
        }

    def _render_archive(self, base: str, archive: Archive) -> dict[str, Any]:
        return {
            "pk": archive.pk,
            "title": archive.title,
            "logo": f"{base}/_storage/public/logos/archive/{archive.pk}/logo.png",
            "description": archive.description,
            "api_url": f"{base}{API}archives/{archive.pk}/",
            "url": f"{base}/archives/{archive.slug}/",
        }

    def _render_item(self, base: str, archive: Archive, item: Any) -> dict[str, Any]:
        values = []
        for value in item.values:
            civ = self._item_civ(archive, item.pk, value.socket, value)
            if civ is not None:
                values.append(self._render_civ(base, civ))
        return {
            "pk": item.pk,
            "title": item.title,
            "archive": f"{base}{API}archives/{archive.pk}/",
            "values": values,
            "hanging_protocol": None,
            "optional_hanging_protocols": [],
            "view_content": {},
        }

    # -- algorithms, sockets, archives ----------------------------------------------------

    def _visible_algorithms(self, user: User | None) -> list[Algorithm]:
        name = None if user is None else user.name
        return [a for a in self.seed.algorithms if a.visible_to(name)]

    def _algorithms(self, req: Request, user: User | None) -> Response:
        algs = self._visible_algorithms(user)
        slug = req.first("slug")
        if slug:
            algs = [a for a in algs if a.slug == slug]
        return self._list(req, [self._render_algorithm(req.base_url, a) for a in algs])

    def _algorithm_detail(self, req: Request, user: User | None, pk: str) -> Response:
        alg = self.seed.algorithm(pk.lower()) if is_uuid(pk) else None
        if alg is None or not alg.visible_to(None if user is None else user.name):
            return detail(
                404,
                "No Algorithm matches the given query." if is_uuid(pk) else "Not found.",
                allow=ALLOW_LIST_RO,
            )
        return json_response(200, self._render_algorithm(req.base_url, alg), allow=ALLOW_LIST_RO)

    def _sockets(self, req: Request) -> Response:
        slug = req.first("slug")
        sockets = [s for s in self.seed.sockets if not slug or s.slug == slug]
        sockets.sort(key=lambda s: s.pk)
        return self._list(req, [self._socket_json[s.slug] for s in sockets])

    def _socket_detail(self, pk: str) -> Response:
        socket = self.seed.socket_by_pk(int(pk)) if pk.isdigit() else None
        if socket is None:
            return detail(
                404,
                "No ComponentInterface matches the given query." if pk.isdigit() else "Not found.",
                allow=ALLOW_LIST_RO,
            )
        return json_response(200, self._socket_json[socket.slug], allow=ALLOW_LIST_RO)

    def _visible_archives(self, user: User | None) -> list[Archive]:
        name = None if user is None else user.name
        return [a for a in self.seed.archives if a.visible_to(name)]

    def _archives(self, req: Request, user: User | None) -> Response:
        archives = self._visible_archives(user)
        slug = req.first("slug")
        if slug:
            archives = [a for a in archives if a.slug == slug]
        archives.sort(key=lambda a: a.pk)
        return self._list(req, [self._render_archive(req.base_url, a) for a in archives])

    def _archive_detail(self, req: Request, user: User | None, pk: str) -> Response:
        archive = self.seed.archive(pk.lower()) if is_uuid(pk) else None
        if archive is None or archive not in self._visible_archives(user):
            return detail(
                404,
                "No Archive matches the given query." if is_uuid(pk) else "Not found.",
                allow=ALLOW_LIST_RO,
            )
        return json_response(200, self._render_archive(req.base_url, archive), allow=ALLOW_LIST_RO)

    def _archive_items(self, req: Request, user: User | None) -> Response:
        archives = self._visible_archives(user)
        wanted = req.query.get("archive")
        if wanted:
            value = wanted[-1]
            if value:
                if not is_uuid(value):
                    return json_response(
                        400, {"archive": [f"“{value}” is not a valid UUID."]}, allow=ALLOW_LIST_RW
                    )
                archive = self.seed.archive(norm_uuid(value))
                if archive is None or archive not in archives:
                    return json_response(
                        400,
                        {
                            "archive": [
                                "Select a valid choice. That choice is not one of the available choices."
                            ]
                        },
                        allow=ALLOW_LIST_RW,
                    )
                archives = [archive]
        items = sorted(((a, i) for a in archives for i in a.items), key=lambda ai: ai[1].pk)
        return self._list(
            req, [self._render_item(req.base_url, a, i) for a, i in items], allow=ALLOW_LIST_RW
        )

    def _archive_item_detail(self, req: Request, user: User | None, pk: str) -> Response:
        allow = "GET, PUT, PATCH, HEAD, OPTIONS"
        if is_uuid(pk):
            pk = norm_uuid(pk)
            for archive in self._visible_archives(user):
                for item in archive.items:
                    if item.pk == pk:
                        return json_response(
                            200, self._render_item(req.base_url, archive, item), allow=allow
                        )
            return detail(404, "No ArchiveItem matches the given query.", allow=allow)
        return detail(404, "Not found.", allow=allow)

    # -- images -------------------------------------------------------------------------

    def _seed_image_pks(self, user: User | None) -> tuple[str, ...]:
        key = None if user is None else user.name
        cached = self._seed_image_pks_by_user.get(key)
        if cached is None:
            pks = []
            for archive in self._visible_archives(user):
                for item in archive.items:
                    for value in item.values:
                        if value.image is not None:
                            pks.append(value.image.pk)
            cached = tuple(sorted(set(pks)))
            self._seed_image_pks_by_user[key] = cached
        return cached

    def _image_visible(self, img: ImageRow, user: User | None) -> bool:
        if user is None:
            return False
        if img.owner is None:
            return img.pk in self._seed_image_pks(user) or self.store.image_visible_to_user(
                img.pk, user.name
            )
        return img.owner == user.name

    def _images(self, req: Request, user: User | None) -> Response:
        limit, offset = self._page_params(req)
        if user is None:
            return self._page(req, 0, [], limit, offset)
        self._ensure_user_outputs(user)
        seed_pks = self._seed_image_pks(user)
        marks = ",".join("?" for _ in seed_pks) or "NULL"
        where = [f"(owner=? OR pk IN ({marks}))"]
        args: list[Any] = [user.name, *seed_pks]
        name = req.query.get("name")
        if name and name[-1]:
            where.append("name=?")
            args.append(name[-1])
        for param, role in (("job_input", "in"), ("job_output", "out")):
            values = [v for v in req.query.get(param, ()) if v]
            if values:
                bad = [v for v in values if not is_uuid(v)]
                if bad:
                    return json_response(
                        400, {param: [f"“{bad[0]}” is not a valid value."]}, allow=ALLOW_LIST_RO
                    )
                marks2 = ",".join("?" for _ in values)
                where.append(
                    "pk IN (SELECT image FROM job_values "
                    f"WHERE role='{role}' AND image IS NOT NULL AND job IN ({marks2}))"
                )
                args.extend(norm_uuid(v) for v in values)
        archives = [v for v in req.query.get("archive", ()) if v]
        if archives:
            pks: list[str] = []
            for value in archives:
                if not is_uuid(value):
                    return json_response(
                        400, {"archive": [f"“{value}” is not a valid value."]}, allow=ALLOW_LIST_RO
                    )
                archive = self.seed.archive(norm_uuid(value))
                if archive is not None:
                    pks.extend(v.image.pk for i in archive.items for v in i.values if v.image)
            marks3 = ",".join("?" for _ in pks) or "NULL"
            where.append(f"pk IN ({marks3})")
            args.extend(pks)
        count, rows = self.store.images(" AND ".join(where), args, limit, offset)
        return self._page(
            req, count, [self._render_image(req.base_url, r) for r in rows], limit, offset
        )

    def _image_detail(self, req: Request, user: User | None, pk: str) -> Response:
        if not is_uuid(pk):
            return detail(404, "Not found.", allow=ALLOW_LIST_RO)
        img = self.store.image(norm_uuid(pk))
        if img is None or not self._image_visible(img, user):
            return detail(404, "No Image matches the given query.", allow=ALLOW_LIST_RO)
        return json_response(200, self._render_image(req.base_url, img), allow=ALLOW_LIST_RO)

    # -- jobs: reading ----------------------------------------------------------------------

    def _jobs(self, req: Request, user: User | None) -> Response:
        limit, offset = self._page_params(req)
        errors: dict[str, list[str]] = {}
        algorithm: str | None = None
        raw = req.query.get("algorithm_image__algorithm")
        if raw and raw[-1]:
            value = raw[-1]
            if not is_uuid(value):
                errors["algorithm_image__algorithm"] = [f"“{value}” is not a valid UUID."]
            else:
                alg = self.seed.algorithm(norm_uuid(value))
                if alg is None or not alg.visible_to(None if user is None else user.name):
                    errors["algorithm_image__algorithm"] = [
                        "Select a valid choice. That choice is not one of the available choices."
                    ]
                else:
                    algorithm = alg.slug
        images: dict[str, list[str]] = {"input_image": [], "output_image": []}
        for param in images:
            for value in req.query.get(param, ()):
                if not value:
                    continue
                if not is_uuid(value):
                    errors.setdefault(param, [f"“{value}” is not a valid value."])
                    continue
                pk = norm_uuid(value)
                if self.store.image(pk) is None:
                    errors.setdefault(
                        param,
                        [f"Select a valid choice. {value} is not one of the available choices."],
                    )
                    continue
                images[param].append(pk)
        if errors:
            return json_response(400, errors, allow=ALLOW_LIST_RW)
        if user is None:
            return self._page(req, 0, [], limit, offset, ALLOW_LIST_RW)
        inputs = images["input_image"]
        outputs = images["output_image"]
        if outputs:
            self._ensure_user_outputs(user)
        # A multiple-choice filter matches jobs having ANY of the given images.
        count, rows = self._filtered_jobs(user.name, algorithm, inputs, outputs, limit, offset)
        rows = self._ensure_outputs(rows)
        civs = self.store.jobs_civs([j.pk for j in rows])
        results = [self._render_job(req.base_url, j, civs) for j in rows]
        return self._page(req, count, results, limit, offset, ALLOW_LIST_RW)

    def _filtered_jobs(
        self,
        user: str,
        algorithm: str | None,
        inputs: list[str],
        outputs: list[str],
        limit: int,
        offset: int,
    ) -> tuple[int, list[JobRow]]:
        st = self.store
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

    def _job_detail(self, req: Request, user: User | None, pk: str) -> Response:
        if not is_uuid(pk):
            return detail(404, "Not found.", allow=ALLOW_LIST_RO)
        job = self.store.job(norm_uuid(pk))
        if job is None or user is None or job.user != user.name:
            return detail(404, "No Job matches the given query.", allow=ALLOW_LIST_RO)
        job = self._ensure_outputs([job])[0]
        return json_response(200, self._render_job(req.base_url, job), allow=ALLOW_LIST_RO)

    # -- jobs: creating -----------------------------------------------------------------

    def _json_body(self, req: Request, allow: str) -> Any:
        if not req.body.strip():
            return {}
        try:
            return json.loads(req.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise HttpError(detail(400, f"JSON parse error - {exc}", allow=allow)) from exc

    def _json_object_body(self, req: Request, allow: str) -> dict[str, Any]:
        """The body as a JSON object, or the serializer's 400 for any other JSON value."""
        body = self._json_body(req, allow)
        if not isinstance(body, dict):
            raise HttpError(json_response(
                400,
                {"non_field_errors": [
                    f"Invalid data. Expected a dictionary, but got {_type_name(body)}."
                ]},
                allow=allow,
            ))
        return body

    def _hyperlink(self, data: Any, kind: str) -> tuple[str | None, str | None]:
        """Resolve an API URL to the pk it names: (pk, None) or (None, error message).

        ``kind`` is the route the field expects: "algorithm", "upload", "image" or
        "upload_session". Like DRF, only the URL's path counts (any host)."""
        if not isinstance(data, str):
            return None, f"Incorrect type. Expected URL string, received {type(data).__name__}."
        path = urlsplit(data).path if data.startswith(("http://", "https://")) else data
        path = unquote(path)
        patterns = {
            "algorithm": r"^/api/v1/algorithms/(?P<pk>[^/.]+)/$",
            "upload": r"^/api/v1/uploads/(?P<pk>[^/.]+)/$",
            "image": r"^/api/v1/cases/images/(?P<pk>[^/.]+)/$",
            "upload_session": r"^/api/v1/cases/upload-sessions/(?P<pk>[^/.]+)/$",
        }
        m = re.match(patterns[kind], path)
        if m is None or (kind == "algorithm" and m.group("pk") in ("jobs", "images")):
            if path.startswith(API) and path.endswith("/"):
                return None, _MSG_WRONG_MATCH
            return None, _MSG_NO_MATCH
        pk = m.group("pk")
        if not is_uuid(pk):
            return None, f"“{pk}” is not a valid UUID."
        return norm_uuid(pk), None

    def _create_job(self, req: Request, user: User | None) -> Response:
        allow = ALLOW_LIST_RW
        if user is None:
            return detail(401, _MSG_NO_CREDENTIALS, allow=allow)
        body = self._json_object_body(req, allow)
        cfg = self.config
        errors: dict[str, Any] = {}

        # Field: algorithm.
        alg: Algorithm | None = None
        if "algorithm" not in body:
            errors["algorithm"] = [_MSG_REQUIRED]
        elif body["algorithm"] is None:
            errors["algorithm"] = [_MSG_NULL]
        else:
            pk, err = self._hyperlink(body["algorithm"], "algorithm")
            if err is None:
                assert pk is not None
                alg = self.seed.algorithm(pk)
                if alg is None or not alg.visible_to(user.name):
                    err = _MSG_NO_OBJECT
            if err is not None:
                alg = None
                errors["algorithm"] = [err]

        # Field: inputs (each validated on its own, DRF ListSerializer style).
        parsed: list[dict[str, Any]] = []
        if "inputs" not in body:
            errors["inputs"] = [_MSG_REQUIRED]
        elif body["inputs"] is None:
            errors["inputs"] = [_MSG_NULL]
        elif not isinstance(body["inputs"], list):
            errors["inputs"] = {
                "non_field_errors": [
                    f'Expected a list of items but got type "{_type_name(body["inputs"])}".'
                ]
            }
        else:
            item_errors: list[dict[str, Any]] = []
            for item in body["inputs"]:
                result, err_obj = self._parse_input(item, user)
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

        if not alg.active_image:
            return reject("Algorithm image is not ready to be used")
        now = self.clock()
        cost = max(cfg.job_cost, alg.credits_per_job)
        limit = user.credits if user.credits is not None else cfg.credits_per_month
        active, used = self.store.admission(user.name, now - MONTH_SECONDS)
        if used + cost > limit:
            return reject("You have run out of algorithm credits")
        if active >= cfg.max_active_jobs:
            return reject(
                "You have too many active jobs, please try again after they have completed"
            )
        given = {p["socket"].slug for p in parsed}
        if len(given) != len(parsed) or not any(given == set(i.inputs) for i in alg.interfaces):
            return reject(_interfaces_message(self.seed, alg))
        existing_only = all(p["source"] in ("value", "image") for p in parsed)
        input_key: str | None = None
        found: list[int | None] = [
            self._existing_civ(p) if p["source"] in ("value", "image") else None for p in parsed
        ]
        if existing_only and cfg.dedup and all(c is not None for c in found):
            # Only when every input already exists can the platform match an earlier job
            # (status and creator do not matter).
            key = _input_key([c for c in found if c is not None])
            if self.store.duplicate_exists(alg.slug, key):
                return reject(
                    "A result for these inputs with the current image and model already exists."
                )

        # Create.
        job_pk = self._new_pk()
        shown: list[tuple[dict[str, Any], int]] = []
        civs: list[int] = []
        pending: list[dict[str, Any]] = []
        for p, existing in zip(parsed, found, strict=True):
            socket: Socket = p["socket"]
            if existing is not None:
                civ = existing
            elif p["source"] == "value":
                civ = self.store.insert_value_civ(socket.slug, p["value_json"])
            elif p["source"] == "image":
                civ = self.store.image_civ(socket.slug, p["image"])
            else:
                pending.append(p)
                continue
            civs.append(civ)
            shown.append((p, civ))
        if existing_only:
            input_key = _input_key(civs)
        schedule = lc.make_schedule(cfg)
        first_boundary = lc.boundaries(now, schedule)[0]
        self._next_due = min(self._next_due, first_boundary)
        self.store.insert_job(
            pk=job_pk,
            user=user.name,
            algorithm=alg.slug,
            created=now,
            next_at=first_boundary,
            schedule=schedule,
            outcome=lc.decide_outcome(alg, cfg, job_pk),
            input_key=input_key,
            cost=cost,
        )
        self.store.attach(job_pk, civs, "in")
        for p in pending:
            self.store.add_pending(job_pk, p["socket"].slug, p["uploads"], p.get("image_name"))
        base = req.base_url
        return json_response(
            201,
            {
                "pk": job_pk,
                "inputs": [
                    {
                        "interface": p["socket"].slug,
                        "value": p["value"] if p["source"] == "value" else None,
                        "file": None,
                        "image": self._image_url(base, p["image"])
                        if p["source"] == "image"
                        else None,
                        "pk": civ,
                        "image_name": None,
                    }
                    for p, civ in shown
                ],
                "status": lc.VALIDATING,
            },
            allow=allow,
        )

    def _new_pk(self) -> str:
        """A version-4-shaped uuid whose first 48 bits grow with time.

        Clients cannot tell it from a random uuid4 (the platform promises nothing about
        its pks but uniqueness), and time-ordered keys keep the B-tree pages SQLite must
        write per job few — it is most of the cost of a job POST.
        """
        with self._pk_lock:
            stamp = max(int(time.time() * 1000), self._last_stamp + 1)
            self._last_stamp = stamp
        rand = int.from_bytes(secrets.token_bytes(10), "big")
        value = (stamp & ((1 << 48) - 1)) << 80 | rand
        value = (value & ~(0xF << 76)) | (0x4 << 76)  # version 4
        value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
        return str(uuid.UUID(int=value))

    def _existing_civ(self, p: Mapping[str, Any]) -> int | None:
        socket: Socket = p["socket"]
        if p["source"] == "value":
            row = self.store.conn.execute(
                "SELECT pk FROM civs WHERE socket=? AND value_key=?", (socket.slug, p["value_json"])
            ).fetchone()
        else:
            row = self.store.conn.execute(
                "SELECT pk FROM civs WHERE socket=? AND image=? ORDER BY pk LIMIT 1",
                (socket.slug, p["image"]),
            ).fetchone()
        return None if row is None else int(row[0])

    def _parse_input(self, item: Any, user: User) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Validate one element of ``inputs``: (parsed, {}) or (None, errors)."""
        if not isinstance(item, dict):
            return None, {
                "non_field_errors": [
                    f"Invalid data. Expected a dictionary, but got {_type_name(item)}."
                ]
            }
        errors: dict[str, Any] = {}
        socket: Socket | None = None
        if "interface" not in item:
            errors["interface"] = [_MSG_REQUIRED]
        elif item["interface"] is None:
            errors["interface"] = [_MSG_NULL]
        else:
            socket = self.seed.socket(str(item["interface"]))
            if socket is None:
                errors["interface"] = [f"Object with slug={item['interface']} does not exist."]
        image_pk: str | None = None
        if item.get("image") is not None:
            pk, err = self._hyperlink(item["image"], "image")
            if err is None:
                assert pk is not None
                img = self.store.image(pk)
                if img is None or not self._image_visible(img, user):
                    err = _MSG_NO_OBJECT
                else:
                    image_pk = pk
            if err is not None:
                errors["image"] = [err]
        if item.get("file") is not None:
            errors["file"] = [
                "The submitted data was not a file. Check the encoding type on the form."
            ]
        if item.get("upload_session") is not None:
            _, err = self._hyperlink(item["upload_session"], "upload_session")
            errors["upload_session"] = [err or _MSG_NO_OBJECT]
        uploads: list[str] = []
        if item.get("user_upload") is not None:
            pk, err = self._hyperlink(item["user_upload"], "upload")
            if err is None:
                assert pk is not None
                err = self._check_own_upload(pk, user)
            if err is not None:
                errors["user_upload"] = [err]
            elif pk is not None:
                uploads = [pk]
        many: list[str] = []
        if item.get("user_uploads") is not None:
            value = item["user_uploads"]
            if not isinstance(value, list):
                errors["user_uploads"] = [
                    f'Expected a list of items but got type "{_type_name(value)}".'
                ]
            else:
                for entry in value:
                    pk, err = self._hyperlink(entry, "upload")
                    if err is None:
                        assert pk is not None
                        err = self._check_own_upload(pk, user)
                    if err is not None:
                        errors["user_uploads"] = [err]
                        break
                    assert pk is not None
                    many.append(pk)
        image_name = item.get("image_name")
        if image_name is not None and not isinstance(image_name, str):
            errors["image_name"] = ["Not a valid string."]
        if errors:
            return None, errors
        assert socket is not None
        # The object-level checks of one input, in the platform's order.
        has_value = item.get("value") is not None
        provided = [
            image_pk is not None,
            has_value,
            bool(uploads),
            bool(many),
        ]
        if not any(provided):
            return None, {"non_field_errors": [_SOURCES_MESSAGE]}
        kind = socket.kind_code
        if socket.super_kind == "Image":
            if image_pk is None and not many:
                return None, {
                    "non_field_errors": [
                        f"upload_session, user_uploads or image are required for interface kind {kind}"
                    ]
                }
            if image_pk is not None:
                return {"socket": socket, "source": "image", "image": image_pk}, {}
            return {
                "socket": socket,
                "source": "uploads",
                "uploads": many,
                "image_name": image_name,
            }, {}
        if socket.super_kind == "File":
            if not uploads:
                return None, {
                    "non_field_errors": [
                        f"user_upload or file is required for interface kind {kind}"
                    ]
                }
            return {"socket": socket, "source": "upload", "uploads": uploads}, {}
        if not has_value:
            return None, {"non_field_errors": [f"value is required for interface kind {kind}"]}
        message = lc.schema_error(item["value"], socket.schema)
        if message is not None:
            return None, {"__all__": [message]}
        value = item["value"]
        return {
            "socket": socket,
            "source": "value",
            "value": value,
            "value_json": lc.canonical_json(value),
        }, {}

    def _check_own_upload(self, pk: str, user: User) -> str | None:
        up = self.store.upload(pk)
        if up is None or up.user != user.name or up.consumed or not self._upload_live(up):
            return _MSG_NO_OBJECT
        return None

    def _upload_live(self, up: UploadRow) -> bool:
        return up.created >= self.clock() - self.config.upload_expiry_seconds

    # -- lifecycle --------------------------------------------------------------------------

    def wake(self) -> None:
        """Forget when the next job is due (call after changing jobs behind the app's back)."""
        self._next_due = float("-inf")

    def _advance(self, now: float) -> None:
        # The next due time is cached, so most requests skip the lookup; it is read again
        # at least every DUE_RECHECK_SECONDS because another process may share the file.
        if now < self._next_due and now - self._due_checked < DUE_RECHECK_SECONDS:
            return
        st = self.store
        if st.any_due(now):
            for job in st.due_jobs(now):
                self._advance_job(job, now)
        following = st.next_due()
        self._next_due = float("inf") if following is None else following
        self._due_checked = now

    def _advance_job(self, job: JobRow, now: float) -> None:
        st = self.store
        ends = lc.boundaries(job.created, job.schedule)
        if job.status == lc.VALIDATING:
            verdict = self._validate_pending(job)
            if verdict == "cancel":
                st.finish_job(job.pk, job.user, status=lc.CANCELLED, error=lc.CANCELLED_MESSAGE)
                return
            if verdict == "stuck":
                if self.config.emulate_stuck_json_bug:
                    st.update_job(job.pk, next_at=None)  # the recorded platform bug
                else:
                    st.finish_job(job.pk, job.user, status=lc.CANCELLED, error=lc.CANCELLED_MESSAGE)
                return
        # Between validation and the end nothing happens but the clock: the status shown
        # (Queued, Provisioned, Executing, Executed) is computed when the job is rendered
        # (see _shown_status), so a job costs two writes here, not five.
        durations = lc.parse_schedule(job.schedule)
        if now < ends[4]:
            st.update_job(job.pk, status=lc.QUEUED, next_at=ends[4])
            return
        exec_d = durations[3]
        invoke_d = durations[2] + durations[3] + durations[4]
        if job.outcome == "fail":
            alg = self.seed.algorithm_by_slug(job.algorithm)
            st.finish_job(
                job.pk,
                job.user,
                status=lc.FAILED,
                exec_duration=exec_d,
                invoke_duration=invoke_d,
                error=None if alg is None else alg.failure_message,
            )
            return
        # The outputs are made the first time anyone looks (see _ensure_outputs): a
        # benchmark submitting thousands of jobs a second should not pay for them.
        st.finish_job(
            job.pk,
            job.user,
            status=lc.SUCCEEDED,
            exec_duration=exec_d,
            invoke_duration=invoke_d,
            outputs_pending=1,
        )
        total, count = self._durations.get(job.algorithm, (0.0, 0))
        self._durations[job.algorithm] = (total + exec_d, count + 1)

    def _upload_bytes(self, up: UploadRow) -> bytes | None:
        path = self.store.path(f"uploads/{up.pk}/object")
        try:
            return path.read_bytes()
        except OSError:
            return None

    def _validate_pending(self, job: JobRow) -> str:
        """Turn a job's uploads into inputs: 'ok', 'cancel' or 'stuck'."""
        st = self.store
        if job.input_key is not None:
            return "ok"  # every input existed at creation: no uploads to turn into inputs
        pending = st.pending(job.pk)
        if not pending:
            return "ok"
        loaded: list[tuple[Socket, list[UploadRow], list[bytes], str | None]] = []
        stuck = False
        for socket_slug, upload_pks, image_name in pending:
            socket = self.seed.socket(socket_slug)
            if socket is None:
                return "cancel"
            ups: list[UploadRow] = []
            datas: list[bytes] = []
            for pk in upload_pks:
                up = st.upload(pk)
                if up is None or up.consumed or up.status != "Completed":
                    return "cancel"
                data = self._upload_bytes(up)
                if data is None:
                    return "cancel"
                verdict = lc.check_upload_contents(socket, up.filename, data)
                if verdict == "cancel":
                    return "cancel"
                if verdict == "stuck":
                    stuck = True
                ups.append(up)
                datas.append(data)
            loaded.append((socket, ups, datas, image_name))
        if stuck:
            return "stuck"
        now = self.clock()
        civs: list[int] = []
        for socket, ups, datas, image_name in loaded:
            if socket.super_kind == "Image":
                image_pk = str(uuid.uuid4())
                file_pk = str(uuid.uuid4())
                meta = lc.parse_image(datas[0], ups[0].filename)
                assert meta is not None
                ext = ".tif" if meta.image_type == "TIFF" else ".mha"
                file_name = f"{image_pk}{ext}"
                rel = f"images/{image_pk}/{file_name}"
                st.write_bytes(rel, datas[0])
                meta_json = meta.as_json() | {"sha256": hashlib.sha256(datas[0]).hexdigest()}
                st.insert_image(
                    pk=image_pk,
                    name=image_name or ups[0].filename,
                    owner=job.user,
                    file_pk=file_pk,
                    file_name=file_name,
                    path=rel,
                    meta=json.dumps(meta_json),
                    created=now,
                )
                civs.append(st.new_civ(socket.slug, image=image_pk))
            else:
                civ = st.new_civ(
                    socket.slug,
                    file_name=ups[0].filename,
                    sha256=hashlib.sha256(datas[0]).hexdigest(),
                )
                rel = f"civ/{civ}/{ups[0].filename}"
                st.write_bytes(rel, datas[0])
                st.conn.execute("UPDATE civs SET file=? WHERE pk=?", (rel, civ))
                civs.append(civ)
            for up in ups:
                st.update_upload(up.pk, consumed=1)
                st.remove_tree(f"uploads/{up.pk}")
        st.attach(job.pk, civs, "in")
        st.clear_pending(job.pk)
        all_civs = [c.pk for c in st.job_civs(job.pk, "in")]
        st.update_job(job.pk, input_key=_input_key(all_civs))
        return "ok"

    def _describe_inputs(self, job_pk: str) -> tuple[Algorithm, Any, dict[str, Any]]:
        """(algorithm, matching interface, inputs description for derive_outputs)."""
        st = self.store
        job = st.job(job_pk)
        assert job is not None
        alg = self.seed.algorithm_by_slug(job.algorithm)
        assert alg is not None
        inputs = st.job_civs(job_pk, "in")
        given = {c.socket for c in inputs}
        iface = next((i for i in alg.interfaces if set(i.inputs) == given), alg.interfaces[0])
        described: dict[str, Any] = {}
        for civ in inputs:
            if civ.value is not None:
                described[civ.socket] = json.loads(civ.value)
            elif civ.file is not None:
                digest = civ.sha256 or hashlib.sha256(self._stored_bytes(civ.file)).hexdigest()
                described[civ.socket] = {"file_sha256": digest}
            elif civ.image is not None:
                img = st.image(civ.image)
                digest = ""
                if img is not None:
                    digest = (
                        json.loads(img.meta).get("sha256")
                        or hashlib.sha256(self._stored_bytes(img.path)).hexdigest()
                    )
                described[civ.socket] = {"image_sha256": digest}
        return alg, iface, described

    def _derived(self, job_pk: str, socket_slug: str) -> lc.DerivedOutput | None:
        alg, iface, described = self._describe_inputs(job_pk)
        sockets = [s for s in (self.seed.socket(slug) for slug in iface.outputs) if s is not None]
        for out in lc.derive_outputs(alg.slug, sockets, described):
            if out.socket == socket_slug:
                return out
        return None

    def _stored_bytes(self, where: str) -> bytes:
        """The bytes of a stored object; ``derived:<job>:<socket>`` ones are recomputed
        (outputs are a pure function of the inputs, so they are never written to disk)."""
        if where.startswith("derived:"):
            _, job_pk, socket_slug = where.split(":", 2)
            out = self._derived(job_pk, socket_slug)
            return b"" if out is None or out.data is None else out.data
        return self.store.path(where).read_bytes()

    def _ensure_outputs(self, jobs: Sequence[JobRow]) -> list[JobRow]:
        """Make the outputs of succeeded jobs that nobody has looked at yet."""
        fresh = []
        for job in jobs:
            if job.outputs_pending:
                self._make_outputs(job)
                self.store.update_job(job.pk, outputs_pending=0)
                job = dataclasses.replace(job, outputs_pending=0)
            fresh.append(job)
        return fresh

    def _ensure_user_outputs(self, user: User | None) -> None:
        if user is not None:
            self._ensure_outputs(self.store.jobs_with_pending_outputs(user.name))

    def _make_outputs(self, job: JobRow) -> None:
        st = self.store
        alg, iface, described = self._describe_inputs(job.pk)
        if alg.outputs_mode == "invocation":
            rels = []
            for civ in st.job_civs(job.pk, "in"):
                socket = self.seed.socket(civ.socket)
                assert socket is not None
                if civ.image is not None:
                    img = st.image(civ.image)
                    rels.append(img.file_name if img is not None else f"{civ.image}.mha")
                else:
                    rels.append(socket.relative_path)
            if iface.outputs:
                value = lc.invocation_value(job.pk, rels)
                civ_pk = st.new_civ(iface.outputs[0], value_json=json.dumps(value))
                st.attach(job.pk, [civ_pk], "out")
            return
        sockets = [s for s in (self.seed.socket(slug) for slug in iface.outputs) if s is not None]
        now = self.clock()
        out_civs: list[int] = []
        for out in lc.derive_outputs(alg.slug, sockets, described, with_data=False):
            socket = self.seed.socket(out.socket)
            assert socket is not None
            # File and image bytes are a pure function of the inputs: they are made again
            # on download (``_stored_bytes``) instead of being written now.
            where = f"derived:{job.pk}:{out.socket}"
            if socket.super_kind == "Value":
                out_civs.append(st.new_civ(out.socket, value_json=json.dumps(out.value)))
            elif socket.super_kind == "File":
                assert out.file_name is not None
                out_civs.append(st.new_civ(out.socket, file=where, file_name=out.file_name))
            else:
                assert out.file_name is not None and out.image_meta is not None
                image_pk = self._new_pk()
                st.insert_image(
                    pk=image_pk,
                    name=out.file_name,
                    owner=job.user,
                    file_pk=self._new_pk(),
                    file_name=f"{image_pk}.mha",
                    path=where,
                    meta=json.dumps(out.image_meta.as_json()),
                    created=now,
                )
                out_civs.append(st.new_civ(out.socket, image=image_pk))
        st.attach(job.pk, out_civs, "out")

    # -- uploads ------------------------------------------------------------------------

    def _create_upload(self, req: Request, user: User | None) -> Response:
        allow = ALLOW_LIST_RW
        if user is None:
            return detail(401, _MSG_NO_CREDENTIALS, allow=allow)
        body = self._json_object_body(req, allow)
        name = body.get("filename")
        if "filename" not in body:
            return json_response(400, {"filename": [_MSG_REQUIRED]}, allow=allow)
        if name is None:
            return json_response(400, {"filename": [_MSG_NULL]}, allow=allow)
        if not isinstance(name, (str, int, float)) or isinstance(name, bool):
            return json_response(400, {"filename": ["Not a valid string."]}, allow=allow)
        name = str(name)
        if not name.strip():
            return json_response(400, {"filename": ["This field may not be blank."]}, allow=allow)
        name = name.strip()
        if len(name) > 128:
            return json_response(
                400,
                {"filename": ["Ensure this field has no more than 128 characters."]},
                allow=allow,
            )
        if "/" in name or "\\" in name or name in (".", "..") or "\x00" in name:
            return json_response(
                400, {"filename": [f"{name} is not a valid filename"]}, allow=allow
            )
        now = self.clock()
        since = now - self.config.upload_expiry_seconds
        if self.store.live_upload_count(user.name, since) >= self.config.max_live_uploads:
            return json_response(
                400,
                {
                    "non_field_errors": [
                        "You have created too many uploads. Please try again later."
                    ]
                },
                allow=allow,
            )
        pk = str(uuid.uuid4())
        s3_id = "".join(secrets.choice(_S3_ID_CHARS) for _ in range(56))
        self.store.insert_upload(pk, user.name, now, name, s3_id)
        up = self.store.upload(pk)
        assert up is not None
        return json_response(201, self._render_upload(req.base_url, up, user), allow=allow)

    def _uploads(self, req: Request, user: User | None) -> Response:
        limit, offset = self._page_params(req)
        if user is None:
            return self._page(req, 0, [], limit, offset, ALLOW_LIST_RW)
        since = self.clock() - self.config.upload_expiry_seconds
        count, rows = self.store.live_uploads(user.name, since, limit, offset)
        results = [self._render_upload(req.base_url, r, user) for r in rows]
        return self._page(req, count, results, limit, offset, ALLOW_LIST_RW)

    def _own_upload(self, user: User | None, pk: str, allow: str) -> UploadRow:
        if not is_uuid(pk):
            raise HttpError(detail(404, "Not found.", allow=allow))
        up = self.store.upload(norm_uuid(pk))
        if (
            up is None
            or user is None
            or up.user != user.name
            or up.consumed
            or not self._upload_live(up)
        ):
            raise HttpError(detail(404, "No UserUpload matches the given query.", allow=allow))
        return up

    def _upload_detail(self, req: Request, user: User | None, pk: str) -> Response:
        up = self._own_upload(user, pk, ALLOW_LIST_RO)
        assert user is not None
        return json_response(200, self._render_upload(req.base_url, up, user), allow=ALLOW_LIST_RO)

    def _list_parts(self, req: Request, user: User | None, pk: str, s3_id: str) -> Response:
        up = self._own_upload(user, pk, ALLOW_LIST_RO)
        assert user is not None
        if up.s3_upload_id != s3_id or not s3_id:
            return detail(404, "Not found.", allow=ALLOW_LIST_RO)
        parts = [
            {
                "ETag": p.etag,
                "PartNumber": p.number,
                "LastModified": iso_seconds(p.modified),
                "Size": p.size,
            }
            for p in self.store.parts(up.pk)
        ]
        return json_response(
            200, self._render_upload(req.base_url, up, user) | {"parts": parts}, allow=ALLOW_LIST_RO
        )

    def _upload_action(
        self, req: Request, user: User | None, pk: str, s3_id: str, action: str
    ) -> Response:
        allow = ALLOW_PATCH
        if user is None:
            return detail(401, _MSG_NO_CREDENTIALS, allow=allow)
        up = self._own_upload(user, pk, allow)
        if up.s3_upload_id != s3_id or not s3_id:
            return detail(404, "Not found.", allow=allow)
        body = self._json_object_body(req, allow)
        base = req.base_url
        if action == "generate-presigned-urls":
            return self._presign(req, user, up, body)
        if action == "complete-multipart-upload":
            return self._complete(req, user, up, body)
        # abort
        if up.status != "Initialized":
            return self._server_crash(req, "RuntimeError", "upload is not initialized")
        self.store.delete_parts(up.pk)
        self.store.remove_tree(f"uploads/{up.pk}")
        self.store.update_upload(up.pk, status="Aborted", s3_upload_id="")
        fresh = self.store.upload(up.pk)
        assert fresh is not None
        return json_response(200, self._render_upload(base, fresh, user), allow=allow)

    def _server_crash(self, req: Request, exc_name: str, text: str) -> Response:
        """What the recorded platform answers for a failed S3 call: a plain-text 500."""
        return text_response(500, f"{exc_name} at {req.path}\n{text}\n")

    def _presign(
        self, req: Request, user: User, up: UploadRow, body: Mapping[str, Any]
    ) -> Response:
        allow = ALLOW_PATCH
        numbers = _required_list(body, "part_numbers", allow)
        errs: dict[str, list[str]] = {}
        clean: list[int] = []
        for i, n in enumerate(numbers):
            if isinstance(n, bool) or not isinstance(n, (int, str)):
                errs[str(i)] = ["A valid integer is required."]
                continue
            try:
                value = int(n)
            except ValueError:
                errs[str(i)] = ["A valid integer is required."]
                continue
            if value < 1:
                errs[str(i)] = ["Ensure this value is greater than or equal to 1."]
            elif value > 10000:
                errs[str(i)] = ["Ensure this value is less than or equal to 10000."]
            else:
                clean.append(value)
        if errs:
            return json_response(400, {"part_numbers": errs}, allow=allow)
        if up.status != "Initialized":
            return self._server_crash(req, "RuntimeError", "upload is not initialized")
        since = self.clock() - self.config.upload_expiry_seconds
        if self.store.live_upload_bytes(user.name, since) >= self.config.max_upload_bytes:
            return detail(403, "Upload limit reached", allow=allow)
        expires = int(self.clock() + self.config.presign_expiry_seconds)
        urls = {str(n): self._part_url(req.base_url, up, n, expires) for n in clean}
        return json_response(
            200, self._render_upload(req.base_url, up, user) | {"presigned_urls": urls}, allow=allow
        )

    def _sign(self, message: str) -> str:
        return hmac.new(self.store.secret, message.encode("utf-8"), hashlib.sha256).hexdigest()

    def _part_url(self, base: str, up: UploadRow, number: int, expires: int) -> str:
        sig = self._sign(f"PUT\n{up.pk}\n{up.s3_upload_id}\n{number}\n{expires}")
        query = urlencode(
            [
                ("uploadId", up.s3_upload_id),
                ("partNumber", str(number)),
                ("X-Sandbox-Expires", str(expires)),
                ("X-Sandbox-Signature", sig),
            ]
        )
        return f"{base}/_storage/uploads/{up.pk}?{query}"

    def _complete(
        self, req: Request, user: User, up: UploadRow, body: Mapping[str, Any]
    ) -> Response:
        allow = ALLOW_PATCH
        given = _required_list(body, "parts", allow)
        if up.status != "Initialized":
            return self._server_crash(req, "RuntimeError", "upload is not initialized")
        stored = {p.number: p for p in self.store.parts(up.pk)}
        if not given:
            return self._server_crash(req, "ClientError", "MalformedXML: no parts")
        chosen = []
        last = 0
        for entry in given:
            if not isinstance(entry, dict):
                return self._server_crash(req, "ClientError", "MalformedXML")
            number = entry.get("PartNumber")
            etag = entry.get("ETag")
            if not isinstance(number, int) or isinstance(number, bool):
                return self._server_crash(req, "ClientError", "MalformedXML")
            part = stored.get(number)
            if part is None or not isinstance(etag, str) or etag.strip('"') != part.etag.strip('"'):
                return self._server_crash(
                    req,
                    "ClientError",
                    "InvalidPart: one or more of the specified parts could not be found",
                )
            if number <= last:
                return self._server_crash(req, "ClientError", "InvalidPartOrder")
            last = number
            chosen.append(part)
        for part in chosen[:-1]:
            if part.size < self.config.min_part_bytes:
                return self._server_crash(
                    req,
                    "ClientError",
                    "EntityTooSmall: your proposed upload "
                    "is smaller than the minimum allowed object size",
                )
        target = self.store.path(f"uploads/{up.pk}/object")
        target.parent.mkdir(parents=True, exist_ok=True)
        if len(chosen) == 1:
            self.store.path(f"uploads/{up.pk}/part-{chosen[0].number}").replace(target)
        else:
            with target.open("wb") as out:
                for part in chosen:
                    with self.store.path(f"uploads/{up.pk}/part-{part.number}").open("rb") as fh:
                        while True:
                            chunk = fh.read(1 << 20)
                            if not chunk:
                                break
                            out.write(chunk)
        for number in stored:
            self.store.path(f"uploads/{up.pk}/part-{number}").unlink(missing_ok=True)
        size = sum(p.size for p in chosen)
        self.store.delete_parts(up.pk)
        self.store.update_upload(up.pk, status="Completed", size=size)
        fresh = self.store.upload(up.pk)
        assert fresh is not None
        return json_response(200, self._render_upload(req.base_url, fresh, user), allow=allow)

    # -- storage (no token) ---------------------------------------------------------------

    def _storage(self, req: Request) -> Response:
        if req.path.startswith("/_storage/uploads/") and req.method == "PUT":
            return self._put_part(req)
        if req.path.startswith("/_storage/protected/") and req.method in ("GET", "HEAD"):
            response = self._get_object(req)
            if req.method == "HEAD":
                return Response(response.status, response.headers, b"")
            return response
        if req.method in ("GET", "HEAD"):
            # Logos and anything else the sandbox links to but does not keep.
            return s3_error(404, "NoSuchKey", "The specified key does not exist.")
        return s3_error(
            405, "MethodNotAllowed", "The specified method is not allowed against this resource."
        )

    def _storage_auth_problem(self, req: Request) -> Response | None:
        if self.config.storage_rejects_authorization and "authorization" in req.headers:
            return s3_error(
                400,
                "InvalidArgument",
                "Only one auth mechanism allowed; only the "
                "X-Amz-Algorithm query parameter, Signature query string parameter or "
                "the Authorization header should be specified",
            )
        return None

    def _put_part(self, req: Request) -> Response:
        problem = self._storage_auth_problem(req)
        if problem is not None:
            return problem
        upload_pk = req.path[len("/_storage/uploads/") :]
        s3_id = req.first("uploadId") or ""
        number_text = req.first("partNumber") or ""
        expires_text = req.first("X-Sandbox-Expires") or ""
        signature = req.first("X-Sandbox-Signature") or ""
        if not (number_text.isdigit() and expires_text.isdigit() and is_uuid(upload_pk)):
            return s3_error(403, "AccessDenied", "Invalid presigned URL")
        number = int(number_text)
        expected = self._sign(f"PUT\n{upload_pk}\n{s3_id}\n{number}\n{expires_text}")
        if not hmac.compare_digest(expected, signature):
            return s3_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        if int(expires_text) < self.clock():
            return s3_error(403, "AccessDenied", "Request has expired")
        # Write the bytes outside the lock (parts may be large), then record them.
        etag = '"' + hashlib.md5(req.body).hexdigest() + '"'
        with self.store.transaction():
            up = self.store.upload(upload_pk)
            if up is None or up.status != "Initialized" or up.s3_upload_id != s3_id:
                return s3_error(
                    404, "NoSuchUpload", "The specified multipart upload does not exist."
                )
            since = self.clock() - self.config.upload_expiry_seconds
            used = self.store.live_upload_bytes(up.user, since)
            old = next((p.size for p in self.store.parts(up.pk) if p.number == number), 0)
            if used - old + len(req.body) > self.config.max_upload_bytes:
                return s3_error(
                    400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size"
                )
        self.store.write_bytes(f"uploads/{upload_pk}/part-{number}", req.body)
        with self.store.transaction():
            up = self.store.upload(upload_pk)
            if up is None or up.status != "Initialized":
                return s3_error(
                    404, "NoSuchUpload", "The specified multipart upload does not exist."
                )
            self.store.put_part(upload_pk, number, etag, len(req.body), self.clock())
        return Response(200, (("ETag", etag), ("Content-Type", "text/html; charset=utf-8")), b"")

    def _get_object(self, req: Request) -> Response:
        problem = self._storage_auth_problem(req)
        if problem is not None:
            return problem
        rel = req.path[len("/_storage/protected/") :]
        expires_text = req.first("X-Sandbox-Expires") or ""
        signature = req.first("X-Sandbox-Signature") or ""
        if not expires_text.isdigit():
            return s3_error(403, "AccessDenied", "Invalid presigned URL")
        if not hmac.compare_digest(self._sign(f"GET\n{rel}\n{expires_text}"), signature):
            return s3_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        if int(expires_text) < self.clock():
            return s3_error(403, "AccessDenied", "Request has expired")
        try:
            with self.store.transaction():
                where = self._object_path(rel)
                data = None if where is None else self._stored_bytes(where)
        except OSError:
            data = None
        if data is None:
            return s3_error(404, "NoSuchKey", "The specified key does not exist.")
        ctype = "application/json" if rel.endswith(".json") else "binary/octet-stream"
        etag = '"' + hashlib.md5(data).hexdigest() + '"'
        return Response(200, (("ETag", etag), ("Content-Type", ctype)), data)

    def _object_path(self, rel: str) -> str | None:
        """Map a protected storage key to where its bytes are (see ``_stored_bytes``)."""
        parts = rel.split("/")
        st = self.store
        if len(parts) == 6 and parts[0] == "components" and parts[1] == "componentinterfacevalue":
            if not parts[4].isdigit():
                return None
            civ = st.civ(int(parts[4]))
            if civ is None or civ.file is None or civ.file_name != parts[5]:
                return None
            return civ.file
        if len(parts) == 6 and parts[0] == "images" and is_uuid(parts[3]):
            img = st.image(norm_uuid(parts[3]))
            if img is None or img.file_pk != parts[4] or img.file_name != parts[5]:
                return None
            return img.path
        return None

    def _media(self, req: Request, user: User | None, path: str) -> Response:
        """A file link in the API → 302 to a signed storage URL (like the platform)."""
        if req.method not in ("GET", "HEAD"):
            return detail(405, f'Method "{req.method}" not allowed.', allow="GET, HEAD")
        rel = path[len("/media/") :]
        parts = rel.split("/")
        st = self.store
        allowed = False
        if len(parts) == 6 and parts[0] == "components" and parts[4].isdigit():
            civ = st.civ(int(parts[4]))
            if (
                civ is not None
                and civ.file is not None
                and civ.file_name == parts[5]
                and user is not None
            ):
                owners = {u for _, u in st.civ_jobs(civ.pk)}
                allowed = user.name in owners or self._civ_in_visible_archive(civ, user)
        elif len(parts) == 6 and parts[0] == "images" and is_uuid(parts[3]):
            img = st.image(norm_uuid(parts[3]))
            allowed = (
                img is not None
                and img.file_pk == parts[4]
                and img.file_name == parts[5]
                and self._image_visible(img, user)
            )
        if not allowed:
            if user is None:
                return detail(401, _MSG_NO_CREDENTIALS)
            return text_response(404, "Not Found", "text/html; charset=utf-8")
        expires = int(self.clock() + self.config.presign_expiry_seconds)
        sig = self._sign(f"GET\n{rel}\n{expires}")
        query = urlencode([("X-Sandbox-Expires", str(expires)), ("X-Sandbox-Signature", sig)])
        location = f"{req.base_url}/_storage/protected/{rel}?{query}"
        return Response(
            302, (("Location", location), ("Content-Type", "text/html; charset=utf-8")), b""
        )

    def _civ_in_visible_archive(self, civ: CivRow, user: User) -> bool:
        for archive in self._visible_archives(user):
            for item in archive.items:
                for value in item.values:
                    if value.socket == civ.socket:
                        found = self._item_civ(archive, item.pk, value.socket, value)
                        if found is not None and found.pk == civ.pk:
                            return True
        return False

    # -- admin ----------------------------------------------------------------------------

    def _admin(self, req: Request) -> Response:
        route = req.path[len("/_sandbox/") :].rstrip("/")
        if route == "stats" and req.method == "GET":
            return json_response(200, self.stats())
        if route == "requests" and req.method == "GET":
            raw = req.first("since") or "0"
            since = int(raw) if raw.lstrip("-").isdigit() else 0
            entries = self.requests_since(since)
            return json_response(200, {"requests": entries, "last": self._log_seq})
        if route == "config":
            if req.method == "GET":
                return json_response(200, {"config": self.config.as_dict()})
            if req.method == "POST":
                return self._admin_config(req)
        return json_response(404, {"detail": "Not found."})

    def stats(self) -> dict[str, Any]:
        """Per-user and total counts (jobs, active jobs, uploads, credits this month)."""
        now = self.clock()
        with self.store.transaction():
            self._advance(now)

            def zero() -> dict[str, int]:
                return dict.fromkeys(_STAT_KEYS, 0)

            users: dict[str, dict[str, int]] = {u.name: zero() for u in self.seed.users}
            for name, jobs, active, _ in self.store.job_stats():
                entry = users.setdefault(name, zero())
                entry["jobs"] = jobs
                entry["active_jobs"] = active
            for name, live, total in self.store.upload_stats():
                entry = users.setdefault(name, zero())
                entry["uploads_live"] = live
                entry["uploads_total"] = total
            for name, entry in users.items():
                entry["credits_used"] = self.store.credits_used(name, now - MONTH_SECONDS)
            statuses = self.store.status_counts()
        totals = {
            key: sum(u[key] for u in users.values())
            for key in _STAT_KEYS
        }
        totals["requests"] = self._log_seq
        return {"users": users, "totals": totals, "statuses": statuses}

    def _admin_config(self, req: Request) -> Response:
        try:
            body = json.loads(req.body.decode("utf-8") or "{}")
        except (UnicodeDecodeError, ValueError):
            return json_response(400, {"detail": "body must be a JSON object"})
        if not isinstance(body, dict):
            return json_response(400, {"detail": "body must be a JSON object"})
        reset = body.pop("reset_credits", None)
        try:
            new = self.config.with_mapping(body)
        except ValueError as exc:
            return json_response(400, {"detail": str(exc)})
        if reset is not None:
            if reset is not True and not isinstance(reset, str):
                return json_response(400, {"detail": "reset_credits must be true or a user name"})
            with self.store.transaction():
                self.store.reset_credits(None if reset is True else reset)
        self._config = new
        return json_response(200, {"config": new.as_dict()})


def _type_name(value: Any) -> str:
    return {dict: "dict", list: "list", str: "str", int: "int", float: "float", bool: "bool"}.get(
        type(value), "NoneType" if value is None else type(value).__name__
    )


def _input_key(civs: Iterable[int]) -> str:
    # Zero-padded so that keys of new values sort after old ones: the index grows at
    # its end instead of dirtying a random page per job.
    return ",".join(f"{c:012d}" for c in sorted(civs))


def _oxford(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    if len(items) == 2:
        return f"{items[0]} and {items[1]}"
    return ", ".join(items[:-1]) + f", and {items[-1]}"


def _interfaces_message(seed: Seed, alg: Algorithm) -> str:
    described = []
    for i, iface in enumerate(alg.interfaces, start=1):
        names = []
        for slug in iface.inputs:
            socket = seed.socket(slug)
            assert socket is not None
            names.append(f"{socket.title} ({socket.kind})")
        described.append(f"Interface {i}: {_oxford(names)}")
    return (
        "The set of inputs provided does not match any of the algorithm's interfaces. "
        "This algorithm supports the following input combinations: " + _oxford(described)
    )
