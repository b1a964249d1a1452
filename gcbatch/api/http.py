"""The send layer under :class:`gcbatch.api.client.GrandChallengeClient`: one place for
how a request to Grand Challenge is made, retried, authenticated and turned into an error.

Layered like httpx's own ``send``: the endpoint methods (:mod:`gcbatch.api.client`) build
paths and parse models; :class:`ApiHttp` below resolves URLs against the API base, adds the
token where (and only where) it belongs, retries by the :class:`~gcbatch.api.retry.RetryPolicy`,
maps error statuses to the exception tree and decodes JSON; the httpx transport moves bytes.

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
``.body``. Each retry is reported as a :class:`~gcbatch.events.RequestRetried` event.

Bounds (:mod:`gcbatch.api.limits`): every answer is read up to a size per kind (an API
answer, an error, a download) under a deadline for the whole request, and a list is paged
no further than the ``count`` its first page announced (plus a little for objects created
meanwhile), whatever its ``next`` links say.
"""

from __future__ import annotations

import json as jsonlib
import math
import socket
import ssl
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urljoin

import httpx

from gcbatch import __version__
from gcbatch.api.limits import (
    DeadlineTransport,
    Limits,
    ResponseTooLarge,
    bounded_stream,
    buffered,
    read_capped,
    within,
)
from gcbatch.api.models import MalformedResponse
from gcbatch.api.retry import GiveUp, RetryPolicy, parse_retry_after
from gcbatch.api.settings import Token, normalise_server_url, ssl_context
from gcbatch.errors import (
    ApiError,
    AuthenticationError,
    ConfigError,
    DuplicateJobError,
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
from gcbatch.events import Hook, RequestRetried, ignore

__all__ = [
    "PAGE_LIMIT_MAX",
    "ApiHttp",
    "Params",
    "error_messages",
    "rejection_class",
]

T = TypeVar("T")
Params = Mapping[str, Any] | Sequence[tuple[str, Any]]

#: request extension key: send this request without the token whatever its host
_ANONYMOUS = "gcbatch.anonymous"
#: the platform's ``max_limit`` for list endpoints
PAGE_LIMIT_MAX = 1000
_MAX_PAGES = 100_000  # a bound on any pagination loop (100M objects at 1000/page)
_MESSAGE_MAX = 2000
#: how far a list may outgrow the ``count`` its first page announced (objects created
#: while we page, e.g. the jobs an apply is submitting) before we call it a broken server
_COUNT_SLACK = 0.10

# The server's messages (as recorded in tests/data/gc-observed/) → the error class that means it.
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


class ApiHttp:
    """Requests to one API base URL with one token: URLs, auth, retries, errors, JSON.

    Thread-safe (one per process, shared by worker threads). ``transport`` replaces the
    network (``httpx.MockTransport``, the sandbox's in-process transport); ``verify`` is
    True, False (never for real use) or a CA bundle path; ``sleep``/``clock`` are
    injectable so tests of the retry loop do not wait; ``on_event`` receives a
    :class:`~gcbatch.events.RequestRetried` before each retry's wait.
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
        on_event: Hook = ignore,
        limits: Limits | None = None,
    ) -> None:
        self.base_url = normalise_server_url(base_url, source="API base URL")
        self.limits = limits if limits is not None else Limits()
        self._base = httpx.URL(self.base_url)
        self._origin = _origin(self._base)
        self._token = Token(token) if isinstance(token, str) else token
        self._retry = retry if retry is not None else RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._on_event = on_event
        self._lock = threading.Lock()
        self.requests_sent = 0
        self.retries = 0

        http_timeout = httpx.Timeout(
            timeout, connect=min(10.0, timeout), pool=max(60.0, 4 * timeout)
        )
        pool_limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        if transport is None:
            # TCP_NODELAY explicitly: httpcore writes a request's headers and body in
            # separate send() calls; without NODELAY the body waits for the server's
            # delayed ACK (~40 ms per POST/PUT; docs/architecture.md, "Performance notes"). httpcore
            # 1.x sets it itself, older ones do not, so we never depend on that.
            transport = DeadlineTransport(
                ssl_context=ssl_context(verify),
                limits=pool_limits,
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            )
        self._transport = transport
        self.client = httpx.Client(
            auth=_ScopedBearerAuth(self._token, self._origin),
            transport=transport,
            timeout=http_timeout,
            follow_redirects=False,
            trust_env=False,
            headers={"Accept": "application/json", "User-Agent": f"gcbatch/{__version__}"},
        )

    def close(self) -> None:
        self.client.close()

    @property
    def has_token(self) -> bool:
        return self._token is not None

    @property
    def token(self) -> Token | None:
        return self._token

    @property
    def retry(self) -> RetryPolicy:
        return self._retry

    def url(self, path: str) -> str:
        """An absolute URL for ``path`` (relative to the base) or an absolute API URL.

        An absolute URL on another origin is refused: following it would either send the
        token elsewhere (we never do) or silently act anonymously.
        """
        if "://" in path:
            if _origin(httpx.URL(path)) != self._origin:
                raise ConfigError(
                    f"URL {self.display(path)} is not on the configured server {self.base_url}"
                )
            return path
        return urljoin(self.base_url, path.lstrip("/"))

    def is_api_url(self, url: str) -> bool:
        return _origin(httpx.URL(url)) == self._origin

    def display(self, url: str | httpx.URL) -> str:
        """A URL safe to show: query strings (presigned signatures) dropped off-API."""
        u = httpx.URL(str(url))
        if _origin(u) == self._origin:
            return str(u)
        return str(u.copy_with(query=None, fragment=None))

    def scrub(self, text: str) -> str:
        if self._token is not None:
            secret = self._token.reveal()
            # (a 1-3 character "token" is a test value; scrubbing it would mangle text)
            if len(secret) >= 4 and secret in text:
                text = text.replace(secret, "***")
        return text

    def count(self, *, retry: bool = False) -> None:
        with self._lock:
            if retry:
                self.retries += 1
            else:
                self.requests_sent += 1

    def send(
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
        transfer = stream or content is not None
        while True:
            attempt += 1
            request = self.client.build_request(
                method,
                url,
                params=_items(params) if params is not None else None,
                json=json,
                content=content() if content is not None else None,
                headers=headers,
                extensions={_ANONYMOUS: True} if anonymous else None,
            )
            self.count()
            deadline = (self.limits.transfer_deadline() if transfer
                        else self.limits.api_deadline())
            try:
                with within(deadline):
                    response = self.client.send(request, stream=True)
                bounded_stream(response, deadline)
                if not stream:
                    response = self._load(response, method, url)
            except httpx.TransportError as exc:
                decision = self._retry.decide(
                    attempt, method, exc, elapsed=self._clock() - start, idempotent=idempotent
                )
                if isinstance(decision, GiveUp):
                    raise TransportError(
                        self.scrub(
                            f"{method} {self.display(url)}: no answer from the server "
                            f"({type(exc).__name__}: {exc or 'no details'}); {decision.reason}"
                        )
                    ) from None
                self.wait(decision.delay, method, url, decision.reason)
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
            self.wait(decision.delay, method, url, decision.reason)

    def _load(self, response: httpx.Response, method: str, url: str) -> httpx.Response:
        """The response with its body read, within the size bound of its kind: an error's
        is cut at ``error_max``; a success's past ``json_max`` is refused."""
        if response.status_code >= 400:
            return buffered(response, read_capped(response, self.limits.error_max,
                                                  truncate=True))
        try:
            return buffered(response, read_capped(response, self.limits.json_max))
        except ResponseTooLarge as exc:
            raise ApiError(
                f"{method} {self.display(url)}: the answer is {exc}; refusing to read it "
                "(no answer of this API is that large)",
                status=response.status_code, url=self.display(url),
            ) from None

    def read_error_body(self, response: httpx.Response) -> httpx.Response:
        """A streamed error response with (the start of) its body read, for :meth:`error`."""
        try:
            response.content  # noqa: B018 - read already?
        except httpx.ResponseNotRead:
            return buffered(response, read_capped(response, self.limits.error_max,
                                                  truncate=True))
        return response

    def wait(self, delay: float, method: str, url: str | httpx.URL, reason: str) -> None:
        """Count a retry, report it, and sleep ``delay`` seconds before it."""
        self.count(retry=True)
        self._on_event(RequestRetried(method, self.display(url), self.scrub(reason), delay))
        self._sleep(delay)

    def error(self, response: httpx.Response, *, what: str = "") -> ApiError:
        """The gcbatch error for an error response (the caller raises it)."""
        response = self.read_error_body(response)
        status = response.status_code
        body = _decode_body(response)
        if isinstance(body, str):
            lines = [_summarise_text(body)] if body.strip() else []
            body_kept: Any = _summarise_text(body)
        else:
            lines = error_messages(body)
            body_kept = body
        detail = "; ".join(lines) if lines else (response.reason_phrase or "no details")
        where = what or f"{response.request.method} {self.display(response.request.url)}"
        message = self.scrub(f"{where}: HTTP {status}: {detail}")[:_MESSAGE_MAX]
        url = self.display(response.request.url)
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

    def json(
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
        response = self.send(method, url, params=params, json=json, idempotent=idempotent)
        if response.status_code not in ok:
            raise self.error(response, what=what)
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                f"{method} {self.display(url)}: the server's answer is not JSON",
                status=response.status_code,
                url=self.display(url),
            ) from None

    def parse(self, parser: Callable[[Any], T], data: Any, url: str) -> T:
        try:
            return parser(data)
        except MalformedResponse as exc:
            raise ApiError(
                f"unexpected answer from {self.display(url)}: {exc}", status=200, url=url
            ) from None

    def get_json(
        self, path_or_url: str, params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None
    ) -> Any:
        """GET any API path (retried) and return the decoded JSON."""
        return self.json("GET", path_or_url, params=params)

    def paginate(
        self,
        path: str,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        *,
        limit: int = PAGE_LIMIT_MAX,
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
        query += [("limit", max(1, min(limit, PAGE_LIMIT_MAX))), ("offset", 0)]
        seen_offsets: set[str] = set()
        pages_allowed = _MAX_PAGES
        for page_number in range(1, _MAX_PAGES + 1):
            if page_number > pages_allowed:
                raise ApiError(
                    f"{self.display(url)}: the list did not end after {pages_allowed} pages, "
                    "although its first page said how many objects it holds; the server's "
                    "pagination is broken, refusing to follow it further",
                    status=200, url=self.display(url))
            page = self.json("GET", url, params=query)
            if not isinstance(page, Mapping) or not isinstance(page.get("results"), list):
                raise ApiError(
                    f"unexpected answer from {self.display(url)}: not a paginated list",
                    status=200,
                    url=self.display(url),
                )
            if page_number == 1:
                pages_allowed = self._pages_for(page.get("count"), limit, url)
            yield from page["results"]
            next_link = page.get("next")
            if not next_link or not page["results"]:
                return
            if not isinstance(next_link, str):
                raise ApiError(f"unexpected answer from {self.display(url)}: 'next' is not "
                               "a URL", status=200, url=self.display(url))
            query = parse_qsl(httpx.URL(next_link).query.decode(), keep_blank_values=True)
            key = repr(sorted(query))
            if key in seen_offsets:  # a server bug must not make us loop forever
                return
            seen_offsets.add(key)
        raise ApiError(f"{self.display(url)}: too many pages", status=200, url=url)

    def _pages_for(self, count: Any, limit: int, url: str) -> int:
        """How many pages a list of ``count`` objects may take (its first page's word, with
        room for objects created while we page)."""
        if type(count) is not int or count < 0:
            raise ApiError(f"unexpected answer from {self.display(url)}: the list's 'count' "
                           f"is {count!r}, not a number of objects", status=200,
                           url=self.display(url))
        page_size = max(1, min(limit, PAGE_LIMIT_MAX))
        return math.ceil(count * (1 + _COUNT_SLACK) / page_size) + 2

    def post_direct(self, request: httpx.Request) -> httpx.Response:
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
        with within(self.limits.api_deadline()):
            response = self._transport.handle_request(request)
            response.request = request
            # an answer too large to be a job is cut short: unreadable, so in doubt
            body = read_capped(response, self.limits.json_max, truncate=True)
        return buffered(response, body)



def _items(
    params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None,
) -> list[tuple[str, Any]]:
    if params is None:
        return []
    if isinstance(params, Mapping):
        return list(params.items())
    return list(params)
