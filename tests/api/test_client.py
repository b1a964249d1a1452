"""client.py against httpx.MockTransport: endpoints, pagination, error mapping, retries,
the job-POST outcome contract, token scoping and downloads."""

from __future__ import annotations

import json
import socket
import socketserver
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gcbatch.api.client import GrandChallengeClient
from gcbatch.api.http import error_messages, rejection_class
from gcbatch.api.job_inputs import ImageInput, UploadInput, UploadsInput, ValueInput
from gcbatch.api.models import Upload
from gcbatch.api.retry import RetryPolicy
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
from gcbatch.events import Event, RequestRetried

CAPTURES = Path(__file__).parents[1] / "data" / "gc_captures"
BASE = "https://gc.test/api/v1/"
SECRET = "tok-Zq9-very-secret"
ALG_PK = "5ed1915b-7d84-4969-a5ee-e87f1bed6c84"


def capture(name: str) -> dict[str, Any]:
    (path,) = sorted(CAPTURES.glob(f"{name}*.json"))
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def reply(name: str) -> httpx.Response:
    """The recorded answer, as JSON (or text for the 500 debug page)."""
    data = capture(name)
    body = data["response_body"]
    if isinstance(body, dict) and "_text" in body:
        return httpx.Response(data["status"], text=body["_text"])
    return httpx.Response(data["status"], json=body)


Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler that records requests (method, url, auth header, body)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        with self.lock:
            self.requests.append(request)
        return self.handler(request)

    def auth_headers(self) -> list[str | None]:
        return [r.headers.get("authorization") for r in self.requests]


def make(
    handler: Handler,
    *,
    retry: RetryPolicy | None = None,
    token: str | None = SECRET,
) -> tuple[GrandChallengeClient, Recorder, list[float]]:
    rec = Recorder(handler)
    sleeps: list[float] = []
    client = GrandChallengeClient(
        BASE,
        token,
        transport=httpx.MockTransport(rec),
        retry=retry or RetryPolicy(),
        sleep=sleeps.append,
    )
    return client, rec, sleeps


# -- basic endpoints ----------------------------------------------------------------------


def test_get_algorithm_by_slug() -> None:
    client, rec, _ = make(lambda r: reply("002-"))
    alg = client.get_algorithm("oracle-algorithm")
    assert alg.pk == ALG_PK
    (req,) = rec.requests
    assert req.url.path == "/api/v1/algorithms/"
    assert req.url.params["slug"] == "oracle-algorithm"
    assert req.headers["authorization"] == f"Bearer {SECRET}"
    assert req.headers["accept"] == "application/json"


def test_get_algorithm_missing_is_not_found() -> None:
    empty = {"count": 0, "next": None, "previous": None, "results": []}
    client, _, _ = make(lambda r: httpx.Response(200, json=empty))
    with pytest.raises(NotFoundError, match="algorithm 'nope' not found"):
        client.get_algorithm("nope")


def test_get_socket() -> None:
    client, rec, _ = make(lambda r: reply("004-"))
    assert client.get_socket("oracle-integer").super_kind == "Value"
    assert rec.requests[0].url.path == "/api/v1/components/interfaces/"


def test_get_job_by_pk_and_url() -> None:
    client, rec, _ = make(lambda r: reply("019-"))
    pk = "d84178d9-8c60-4858-9b4f-50c668db289d"
    assert client.get_job(pk).pk == pk
    assert client.get_job(f"{BASE}algorithms/jobs/{pk}/").pk == pk
    assert [r.url.path for r in rec.requests] == [f"/api/v1/algorithms/jobs/{pk}/"] * 2
    with pytest.raises(ConfigError, match="not on the configured server"):
        client.get_job(f"https://elsewhere.test/api/v1/algorithms/jobs/{pk}/")


