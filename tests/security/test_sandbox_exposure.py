"""The sandbox is safe to run on a workstation (issue 14, "Build" 8; review F15-F17).

Whoever reaches its port is a client, not a friend: the admin API needs the admin token
(a browser's cross-site "simple" POST cannot change the settings); a request is judged on
its head before its body is read; bodies, in-flight body bytes and connections are
capped; HTTP framing is strict; a 500 carries no traceback; a bind beyond loopback is
announced loudly with the address it really is.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gcbatch.sandbox import RunningSandbox, SandboxApp, SandboxProcess
from gcbatch.sandbox.http import Request
from gcbatch.sandbox.server import ADMIN_HEADER, SandboxHTTPServer

JOBS = "/api/v1/algorithms/jobs/"


def _exchange(port: int, raw: bytes, *, timeout: float = 5.0) -> tuple[int, bytes, bool]:
    """Send ``raw`` (a head, maybe part of a body) and read the answer: (status, the whole
    answer, whether the server then closed the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += sock.recv(65536)
        closed = False
        try:
            closed = sock.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            closed = True
        return int(head.split(b" ")[1]), data, closed


def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the server did not get there"
        time.sleep(0.02)


def _head(method: str, path: str, *lines: str) -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(
        f"{line}\r\n" for line in lines) + "\r\n").encode()


# --------------------------------------------------------------------------- admin API


def test_the_admin_api_needs_the_admin_token(sandbox_server: RunningSandbox) -> None:
    sb = sandbox_server
    for headers in ((), (f"{ADMIN_HEADER}: wrong",), ("Authorization: Bearer demo-token",)):
        status, answer, _ = _exchange(sb.port, _head("GET", "/_sandbox/stats", *headers))
        assert status == 403 and b"admin token" in answer
    status, _, _ = _exchange(sb.port, _head("GET", "/_sandbox/stats",
                                            f"{ADMIN_HEADER}: {sb.admin_token}"))
    assert status == 200
    assert sb.admin.stats()["totals"]["jobs"] == 0  # (the admin client carries it)


def test_a_cross_site_simple_post_cannot_change_the_settings(
    sandbox_server: RunningSandbox
) -> None:
    """What a web page can make a browser send without a preflight: text/plain, no
    custom header. The settings stay as they were; the preflight is not granted."""
    sb = sandbox_server
    before = sb.app.config.max_active_jobs
    body = b'{"max_active_jobs": 0}'
    status, _, _ = _exchange(sb.port, _head(
        "POST", "/_sandbox/config", "Origin: http://evil.example",
        "Content-Type: text/plain", f"Content-Length: {len(body)}") + body)
    assert status == 403
    assert sb.app.config.max_active_jobs == before != 0
    status, answer, _ = _exchange(sb.port, _head(
        "OPTIONS", "/_sandbox/config", "Origin: http://evil.example",
        "Access-Control-Request-Method: POST"))
    assert status == 403 and b"Access-Control-Allow" not in answer


# --------------------------------------------------------------------------- before the body


@pytest.mark.parametrize(("head", "status", "needle"), [
    (_head("POST", JOBS, "Content-Length: 10485760", "Content-Type: application/json"),
     401, b"Authentication credentials were not provided."),
    (_head("POST", JOBS, "Transfer-Encoding: chunked", "Content-Type: application/json"),
     401, b"Authentication credentials were not provided."),
    (_head("POST", JOBS, "Authorization: Bearer stolen", "Content-Length: 1000"),
     401, b"Invalid token."),
    (_head("PUT", "/_storage/uploads/00000000-0000-4000-8000-000000000000?uploadId=x&"
                  "partNumber=1&X-Sandbox-Expires=9999999999&X-Sandbox-Signature=forged",
           "Transfer-Encoding: chunked"), 403, b"SignatureDoesNotMatch"),
    (_head("POST", JOBS, "Authorization: Bearer demo-token", "Content-Length: 1073741824"),
     413, b"request body too large"),
])
def test_a_request_is_refused_on_its_head_before_its_body_is_read(
    sandbox_server: RunningSandbox, head: bytes, status: int, needle: bytes
) -> None:
    """Only the head is sent: an answer arriving at all proves no body was waited for."""
    got, answer, closed = _exchange(sandbox_server.port, head)
    assert (got, needle in answer, closed) == (status, True, True), answer[:300]


