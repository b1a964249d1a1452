"""Fault injection: the compact syntax, the JSON form, the dice, and every fault mode
on both transports (real sockets and in-process), against a stand-in app and the real one.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gcbatch.sandbox import RunningSandbox, SandboxTransport
from gcbatch.sandbox.faults import (
    FaultInjector,
    FaultPlan,
    FaultRule,
    FaultSpecError,
    fault_response,
    parse_fault_spec,
)
from gcbatch.sandbox.http import Request
from gcbatch.sandbox.server import ADMIN_HEADER, SandboxHTTPServer

JOBS = "/api/v1/algorithms/jobs/"

# --- the compact syntax ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "POST /api/v1/algorithms/jobs/:drop_after_commit:0.1",
            FaultRule("drop_after_commit", ("POST",), JOBS, 0.1),
        ),
        ("*:503:0.2", FaultRule("status", (), "*", 0.2, status=503)),
        ("*:429:0.05:retry_after=1", FaultRule("status", (), "*", 0.05, 429, "1")),
        ("503", FaultRule("status", (), "*", 1.0, 503)),
        ("POST:504:ms=20", FaultRule("status", ("POST",), "*", 1.0, 504, latency_ms=20)),
        ("GET *:latency=50", FaultRule("latency", ("GET",), "*", 1.0, latency_ms=50)),
        (
            "POST algorithms/jobs/:reset:1:skip=2,times=1",
            FaultRule("reset", ("POST",), JOBS, 1.0, skip=2, times=1),
        ),
        (
            "GET,HEAD uploads/*:reset:0.5:close=fin",
            FaultRule("reset", ("GET", "HEAD"), "/api/v1/uploads/*", 0.5, close="fin"),
        ),
        ("~/api/v1/(?:a|b)/:502", FaultRule("status", (), "~/api/v1/(?:a|b)/", 1.0, 502)),
        ("* /_x/*:500", FaultRule("status", (), "/_x/*", 1.0, 500)),
    ],
)
def test_parse_fault_spec(spec: str, expected: FaultRule) -> None:
    rule = parse_fault_spec(spec)
    assert rule == expected
    assert parse_fault_spec(rule.to_spec()) == rule  # the canonical form round-trips
    assert FaultRule.from_json(rule.to_json()) == rule
    assert FaultRule.from_json(json.loads(json.dumps(rule.to_json()))) == rule


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("foo", "no fault action"),
        ("*:503:2", "rate must be between 0 and 1"),
        ("*:latency", "needs ms=N"),
        ("*:reset:1:retry_after=2", "retry_after only applies to status faults"),
        ("*:503:0.1:bogus=1", "bad option 'bogus=1'"),
        ("FOO /x:503", "'FOO' is not an HTTP method"),
        ("*:reset:1:close=maybe", "close must be one of"),
        ("*:503:0.1:times=-1", "must not be negative"),
        ("~(unclosed:503", "bad regular expression"),
        ("*:503:0.5:x=1:y=2", "too many ':' parts"),
    ],
)
def test_parse_fault_spec_errors(spec: str, message: str) -> None:
    with pytest.raises(FaultSpecError, match=message.replace("(", r"\(")):
        parse_fault_spec(spec)


def test_plan_from_json_accepts_strings_objects_and_lists() -> None:
    plan = FaultPlan.from_json(
        {
            "seed": 7,
            "latency_ms": 5,
            "rules": [
                "POST algorithms/jobs/:503:0.5",
                {"action": 429, "retry_after": 2, "method": "GET", "path": "uploads/*"},
                {"action": "reset", "methods": ["PUT"], "rate": 0.25},
            ],
        }
    )
    assert plan.seed == 7 and plan.latency_ms == 5
    assert plan.rules[0] == FaultRule("status", ("POST",), JOBS, 0.5, 503)
    assert plan.rules[1] == FaultRule("status", ("GET",), "/api/v1/uploads/*", 1.0, 429, "2")
    assert plan.rules[2] == FaultRule("reset", ("PUT",), "*", 0.25)
    assert FaultPlan.from_json(["*:502"]).rules == (FaultRule("status", (), "*", 1.0, 502),)
    assert FaultPlan.from_json(plan.to_json()) == plan
    with pytest.raises(FaultSpecError, match="unknown fault plan key"):
        FaultPlan.from_json({"rulez": []})
    with pytest.raises(FaultSpecError, match="unknown fault rule key"):
        FaultPlan.from_json([{"action": "reset", "rat": 1}])
    with pytest.raises(FaultSpecError, match="not valid JSON"):
        FaultPlan.load("{")


# --- matching and the dice ------------------------------------------------------------


def test_rule_matching() -> None:
    jobs = parse_fault_spec("POST algorithms/jobs/:503")
    assert jobs.matches("POST", JOBS)
    assert jobs.matches("post", JOBS)
    assert not jobs.matches("GET", JOBS)
    assert not jobs.matches("POST", JOBS + "abc/")  # a glob matches the whole path
    star = parse_fault_spec("GET uploads/*:503")
    assert star.matches("GET", "/api/v1/uploads/")
    assert star.matches("GET", "/api/v1/uploads/1/2/list-parts/")  # "*" crosses "/"
    regex = parse_fault_spec("~/api/v1/uploads/[^/]+/:503")
    assert regex.matches("DELETE", "/api/v1/uploads/abc/")
    assert not regex.matches("DELETE", "/api/v1/uploads/abc/def/")


def test_rate_zero_never_and_rate_one_always() -> None:
    never = FaultInjector(FaultPlan.parse(["*:503:0"], seed=1))
    always = FaultInjector(FaultPlan.parse(["*:503:1"], seed=1))
    for _ in range(200):
        assert never.decide("GET", "/api/v1/x/").rule is None
        assert always.decide("GET", "/api/v1/x/").action == "status"


def test_rate_is_respected_and_a_seed_replays_exactly() -> None:
    def run(seed: int) -> list[bool]:
        injector = FaultInjector(FaultPlan.parse(["*:503:0.2"], seed=seed))
        return [injector.decide("GET", "/api/v1/x/").rule is not None for _ in range(2000)]

    first, again, other = run(42), run(42), run(43)
    assert first == again
    assert first != other
    assert 0.16 < sum(first) / len(first) < 0.24


def test_unseeded_plan_reports_the_seed_it_chose() -> None:
    injector = FaultInjector(FaultPlan.parse(["*:503:0.5"]))
    replay = FaultInjector(FaultPlan.parse(["*:503:0.5"], seed=injector.seed))
    a = [injector.decide("GET", "/x").rule is not None for _ in range(100)]
    b = [replay.decide("GET", "/x").rule is not None for _ in range(100)]
    assert a == b


def test_skip_and_times() -> None:
    injector = FaultInjector(FaultPlan.parse(["POST algorithms/jobs/:reset:1:skip=2,times=2"]))
    hits = [injector.decide("POST", JOBS).rule is not None for _ in range(6)]
    assert hits == [False, False, True, True, False, False]
    snap = injector.snapshot()
    assert snap["rules"][0]["seen"] == 6 and snap["rules"][0]["fired"] == 2
    assert [e["seq"] for e in snap["events"]] == [1, 2]
    assert injector.snapshot(since=1)["events"][0]["seq"] == 2


def test_latency_sums_and_first_failure_wins() -> None:
    plan = FaultPlan.parse(
        ["GET *:latency=30", "*:502:1:ms=5", "*:503", "*:latency=7"], latency_ms=100
    )
    decision = FaultInjector(plan).decide("GET", "/api/v1/x/")
    assert decision.rule is not None and decision.rule.status == 502
    assert decision.delay_s == pytest.approx((100 + 30 + 5 + 7) / 1000)
    post = FaultInjector(plan).decide("POST", "/api/v1/x/")  # the GET latency rule is skipped
    assert post.delay_s == pytest.approx((100 + 5 + 7) / 1000)


def test_admin_paths_are_never_faulted() -> None:
    injector = FaultInjector(FaultPlan.parse(["*:503"], latency_ms=50))
    for path in ("/_sandbox/stats", "/_sandbox/faults", "/_sandbox/requests"):
        assert injector.decide("GET", path).rule is None
        assert injector.decide("GET", path).delay_s == 0
    assert injector.decide("GET", "/_sandboxed").rule is not None


def test_fault_response_looks_like_a_proxy_page() -> None:
    response = fault_response(parse_fault_spec("*:429:1:retry_after=3"))
    assert response.status == 429
    assert response.header("Retry-After") == "3"
    assert response.header("Content-Type") == "text/html"
    assert response.header("X-Sandbox-Fault") == "429"
    assert b"429 Too Many Requests" in response.body
    assert fault_response(parse_fault_spec("*:503")).header("Retry-After") == ""


def test_admin_endpoint_reads_and_replaces_the_plan() -> None:
    injector = FaultInjector()

    def call(method: str, body: Any = None) -> tuple[int, Any]:
        raw = b"" if body is None else json.dumps(body).encode()
        response = injector.handle_admin(Request(method, "/_sandbox/faults", body=raw))
        assert response is not None
        return response.status, json.loads(response.body)

    assert injector.handle_admin(Request("GET", "/_sandbox/stats")) is None
    status, body = call("GET")
    assert status == 200 and body["rules"] == [] and body["latency_ms"] == 0
    status, body = call("POST", {"seed": 3, "rules": ["*:503:0.5"], "latency_ms": 2})
    assert status == 200
    assert body["seed"] == 3 and body["latency_ms"] == 2
    assert body["rules"][0]["spec"] == "*:503:0.5" and body["rules"][0]["fired"] == 0
    status, body = call("POST", {"rules": ["*:nonsense"]})
    assert status == 400 and "no fault action" in body["detail"]
    assert injector.plan.rules[0].status == 503  # a bad POST changes nothing
    status, body = call("POST")  # empty body: no faults
    assert status == 200 and body["rules"] == []
    assert call("DELETE")[0] == 405


# --- every mode over both transports, against the stand-in app ------------------------


def _server(app: Any, injector: FaultInjector) -> tuple[SandboxHTTPServer, Callable[[], None]]:
    import threading

    server = SandboxHTTPServer(app, faults=injector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.stop()
        thread.join(5)

    return server, stop


@pytest.fixture(params=["server", "transport"])
def faulty_client(request: pytest.FixtureRequest, echo_app: Any) -> Any:
    """(client, injector, app): an httpx client whose faults follow ``injector``."""
    injector = FaultInjector()
    if request.param == "server":
        server, stop = _server(echo_app, injector)
        # (the admin API over HTTP needs the server's admin token)
        client = httpx.Client(base_url=server.base_url, trust_env=False,
                              headers={ADMIN_HEADER: server.admin_token})
        request.addfinalizer(stop)
    else:
        transport = SandboxTransport(echo_app, injector)
        client = httpx.Client(base_url="http://testserver", transport=transport)
    request.addfinalizer(client.close)
    return client, injector, echo_app


def test_status_faults(faulty_client: Any) -> None:
    client, injector, app = faulty_client
    for status in (429, 502, 503, 504):
        injector.set_plan(FaultPlan.parse([f"GET *:{status}:1:retry_after=1"]))
        response = client.get("/api/v1/algorithms/")
        assert response.status_code == status
        assert response.headers["retry-after"] == "1"
        assert response.headers["x-sandbox-fault"] == str(status)
    assert app.paths() == []  # the app never saw them
    assert client.post("/api/v1/algorithms/").status_code == 200  # GET-only rule


def test_reset_never_reaches_the_app(faulty_client: Any) -> None:
    client, injector, app = faulty_client
    injector.set_plan(FaultPlan.parse(["POST algorithms/jobs/:reset"]))
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        client.post(JOBS, json={"x": 1})
    assert app.paths() == []
    injector.set_plan(FaultPlan.parse(["POST algorithms/jobs/:reset:1:close=fin"]))
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(JOBS, json={"x": 1})
    assert app.paths() == []
    assert client.get(JOBS).status_code == 200  # the client recovers on a new connection


def test_drop_after_commit_reaches_the_app_but_not_the_client(faulty_client: Any) -> None:
    client, injector, app = faulty_client
    injector.set_plan(FaultPlan.parse(["POST algorithms/jobs/:drop_after_commit:1:times=1"]))
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        client.post(JOBS, json={"x": 1})
    assert app.paths() == [JOBS]
    assert client.post(JOBS, json={"x": 2}).status_code == 200  # times=1
    assert app.paths() == [JOBS, JOBS]


def test_latency_is_added(faulty_client: Any) -> None:
    client, injector, _ = faulty_client
    injector.set_plan(FaultPlan.parse(["GET *:latency=60"], latency_ms=20))
    start = time.perf_counter()
    assert client.get("/api/v1/x/").status_code == 200
    assert time.perf_counter() - start >= 0.075
    start = time.perf_counter()
    assert client.get("/_sandbox/stats").status_code == 200  # admin: no latency
    assert time.perf_counter() - start < 0.06


def test_faults_configurable_at_runtime_over_http(faulty_client: Any) -> None:
    client, _, app = faulty_client
    answer = client.post("/_sandbox/faults", json={"rules": ["GET *:503"], "seed": 5})
    assert answer.status_code == 200 and answer.json()["seed"] == 5
    assert client.get("/api/v1/x/").status_code == 503
    snapshot = client.get("/_sandbox/faults").json()
    assert snapshot["rules"][0]["fired"] == 1
    assert snapshot["events"][0]["path"] == "/api/v1/x/"
    assert client.post("/_sandbox/faults", json={}).json()["rules"] == []
    assert client.get("/api/v1/x/").status_code == 200
    assert "/_sandbox/faults" not in app.paths()  # answered before the app


def test_reset_is_a_tcp_rst_and_fin_is_an_orderly_close(echo_app: Any) -> None:
    injector = FaultInjector(FaultPlan.parse(["/rst:reset", "/fin:reset:1:close=fin"]))
    server, stop = _server(echo_app, injector)
    try:
        for path, expect_reset in (("/rst", True), ("/fin", False)):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                if expect_reset:
                    with pytest.raises(ConnectionResetError):
                        while sock.recv(1024):
                            pass
                else:
                    assert sock.recv(1024) == b""
    finally:
        stop()


# --- the real app: a dropped job POST really created the job ---------------------------


def _job_payload(sb: RunningSandbox, client: httpx.Client) -> dict[str, Any]:
    algorithm = client.get("algorithms/", params={"slug": "risk-calculator"}).json()
    return {
        "algorithm": algorithm["results"][0]["api_url"],
        "inputs": [
            {"interface": "age", "value": 64},
            {"interface": "lung-volume", "value": 3.5},
        ],
    }


def _job_count(client: httpx.Client) -> int:
    return int(client.get("algorithms/jobs/").json()["count"])


@pytest.mark.parametrize("via", ["server", "transport"])
def test_drop_after_commit_creates_the_job_with_the_real_app(
    sandbox_server: RunningSandbox, via: str
) -> None:
    sb = sandbox_server
    if via == "server":
        client = sb.client("demo")
    else:
        client = httpx.Client(
            base_url=sb.api_url,
            transport=sb.transport(),
            headers={"Authorization": f"Bearer {sb.token('demo')}"},
        )
    with client:
        payload = _job_payload(sb, client)
        sb.admin.set_faults(["POST algorithms/jobs/:drop_after_commit:1:times=1"])
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            client.post("algorithms/jobs/", json=payload)
        assert _job_count(client) == 1  # the job exists although the client heard nothing
        # The same POST again is the duplicate the server refuses: proof it was committed.
        again = client.post("algorithms/jobs/", json=payload)
        assert again.status_code == 400
        assert "already exists" in again.text
        assert _job_count(client) == 1


def test_reset_and_statuses_create_nothing_with_the_real_app(
    sandbox_server: RunningSandbox,
) -> None:
    sb = sandbox_server
    with sb.client("demo") as client:
        payload = _job_payload(sb, client)
        sb.admin.set_faults(
            ["POST algorithms/jobs/:reset:1:times=1", "POST algorithms/jobs/:503:1:times=1"]
        )
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            client.post("algorithms/jobs/", json=payload)
        assert client.post("algorithms/jobs/", json=payload).status_code == 503
        assert _job_count(client) == 0
        created = client.post("algorithms/jobs/", json=payload)
        assert created.status_code == 201, created.text
        assert _job_count(client) == 1
        events = sb.admin.faults()["events"]
        assert [e["action"] for e in events] == ["reset", "503"]