def test_get_job_404_keeps_server_message() -> None:
    client, _, _ = make(lambda r: reply("121-"))
    with pytest.raises(NotFoundError) as info:
        client.get_job("00000000-0000-4000-8000-000000000000")
    assert "No Job matches the given query." in info.value.message
    assert info.value.status == 404
    assert info.value.body == {"detail": "No Job matches the given query."}


def test_base_url_must_be_safe() -> None:
    with pytest.raises(ConfigError):
        GrandChallengeClient("http://gc.example/api/v1/", SECRET)
    c = GrandChallengeClient("http://127.0.0.1:9/api/v1", SECRET)
    assert c.base_url == "http://127.0.0.1:9/api/v1/"
    assert SECRET not in repr(c)
    c.close()


# -- pagination ---------------------------------------------------------------------------


def job_json(i: int) -> dict[str, Any]:
    return {"pk": f"job-{i}", "api_url": f"{BASE}algorithms/jobs/job-{i}/", "status": "Queued"}


def paged_handler(total: int, *, next_host: str = "https://internal-name:8000") -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        limit = int(request.url.params.get("limit", "100"))
        offset = int(request.url.params.get("offset", "0"))
        results = [job_json(i) for i in range(offset, min(total, offset + limit))]
        nxt = None
        if offset + limit < total:
            q = httpx.QueryParams(request.url.params).set("offset", str(offset + limit))
            nxt = f"{next_host}{request.url.path}?{q}"
        return httpx.Response(
            200, json={"count": total, "next": nxt, "previous": None, "results": results}
        )

    return handler


def test_list_jobs_follows_all_pages_on_our_own_host_with_the_token() -> None:
    # the server's `next` names another host (its own idea of itself): we must keep
    # asking OUR base URL, with the token, or we would silently list nothing
    client, rec, _ = make(paged_handler(25))
    jobs = list(client.list_jobs(ALG_PK, limit=10))
    assert [j.pk for j in jobs] == [f"job-{i}" for i in range(25)]
    assert len(rec.requests) == 3
    for req in rec.requests:
        assert req.url.host == "gc.test"
        assert req.url.params["algorithm_image__algorithm"] == ALG_PK
        assert req.headers["authorization"] == f"Bearer {SECRET}"
    assert [r.url.params["offset"] for r in rec.requests] == ["0", "10", "20"]


def test_list_jobs_filters() -> None:
    client, rec, _ = make(paged_handler(1))
    list(client.list_jobs(input_image=["a", "b"], output_image="c"))
    params = rec.requests[0].url.params
    assert params.get_list("input_image") == ["a", "b"]
    assert params["output_image"] == "c"
    assert "algorithm_image__algorithm" not in params
    assert params["limit"] == "1000"


def test_pagination_stops_on_a_next_link_that_does_not_advance() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "count": 99,
                "next": f"{BASE}algorithms/jobs/?limit=1&offset=1",
                "results": [job_json(0)],
            },
        )

    client, rec, _ = make(handler)
    assert len(list(client.list_jobs())) == 2
    assert len(rec.requests) == 2


def test_list_archive_items_images_uploads() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/v1/archives/items/":
            assert request.url.params["archive"] == "bacf846a"
            return reply("085-")
        if path == "/api/v1/cases/images/":
            assert request.url.params["name"] == "p001.gcb-1a2b3c4d.mha"
            image = capture("087-")["response_body"]
            return httpx.Response(200, json={"count": 1, "next": None, "results": [image]})
        if path == "/api/v1/uploads/":
            return reply("056-")
        if path == "/api/v1/archives/":
            return reply("008-")
        raise AssertionError(path)

    client, _, _ = make(handler)
    assert len(list(client.list_archive_items("bacf846a"))) == 3
    assert [i.name for i in client.list_images(name="p001.gcb-1a2b3c4d.mha")] == ["oracle_1.mha"]
    assert len(list(client.list_uploads())) == 2
    assert client.get_archive("oracle-archive").title == "Oracle Archive"


