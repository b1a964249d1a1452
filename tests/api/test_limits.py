"""api/limits.py: the deadline's arithmetic, capped reads, and the deadline on a real socket."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from gcbatch.api.limits import (
    Deadline,
    DeadlineTransport,
    Limits,
    ResponseTooLarge,
    bounded_stream,
    buffered,
    read_capped,
    within,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_fixed_deadline_runs_out() -> None:
    clock = FakeClock()
    deadline = Deadline(10, clock=clock)
    clock.now += 4
    deadline.count(10**9)  # bytes earn nothing without a rate
    assert deadline.remaining() == pytest.approx(6)
    assert deadline.describe() == "no complete answer within 10 s"


def test_a_transfer_earns_time_for_the_bytes_it_moves() -> None:
    clock = FakeClock()
    deadline = Limits(transfer_grace=10, transfer_min_rate=1000).transfer_deadline(clock)
    clock.now += 9
    deadline.count(5000)  # five more seconds
    assert deadline.remaining() == pytest.approx(6)
    assert "slower than" in deadline.describe()


def _response(body: bytes, *, encoding: str | None = None) -> httpx.Response:
    headers = {"Content-Encoding": encoding} if encoding else {}
    return httpx.Response(200, headers=headers, stream=httpx.ByteStream(body))


def test_read_capped_refuses_or_truncates_past_its_limit() -> None:
    assert read_capped(_response(b"abc"), 3) == b"abc"
    with pytest.raises(ResponseTooLarge, match="more than 2 bytes"):
        read_capped(_response(b"abc"), 2)
    assert read_capped(_response(b"abcdef"), 4, truncate=True) == b"abcd"


def test_read_capped_counts_decoded_bytes() -> None:
    """A gzip bomb is measured by what it inflates to, not what it weighs."""
    import gzip

    bomb = gzip.compress(b"\0" * 1_000_000)
    assert len(bomb) < 2000
    with pytest.raises(ResponseTooLarge):
        read_capped(_response(bomb, encoding="gzip"), 100_000)


def test_buffered_keeps_the_body_for_json() -> None:
    response = _response(b'{"a": 1}')
    body = read_capped(response, 100)
    assert buffered(response, body).json() == {"a": 1}


@pytest.fixture
def dripping() -> Iterator[int]:
    """A server answering every request with headers, then a byte every 0.5 s."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            while not stop.is_set():
                try:
                    conn.sendall(b" ")
                except OSError:
                    return
                time.sleep(0.5)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    listener.close()
    thread.join(5)


def test_the_transport_enforces_the_deadline_at_the_socket(dripping: int) -> None:
    """Each byte comes well within the 30 s read timeout; the 1.5 s deadline still ends
    the request, while reading the streamed body too."""
    import ssl

    transport = DeadlineTransport(ssl_context=ssl.create_default_context(),
                                  limits=httpx.Limits(), socket_options=[])
    with httpx.Client(transport=transport, timeout=30) as client:
        deadline = Deadline(1.5)
        with within(deadline):
            response = client.send(client.build_request(
                "GET", f"http://127.0.0.1:{dripping}/"), stream=True)
        bounded_stream(response, deadline)
        with pytest.raises(httpx.ReadTimeout, match=r"no complete answer within 1\.5 s"):
            response.read()
