"""uploads.py: part planning, streamed parallel parts without the token, resume via
list-parts, abort on failure. Against a small S3-like fake on httpx.MockTransport, and
(when the sandbox app is importable) against the real sandbox app in-process."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import re
import threading
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gcbatch.api.client import GrandChallengeClient
from gcbatch.api.job_inputs import UploadInput, ValueInput
from gcbatch.api.models import Upload
from gcbatch.api.retry import RetryPolicy
from gcbatch.api.uploads import (
    DEFAULT_PART_SIZE,
    MAX_PARTS,
    MIB,
    MIN_PART_SIZE,
    PartSpec,
    Uploader,
    UploadGoneError,
    UploadResult,
    check_upload_filename,
    plan_parts,
)
from gcbatch.errors import InputError, ServerError, TransportError

BASE = "https://gc.test/api/v1/"
SECRET = "upload-test-secret-token"

# -- pure helpers -----------------------------------------------------------------------------


def test_plan_parts_basic() -> None:
    assert plan_parts(12 * MIB, 5 * MIB) == (
        PartSpec(1, 0, 5 * MIB),
        PartSpec(2, 5 * MIB, 5 * MIB),
        PartSpec(3, 10 * MIB, 2 * MIB),
    )
    assert plan_parts(10 * MIB, 5 * MIB)[-1] == PartSpec(2, 5 * MIB, 5 * MIB)
    assert plan_parts(1, DEFAULT_PART_SIZE) == (PartSpec(1, 0, 1),)
    assert plan_parts(0) == (PartSpec(1, 0, 0),)


def test_plan_parts_respects_s3_limits() -> None:
    size = 400 * 1024**3  # 400 GiB at 32 MiB would be 12,800 parts
    parts = plan_parts(size, DEFAULT_PART_SIZE)
    assert len(parts) <= MAX_PARTS
    assert sum(p.length for p in parts) == size
    assert all(p.length >= MIN_PART_SIZE for p in parts[:-1])
    assert all(b.offset == a.offset + a.length for a, b in itertools.pairwise(parts))
    with pytest.raises(ValueError):
        plan_parts(10, MIN_PART_SIZE - 1)


@pytest.mark.parametrize("size", [1, 5 * MIB - 1, 5 * MIB, 5 * MIB + 1, 33 * MIB, 97 * MIB + 3])
def test_plan_parts_cover_the_file(size: int) -> None:
    parts = plan_parts(size, 5 * MIB)
    assert sum(p.length for p in parts) == size
    assert [p.number for p in parts] == list(range(1, len(parts) + 1))
    assert all(p.length == 5 * MIB for p in parts[:-1])


@pytest.mark.parametrize("bad", ["", "a/b.mha", "..", "a\\b", "x" * 129, "a\nb"])
def test_check_upload_filename(bad: str) -> None:
    with pytest.raises(InputError):
        check_upload_filename(bad)


# -- an S3-like fake ------------------------------------------------------------------------


class FakeGC:
    """Uploads API + storage on another host, with fault hooks. Thread-safe."""

    def __init__(self, *, min_part: int = MIN_PART_SIZE, buffer_bodies: bool = True) -> None:
        self.uploads: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.min_part = min_part
        self.buffer_bodies = buffer_bodies
        self.put_log: list[tuple[int, int, str | None]] = []  # (part, size, auth header)
        self.api_auth: list[str | None] = []
        self.presign_calls = 0
        self.fail_put: Callable[[int], httpx.Response | None] = lambda n: None
        self.aborted: list[str] = []

    def upload_json(self, u: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {
            "pk": u["pk"],
            "api_url": f"{BASE}uploads/{u['pk']}/",
            "filename": u["filename"],
            "s3_upload_id": u["s3"],
            "status": u["status"],
            "key": f"uploads/1/{u['pk']}",
            "created": "2026-11-27T14:21:06Z",
            **extra,
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "s3.test":
            return self.storage(request)
        with self.lock:
            self.api_auth.append(request.headers.get("authorization"))
        request.read()
        path = request.url.path.removeprefix("/api/v1/")
        if path == "uploads/" and request.method == "POST":
            pk = str(uuid.uuid4())
            u = {
                "pk": pk,
                "s3": uuid.uuid4().hex,
                "status": "Initialized",
                "parts": {},
                "filename": json.loads(request.content)["filename"],
            }
            with self.lock:
                self.uploads[pk] = u
            return httpx.Response(201, json=self.upload_json(u))
        m = re.fullmatch(r"uploads/([^/]+)/(?:([^/]+)/([a-z-]+)/)?", path)
        assert m, path
        u = self.uploads.get(m.group(1))
        if u is None or (m.group(2) and m.group(2) != u["s3"]):
            return httpx.Response(404, json={"detail": "Not found."})
        action = m.group(3)
        if action is None:
            return httpx.Response(200, json=self.upload_json(u))
        if action == "generate-presigned-urls":
            with self.lock:
                self.presign_calls += 1
            numbers = json.loads(request.content)["part_numbers"]
            urls = {
                str(n): f"https://s3.test/b/{u['pk']}?uploadId={u['s3']}&partNumber={n}&sig=x"
                for n in numbers
            }
            return httpx.Response(200, json=self.upload_json(u, presigned_urls=urls))
        if action == "list-parts":
            parts = [
                {"ETag": e, "PartNumber": n, "Size": len(b), "LastModified": "x"}
                for n, (e, b) in sorted(u["parts"].items())
            ]
            return httpx.Response(200, json=self.upload_json(u, parts=parts))
        if action == "complete-multipart-upload":
            if u["status"] != "Initialized":
                return httpx.Response(500, text="RuntimeError at /api/v1/uploads/")
            sent = json.loads(request.content)["parts"]
            numbers = [p["PartNumber"] for p in sent]
            if numbers != sorted(numbers) or not sent:
                return httpx.Response(500, text="ClientError InvalidPartOrder")
            for i, p in enumerate(sent):
                held = u["parts"].get(p["PartNumber"])
                if held is None or held[0] != p["ETag"]:
                    return httpx.Response(500, text="ClientError InvalidPart")
                if i < len(sent) - 1 and len(held[1]) < self.min_part:
                    return httpx.Response(500, text="ClientError EntityTooSmall")
            u["status"] = "Completed"
            u["data"] = b"".join(u["parts"][n][1] for n in numbers)
            return httpx.Response(200, json=self.upload_json(u))
        if action == "abort-multipart-upload":
            u["status"] = "Aborted"
            self.aborted.append(u["pk"])
            return httpx.Response(200, json=self.upload_json(u))
        raise AssertionError(action)

    def storage(self, request: httpx.Request) -> httpx.Response:
        number = int(request.url.params["partNumber"])
        pk = request.url.path.rsplit("/", 1)[-1]
        assert "transfer-encoding" not in request.headers
        declared = int(request.headers["content-length"])
        if self.buffer_bodies:
            body = request.read()
        else:  # hash while streaming: never hold the part
            digest = hashlib.md5()
            n = 0
            for chunk in request.stream:  # type: ignore[union-attr]
                digest.update(chunk)
                n += len(chunk)
            body = b""
            assert n == declared
        with self.lock:
            self.put_log.append((number, declared, request.headers.get("authorization")))
        injected = self.fail_put(number)
        if injected is not None:
            return injected
        assert len(body) == declared or not self.buffer_bodies
        etag = f'"{hashlib.md5(body).hexdigest()}"'
        with self.lock:
            self.uploads[pk]["parts"][number] = (etag, body)
        return httpx.Response(200, headers={"ETag": etag})


class StreamingTransport(httpx.BaseTransport):
    """Like MockTransport, but does not read the request body first (MockTransport
    buffers it, which would hide whether the client streams)."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        self.handler = handler

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.handler(request)