# -- error mapping ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls", "needle"),
    [
        ("021-", DuplicateJobError, "A result for these inputs"),
        ("036-", OutOfCreditsError, "You have run out of algorithm credits"),
        ("048-", TooManyActiveJobsError, "You have too many active jobs"),
        ("025-", RequestRejectedError, "inputs[0]: JSON does not fulfill schema"),
        ("015-", AuthenticationError, "Authentication credentials were not provided."),
    ],
)
def test_create_job_definite_rejections(name: str, cls: type[Exception], needle: str) -> None:
    client, rec, _ = make(lambda r: reply(name))
    with pytest.raises(cls) as info:
        client.create_job(f"{BASE}algorithms/{ALG_PK}/", [ValueInput("x", 1)])
    assert type(info.value) is cls
    assert needle in str(info.value)
    assert SECRET not in str(info.value)
    assert len(rec.requests) == 1


def test_too_many_uploads_message_maps() -> None:
    body = {"non_field_errors": ["You have created too many uploads. Please try again later."]}
    client, _, _ = make(lambda r: httpx.Response(400, json=body))
    with pytest.raises(TooManyUploadsError) as info:
        client.create_upload("a.mha")
    assert info.value.body == body


def test_401_invalid_token() -> None:
    client, _, _ = make(lambda r: reply("014-"))
    with pytest.raises(AuthenticationError) as info:
        list(client.list_jobs())
    assert "Invalid token." in str(info.value)
    assert SECRET not in str(info.value)


def test_403_and_plain_text_500() -> None:
    client, _, _ = make(lambda r: httpx.Response(403, json={"detail": "Upload limit reached"}))
    with pytest.raises(PermissionDeniedError, match="Upload limit reached"):
        client.get_json("uploads/")
    client, _, _ = make(lambda r: reply("135-"))
    with pytest.raises(ServerError) as info:
        client.get_json("uploads/")
    assert "ClientError at /api/v1/uploads/" in str(info.value)
    assert len(str(info.value)) < 2100


def test_server_echoing_the_token_is_scrubbed() -> None:
    client, _, _ = make(lambda r: httpx.Response(400, json={"detail": f"bad token {SECRET}"}))
    with pytest.raises(RequestRejectedError) as info:
        client.get_json("x/")
    assert SECRET not in str(info.value) and "***" in str(info.value)


def test_error_messages_and_rejection_class() -> None:
    assert error_messages({"inputs": [{"interface": ["Object with slug=x does not exist."]}]}) == [
        "inputs[0].interface: Object with slug=x does not exist."
    ]
    assert error_messages({"algorithm": ["This field is required."]}) == [
        "algorithm: This field is required."
    ]
    assert error_messages({"part_numbers": {"0": ["Ensure this value is >= 1."]}}) == [
        "part_numbers.0: Ensure this value is >= 1."
    ]
    assert rejection_class(["nothing special"]) is RequestRejectedError


# -- the job POST contract ----------------------------------------------------------------


def test_create_job_201_sends_body_and_fills_api_url() -> None:
    client, rec, _ = make(lambda r: reply("075-"))
    inputs = [ValueInput("oracle-float", 0.25), ImageInput("img", f"{BASE}cases/images/i1/"),
              UploadsInput("ct", ("u1", "u2")), UploadInput("report", "u3")]
    job = client.create_job(f"{BASE}algorithms/{ALG_PK}/", inputs)
    assert job.pk == "b1706dae-9b56-458f-bac1-f03130e77e95"
    assert job.api_url == f"{BASE}algorithms/jobs/{job.pk}/"
    assert job.status == "Validating inputs"
    (req,) = rec.requests
    assert req.method == "POST" and req.url.path == "/api/v1/algorithms/jobs/"
    assert json.loads(req.content) == {"algorithm": f"{BASE}algorithms/{ALG_PK}/", "inputs": [
        {"interface": "oracle-float", "value": 0.25},
        {"interface": "img", "image": f"{BASE}cases/images/i1/"},
        {"interface": "ct", "user_uploads": [f"{BASE}uploads/u1/", f"{BASE}uploads/u2/"]},
        {"interface": "report", "user_upload": f"{BASE}uploads/u3/"},
    ]}


