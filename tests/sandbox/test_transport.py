"""The in-process transport: the app behind httpx with no sockets, faults included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from gcbatch.sandbox import SandboxTransport
from gcbatch.sandbox.faults import FaultInjector, FaultPlan
from gcbatch.sandbox.transport import to_sandbox_request


def test_request_mapping() -> None:
    request = httpx.Request(
        "post",
        "https://example.test:8443/api/v1/algorithms/jobs/?input_image=a&input_image=b&e=",
        headers={"Authorization": "Bearer x", "X-Thing": "1"},
        content=b"payload",
    )
    mapped = to_sandbox_request(request)
    assert mapped.method == "POST"
    assert mapped.path == "/api/v1/algorithms/jobs/"
    assert mapped.query == {"input_image": ("a", "b"), "e": ("",)}
    assert mapped.headers["authorization"] == "Bearer x"
    assert mapped.headers["x-thing"] == "1"
    assert mapped.body == b"payload"
    assert mapped.base_url == "https://example.test:8443"
    assert to_sandbox_request(httpx.Request("GET", "http://testserver")).path == "/"


def test_responses_come_back_as_httpx_responses(echo_app: Any) -> None:
    with httpx.Client(base_url="http://testserver", transport=SandboxTransport(echo_app)) as c:
        answer = c.get("/status/404")
        assert answer.status_code == 404
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["base_url"] == "http://testserver"
        head = c.head("/x")
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) > 0
    with pytest.raises(RuntimeError, match="boom"):  # in-process, app bugs surface as is
        httpx.Client(transport=SandboxTransport(echo_app)).get("http://t/boom")


def test_latency_uses_the_injected_sleep(echo_app: Any) -> None:
    slept: list[float] = []
    transport = SandboxTransport(
        echo_app, FaultPlan.parse(["GET *:latency=250"], latency_ms=10), sleep=slept.append
    )
    with httpx.Client(base_url="http://t", transport=transport) as client:
        client.get("/a")
        client.post("/b")
        client.get("/_sandbox/faults")
    assert slept == [pytest.approx(0.26), pytest.approx(0.01)]


def test_shared_injector_and_reset_kinds(echo_app: Any) -> None:
    injector = FaultInjector()
    transport = SandboxTransport(echo_app, injector)
    assert transport.faults is injector
    with httpx.Client(base_url="http://t", transport=transport) as client:
        injector.set_plan(FaultPlan.parse(["*:reset"]))
        with pytest.raises(httpx.ReadError, match="reset"):
            client.get("/a")
        injector.set_plan(FaultPlan.parse(["*:drop_after_commit:1:close=fin"]))
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/b", content=b"x")
    assert echo_app.paths() == ["/b"]


def test_real_app_in_process(tmp_path: Path) -> None:
    from gcbatch.sandbox import SandboxApp

    app = SandboxApp(tmp_path / "t.db")
    try:
        transport = SandboxTransport(app)
        headers = {"Authorization": "Bearer demo-token"}
        with httpx.Client(
            base_url="http://testserver/api/v1/", transport=transport, headers=headers
        ) as client:
            found = client.get("algorithms/", params={"slug": "risk-calculator"})
            assert found.status_code == 200
            algorithm = found.json()["results"][0]
            assert algorithm["api_url"].startswith("http://testserver/api/v1/algorithms/")
            created = client.post(
                "algorithms/jobs/",
                json={
                    "algorithm": algorithm["api_url"],
                    "inputs": [
                        {"interface": "age", "value": 70},
                        {"interface": "lung-volume", "value": 4.5},
                    ],
                },
            )
            assert created.status_code == 201, created.text
            detail = client.get(f"algorithms/jobs/{created.json()['pk']}/")
            assert detail.status_code == 200
            assert detail.json()["status"] in ("Validating inputs", "Queued")
            stats = client.get("http://testserver/_sandbox/stats")
            assert stats.status_code == 200
    finally:
        app.close()