def make_client(fake: FakeGC, **kw: Any) -> GrandChallengeClient:
    transport: httpx.BaseTransport = (
        httpx.MockTransport(fake) if fake.buffer_bodies else StreamingTransport(fake)
    )
    return GrandChallengeClient(BASE, SECRET, transport=transport, sleep=lambda s: None, **kw)


def write_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


# -- uploads against the fake ------------------------------------------------------------------


def upload_file(uploader: Uploader, path: Path, filename: str, *,
                on_created: Callable[[Upload], None] | None = None,
                progress: Callable[[int], None] | None = None) -> UploadResult:
    """Create, tell ``on_created`` (where the engine journals it), send: what apply does."""
    upload = uploader.create(filename)
    if on_created is not None:
        on_created(upload)
    return uploader.send(upload, path, progress=progress)


def test_upload_12_mib_in_3_parallel_parts_without_token(tmp_path: Path) -> None:
    fake = FakeGC()
    data = write_file(tmp_path / "scan.mha", 12 * MIB)
    uploader = Uploader(make_client(fake), part_size=5 * MIB, max_workers=3)
    created: list[Upload] = []
    progress: list[int] = []
    result = upload_file(uploader,
        tmp_path / "scan.mha",
        "p001.gcb-1a2b3c4d.mha",
        on_created=created.append,
        progress=progress.append,
    )
    assert result.upload.is_completed and result.upload.pk == created[0].pk
    assert (result.parts_total, result.parts_sent, result.parts_reused) == (3, 3, 0)
    assert result.bytes_sent == 12 * MIB == sum(progress)
    assert fake.uploads[result.upload.pk]["data"] == data
    assert fake.uploads[result.upload.pk]["filename"] == "p001.gcb-1a2b3c4d.mha"
    assert sorted(n for n, _, _ in fake.put_log) == [1, 2, 3]
    assert all(auth is None for _, _, auth in fake.put_log)  # never the token to storage
    assert all(auth == f"Bearer {SECRET}" for auth in fake.api_auth)
    assert fake.presign_calls == 1


