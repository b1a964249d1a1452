"""The Grand Challenge REST API over httpx.

Usage (one client per process; it is thread-safe, share it between worker threads)::

    from gcbatch.api.client import GrandChallengeClient
    from gcbatch.api.settings import resolve_settings

    s = resolve_settings(server_flag=None, token_file=None)
    with GrandChallengeClient(s.server, s.token) as gc:
        alg = gc.get_algorithm("lung-nodule-detector")          # -> models.Algorithm
        for job in gc.list_jobs(alg.pk):                          # every page, oldest first
            ...
        job = gc.create_job(alg.api_url, [ValueInput("age", 3)])

Endpoints (all return values from :mod:`gcbatch.api.models`):

============================================  ==================================================
``get_algorithm(slug)``                       ``Algorithm`` (NotFoundError if absent/not usable)
``get_socket(slug)``                          ``Socket``
``list_jobs(algorithm_pk, input_image=...)``  iterator of ``Job`` over all pages
``get_job(pk_or_api_url)``                    ``Job``
``create_job(algorithm_url, inputs)``         ``Job`` — NEVER retried; see below; inputs
                                              are :mod:`gcbatch.api.job_inputs` values
``create_upload(filename)``                   ``Upload`` (and the other upload calls, used by
                                              :mod:`gcbatch.api.uploads`)
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

How a request is sent, authenticated, retried and mapped to an error is
:mod:`gcbatch.api.http`'s business; this module is the endpoints.

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
import os
import ssl
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from gcbatch.api.http import PAGE_LIMIT_MAX, ApiHttp, Params
from gcbatch.api.job_inputs import ImageInput, JobInput, UploadsInput, ValueInput
from gcbatch.api.limits import Limits, ResponseTooLarge
from gcbatch.api.models import (
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
from gcbatch.api.retry import UNSENT_EXCEPTIONS, GiveUp, RetryPolicy
from gcbatch.api.settings import Token
from gcbatch.errors import (
    ApiError,
    InDoubtError,
    NotFoundError,
    TransportError,
)
from gcbatch.events import Hook, ignore

__all__ = ["GrandChallengeClient"]

_MAX_REDIRECTS = 5
_DOWNLOAD_CHUNK = 1024 * 1024


class GrandChallengeClient:
    """A thread-safe client for one Grand Challenge API base URL and token.

    ``transport`` replaces the network (``httpx.MockTransport``, the sandbox's in-process
    transport). ``verify`` is True, False (never for real use) or a CA bundle path.
    ``sleep`` and ``clock`` are injectable so tests of the retry loop do not wait.
    ``on_event`` receives a :class:`~gcbatch.events.RequestRetried` before each retry's wait.
    ``limits``: how large answers may be and how long a request may take
    (:mod:`gcbatch.api.limits`).
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
        self._http = ApiHttp(
            base_url, token, transport=transport, retry=retry,
            max_connections=max_connections, timeout=timeout, verify=verify, sleep=sleep,
            clock=clock, on_event=on_event, limits=limits)
        self.base_url = self._http.base_url
        self._retry = self._http.retry
        self._clock = clock

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GrandChallengeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GrandChallengeClient({self.base_url!r}, token={'set' if self.has_token else 'none'})"

    @property
    def has_token(self) -> bool:
        return self._http.has_token

    # -- the send layer's face --------------------------------------------------------------

    @property
    def requests_sent(self) -> int:
        return self._http.requests_sent

    @property
    def retries(self) -> int:
        return self._http.retries

    def url(self, path: str) -> str:
        """An absolute URL for ``path`` (relative to the base) or an absolute API URL."""
        return self._http.url(path)

    def is_api_url(self, url: str) -> bool:
        return self._http.is_api_url(url)

    def get_json(self, path_or_url: str, params: Params | None = None) -> Any:
        """GET any API path (retried) and return the decoded JSON."""
        return self._http.json("GET", path_or_url, params=params)

    def paginate(self, path: str, params: Params | None = None, *,
                 limit: int = PAGE_LIMIT_MAX) -> Iterator[Any]:
        """Every result of a limit/offset list endpoint (see :meth:`ApiHttp.paginate`)."""
        return self._http.paginate(path, params, limit=limit)

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
        return self._http.parse(Algorithm.from_json, data, self.url("algorithms/"))

    def get_socket(self, slug: str) -> Socket:
        data = self._one_by_slug("components/interfaces/", slug, "socket")
        return self._http.parse(Socket.from_json, data, self.url("components/interfaces/"))

    # -- jobs -----------------------------------------------------------------------------

    def job_url(self, pk: str) -> str:
        return self.url(f"algorithms/jobs/{pk}/")

    def list_jobs(
        self,
        algorithm_pk: str | None = None,
        *,
        input_image: str | Sequence[str] | None = None,
        output_image: str | None = None,
        limit: int = PAGE_LIMIT_MAX,
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
            yield self._http.parse(Job.from_json, item, url)

    def get_job(self, pk_or_url: str) -> Job:
        url = self.url(pk_or_url) if "://" in pk_or_url else self.job_url(pk_or_url)
        data = self._http.json("GET", url)
        return self._http.parse(lambda d: Job.from_json(d, api_url=url), data, url)

    def job_input_json(self, item: JobInput) -> dict[str, Any]:
        """One input of a job POST as the API wants it (uploads as API URLs on our host)."""
        if isinstance(item, ValueInput):
            return {"interface": item.socket, "value": item.value}
        if isinstance(item, ImageInput):
            return {"interface": item.socket, "image": item.image_url}
        if isinstance(item, UploadsInput):
            return {"interface": item.socket,
                    "user_uploads": [self.url(f"uploads/{pk}/") for pk in item.upload_pks]}
        return {"interface": item.socket, "user_upload": self.url(f"uploads/{item.upload_pk}/")}

    def create_job(self, algorithm_url: str, inputs: Sequence[JobInput], *,
                   timeout: float | None = None) -> Job:
        """POST a job. Never retried; see the module docstring for the outcome contract.

        ``timeout``: seconds to wait for the answer (between any two bytes of it); a
        POST that hangs longer is unanswered (:class:`InDoubtError`), never resent here.
        """
        url = self.url("algorithms/jobs/")
        body = {"algorithm": algorithm_url, "inputs": [self.job_input_json(i) for i in inputs]}
        # (no timeout given: the client's default; httpx reads timeout=None as "no limit")
        request = self._http.client.build_request(
            "POST", url, json=body,
            timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else httpx.Timeout(
                timeout, connect=min(10.0, timeout), pool=max(60.0, timeout)))
        self._http.count()
        try:
            response = self._http.post_direct(request)
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
            raise self._http.error(response)
        summary = self._http.error(response).message
        raise InDoubtError(
            f"{summary} — the server may or may not have created the job"
            if status >= 500
            else f"POST {url}: unexpected HTTP {status}; the job may or may not exist"
        )

    # -- uploads (used by gcbatch.api.uploads) ---------------------------------------------------

    def create_upload(self, filename: str) -> Upload:
        """POST uploads/. Retried: a repeated create only leaves an unused upload behind
        (it expires after a day), never a second job."""
        data = self._http.json(
            "POST", "uploads/", json={"filename": filename}, idempotent=True, ok=(200, 201)
        )
        return self._http.parse(Upload.from_json, data, self.url("uploads/"))

    def _upload_action(self, upload: Upload, action: str) -> str:
        return self.url(f"uploads/{upload.pk}/{upload.s3_upload_id}/{action}/")

    def generate_presigned_urls(self, upload: Upload, part_numbers: Sequence[int]) -> Upload:
        url = self._upload_action(upload, "generate-presigned-urls")
        data = self._http.json("PATCH", url, json={"part_numbers": list(part_numbers)}, idempotent=True)
        return self._http.parse(Upload.from_json, data, url)

    def list_parts(self, upload: Upload) -> tuple[UploadPart, ...]:
        url = self._upload_action(upload, "list-parts")
        data = self._http.json("GET", url)
        return self._http.parse(Upload.from_json, data, url).parts

    def complete_upload(self, upload: Upload, parts: Sequence[tuple[int, str]]) -> Upload:
        """Complete with ``(part_number, etag)`` pairs.

        Retried although it is a PATCH: if an earlier attempt did complete the upload and
        only its answer was lost, the server answers 500 ("completing twice"); we then look
        at the upload and accept it if it is Completed.
        """
        url = self._upload_action(upload, "complete-multipart-upload")
        body = {"parts": [{"ETag": etag, "PartNumber": n} for n, etag in sorted(parts)]}
        response = self._http.send("PATCH", url, json=body, idempotent=True)
        if response.status_code == 200:
            return self._http.parse(Upload.from_json, response.json(), url)
        error = self._http.error(response, what=f"completing upload {upload.filename!r}")
        if response.status_code >= 500:
            with contextlib.suppress(ApiError, TransportError):
                current = self.get_upload(upload.pk)
                if current.is_completed:
                    return current
        raise error

    def abort_upload(self, upload: Upload) -> Upload | None:
        """Abort (best effort): returns the upload, or None if it was already gone/final."""
        url = self._upload_action(upload, "abort-multipart-upload")
        response = self._http.send("PATCH", url, idempotent=True)
        if response.status_code == 200:
            return self._http.parse(Upload.from_json, response.json(), url)
        if response.status_code in (404, 500):
            return None
        raise self._http.error(response, what=f"aborting upload {upload.filename!r}")

    def get_upload(self, pk_or_url: str) -> Upload:
        url = self.url(pk_or_url) if "://" in pk_or_url else self.url(f"uploads/{pk_or_url}/")
        return self._http.parse(Upload.from_json, self._http.json("GET", url), url)

    def list_uploads(self, limit: int = PAGE_LIMIT_MAX) -> Iterator[Upload]:
        """The user's live uploads (not yet consumed by a job, not expired)."""
        url = self.url("uploads/")
        for item in self.paginate("uploads/", limit=limit):
            yield self._http.parse(Upload.from_json, item, url)

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
        response = self._http.send(
            "PUT",
            presigned_url,
            content=content,
            headers={"Content-Length": str(length)},
            anonymous=True,
            idempotent=True,
        )
        if response.status_code != 200:
            raise self._http.error(response, what=f"PUT part to {self._http.display(presigned_url)}")
        etag = response.headers.get("etag")
        if not etag:
            raise ApiError(
                f"PUT part to {self._http.display(presigned_url)}: no ETag in the answer",
                status=response.status_code,
                url=self._http.display(presigned_url),
            )
        return str(etag)

    # -- archives, images -----------------------------------------------------------------

    def get_archive(self, slug: str) -> Archive:
        data = self._one_by_slug("archives/", slug, "archive")
        return self._http.parse(Archive.from_json, data, self.url("archives/"))

    def list_archive_items(
        self, archive_pk: str, limit: int = PAGE_LIMIT_MAX
    ) -> Iterator[ArchiveItem]:
        """Items of one archive (no guaranteed order: sort if you need one)."""
        url = self.url("archives/items/")
        for item in self.paginate("archives/items/", {"archive": archive_pk}, limit=limit):
            yield self._http.parse(ArchiveItem.from_json, item, url)

    def get_archive_item(self, pk_or_url: str) -> ArchiveItem:
        url = (
            self.url(pk_or_url) if "://" in pk_or_url else self.url(f"archives/items/{pk_or_url}/")
        )
        return self._http.parse(ArchiveItem.from_json, self._http.json("GET", url), url)

    def list_images(
        self, *, name: str | None = None, limit: int = PAGE_LIMIT_MAX, **filters: str
    ) -> Iterator[Image]:
        """Images by ``name`` and/or other server filters (``job_input``, ``archive``, ...)."""
        params: list[tuple[str, Any]] = []
        if name is not None:
            params.append(("name", name))
        params += sorted(filters.items())
        url = self.url("cases/images/")
        for item in self.paginate("cases/images/", params, limit=limit):
            yield self._http.parse(Image.from_json, item, url)

    def get_image(self, pk_or_url: str) -> Image:
        url = self.url(pk_or_url) if "://" in pk_or_url else self.url(f"cases/images/{pk_or_url}/")
        return self._http.parse(Image.from_json, self._http.json("GET", url), url)

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
                        f"downloading {self._http.display(url)}: connection lost after "
                        f"{broken.received} bytes ({type(broken.cause).__name__}); "
                        f"{decision.reason}"
                    ) from None
                self._http.wait(decision.delay, "GET", url, decision.reason)

    def _download_once(self, url: str, target: Path, progress: Callable[[int], None] | None) -> int:
        # A file URL on the API host gets the token; one elsewhere (a CDN, storage) is
        # fetched anonymously rather than refused: no token can leak that way.
        anonymous = "://" in url and not self.is_api_url(url)
        current = url if anonymous else self.url(url)
        for _ in range(_MAX_REDIRECTS + 1):
            response = self._http.send("GET", current, anonymous=anonymous, stream=True)
            try:
                if response.status_code in (301, 302, 303, 307, 308):
                    location = response.headers.get("location")
                    if not location:
                        raise ApiError(
                            f"GET {self._http.display(current)}: redirect without a Location",
                            status=response.status_code,
                            url=self._http.display(current),
                        )
                    current = str(httpx.URL(current).join(location))
                    anonymous = True  # storage: never the token
                    continue
                if response.status_code != 200:
                    raise self._http.error(response, what=f"downloading {self._http.display(current)}")
                try:
                    return _save(response, target, progress, self._http.limits.download_max)
                except ResponseTooLarge as exc:
                    raise ApiError(
                        f"downloading {self._http.display(current)}: the file is {exc}, the "
                        "most gcbatch accepts for one output; nothing was kept",
                        status=200, url=self._http.display(current)) from None
            finally:
                response.close()
        raise ApiError(
            f"GET {self._http.display(url)}: more than {_MAX_REDIRECTS} redirects",
            status=302,
            url=self._http.display(url),
        )


class _BodyBroken(Exception):
    """The connection broke while a response body was being read."""

    def __init__(self, cause: httpx.TransportError, received: int) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.received = received


def _save(response: httpx.Response, target: Path, progress: Callable[[int], None] | None,
          limit: int) -> int:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    total = 0
    try:
        with os.fdopen(fd, "wb") as handle:
            try:
                for chunk in response.iter_bytes(_DOWNLOAD_CHUNK):
                    total += len(chunk)
                    if total > limit:
                        raise ResponseTooLarge(limit)
                    handle.write(chunk)
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