def test_create_job_sends_what_the_client_would_and_follows_no_redirect() -> None:
    """The job POST goes straight through the transport (see ``_post_direct``): it must
    still carry the token, our default headers and timeouts, and never follow a redirect
    or keep a cookie."""
    client, rec, _ = make(lambda r: reply("075-"))
    client.create_job(f"{BASE}algorithms/{ALG_PK}/", [])
    (req,) = rec.requests
    assert req.headers["authorization"] == f"Bearer {SECRET}"
    assert req.headers["accept"] == "application/json"
    assert req.headers["user-agent"].startswith("gcbatch/")
    assert req.headers["content-type"] == "application/json"
    assert req.extensions["timeout"]["read"] == 60.0
    anonymous, rec, _ = make(lambda r: reply("075-"), token=None)
    anonymous.create_job(f"{BASE}algorithms/{ALG_PK}/", [])
    assert rec.auth_headers() == [None]

    moved, rec, _ = make(lambda r: httpx.Response(
        302, headers={"Location": "https://elsewhere.example/x", "Set-Cookie": "s=1"}))
    with pytest.raises(InDoubtError, match="HTTP 302"):
        moved.create_job(f"{BASE}algorithms/{ALG_PK}/", [])
    assert len(rec.requests) == 1 and not moved._http.client.cookies


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_create_job_5xx_is_in_doubt_and_not_retried(status: int) -> None:
    client, rec, sleeps = make(lambda r: httpx.Response(status, headers={"Retry-After": "1"}))
    with pytest.raises(InDoubtError):
        client.create_job(f"{BASE}algorithms/{ALG_PK}/", [])
    assert len(rec.requests) == 1 and sleeps == []


def test_create_job_429_is_definite_and_not_retried() -> None:
    client, rec, sleeps = make(lambda r: httpx.Response(429, headers={"Retry-After": "3"}))
    with pytest.raises(RateLimitedError) as info:
        client.create_job(f"{BASE}algorithms/{ALG_PK}/", [])
    assert info.value.retry_after == 3.0
    assert len(rec.requests) == 1 and sleeps == []


def raiser(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("timed out"),
        httpx.ReadError("connection reset"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.WriteTimeout("w"),
    ],
)
def test_create_job_no_answer_after_sending_is_in_doubt(exc: Exception) -> None:
    client, rec, sleeps = make(raiser(exc))
    with pytest.raises(InDoubtError):
        client.create_job(f"{BASE}algorithms/{ALG_PK}/", [])
    assert len(rec.requests) == 1 and sleeps == []


@pytest.mark.parametrize("exc", [httpx.ConnectError("refused"), httpx.ConnectTimeout("t")])
def test_create_job_unsent_is_a_definite_transport_error(exc: Exception) -> None:
    client, rec, sleeps = make(raiser(exc))
    with pytest.raises(TransportError) as info:
        client.create_job(f"{BASE}algorithms/{ALG_PK}/", [])
    assert not isinstance(info.value, InDoubtError)
    assert len(rec.requests) == 1 and sleeps == []


def test_create_job_unreadable_201_is_in_doubt() -> None:
    client, _, _ = make(lambda r: httpx.Response(201, text="<html>"))
    with pytest.raises(InDoubtError, match="probably created"):
        client.create_job(f"{BASE}algorithms/{ALG_PK}/", [])


# -- retries --------------------------------------------------------------------------------