def test_small_and_empty_files(tmp_path: Path) -> None:
    fake = FakeGC()
    (tmp_path / "v.json").write_bytes(b'{"a": 1}')
    (tmp_path / "empty.json").write_bytes(b"")
    result = upload_file(Uploader(make_client(fake)), tmp_path / "v.json", "v.json")
    assert fake.uploads[result.upload.pk]["data"] == b'{"a": 1}'
    empty = upload_file(Uploader(make_client(fake)), tmp_path / "empty.json", "empty.json")
    assert empty.upload.is_completed and fake.uploads[empty.upload.pk]["data"] == b""


def test_memory_stays_bounded_for_a_large_file(tmp_path: Path) -> None:
    size = 48 * MIB
    path = tmp_path / "big.bin"
    with path.open("wb") as f:  # sparse-ish: write in chunks, never hold it
        for _ in range(size // MIB):
            f.write(b"\x5a" * MIB)
    fake = FakeGC(buffer_bodies=False, min_part=0)
    uploader = Uploader(make_client(fake), part_size=16 * MIB, max_workers=3, chunk_size=256 * 1024)
    tracemalloc.start()
    try:
        uploader.send(uploader.create("big.bin"), path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # a part is 16 MiB; 3 in parallel buffered would be 48 MiB. Streaming keeps ~1 MiB.
    assert peak < 8 * MIB, peak
    assert sorted(n for n, _, _ in fake.put_log) == [1, 2, 3]


def fail_part(numbers: set[int], status: int = 500) -> Callable[[int], httpx.Response | None]:
    def hook(n: int) -> httpx.Response | None:
        return httpx.Response(status, text="boom") if n in numbers else None

    return hook


def test_interrupted_upload_resumes_sending_only_missing_parts(tmp_path: Path) -> None:
    fake = FakeGC()
    data = write_file(tmp_path / "f.mha", 12 * MIB)
    client = make_client(fake)
    first = Uploader(client, part_size=5 * MIB, max_workers=1, abort_on_failure=False)
    upload = first.create("f.gcb-00000000.mha")
    fake.fail_put = fail_part({3})  # part 3 fails for good (500 is not retried)
    with pytest.raises(ServerError):
        first.send(upload, tmp_path / "f.mha")
    assert fake.uploads[upload.pk]["status"] == "Initialized"
    assert sorted(fake.uploads[upload.pk]["parts"]) == [1, 2]

    # the journal kept only the reference
    ref = Upload(
        pk=upload.pk,
        api_url=upload.api_url,
        filename=upload.filename,
        s3_upload_id=upload.s3_upload_id,
    )
    fake.fail_put = lambda n: None
    fake.put_log.clear()
    result = Uploader(client, part_size=5 * MIB).send(ref, tmp_path / "f.mha", resume=True)
    assert [n for n, _, _ in fake.put_log] == [3]
    assert (result.parts_sent, result.parts_reused) == (1, 2)
    assert result.bytes_sent == 2 * MIB
    assert fake.uploads[upload.pk]["data"] == data


def test_resume_resends_a_part_whose_bytes_differ(tmp_path: Path) -> None:
    fake = FakeGC()
    path = tmp_path / "f.bin"
    write_file(path, 11 * MIB)
    client = make_client(fake)
    uploader = Uploader(client, part_size=5 * MIB, max_workers=1, abort_on_failure=False)
    upload = uploader.create("f.bin")
    fake.fail_put = fail_part({3})
    with pytest.raises(ServerError):
        uploader.send(upload, path)
    # the file's first part changed since (same size)
    with path.open("r+b") as f:
        f.write(b"CHANGED")
    fake.fail_put = lambda n: None
    fake.put_log.clear()
    result = uploader.send(upload, path, resume=True)
    assert sorted(n for n, _, _ in fake.put_log) == [1, 3]
    assert fake.uploads[upload.pk]["data"] == path.read_bytes()
    assert result.parts_reused == 1


def test_resume_of_a_completed_upload_sends_nothing(tmp_path: Path) -> None:
    fake = FakeGC()
    write_file(tmp_path / "f", 100)
    uploader = Uploader(make_client(fake))
    done = upload_file(uploader, tmp_path / "f", "f")
    fake.put_log.clear()
    again = uploader.send(done.upload, tmp_path / "f", resume=True)
    assert again.upload.is_completed and again.parts_sent == 0 and fake.put_log == []


def test_resume_of_a_gone_upload(tmp_path: Path) -> None:
    fake = FakeGC()
    write_file(tmp_path / "f", 100)
    uploader = Uploader(make_client(fake))
    ghost = Upload(pk="nope", api_url=f"{BASE}uploads/nope/", filename="f", s3_upload_id="x")
    with pytest.raises(UploadGoneError):
        uploader.send(ghost, tmp_path / "f", resume=True)
    up = uploader.create("f")
    uploader.client.abort_upload(up)
    with pytest.raises(UploadGoneError, match="aborted"):
        uploader.send(up, tmp_path / "f", resume=True)


def test_failure_aborts_by_default(tmp_path: Path) -> None:
    fake = FakeGC()
    write_file(tmp_path / "f", 11 * MIB)
    client = make_client(fake, retry=RetryPolicy(attempts=2))
    uploader = Uploader(client, part_size=5 * MIB, max_workers=2)
    fake.fail_put = fail_part({2}, status=503)
    with pytest.raises(ServerError):
        upload_file(uploader, tmp_path / "f", "f")
    assert len(fake.aborted) == 1
    # 503 is retried: part 2 was tried twice
    assert [n for n, _, _ in fake.put_log].count(2) == 2


def test_transient_part_failures_are_retried(tmp_path: Path) -> None:
    fake = FakeGC()
    data = write_file(tmp_path / "f", 11 * MIB)
    failures = {"left": 2}

    def flaky(n: int) -> httpx.Response | None:
        if n == 2 and failures["left"]:
            failures["left"] -= 1
            return httpx.Response(503)
        return None

    fake.fail_put = flaky
    result = upload_file(Uploader(make_client(fake), part_size=5 * MIB), tmp_path / "f", "f")
    assert fake.uploads[result.upload.pk]["data"] == data
    assert [n for n, _, _ in fake.put_log].count(2) == 3


def test_expired_presigned_url_is_refreshed(tmp_path: Path) -> None:
    fake = FakeGC()
    data = write_file(tmp_path / "f", 100)
    expired = {"once": True}

    def hook(n: int) -> httpx.Response | None:
        if expired["once"]:
            expired["once"] = False
            return httpx.Response(403, text="<Error><Code>AccessDenied</Code></Error>")
        return None

    fake.fail_put = hook
    result = upload_file(Uploader(make_client(fake)), tmp_path / "f", "f")
    assert fake.uploads[result.upload.pk]["data"] == data
    assert fake.presign_calls == 2


def test_presigned_urls_are_fetched_in_batches(tmp_path: Path) -> None:
    fake = FakeGC(min_part=0)
    write_file(tmp_path / "f", 40 * MIB)
    # 40 parts of 1 MiB is below S3's minimum; plan_parts refuses, so use 5 MiB x 8
    uploader = Uploader(make_client(fake), part_size=5 * MIB, max_workers=4)
    upload_file(uploader, tmp_path / "f", "f")
    assert 1 <= fake.presign_calls <= 2


# -- against the real sandbox app, in-process -------------------------------------------------


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[tuple[Any, Any, GrandChallengeClient]]:
    """(app, fault injector, client as the seed user demo). Storage refuses any request
    that carries an Authorization header, as real S3 does."""
    from gcbatch.sandbox import SandboxApp
    from gcbatch.sandbox.config import SandboxConfig
    from gcbatch.sandbox.faults import FaultInjector
    from gcbatch.sandbox.transport import SandboxTransport

    config = dataclasses.replace(SandboxConfig(), storage_rejects_authorization=True)
    app = SandboxApp(tmp_path / "sandbox.db", config=config)
    injector = FaultInjector()
    client = GrandChallengeClient(
        "http://localhost/api/v1/",
        app.token("demo"),
        transport=SandboxTransport(app, injector, sleep=lambda s: None),
        sleep=lambda s: None,
    )
    try:
        yield app, injector, client
    finally:
        client.close()
        app.close()


def storage_puts(app: Any, since: int = 0) -> list[dict[str, Any]]:
    return [
        r
        for r in app.requests_since(since)
        if r["method"] == "PUT" and r["path"].startswith("/_storage/uploads/")
    ]


def test_sandbox_upload_interrupted_after_two_parts_resumes_with_the_third(
    sandbox: tuple[Any, Any, GrandChallengeClient], tmp_path: Path
) -> None:
    from gcbatch.sandbox.faults import FaultPlan

    app, injector, client = sandbox
    path = tmp_path / "scan.mha"
    data = write_file(path, 12 * MIB)
    uploader = Uploader(client, part_size=5 * MIB, max_workers=1, abort_on_failure=False)
    upload = uploader.create("p001.gcb-1a2b3c4d.mha")
    # the third part PUT dies (connection reset, every retry too): "interrupted after 2"
    injector.set_plan(FaultPlan.parse(["PUT /_storage/*:reset:1:skip=2"]))
    with pytest.raises(TransportError):
        uploader.send(upload, path)
    puts = storage_puts(app)
    assert [r["status"] for r in puts] == [200, 200]
    assert not any(r["had_authorization"] for r in puts)
    held = client.list_parts(upload)
    assert [(p.part_number, p.size) for p in held] == [(1, 5 * MIB), (2, 5 * MIB)]

    injector.set_plan(FaultPlan.parse([]))
    seq = max(r["seq"] for r in app.requests_since(0))
    ref = Upload(
        pk=upload.pk,
        api_url=upload.api_url,
        filename=upload.filename,
        s3_upload_id=upload.s3_upload_id,
    )
    result = Uploader(client, part_size=5 * MIB).send(ref, path, resume=True)
    assert (result.parts_sent, result.parts_reused, result.bytes_sent) == (1, 2, 2 * MIB)
    resent = storage_puts(app, seq)
    assert len(resent) == 1 and "partNumber=3" in resent[0]["query"]
    assert result.upload.status == "Completed"
    assert app.store.path(f"uploads/{upload.pk}/object").read_bytes() == data


def test_sandbox_parallel_upload_then_job_uses_it(
    sandbox: tuple[Any, Any, GrandChallengeClient], tmp_path: Path
) -> None:
    app, _, client = sandbox
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"pad": "x" * (11 * MIB)}))
    result = upload_file(Uploader(client, part_size=5 * MIB, max_workers=3),
        path, "case-1.gcb-00c0ffee.json"
    )
    assert result.parts_sent == 3
    assert all(not r["had_authorization"] for r in storage_puts(app))
    uploads = list(client.list_uploads())
    assert [u.filename for u in uploads] == ["case-1.gcb-00c0ffee.json"]
    alg = client.get_algorithm("risk-calculator")
    job = client.create_job(
        alg.api_url,
        [
            ValueInput("age", 61),
            ValueInput("lung-volume", 4.2),
            UploadInput("lab-report", result.upload.pk),
        ],
    )
    assert job.status == "Validating inputs"
    assert client.get_job(job.pk).pk == job.pk


