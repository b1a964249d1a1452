"""The socket server: HTTP/1.1 parsing, keep-alive, one-write responses with TCP_NODELAY,
TLS with a local CA, and start_sandbox's lifecycle.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import statistics
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gcbatch.sandbox import RunningSandbox, start_sandbox
from gcbatch.sandbox.http import Response
from gcbatch.sandbox.server import (
    SandboxHTTPServer,
    make_certificates,
    serialize_response,
)


@pytest.fixture
def echo_server(echo_app: Any) -> Iterator[SandboxHTTPServer]:
    server = SandboxHTTPServer(echo_app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.stop()
    thread.join(5)


# Bytes read past the end of one response (pipelined answers can arrive in one recv):
# kept per socket so the next _recv_response starts from them instead of losing them.
_LEFTOVER: weakref.WeakKeyDictionary[socket.socket, bytes] = weakref.WeakKeyDictionary()


def _recv_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """(head, body) of one response read from a raw socket (Content-Length framed)."""
    data = _LEFTOVER.pop(sock, b"")
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk
        rest += chunk
    if len(rest) > length:
        _LEFTOVER[sock] = rest[length:]
    return head, rest[:length]


def test_request_is_mapped_for_the_app(echo_server: SandboxHTTPServer) -> None:
    with httpx.Client(base_url=echo_server.base_url, trust_env=False) as client:
        answer = client.post(
            "/api/v1/algorithms/jobs/?input_image=a&input_image=b&empty=&x=%2F",
            content=b"hello",
            headers={"X-Custom": "Yes", "Authorization": "Bearer t"},
        ).json()
    assert answer["method"] == "POST"
    assert answer["path"] == "/api/v1/algorithms/jobs/"
    assert answer["query"] == {"input_image": ["a", "b"], "empty": [""], "x": ["/"]}
    assert answer["headers"]["x-custom"] == "Yes"
    assert answer["headers"]["authorization"] == "Bearer t"
    assert answer["body_length"] == 5
    assert answer["base_url"] == echo_server.base_url


def test_base_url_follows_the_host_the_client_used(echo_server: SandboxHTTPServer) -> None:
    # gcapi refuses URLs whose host differs from its base URL's, so answers must name the
    # host the client asked for (localhost vs 127.0.0.1).
    with socket.create_connection(("127.0.0.1", echo_server.port), timeout=5) as sock:
        host = f"localhost:{echo_server.port}"
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        _, body = _recv_response(sock)
    assert json.loads(body)["base_url"] == f"http://{host}"


def test_keep_alive_serves_many_requests_on_one_connection(
    echo_server: SandboxHTTPServer,
) -> None:
    with socket.create_connection(("127.0.0.1", echo_server.port), timeout=5) as sock:
        for i in range(5):
            sock.sendall(f"GET /n/{i} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
            head, body = _recv_response(sock)
            assert head.startswith(b"HTTP/1.1 200 OK")
            assert b"Connection: keep-alive" in head
            assert json.loads(body)["path"] == f"/n/{i}"
        # Pipelined: two requests in one write, two answers in order.
        sock.sendall(b"GET /p/1 HTTP/1.1\r\nHost: h\r\n\r\nGET /p/2 HTTP/1.1\r\nHost: h\r\n\r\n")
        assert json.loads(_recv_response(sock)[1])["path"] == "/p/1"
        assert json.loads(_recv_response(sock)[1])["path"] == "/p/2"


def test_connection_close_and_http_1_0(echo_server: SandboxHTTPServer) -> None:
    for request in (
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", echo_server.port), timeout=5) as sock:
            sock.sendall(request)
            head, _ = _recv_response(sock)
            assert b"Connection: close" in head
            assert sock.recv(10) == b""


def test_expect_continue_chunked_and_head(echo_server: SandboxHTTPServer) -> None:
    with socket.create_connection(("127.0.0.1", echo_server.port), timeout=5) as sock:
        sock.sendall(
            b"PUT /up HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"data")
        assert json.loads(_recv_response(sock)[1])["body_length"] == 4

        sock.sendall(
            b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nTrailer: x\r\n\r\n"
        )
        answer = json.loads(_recv_response(sock)[1])
        assert answer["body_length"] == 7 and answer["body_head"] == "abcdefg"

        sock.sendall(b"HEAD /h HTTP/1.1\r\nHost: h\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.endswith(b"\r\n\r\n")  # headers only ...
        assert int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]) > 0
        sock.sendall(b"GET /after-head HTTP/1.1\r\nHost: h\r\n\r\n")  # ... and no body
        assert json.loads(_recv_response(sock)[1])["path"] == "/after-head"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nbad header line\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: nope\r\n\r\n", 400),
        (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 431),
    ],
)
def test_malformed_requests_get_an_error_and_a_close(
    echo_server: SandboxHTTPServer, raw: bytes, status: int
) -> None:
    with socket.create_connection(("127.0.0.1", echo_server.port), timeout=5) as sock:
        sock.sendall(raw)
        head, _ = _recv_response(sock)
        assert head.startswith(f"HTTP/1.1 {status} ".encode())
        assert b"Connection: close" in head


def test_app_exception_is_a_plain_500(echo_server: SandboxHTTPServer) -> None:
    with httpx.Client(base_url=echo_server.base_url, trust_env=False) as client:
        answer = client.get("/boom")
        assert answer.status_code == 500
        assert answer.text == "<h1>Server Error (500)</h1>"
        assert client.get("/after").status_code == 200  # the connection survives


def test_accepted_sockets_have_tcp_nodelay(echo_server: SandboxHTTPServer) -> None:
    listener = SandboxHTTPServer(object(), port=0)  # type: ignore[arg-type]
    try:
        client = socket.create_connection(("127.0.0.1", listener.port), timeout=5)
        accepted, _ = listener.get_request()
        try:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            accepted.close()
            client.close()
    finally:
        listener.server_close()


def test_response_is_one_buffer_with_headers_and_body() -> None:
    data = serialize_response(
        Response(201, (("Content-Type", "application/json"), ("Content-Length", "999")), b"{}"),
        keep_alive=True,
    )
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 201 Created\r\n")
    assert body == b"{}"
    assert b"Content-Length: 2" in head and b"999" not in head  # the server's own count
    assert serialize_response(Response(204, (), b"x"), keep_alive=False).endswith(b"\r\n\r\n")


def test_no_delayed_ack_stall_on_small_requests(echo_server: SandboxHTTPServer) -> None:
    # http.client, like httpcore, writes headers and body separately; with a server that
    # answered in two writes without TCP_NODELAY each exchange would take ~40 ms.
    conn = http.client.HTTPConnection("127.0.0.1", echo_server.port, timeout=5)
    timings: list[float] = []
    try:
        conn.request("GET", "/warm")
        conn.getresponse().read()
        for i in range(40):
            start = time.perf_counter()
            conn.request("POST", f"/x/{i}", body=b'{"a": 1}', headers={"Content-Type": "x"})
            assert conn.getresponse().read()
            timings.append(time.perf_counter() - start)
    finally:
        conn.close()
    median = statistics.median(timings)  # robust to a busy machine's scheduling hiccups
    assert median < 0.02, f"{median * 1000:.1f} ms per request"


def test_stop_closes_idle_keep_alive_connections_and_frees_the_port(echo_app: Any) -> None:
    server = SandboxHTTPServer(echo_app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.port
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    _recv_response(sock)
    server.stop()
    thread.join(5)
    assert not thread.is_alive()
    assert sock.recv(10) == b""  # the idle connection was closed
    sock.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


# --- TLS ------------------------------------------------------------------------------


@pytest.fixture(params=["openssl", "cryptography"])
def certificates(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: Any) -> Any:
    if request.param == "cryptography":
        pytest.importorskip("cryptography")
        monkeypatch.setattr("gcbatch.sandbox.server.shutil.which", lambda name: None)
    elif __import__("shutil").which("openssl") is None:  # pragma: no cover
        pytest.skip("no openssl command here")
    return make_certificates(tmp_path / "certs")


def test_tls_with_a_local_ca(certificates: Any, echo_app: Any) -> None:
    server = SandboxHTTPServer(echo_app, ssl_context=certificates.server_context())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    trusted = ssl.create_default_context(cafile=str(certificates.cafile))
    try:
        assert server.base_url.startswith("https://127.0.0.1:")
        for host in ("127.0.0.1", "localhost"):
            url = f"https://{host}:{server.port}/tls"
            with httpx.Client(verify=trusted, trust_env=False) as client:
                answer = client.get(url).json()
            assert answer["base_url"] == f"https://{host}:{server.port}"
        # Strict verification as Python 3.13 does it by default also accepts it.
        context = ssl.create_default_context(cafile=str(certificates.cafile))
        context.verify_flags |= getattr(ssl, "VERIFY_X509_STRICT", 0)
        with httpx.Client(verify=context, trust_env=False) as client:
            assert client.get(f"https://127.0.0.1:{server.port}/").status_code == 200
        # Not trusted without the CA.
        with httpx.Client(trust_env=False) as client, pytest.raises(httpx.ConnectError):
            client.get(f"https://127.0.0.1:{server.port}/")
        # A client that never finishes its handshake does not block the others.
        stuck = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        try:
            with httpx.Client(verify=trusted, trust_env=False) as client:
                assert client.get(f"https://127.0.0.1:{server.port}/ok").status_code == 200
        finally:
            stuck.close()
    finally:
        server.stop()
        thread.join(5)
    assert certificates.keyfile.stat().st_mode & 0o077 == 0


# --- start_sandbox with the real app ----------------------------------------------------


def test_start_sandbox_serves_the_api(sandbox_server: RunningSandbox) -> None:
    sb = sandbox_server
    assert sb.api_url == f"http://127.0.0.1:{sb.port}/api/v1/"
    assert sb.cafile is None
    assert sb.token("demo") == "demo-token"
    assert sb.token("other") == "other-token"
    with pytest.raises(KeyError):
        sb.token("nobody")
    with sb.client("demo") as client:
        answer = client.get("algorithms/", params={"slug": "lung-nodule-detector"})
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/json"
        algorithm = answer.json()["results"][0]
        assert algorithm["api_url"].startswith(sb.api_url)
    with sb.client(None) as anonymous:
        assert anonymous.post("algorithms/jobs/", json={}).status_code == 401
    assert isinstance(sb.admin.stats(), dict)


def test_start_sandbox_tls_and_stop(tmp_path: Path) -> None:
    with start_sandbox(db=tmp_path / "s.db", tls=True) as sb:
        assert sb.base_url.startswith("https://127.0.0.1:")
        assert sb.cafile is not None and sb.cafile.exists()
        with sb.client("demo") as client:
            version = client.get("gcapi/").json()
        assert version["latest_version"] >= "0.16.1"
        port = sb.port
        cafile = sb.cafile
    assert not cafile.exists()  # temporary certificates are removed on stop
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert (tmp_path / "s.db").exists()  # a given database is kept


def test_state_persists_across_restarts_on_the_same_db(tmp_path: Path) -> None:
    db = tmp_path / "keep.db"
    with start_sandbox(db=db) as sb, sb.client("demo") as client:
        algorithm = client.get("algorithms/", params={"slug": "risk-calculator"}).json()
        payload = {
            "algorithm": algorithm["results"][0]["api_url"],
            "inputs": [
                {"interface": "age", "value": 50},
                {"interface": "lung-volume", "value": 2.0},
            ],
        }
        created = client.post("algorithms/jobs/", json=payload)
        assert created.status_code == 201, created.text
    with start_sandbox(db=db) as sb, sb.client("demo") as client:
        jobs = client.get("algorithms/jobs/").json()
        assert jobs["count"] == 1
        assert jobs["results"][0]["pk"] == created.json()["pk"]


def test_transport_of_a_running_sandbox_shares_app_and_faults(
    sandbox_server: RunningSandbox,
) -> None:
    sb = sandbox_server
    sb.admin.set_faults(["GET algorithms/:503"])
    headers = {"Authorization": f"Bearer {sb.token('demo')}"}
    with httpx.Client(base_url=sb.api_url, transport=sb.transport(), headers=headers) as c:
        assert c.get("algorithms/").status_code == 503
        sb.admin.clear_faults()
        assert c.get("algorithms/").status_code == 200


def test_concurrent_keep_alive_clients_create_exactly_their_jobs(
    make_sandbox: Any,
) -> None:
    from gcbatch.sandbox.config import SandboxConfig

    sb = make_sandbox(
        config=SandboxConfig().replace(max_active_jobs=10_000, credits_per_month=10**9)
    )
    with sb.client("demo") as client:
        algorithm = client.get("algorithms/", params={"slug": "risk-calculator"}).json()
    url = algorithm["results"][0]["api_url"]
    threads, per_thread = 6, 25
    statuses: list[int] = []
    lock = threading.Lock()

    def worker(slot: int) -> None:
        with sb.client("demo") as client:
            for i in range(per_thread):
                answer = client.post(
                    "algorithms/jobs/",
                    json={
                        "algorithm": url,
                        "inputs": [
                            {"interface": "age", "value": slot * 1000 + i},
                            {"interface": "lung-volume", "value": 1.0},
                        ],
                    },
                )
                with lock:
                    statuses.append(answer.status_code)

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(60)
    assert statuses == [201] * (threads * per_thread)
    assert sb.admin.stats()["users"]["demo"]["jobs"] == threads * per_thread