def test_body_bytes_in_flight_and_connections_are_capped(echo_app: Any) -> None:
    server = SandboxHTTPServer(echo_app, body_budget=1024 * 1024, max_connections=2)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        status, answer, closed = _exchange(server.port, _head(
            "POST", "/x", "Content-Length: 2097152"))
        assert (status, b"Retry-After: 1" in answer, closed) == (503, True, True)
        assert echo_app.paths() == []
        _until(lambda: server.open_connections == 0)  # (that one's thread has ended)
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
        _until(lambda: server.open_connections == 2)  # both accepted, waiting
        status, answer, _ = _exchange(server.port, _head("GET", "/third"))
        assert status == 503 and b"too many connections" in answer
        for sock in idle:
            sock.close()
    finally:
        server.stop()
        thread.join(5)


# --------------------------------------------------------------------------- framing


@pytest.mark.parametrize(("raw", "status"), [
    (_head("POST", "/x", "Content-Length: 3", "Transfer-Encoding: chunked") + b"3\r\nabc\r\n"
     b"0\r\n\r\n", 400),
    (_head("POST", "/x", "Transfer-Encoding: gzip, chunked"), 501),
    (_head("POST", "/x", "Transfer-Encoding: chunked") + b"-5\r\nabcde\r\n0\r\n\r\n", 400),
    (_head("POST", "/x", "Transfer-Encoding: chunked") + b"0x5\r\nabcde\r\n0\r\n\r\n", 400),
    (_head("POST", "/x", "Transfer-Encoding: chunked") + b"3\r\nabcXX0\r\n\r\n", 400),
    (_head("POST", "/x", "Content-Length : 5") + b"abcde", 400),
    (_head("POST", "/x", "Content-Length: +5") + b"abcde", 400),
    (_head("GET", "/x", "X-A: 1", " folded: continuation"), 400),
])
def test_strict_framing_is_answered_then_closed(echo_app: Any, raw: bytes, status: int
                                                ) -> None:
    server = SandboxHTTPServer(echo_app)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        got, _, closed = _exchange(server.port, raw)
        assert (got, closed) == (status, True)
        assert echo_app.paths() == []  # nothing ambiguous reaches the app
    finally:
        server.stop()
        thread.join(5)


def test_a_sandbox_bug_answers_500_without_a_traceback(tmp_path: Any) -> None:
    app = SandboxApp(tmp_path / "sandbox.db")
    try:
        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("internal detail /home/user/secret")

        app._handle = broken  # type: ignore[method-assign]
        answer = app.handle(Request("GET", "/api/v1/algorithms/"))
        assert answer.status == 500
        assert b"Traceback" not in answer.body and b"internal detail" not in answer.body
    finally:
        app.close()


# --------------------------------------------------------------------------- the bind


@pytest.fixture
def open_sandbox(sandbox_process: Any) -> Iterator[SandboxProcess]:
    proc: SandboxProcess = sandbox_process(extra_args=["--host", "0.0.0.0"])
    yield proc


@pytest.mark.slow
def test_a_bind_beyond_loopback_is_announced_with_its_true_address(
    open_sandbox: SandboxProcess
) -> None:
    port = open_sandbox.info["port"]
    assert open_sandbox.info["listening"] == f"0.0.0.0:{port}"
    deadline = time.monotonic() + 10
    log = ""
    while "Press Ctrl-C" not in log and time.monotonic() < deadline:
        time.sleep(0.1)
        log = open_sandbox.log_path.read_text()
    assert f"WARNING: the sandbox listens on 0.0.0.0:{port}, every network interface" in log
    assert "well-known test tokens (demo-token, other-token)" in log
    assert f"listening 0.0.0.0:{port}  (OPEN TO THE NETWORK)" in log
    assert json.loads(json.dumps(open_sandbox.admin.stats()))["totals"]["jobs"] == 0


@pytest.mark.slow
def test_a_loopback_bind_says_so_and_warns_nothing(sandbox_process: Any) -> None:
    proc: SandboxProcess = sandbox_process()
    deadline = time.monotonic() + 10
    log = ""
    while "Press Ctrl-C" not in log and time.monotonic() < deadline:
        time.sleep(0.1)
        log = proc.log_path.read_text()
    assert f"listening 127.0.0.1:{proc.info['port']}  (this machine only)" in log
    assert "WARNING" not in log