@pytest.mark.slow
def test_real_loopback_tls_sandbox(make_sandbox: Callable[..., Any], tmp_path: Path) -> None:
    """Over real sockets and TLS (CA bundle given as a path): upload in parallel parts,
    submit, and the storage (which refuses tokens) never sees one."""
    from gcbatch.sandbox.config import SandboxConfig

    config = dataclasses.replace(SandboxConfig(), storage_rejects_authorization=True)
    sb = make_sandbox(tls=True, config=config)
    assert sb.api_url.startswith("https://127.0.0.1:")
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"pad": "y" * (6 * MIB)}))
    with GrandChallengeClient(sb.api_url, sb.token("demo"), verify=str(sb.cafile)) as client:
        result = upload_file(Uploader(client, part_size=5 * MIB, max_workers=2), path, "r.json")
        assert result.parts_sent == 2 and result.upload.is_completed
        alg = client.get_algorithm("risk-calculator")
        job = client.create_job(
            alg.api_url,
            [
                ValueInput("age", 70),
                ValueInput("lung-volume", 3.9),
                UploadInput("lab-report", result.upload.pk),
            ],
        )
        assert client.get_job(job.pk).pk == job.pk
    log = sb.admin.requests()
    entries = log if isinstance(log, list) else log.get("requests", log.get("results", []))
    storage = [r for r in entries if str(r.get("path", "")).startswith("/_storage/")]
    assert len(storage) == 2 and not any(r["had_authorization"] for r in storage)
    api = [r for r in entries if str(r.get("path", "")).startswith("/api/v1/")]
    assert api and all(r["had_authorization"] for r in api)


