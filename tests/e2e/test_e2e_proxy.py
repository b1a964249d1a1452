"""The suite's proxy (``e2e_proxy.py``) does what the tests rely on: it forwards
unchanged (the server's URLs then name the proxy), logs every request with the server's
answer, loses answers after the server acted on them, and holds answers until released.
Checked against an in-process TLS sandbox, whichever server the suite runs against."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from e2e_proxy import FaultProxy

from gcbatch.sandbox import RunningSandbox

JOBS = "/api/v1/algorithms/jobs/"


def _client(proxy: FaultProxy, sb: RunningSandbox) -> httpx.Client:
    assert proxy.trust_bundle is not None
    return httpx.Client(base_url=proxy.api_url, trust_env=False, timeout=30,
                        verify=ssl.create_default_context(cafile=str(proxy.trust_bundle)),
                        headers={"Authorization": f"Bearer {sb.token('demo')}"})


def _job_body(api: httpx.Client, age: int) -> dict[str, object]:
    alg = api.get("algorithms/", params={"slug": "risk-calculator"}).json()["results"][0]
    return {"algorithm": alg["api_url"], "inputs": [{"interface": "age", "value": age},
                                                    {"interface": "lung-volume", "value": 1.0}]}


def _server_jobs(sb: RunningSandbox) -> int:
    return int(sb.admin.stats()["users"].get("demo", {}).get("jobs", 0))


def test_forwards_logs_and_the_servers_urls_name_the_proxy(
    make_sandbox: Callable[..., RunningSandbox], tmp_path: Path
) -> None:
    sb = make_sandbox(tls=True)
    with FaultProxy(sb.api_url, upstream_cafile=sb.cafile, workdir=tmp_path) as proxy:
        assert proxy.trust_bundle is not None and sb.cafile is not None
        bundle = proxy.trust_bundle.read_text()
        assert sb.cafile.read_text() in bundle and proxy.cafile is not None
        assert proxy.cafile.read_text() in bundle
        with _client(proxy, sb) as api:
            found = api.get("algorithms/", params={"slug": "risk-calculator"})
            created = api.post("algorithms/jobs/", json=_job_body(api, 1))
        assert found.status_code == 200 and created.status_code == 201
        assert found.json()["results"][0]["api_url"].startswith(proxy.api_url)
        entries = proxy.requests()
        assert [(e.method, e.path, e.status, e.dropped) for e in entries] == [
            ("GET", "/api/v1/algorithms/", 200, False),
            ("GET", "/api/v1/algorithms/", 200, False),
            ("POST", JOBS, 201, False),
        ]
        assert entries[0].query == "slug=risk-calculator" and proxy.last_seq() == 3
        assert proxy.requests(2) == entries[2:]


def test_lost_answers_the_server_acted_on(
    make_sandbox: Callable[..., RunningSandbox], tmp_path: Path
) -> None:
    sb = make_sandbox(tls=True)
    with FaultProxy(sb.api_url, upstream_cafile=sb.cafile, workdir=tmp_path) as proxy, \
            _client(proxy, sb) as api:
        body = _job_body(api, 2)
        proxy.drop_answers("POST", JOBS, rate=1.0, times=1)
        with pytest.raises(httpx.TransportError):
            api.post("algorithms/jobs/", json=body)
        assert _server_jobs(sb) == 1  # made, though the client never heard of it
        (lost,) = proxy.dropped()
        assert lost.status == 201 and b'"pk"' in lost.body
        # `times=1`: the next one gets through
        assert api.post("algorithms/jobs/", json=_job_body(api, 3)).status_code == 201


def test_held_answers_wait_for_release_then_are_lost(
    make_sandbox: Callable[..., RunningSandbox], tmp_path: Path
) -> None:
    sb = make_sandbox(tls=True)
    with FaultProxy(sb.api_url, upstream_cafile=sb.cafile, workdir=tmp_path) as proxy, \
            _client(proxy, sb) as api:
        body = _job_body(api, 4)
        proxy.hold_answers("POST", JOBS)
        outcome: list[BaseException] = []

        def post() -> None:
            try:
                api.post("algorithms/jobs/", json=body)
            except httpx.TransportError as exc:
                outcome.append(exc)

        thread = threading.Thread(target=post)
        thread.start()
        thread.join(3)
        assert thread.is_alive() and proxy.held() == 1  # the client still waits ...
        assert _server_jobs(sb) == 1  # ... for a job the server made
        proxy.release_answers()
        thread.join(10)
        assert not thread.is_alive() and len(outcome) == 1