def sequence(*responses: httpx.Response | Exception) -> Handler:
    it: Iterator[httpx.Response | Exception] = iter(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        item = next(it)
        if isinstance(item, Exception):
            raise item
        return item

    return handler


def test_get_retries_transient_answers_and_honours_retry_after() -> None:
    client, rec, sleeps = make(
        sequence(
            httpx.Response(503),
            httpx.Response(429, headers={"Retry-After": "7"}),
            httpx.ReadError("reset"),  # type: ignore[arg-type]
            reply("019-"),
        )
    )
    job = client.get_job("d84178d9-8c60-4858-9b4f-50c668db289d")
    assert job.status == "Validating inputs"
    assert len(rec.requests) == 4
    assert len(sleeps) == 3 and sleeps[1] == 7.0
    assert client.retries == 3 and client.requests_sent == 4


def test_get_gives_up_after_attempts_with_the_last_error() -> None:
    client, rec, sleeps = make(lambda r: httpx.Response(502), retry=RetryPolicy(attempts=3))
    with pytest.raises(ServerError) as info:
        client.get_job("x")
    assert info.value.status == 502
    assert len(rec.requests) == 3 and len(sleeps) == 2


def test_transport_failure_after_retries_is_transport_error() -> None:
    client, rec, _ = make(raiser(httpx.ConnectError("refused")), retry=RetryPolicy(attempts=2))
    with pytest.raises(TransportError, match="no answer from the server"):
        client.get_job("x")
    assert len(rec.requests) == 2


def test_500_is_not_retried() -> None:
    client, rec, sleeps = make(lambda r: httpx.Response(500, text="boom"))
    with pytest.raises(ServerError):
        client.get_job("x")
    assert len(rec.requests) == 1 and sleeps == []


def test_a_retry_is_an_event_without_token() -> None:
    seen: list[Event] = []
    rec = Recorder(sequence(httpx.Response(503), reply("019-")))
    client = GrandChallengeClient(
        BASE, SECRET, transport=httpx.MockTransport(rec), sleep=lambda s: None, on_event=seen.append
    )
    client.get_job("d84178d9-8c60-4858-9b4f-50c668db289d")
    (event,) = seen
    assert isinstance(event, RequestRetried) and event.method == "GET"
    assert "HTTP 503" in event.reason and SECRET not in repr(event)


# -- token scoping ------------------------------------------------------------------------


def test_token_goes_only_to_the_api_origin() -> None:
    client, rec, _ = make(lambda r: httpx.Response(200, json={}, headers={"ETag": '"e"'}))
    client.get_json("algorithms/")
    client.get_json(f"{BASE}algorithms/")
    # a presigned URL on ANOTHER host, and one on the API host itself: never the token
    client.put_part("https://s3.test/bucket/key?partNumber=1&X-Amz-Signature=abc", lambda: b"x", 1)
    client.put_part(f"{BASE}storage/key?partNumber=1", lambda: b"x", 1)
    assert rec.auth_headers() == [f"Bearer {SECRET}", f"Bearer {SECRET}", None, None]


@pytest.mark.parametrize(
    "other",
    [
        "http://gc.test/api/v1/x",  # same host, other scheme
        "https://gc.test:8443/api/v1/x",  # same host, other port
        "https://evil.gc.test/api/v1/x",
        "https://gc.test.evil/api/v1/x",
    ],
)
def test_other_origins_are_refused_before_sending(other: str) -> None:
    client, rec, _ = make(lambda r: httpx.Response(200, json={}))
    with pytest.raises(ConfigError):
        client.get_json(other)
    assert rec.requests == []


def test_default_port_counts_as_same_origin() -> None:
    client, rec, _ = make(lambda r: httpx.Response(200, json={}))
    client.get_json("https://gc.test:443/api/v1/algorithms/")
    assert rec.auth_headers() == [f"Bearer {SECRET}"]


def test_no_token_means_no_header() -> None:
    client, rec, _ = make(lambda r: httpx.Response(200, json={}), token=None)
    client.get_json("algorithms/")
    assert rec.auth_headers() == [None]
    assert not client.has_token


# -- downloads ------------------------------------------------------------------------------


def storage_handler(payload: bytes, *, location: str) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/media/"):
            return httpx.Response(302, headers={"Location": location})
        return httpx.Response(200, content=payload)

    return handler


@pytest.mark.parametrize(
    "location",
    [
        "https://storage.test/protected/file.json?X-Amz-Signature=abc",
        "/protected/file.json?X-Amz-Signature=abc",  # storage on the API host itself
    ],
)
def test_download_follows_redirect_without_token(tmp_path: Path, location: str) -> None:
    payload = b'{"x": [1, 2, 3]}' * 100_000
    client, rec, _ = make(storage_handler(payload, location=location))
    dest = tmp_path / "out" / "report.json"
    got: list[int] = []
    n = client.download("https://gc.test/media/components/x/report.json", dest, progress=got.append)
    assert n == len(payload) == sum(got)
    assert dest.read_bytes() == payload
    assert rec.auth_headers() == [f"Bearer {SECRET}", None]
    assert [p.name for p in dest.parent.iterdir()] == ["report.json"]


def test_download_from_another_host_is_anonymous(tmp_path: Path) -> None:
    client, rec, _ = make(lambda r: httpx.Response(200, content=b"abc"))
    assert client.download("https://cdn.test/file.mha?sig=1", tmp_path / "f.mha") == 3
    assert rec.auth_headers() == [None]


def test_download_error_leaves_nothing(tmp_path: Path) -> None:
    client, _, _ = make(lambda r: httpx.Response(404, json={"detail": "Not found."}))
    dest = tmp_path / "x.bin"
    with pytest.raises(NotFoundError):
        client.download(f"{BASE}x", dest)
    assert list(tmp_path.iterdir()) == []


class BrokenStream(httpx.SyncByteStream):
    def __iter__(self) -> Iterator[bytes]:
        yield b"partial"
        raise httpx.ReadError("connection reset")


def test_download_restarts_after_a_broken_body(tmp_path: Path) -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return httpx.Response(200, stream=BrokenStream())
        return httpx.Response(200, content=b"complete")

    client, _, sleeps = make(handler)
    dest = tmp_path / "f"
    assert client.download(f"{BASE}f", dest) == len(b"complete")
    assert dest.read_bytes() == b"complete" and len(sleeps) == 1
    assert list(tmp_path.iterdir()) == [dest]

    client2, _, _ = make(
        lambda r: httpx.Response(200, stream=BrokenStream()), retry=RetryPolicy(attempts=2)
    )
    with pytest.raises(TransportError, match="connection lost"):
        client2.download(f"{BASE}f", tmp_path / "g")
    assert list(tmp_path.iterdir()) == [dest]


# -- uploads endpoints (details in test_uploads.py) -----------------------------------------


def test_complete_upload_accepts_an_earlier_success_whose_answer_was_lost() -> None:
    upload_json = capture("042-")["response_body"]
    completed = dict(upload_json, status="Completed")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/complete-multipart-upload/"):
            return httpx.Response(500, text="RuntimeError at ...")
        return httpx.Response(200, json=completed)

    client, rec, _ = make(handler)
    upload = Upload.from_json(upload_json)
    result = client.complete_upload(upload, [(2, '"b"'), (1, '"a"')])
    assert result.is_completed
    body = json.loads(rec.requests[0].content)
    assert body == {"parts": [{"ETag": '"a"', "PartNumber": 1}, {"ETag": '"b"', "PartNumber": 2}]}


def test_complete_upload_500_on_a_non_completed_upload_raises() -> None:
    upload_json = capture("042-")["response_body"]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/complete-multipart-upload/"):
            return reply("135-")
        return httpx.Response(200, json=upload_json)

    client, _, _ = make(handler)
    with pytest.raises(ServerError):
        client.complete_upload(Upload.from_json(upload_json), [(1, '"deadbeef"')])


# -- threads --------------------------------------------------------------------------------


def test_shared_between_threads() -> None:
    client, rec, _ = make(lambda r: reply("019-"))
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(25):
                client.get_job("d84178d9-8c60-4858-9b4f-50c668db289d")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert len(rec.requests) == 200 == client.requests_sent
    assert all(h == f"Bearer {SECRET}" for h in rec.auth_headers())


def test_api_error_is_the_base_of_mapped_errors() -> None:
    client, _, _ = make(lambda r: httpx.Response(418, json={"detail": "teapot"}))
    with pytest.raises(ApiError) as info:
        client.get_json("x/")
    assert type(info.value) is ApiError and "teapot" in str(info.value)


# -- the delayed-ACK stall (shared/design-notes.md, "Performance notes") --------------------


class _OneWriteHandler(socketserver.StreamRequestHandler):
    """Answers every request in ONE write with TCP_NODELAY (as a good server does), so
    any stall measured is the client's."""

    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()

    def handle(self) -> None:
        while self.rfile.readline():
            length = 0
            while True:
                line = self.rfile.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            self.rfile.read(length)
            body = b'{"pk": "p1", "status": "Validating inputs", "inputs": []}'
            self.wfile.write(
                b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            self.wfile.flush()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def loopback_base() -> Iterator[str]:
    server = _Server(("127.0.0.1", 0), _OneWriteHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v1/"
    finally:
        server.shutdown()
        server.server_close()


def test_post_with_body_has_no_delayed_ack_stall(loopback_base: str) -> None:
    """httpcore sends headers and body in two writes; without TCP_NODELAY each POST/PUT
    would wait ~40 ms for the server's delayed ACK. Median must stay far below that."""
    with GrandChallengeClient(loopback_base, SECRET) as client:
        inputs = [ValueInput("age", 3)]
        client.create_job(f"{loopback_base}algorithms/a/", inputs)  # connect once
        timings = []
        for _ in range(30):
            start = time.perf_counter()
            client.create_job(f"{loopback_base}algorithms/a/", inputs)
            timings.append(time.perf_counter() - start)
    assert statistics.median(timings) < 0.02, timings


# -- against the real sandbox app, in-process -------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[tuple[Any, Any, Clock, GrandChallengeClient]]:
    """(app, fault injector, the app's clock, client as demo); storage refuses tokens."""
    import dataclasses

    from gcbatch.sandbox import SandboxApp
    from gcbatch.sandbox.config import SandboxConfig
    from gcbatch.sandbox.faults import FaultInjector
    from gcbatch.sandbox.transport import SandboxTransport

    clock = Clock()
    config = dataclasses.replace(SandboxConfig(), storage_rejects_authorization=True)
    app = SandboxApp(tmp_path / "sandbox.db", config=config, clock=clock)
    injector = FaultInjector()
    client = GrandChallengeClient(
        "http://localhost/api/v1/",
        app.token("demo"),
        transport=SandboxTransport(app, injector, sleep=lambda s: None),
        sleep=lambda s: None,
    )
    try:
        yield app, injector, clock, client
    finally:
        client.close()
        app.close()


def value_inputs(age: int) -> list[ValueInput]:
    return [ValueInput("age", age), ValueInput("lung-volume", 4.5)]


def test_sandbox_job_lifecycle_listing_and_download(
    sandbox: tuple[Any, Any, Clock, GrandChallengeClient], tmp_path: Path
) -> None:
    app, _, clock, client = sandbox
    alg = client.get_algorithm("risk-calculator")
    assert frozenset({"age", "lung-volume"}) in alg.input_sets
    assert client.get_socket("lab-report").is_file
    jobs = [client.create_job(alg.api_url, value_inputs(age)) for age in range(30, 33)]
    listed = list(client.list_jobs(alg.pk, limit=2))  # 2 pages
    assert [j.pk for j in listed] == [j.pk for j in jobs]
    clock.now += 3600
    done = client.get_job(jobs[0].api_url)
    assert done.is_terminal and done.succeeded, done.status
    report = done.output("report")
    assert report is not None and report.file is not None
    dest = tmp_path / "results" / "report.json"
    assert client.download(report.file, dest) > 0
    json.loads(dest.read_bytes())
    storage = [r for r in app.requests_since(0) if r["path"].startswith("/_storage/")]
    assert storage and not any(r["had_authorization"] for r in storage)
    # re-submitting the same values is the server's duplicate
    with pytest.raises(DuplicateJobError):
        client.create_job(alg.api_url, value_inputs(30))


def test_sandbox_quota_rejections(sandbox: tuple[Any, Any, Clock, GrandChallengeClient]) -> None:
    import dataclasses

    app, _, _, client = sandbox
    alg = client.get_algorithm("risk-calculator")
    app.set_config(dataclasses.replace(app.config, max_active_jobs=1))
    client.create_job(alg.api_url, value_inputs(40))
    with pytest.raises(TooManyActiveJobsError):
        client.create_job(alg.api_url, value_inputs(41))
    app.set_config(dataclasses.replace(app.config, max_active_jobs=16, credits_per_month=20))
    with pytest.raises(OutOfCreditsError):
        client.create_job(alg.api_url, value_inputs(42))


def test_sandbox_faults(sandbox: tuple[Any, Any, Clock, GrandChallengeClient]) -> None:
    from gcbatch.sandbox.faults import FaultPlan

    app, injector, _, client = sandbox
    alg = client.get_algorithm("risk-calculator")
    # GETs ride through 503s and 429s
    injector.set_plan(FaultPlan.parse(["GET *:503:1:times=2", "GET *:429:1:times=1,retry_after=1"]))
    assert client.get_algorithm("risk-calculator").pk == alg.pk
    assert client.retries == 3
    # a job POST whose answer is lost after the commit: in doubt, and the job exists
    injector.set_plan(FaultPlan.parse(["POST algorithms/jobs/:drop_after_commit:1:times=1"]))
    with pytest.raises(InDoubtError):
        client.create_job(alg.api_url, value_inputs(50))
    assert len(list(client.list_jobs(alg.pk))) == 1
    # 502 on a job POST: in doubt (never retried); 429: definite
    injector.set_plan(FaultPlan.parse(["POST algorithms/jobs/:502:1:times=1"]))
    with pytest.raises(InDoubtError):
        client.create_job(alg.api_url, value_inputs(51))
    injector.set_plan(FaultPlan.parse(["POST algorithms/jobs/:429:1:times=1"]))
    with pytest.raises(RateLimitedError):
        client.create_job(alg.api_url, value_inputs(51))
    posts = [r for r in app.requests_since(0) if r["method"] == "POST"]
    assert len(posts) == 1  # only the drop_after_commit one reached the app
    injector.set_plan(FaultPlan.parse([]))
    assert client.create_job(alg.api_url, value_inputs(51)).status == "Validating inputs"


def test_sandbox_bad_token_and_anonymous(
    sandbox: tuple[Any, Any, Clock, GrandChallengeClient],
) -> None:
    app, injector, _, _ = sandbox
    from gcbatch.sandbox.transport import SandboxTransport

    transport = SandboxTransport(app, injector)
    bad = GrandChallengeClient("http://localhost/api/v1/", "wrong-token", transport=transport)
    with bad, pytest.raises(AuthenticationError, match="Invalid token"):
        list(bad.list_jobs())
    with GrandChallengeClient("http://localhost/api/v1/", None, transport=transport) as anon:
        assert list(anon.list_jobs()) == []
        with pytest.raises(AuthenticationError, match="credentials were not provided"):
            anon.create_job("http://localhost/api/v1/algorithms/x/", [])
