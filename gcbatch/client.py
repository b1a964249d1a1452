"""The Grand Challenge REST API over httpx.

Usage (one client per process; it is thread-safe, share it between worker threads)::

    from gcbatch.client import GrandChallengeClient
    from gcbatch.settings import resolve_settings

    s = resolve_settings(server_flag=None, token_file=None)
    with GrandChallengeClient(s.server, s.token) as gc:
        alg = gc.get_algorithm("lung-nodule-detector")          # -> models.Algorithm
        for job in gc.list_jobs(alg.pk):                          # every page, oldest first
            ...
        job = gc.create_job(alg.api_url, [{"interface": "age", "value": 3}])

Endpoints (all return values from :mod:`gcbatch.models`):

============================================  ==================================================
``get_algorithm(slug)``                       ``Algorithm`` (NotFoundError if absent/not usable)
``get_socket(slug)``                          ``Socket``
``list_jobs(algorithm_pk, input_image=...)``  iterator of ``Job`` over all pages
``get_job(pk_or_api_url)``                    ``Job``
``create_job(algorithm_url, inputs)``         ``Job`` — NEVER retried; see below
``create_upload(filename)``                   ``Upload`` (and the other upload calls, used by
                                              :mod:`gcbatch.uploads`)
``list_uploads()`` / ``get_upload(pk)``       the user's live uploads
``get_archive(slug)``                         ``Archive``
``list_archive_items(archive_pk)``            iterator of ``ArchiveItem``
``get_archive_item(pk)``                      ``ArchiveItem``
``list_images(name=..., **filters)``          iterator of ``Image``
``get_image(pk_or_api_url)``                  ``Image``
``download(url, dest)``                       streams a file (302 to storage followed without
                                              the token) to ``dest`` atomically
``get_json(path_or_url, params)``             escape hatch for anything else (GET, retried)
============================================  ==================================================

Token scoping, in one place (:class:`_ScopedBearerAuth`): the ``Authorization`` header is
added only to requests whose origin (scheme, host, port) is the API base URL's and that are
not marked anonymous. Presigned upload URLs and every redirect hop of a download are sent
anonymous even when they are on the API host. The token never appears in an exception
message (messages are also scrubbed of it, in case a server echoes it back).

Errors (gcbatch.errors): 400 → :class:`RequestRejectedError` (or the quota/duplicate
subclass picked by the server's message), 401 → :class:`AuthenticationError`, 403 →
:class:`PermissionDeniedError`, 404 → :class:`NotFoundError`, 429 →
:class:`RateLimitedError`, 5xx → :class:`ServerError`, no answer →
:class:`TransportError`. The server's messages are kept in ``.message``; the decoded body in
``.body``. Requests are retried according to the :class:`~gcbatch.retry.RetryPolicy`.

``create_job`` outcomes, which the executor's exactly-once logic relies on:

- a :class:`Job` — created (the 201 body lacks ``api_url``; it is filled from the base URL);
- :class:`RequestRejectedError` and subclasses, :class:`AuthenticationError`,
  :class:`PermissionDeniedError`, :class:`NotFoundError`, :class:`RateLimitedError` (any
  4xx) — *definitely* nothing was created;
- :class:`TransportError` — the connection could not be made (connect refused/timeout, no
  pool slot): the request was never sent, so nothing was created;
- :class:`InDoubtError` — anything else (timeout or reset after sending, any 5xx, a 2xx
  without a readable job): a job may exist; reconcile before resubmitting.
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urljoin

import httpx

from gcbatch import __version__
from gcbatch.errors import (
    ApiError,
    AuthenticationError,
    ConfigError,
    DuplicateJobError,
    InDoubtError,
    NotFoundError,
    OutOfCreditsError,
    PermissionDeniedError,
    RateLimitedError,
    RequestRejectedError,
    ServerError,
    TooManyActiveJobsError,
    TooManyUploadsError,
    TransportError,
)
from gcbatch.models import (
    Algorithm,
    Archive,
    ArchiveItem,
    Image,
    Job,
    MalformedResponse,
    Socket,
    Upload,
    UploadPart,
)
from gcbatch.retry import UNSENT_EXCEPTIONS, GiveUp, RetryPolicy, parse_retry_after
from gcbatch.settings import Token, normalise_server_url

__all__ = ["GrandChallengeClient", "error_messages", "rejection_class"]

T = TypeVar("T")

#: request extension key: send this request without the token whatever its host
_ANONYMOUS = "gcbatch.anonymous"
_PAGE_LIMIT_MAX = 1000
_MAX_PAGES = 100_000  # a bound on any pagination loop (100M objects at 1000/page)
_MAX_REDIRECTS = 5
_DOWNLOAD_CHUNK = 1024 * 1024
_MESSAGE_MAX = 2000

# The server's messages (shared/gc-observed) → the error class that means it.
_REJECTIONS: tuple[tuple[str, type[RequestRejectedError]], ...] = (
    ("too many active jobs", TooManyActiveJobsError),
    ("run out of algorithm credits", OutOfCreditsError),
    ("too many uploads", TooManyUploadsError),
    ("a result for these inputs", DuplicateJobError),
)


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    scheme = url.scheme.lower()
    port = url.port
    if port is None:
        port = {"https": 443, "http": 80}.get(scheme)
    return scheme, url.host.lower(), port


class _ScopedBearerAuth(httpx.Auth):
    """Adds ``Authorization: Bearer`` only for the API origin; strips it everywhere else."""

    def __init__(self, token: Token | None, api_origin: tuple[str, str, int | None]) -> None:
        self._token = token
        self._origin = api_origin

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        allowed = (
            self._token is not None
            and not request.extensions.get(_ANONYMOUS)
            and _origin(request.url) == self._origin
        )
        if allowed:
            assert self._token is not None
            request.headers["Authorization"] = self._token.header_value()
        else:
            request.headers.pop("Authorization", None)
        yield request


# ---------------------------------------------------------------------------------------
# error mapping (pure)


def error_messages(body: Any, prefix: str = "") -> list[str]:
    """Flatten a DRF error body into readable lines, keeping the server's wording.

    ``{"inputs": [{"__all__": ["JSON does not ..."]}]}`` → ``["inputs[0]: JSON does not ..."]``;
    ``{"non_field_errors": ["X"]}`` and ``{"detail": "X"}`` → ``["X"]``.
    """
    out: list[str] = []
    if isinstance(body, Mapping):
        for key, value in body.items():
            if key in ("non_field_errors", "__all__", "detail"):
                sub = prefix
            else:
                sub = f"{prefix}.{key}" if prefix else str(key)
            out.extend(error_messages(value, sub))
    elif isinstance(body, list):
        if all(isinstance(v, str) for v in body):
            out.extend(f"{prefix}: {v}" if prefix else v for v in body)
        else:
            for i, value in enumerate(body):
                out.extend(error_messages(value, f"{prefix}[{i}]"))
    elif body is not None and body != "":
        text = str(body)
        out.append(f"{prefix}: {text}" if prefix else text)
    return out


def rejection_class(messages: Iterable[str]) -> type[RequestRejectedError]:
    """The most specific 400 class for these messages (quota, duplicate, else generic)."""
    lowered = [m.lower() for m in messages]
    for needle, cls in _REJECTIONS:
        if any(needle in m for m in lowered):
            return cls
    return RequestRejectedError


def _decode_body(response: httpx.Response) -> Any:
    content_type = response.headers.get("content-type", "")
    text = response.text
    if "json" in content_type:
        try:
            return jsonlib.loads(text) if text else None
        except ValueError:
            return text
    return text


def _summarise_text(text: str) -> str:
    # Django debug pages are huge; the first line names the exception.
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first[:300]


# ---------------------------------------------------------------------------------------


class GrandChallengeClient:
    """A thread-safe client for one Grand Challenge API base URL and token.

    ``transport`` replaces the network (``httpx.MockTransport``, the sandbox's in-process
    transport). ``verify`` is True, False (never for real use) or a CA bundle path.
    ``sleep`` and ``clock`` are injectable so tests of the retry loop do not wait.
    ``on_retry(message)`` is called before each retry's wait (for progress/log lines).
    """

    def __init__(
        self,
        base_url: str,
        token: Token | str | None,
        *,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        max_connections: int = 32,
        timeout: float = 60.0,
        verify: bool | str | ssl.SSLContext = True,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.base_url = normalise_server_url(base_url, source="API base URL")
        self._base = httpx.URL(self.base_url)
        self._origin = _origin(self._base)
        self._token = Token(token) if isinstance(token, str) else token
        self._retry = retry if retry is not None else RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._on_retry = on_retry
        self._lock = threading.Lock()
        self.requests_sent = 0
        self.retries = 0

        if isinstance(verify, str):
            ssl_verify: bool | ssl.SSLContext = ssl.create_default_context(cafile=verify)
        else:
            ssl_verify = verify
        http_timeout = httpx.Timeout(
            timeout, connect=min(10.0, timeout), pool=max(60.0, 4 * timeout)
        )
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        if transport is None:
            # TCP_NODELAY explicitly: httpcore writes a request's headers and body in
            # separate send() calls; without NODELAY the body waits for the server's
            # delayed ACK (~40 ms per POST/PUT; see shared/design-notes.md). httpcore
            # 1.x sets it itself, older ones do not, so we never depend on that.
            transport = httpx.HTTPTransport(
                verify=ssl_verify,
                limits=limits,
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            )
        self._transport = transport
        self._http = httpx.Client(
            auth=_ScopedBearerAuth(self._token, self._origin),
            transport=transport,
            timeout=http_timeout,
            follow_redirects=False,
            trust_env=False,
            headers={"Accept": "application/json", "User-Agent": f"gcbatch/{__version__}"},
        )

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GrandChallengeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GrandChallengeClient({self.base_url!r}, token={'set' if self._token else 'none'})"

    @property
    def has_token(self) -> bool:
        return self._token is not None

    # -- URLs -----------------------------------------------------------------------------

    def url(self, path: str) -> str:
        """An absolute URL for ``path`` (relative to the base) or an absolute API URL.

        An absolute URL on another origin is refused: following it would either send the
        token elsewhere (we never do) or silently act anonymously.
        """
        if "://" in path:
            if _origin(httpx.URL(path)) != self._origin:
                raise ConfigError(
                    f"URL {self._display(path)} is not on the configured server {self.base_url}"
                )
            return path
        return urljoin(self.base_url, path.lstrip("/"))

    def is_api_url(self, url: str) -> bool:
        return _origin(httpx.URL(url)) == self._origin

    def _display(self, url: str | httpx.URL) -> str:
        """A URL safe to show: query strings (presigned signatures) dropped off-API."""
        u = httpx.URL(str(url))
        if _origin(u) == self._origin:
            return str(u)
        return str(u.copy_with(query=None, fragment=None))

    def _scrub(self, text: str) -> str:
        if self._token is not None:
            secret = self._token.reveal()
            # (a 1-3 character "token" is a test value; scrubbing it would mangle text)
            if len(secret) >= 4 and secret in text:
                text = text.replace(secret, "***")
        return text

    # -- the request loop -------------------------------------------------------------------

    def _count(self, *, retry: bool = False) -> None:
        with self._lock:
            if retry:
                self.retries += 1
            else:
                self.requests_sent += 1

    def _send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        json: Any = None,
        content: Callable[[], bytes | Iterable[bytes]] | None = None,
        headers: Mapping[str, str] | None = None,
        anonymous: bool = False,
        idempotent: bool | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """Send with retries; return the final response (any status) or raise TransportError.

        ``content`` is a factory so each attempt gets a fresh body (a part re-read from
        disk, not buffered). With ``stream`` the caller must close the response.
        """
        start = self._clock()
        attempt = 0
        while True:
            attempt += 1
            request = self._http.build_request(
                method,
                url,
                params=_items(params) if params is not None else None,
                json=json,
                content=content() if content is not None else None,
                headers=headers,
                extensions={_ANONYMOUS: True} if anonymous else None,
            )
            self._count()
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                decision = self._retry.decide(
                    attempt, method, exc, elapsed=self._clock() - start, idempotent=idempotent
                )
                if isinstance(decision, GiveUp):
                    raise TransportError(
                        self._scrub(
                            f"{method} {self._display(url)}: no answer from the server "
                            f"({type(exc).__name__}: {exc or 'no details'}); {decision.reason}"
                        )
                    ) from None
                self._wait(decision.delay, f"{method} {self._display(url)}: {decision.reason}")
                continue
            if response.status_code < 400 or response.status_code not in self._retry.statuses:
                return response
            decision = self._retry.decide(
                attempt,
                method,
                response.status_code,
                response.headers,
                elapsed=self._clock() - start,
                idempotent=idempotent,
            )
            if isinstance(decision, GiveUp):
                return response
            response.close()
            self._wait(decision.delay, f"{method} {self._display(url)}: {decision.reason}")

    def _wait(self, delay: float, message: str) -> None:
        self._count(retry=True)
        if self._on_retry is not None:
            self._on_retry(message)
        self._sleep(delay)

    def _error(self, response: httpx.Response, *, what: str = "") -> ApiError:
        """The gcbatch error for an error response (the caller raises it)."""
        status = response.status_code
        body = _decode_body(response)
        if isinstance(body, str):
            lines = [_summarise_text(body)] if body.strip() else []
            body_kept: Any = _summarise_text(body)
        else:
            lines = error_messages(body)
            body_kept = body
        detail = "; ".join(lines) if lines else (response.reason_phrase or "no details")
        where = what or f"{response.request.method} {self._display(response.request.url)}"
        message = self._scrub(f"{where}: HTTP {status}: {detail}")[:_MESSAGE_MAX]
        url = self._display(response.request.url)
        cls: type[ApiError]
        if status == 400:
            cls = rejection_class(lines)
        elif status == 401:
            cls = AuthenticationError
            hint = (
                " (no token was sent)"
                if not self._token
                else " (check GRAND_CHALLENGE_AUTHORIZATION / --token-file)"
            )
            message += hint
        elif status == 403:
            cls = PermissionDeniedError
        elif status == 404:
            cls = NotFoundError
        elif status == 429:
            cls = RateLimitedError
        elif status >= 500:
            cls = ServerError
        else:
            cls = ApiError
        error = cls(message, status=status, body=body_kept, url=url)
        if isinstance(error, RateLimitedError):
            error.retry_after = parse_retry_after(response.headers.get("retry-after"))
        return error

    def _json(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        json: Any = None,
        idempotent: bool | None = None,
        ok: tuple[int, ...] = (200,),
        what: str = "",
    ) -> Any:
        url = self.url(path_or_url)
        response = self._send(method, url, params=params, json=json, idempotent=idempotent)
        if response.status_code not in ok:
            raise self._error(response, what=what)
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                f"{method} {self._display(url)}: the server's answer is not JSON",
                status=response.status_code,
                url=self._display(url),
            ) from None

    def _parse(self, parser: Callable[[Any], T], data: Any, url: str) -> T:
        try:
            return parser(data)
        except MalformedResponse as exc:
            raise ApiError(
                f"unexpected answer from {self._display(url)}: {exc}", status=200, url=url
            ) from None

    def get_json(
        self, path_or_url: str, params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None
    ) -> Any:
        """GET any API path (retried) and return the decoded JSON."""
        return self._json("GET", path_or_url, params=params)

    def paginate(
        self,
        path: str,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        *,
        limit: int = _PAGE_LIMIT_MAX,
    ) -> Iterator[Any]:
        """Every result of a limit/offset list endpoint, page after page.

        The next page is requested on OUR base URL with the query of the server's ``next``
        link (the server builds ``next`` from its own idea of its host, which behind a proxy
        can differ from ours: following it verbatim could drop the token and silently
        return an anonymous, empty list).
        """
        url = self.url(path)
        query: list[tuple[str, Any]] = [
            (k, v) for k, v in _items(params) if k not in ("limit", "offset")
        ]
        query += [("limit", max(1, min(limit, _PAGE_LIMIT_MAX))), ("offset", 0)]
        seen_offsets: set[str] = set()
        for _ in range(_MAX_PAGES):
            page = self._json("GET", url, params=query)
            if not isinstance(page, Mapping) or not isinstance(page.get("results"), list):
                raise ApiError(
                    f"unexpected answer from {self._display(url)}: not a paginated list",
                    status=200,
                    url=self._display(url),
                )
            yield from page["results"]
            next_link = page.get("next")
            if not next_link or not page["results"]:
                return
            query = parse_qsl(httpx.URL(str(next_link)).query.decode(), keep_blank_values=True)
            key = repr(sorted(query))
            if key in seen_offsets:  # a server bug must not make us loop forever
                return
            seen_offsets.add(key)
        raise ApiError(f"{self._display(url)}: too many pages", status=200, url=url)

    def _one_by_slug(self, path: str, slug: str, what: str) -> Any:
        results = [
            r for r in self.paginate(path, {"slug": slug}, limit=10) if isinstance(r, Mapping)
        ]
        exact = [r for r in results if r.get("slug") in (None, slug)]
        if not exact:
            raise NotFoundError(
                f"{what} {slug!r} not found on {self.base_url} (or your account may not see it)",
                status=404,
                url=self.url(path),
            )
        return exact[0]

    # -- algorithms, sockets ----------------------------------------------------------------

    def get_algorithm(self, slug: str) -> Algorithm:
        """The algorithm by slug; NotFoundError if it does not exist or the user cannot use it."""
        data = self._one_by_slug("algorithms/", slug, "algorithm")
        return self._parse(Algorithm.from_json, data, self.url("algorithms/"))

    def get_socket(self, slug: str) -> Socket:
        data = self._one_by_slug("components/interfaces/", slug, "socket")
        return self._parse(Socket.from_json, data, self.url("components/interfaces/"))

    # -- jobs -----------------------------------------------------------------------------

    def job_url(self, pk: str) -> str:
        return self.url(f"algorithms/jobs/{pk}/")

    def list_jobs(
        self,
        algorithm_pk: str | None = None,
        *,
        input_image: str | Sequence[str] | None = None,
        output_image: str | None = None,
        limit: int = _PAGE_LIMIT_MAX,
    ) -> Iterator[Job]:
        """Jobs the user can see (others' public ones included!), oldest first, all pages.

        ``algorithm_pk`` filters on ``algorithm_image__algorithm``; ``input_image`` (one pk
        or several) on the images used as inputs. There is no status filter on the server.
        """
        params: list[tuple[str, Any]] = []
        if algorithm_pk:
            params.append(("algorithm_image__algorithm", algorithm_pk))
        if input_image:
            images = [input_image] if isinstance(input_image, str) else list(input_image)
            params += [("input_image", pk) for pk in images]
        if output_image:
            params.append(("output_image", output_image))
        url = self.url("algorithms/jobs/")
        for item in self.paginate("algorithms/jobs/", params, limit=limit):
            yield self._parse(Job.from_json, item, url)

    def get_job(self, pk_or_url: str) -> Job:
        url = self.url(pk_or_url) if "://" in pk_or_url else self.job_url(pk_or_url)
        data = self._json("GET", url)
        return self._parse(lambda d: Job.from_json(d, api_url=url), data, url)

    def _post_direct(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` (to our own API, built by our client: its URL, default
        headers and timeouts) straight through the transport, and read the answer.

        The job POST is the one request sent once per case (100,000s of times) and the
        Client's layers around the transport (the auth-flow generator, redirect handling,
        the cookie jar's per-response parsing) were a quarter of its CPU time. None of
        them does anything for it: it follows no redirect, the API sets no cookie we
        would send back, and the token header is what ``_ScopedBearerAuth`` adds for our
        origin, which this URL always is (``self.url``).
        """
        if self._token is not None:
            request.headers["Authorization"] = self._token.header_value()
        response = self._transport.handle_request(request)
        response.request = request
        try:
            response.read()
        finally:
            response.close()
        return response

    def create_job(self, algorithm_url: str, inputs: Sequence[Mapping[str, Any]]) -> Job:
        """POST a job. Never retried; see the module docstring for the outcome contract."""
        url = self.url("algorithms/jobs/")
        body = {"algorithm": algorithm_url, "inputs": [dict(i) for i in inputs]}
        request = self._http.build_request("POST", url, json=body)
        self._count()
        try:
            response = self._post_direct(request)
        except UNSENT_EXCEPTIONS as exc:
            raise TransportError(
                f"POST {url}: could not connect ({type(exc).__name__}); the job was not sent"
            ) from None
        except httpx.TransportError as exc:
            raise InDoubtError(
                f"POST {url}: no answer after sending ({type(exc).__name__}); "
                "a job may or may not have been created"
            ) from None
        status = response.status_code
        if status in (200, 201):
            try:
                data = response.json()
                pk = str(data["pk"])
                return Job.from_json(data, api_url=self.job_url(pk))
            except (ValueError, KeyError, TypeError, MalformedResponse):
                raise InDoubtError(
                    f"POST {url}: HTTP {status} but the answer is not a readable job; "
                    "a job was probably created"
                ) from None
        if 400 <= status < 500:
            raise self._error(response)
        summary = self._error(response).message
        raise InDoubtError(
            f"{summary} — the server may or may not have created the job"
            if status >= 500
            else f"POST {url}: unexpected HTTP {status}; the job may or may not exist"
        )

    # -- uploads (used by gcbatch.uploads) ---------------------------------------------------

    def create_upload(self, filename: str) -> Upload:
        """POST uploads/. Retried: a repeated create only leaves an unused upload behind
        (it expires after a day), never a second job."""
        data = self._json(
            "POST", "uploads/", json={"filename": filename}, idempotent=True, ok=(200, 201)
        )
        return self._parse(Upload.from_json, data, self.url("uploads/"))

    def _upload_action(self, upload: Upload, action: str) -> str:
        return self.url(f"uploads/{upload.pk}/{upload.s3_upload_id}/{action}/")

    def generate_presigned_urls(self, upload: Upload, part_numbers: Sequence[int]) -> Upload:
        url = self._upload_action(upload, "generate-presigned-urls")
        data = self._json("PATCH", url, json={"part_numbers": list(part_numbers)}, idempotent=True)
        return self._parse(Upload.from_json, data, url)

    def list_parts(self, upload: Upload) -> tuple[UploadPart, ...]:
        url = self._upload_action(upload, "list-parts")
        data = self._json("GET", url)
        return self._parse(Upload.from_json, data, url).parts

    def complete_upload(self, upload: Upload, parts: Sequence[tuple[int, str]]) -> Upload:
        """Complete with ``(part_number, etag)`` pairs.

        Retried although it is a PATCH: if an earlier attempt did complete the upload and
        only its answer was lost, the server answers 500 ("completing twice"); we then look
        at the upload and accept it if it is Completed.
        """
        url = self._upload_action(upload, "complete-multipart-upload")
        body = {"parts": [{"ETag": etag, "PartNumber": n} for n, etag in sorted(parts)]}
        response = self._send("PATCH", url, json=body, idempotent=True)
        if response.status_code == 200:
            return self._parse(Upload.from_json, response.json(), url)
        error = self._error(response, what=f"completing upload {upload.filename!r}")
        if response.status_code >= 500:
            with contextlib.suppress(ApiError, TransportError):
                current = self.get_upload(upload.pk)
                if current.is_completed:
                    return current
        raise error

    def abort_upload(self, upload: Upload) -> Upload | None:
        """Abort (best effort): returns the upload, or None if it was already gone/final."""
        url = self._upload_action(upload, "abort-multipart-upload")
        response = self._send("PATCH", url, idempotent=True)
        if response.status_code == 200:
            return self._parse(Upload.from_json, response.json(), url)
        if response.status_code in (404, 500):
            return None
        raise self._error(response, what=f"aborting upload {upload.filename!r}")

    def get_upload(self, pk_or_url: str) -> Upload:
        url = self.url(pk_or_url) if "://" in pk_or_url else self.url(f"uploads/{pk_or_url}/")
        return self._parse(Upload.from_json, self._json("GET", url), url)

    def list_uploads(self, limit: int = _PAGE_LIMIT_MAX) -> Iterator[Upload]:
        """The user's live uploads (not yet consumed by a job, not expired)."""
        url = self.url("uploads/")
        for item in self.paginate("uploads/", limit=limit):
            yield self._parse(Upload.from_json, item, url)

    def put_part(
        self,
        presigned_url: str,
        content: Callable[[], bytes | Iterable[bytes]],
        length: int,
    ) -> str:
        """PUT one part to its presigned URL, WITHOUT the token; return the part's ETag.

        ``content`` is called once per attempt (so a retry re-reads the part from disk);
        ``length`` is sent as Content-Length (storage rejects chunked bodies).
        """
        response = self._send(
            "PUT",
            presigned_url,
            content=content,
            headers={"Content-Length": str(length)},
            anonymous=True,
            idempotent=True,
        )
        if response.status_code != 200:
            raise self._error(response, what=f"PUT part to {self._display(presigned_url)}")
        etag = response.headers.get("etag")
        if not etag:
            raise ApiError(
                f"PUT part to {self._display(presigned_url)}: no ETag in the answer",
                status=response.status_code,
                url=self._display(presigned_url),
            )
        return str(etag)

    # -- archives, images -----------------------------------------------------------------

    def get_archive(self, slug: str) -> Archive:
        data = self._one_by_slug("archives/", slug, "archive")
        return self._parse(Archive.from_json, data, self.url("archives/"))

    def list_archive_items(
        self, archive_pk: str, limit: int = _PAGE_LIMIT_MAX
    ) -> Iterator[ArchiveItem]:
        """Items of one archive (no guaranteed order: sort if you need one)."""
        url = self.url("archives/items/")
        for item in self.paginate("archives/items/", {"archive": archive_pk}, limit=limit):
            yield self._parse(ArchiveItem.from_json, item, url)

    def get_archive_item(self, pk_or_url: str) -> ArchiveItem:
        url = (
            self.url(pk_or_url) if "://" in pk_or_url else self.url(f"archives/items/{pk_or_url}/")
        )
        return self._parse(ArchiveItem.from_json, self._json("GET", url), url)

    def list_images(
        self, *, name: str | None = None, limit: int = _PAGE_LIMIT_MAX, **filters: str
    ) -> Iterator[Image]:
        """Images by ``name`` and/or other server filters (``job_input``, ``archive``, ...)."""
        params: list[tuple[str, Any]] = []
        if name is not None:
            params.append(("name", name))
        params += sorted(filters.items())
        url = self.url("cases/images/")
        for item in self.paginate("cases/images/", params, limit=limit):
            yield self._parse(Image.from_json, item, url)

    def get_image(self, pk_or_url: str) -> Image:
        url = self.url(pk_or_url) if "://" in pk_or_url else self.url(f"cases/images/{pk_or_url}/")
        return self._parse(Image.from_json, self._json("GET", url), url)

    # -- downloads --------------------------------------------------------------------------

    def download(
        self,
        url: str,
        dest: str | os.PathLike[str],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Stream ``url`` (a file URL, normally on the API host) to ``dest``; return the size.

        The first request carries the token if it is on the API host (protected media
        need it); redirect hops (302 to storage) are sent without it, whatever their host,
        and so is a URL that is not on the API host at all. The bytes go to a
        temporary file beside ``dest`` that is renamed into place only when complete, so a
        crash never leaves a truncated result under the real name. A connection lost in
        the middle of the body restarts the download (per the retry policy); ``progress``
        then sees the re-sent bytes again.
        """
        target = Path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        start = self._clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._download_once(url, target, progress)
            except _BodyBroken as broken:
                decision = self._retry.decide(
                    attempt, "GET", broken.cause, elapsed=self._clock() - start
                )
                if isinstance(decision, GiveUp):
                    raise TransportError(
                        f"downloading {self._display(url)}: connection lost after "
                        f"{broken.received} bytes ({type(broken.cause).__name__}); "
                        f"{decision.reason}"
                    ) from None
                self._wait(decision.delay, f"GET {self._display(url)}: {decision.reason}")

    def _download_once(self, url: str, target: Path, progress: Callable[[int], None] | None) -> int:
        # A file URL on the API host gets the token; one elsewhere (a CDN, storage) is
        # fetched anonymously rather than refused: no token can leak that way.
        anonymous = "://" in url and not self.is_api_url(url)
        current = url if anonymous else self.url(url)
        for _ in range(_MAX_REDIRECTS + 1):
            response = self._send("GET", current, anonymous=anonymous, stream=True)
            try:
                if response.status_code in (301, 302, 303, 307, 308):
                    location = response.headers.get("location")
                    if not location:
                        raise ApiError(
                            f"GET {self._display(current)}: redirect without a Location",
                            status=response.status_code,
                            url=self._display(current),
                        )
                    current = str(httpx.URL(current).join(location))
                    anonymous = True  # storage: never the token
                    continue
                if response.status_code != 200:
                    response.read()
                    raise self._error(response, what=f"downloading {self._display(current)}")
                return _save(response, target, progress)
            finally:
                response.close()
        raise ApiError(
            f"GET {self._display(url)}: more than {_MAX_REDIRECTS} redirects",
            status=302,
            url=self._display(url),
        )


class _BodyBroken(Exception):
    """The connection broke while a response body was being read."""

    def __init__(self, cause: httpx.TransportError, received: int) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.received = received


def _save(response: httpx.Response, target: Path, progress: Callable[[int], None] | None) -> int:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    total = 0
    try:
        with os.fdopen(fd, "wb") as handle:
            try:
                for chunk in response.iter_bytes(_DOWNLOAD_CHUNK):
                    handle.write(chunk)
                    total += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
            except httpx.TransportError as exc:
                raise _BodyBroken(exc, total) from None
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    return total


def _items(
    params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None,
) -> list[tuple[str, Any]]:
    if params is None:
        return []
    if isinstance(params, Mapping):
        return list(params.items())
    return list(params)