# -- bytes sent = bytes hashed -------------------------------------------------------------------


def test_the_hash_is_of_the_bytes_sent_in_parallel_parts(tmp_path: Path) -> None:
    fake = FakeGC()
    data = write_file(tmp_path / "scan.mha", 16 * MIB + 3)
    uploader = Uploader(make_client(fake), part_size=5 * MIB, max_workers=4)
    result = upload_file(uploader, tmp_path / "scan.mha", "s.mha")
    assert result.sha256 == hashlib.sha256(data).hexdigest()


def test_a_file_that_is_not_the_fingerprinted_one_is_never_completed(tmp_path: Path) -> None:
    from gcbatch.api.uploads import SourceChangedError

    fake = FakeGC()
    path = tmp_path / "scan.mha"
    data = write_file(path, 6 * MIB)
    planned = hashlib.sha256(data).hexdigest()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, other bytes
    uploader = Uploader(make_client(fake), part_size=5 * MIB)
    upload = uploader.create("s.mha")
    with pytest.raises(SourceChangedError, match="changed since it was fingerprinted"):
        uploader.send(upload, path, expect_sha256=planned)
    assert fake.uploads[upload.pk]["status"] == "Aborted"


def test_a_part_sent_again_with_other_bytes_is_refused(tmp_path: Path) -> None:
    """A retried PUT re-reads its part: if the file changed meanwhile, stop."""
    from gcbatch.api.uploads import SourceChangedError

    fake = FakeGC()
    path = tmp_path / "f"
    data = write_file(path, 11 * MIB)
    state = {"left": 1}

    def flaky_then_rewrite(n: int) -> httpx.Response | None:
        if n == 2 and state["left"]:
            state["left"] -= 1
            path.write_bytes(data[:6 * MIB] + b"\0" * (5 * MIB))  # part 2 changes
            return httpx.Response(503)
        return None

    fake.fail_put = flaky_then_rewrite
    uploader = Uploader(make_client(fake), part_size=5 * MIB, max_workers=1)
    with pytest.raises(SourceChangedError, match="changed while it was being uploaded"):
        upload_file(uploader, path, "f")
