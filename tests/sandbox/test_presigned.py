"""Presigned part URLs: they need no token, and gcbatch's own client never sends it there.

(The official client is checked the same way in test_gcapi_conformance.py, and a real
``curl`` in test_cli_serve.py.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gcbatch.sandbox import RunningSandbox
from gcbatch.sandbox.config import SandboxConfig


def _presigned_url(client: httpx.Client) -> tuple[dict[str, Any], str]:
    upload = client.post("uploads/", json={"filename": "part.json"}).json()
    signed = client.patch(
        f"uploads/{upload['pk']}/{upload['s3_upload_id']}/generate-presigned-urls/",
        json={"part_numbers": [1]},
    )
    assert signed.status_code == 200, signed.text
    return upload, signed.json()["presigned_urls"]["1"]


@pytest.fixture
def strict_storage(make_sandbox: Callable[..., RunningSandbox]) -> RunningSandbox:
    """A sandbox whose storage refuses requests carrying Authorization, as S3 does."""
    return make_sandbox(config=SandboxConfig().replace(storage_rejects_authorization=True))


def test_presigned_put_works_without_a_token(strict_storage: RunningSandbox) -> None:
    sb = strict_storage
    with sb.client("demo") as api, sb.client(None) as anonymous:
        upload, url = _presigned_url(api)
        assert "Authorization" not in anonymous.headers
        answer = anonymous.put(url, content=b'{"a": 1}')
        assert answer.status_code == 200
        etag = answer.headers["etag"]
        done = api.patch(
            f"uploads/{upload['pk']}/{upload['s3_upload_id']}/complete-multipart-upload/",
            json={"parts": [{"ETag": etag, "PartNumber": 1}]},
        )
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "Completed"
        # With the token, storage refuses: a client that leaks it here breaks.
        _, second_url = _presigned_url(api)
        assert api.put(second_url, content=b"{}").status_code == 400


def test_gcbatch_uploader_never_sends_the_token_to_storage(
    strict_storage: RunningSandbox, tmp_path: Path
) -> None:
    from gcbatch.api.client import GrandChallengeClient
    from gcbatch.api.uploads import Uploader

    sb = strict_storage
    lab = tmp_path / "lab.json"
    lab.write_bytes(b'{"hemoglobin": 13}')
    since = sb.admin.requests()["last"]
    with GrandChallengeClient(sb.api_url, sb.token("demo")) as client:
        uploader = Uploader(client)
        result = uploader.send(uploader.create("lab.json"), lab)
    assert result.upload.status == "Completed"
    log = sb.admin.requests(since=since)["requests"]
    storage = [e for e in log if e["path"].startswith("/_storage/")]
    api = [e for e in log if e["path"].startswith("/api/v1/")]
    assert storage and all(e["method"] == "PUT" and e["status"] == 200 for e in storage)
    assert not any(e["had_authorization"] for e in storage)
    assert api and all(e["had_authorization"] for e in api)
