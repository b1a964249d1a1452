"""A loopback HTTP(S) proxy the end-to-end suite puts in front of either server.

A live server cannot be told to lose an answer or to show its request log, but a proxy
between gcbatch and the server can do both, for the sandbox and the real application
alike::

    with FaultProxy(target.api_url, upstream_cafile=target.cafile) as proxy:
        proxy.drop_answers("POST", "/api/v1/algorithms/jobs/", rate=0.3, seed=7)
        run gcbatch with --server proxy.api_url and SSL_CERT_FILE=proxy.trust_bundle
        proxy.requests()   # what gcbatch sent, in order, with the server's status

What it does to a request:

- **forward** (default): the request goes upstream unchanged, ``Host`` included, so the
  server builds its absolute URLs (``api_url``, pagination ``next``, presigned storage
  URLs of the sandbox) on the proxy's address and the client stays behind the proxy.
- **drop the answer**: the request reaches the server and is answered there (a job POST
  is committed), then the proxy closes the client's connection without a byte: the
  "commit, then lose the response" fault gcbatch must reconcile.
- **hold the answer**: the same, but the client is kept waiting until the test releases
  the held answers (then its connection is closed without a byte): a test can kill the
  client while the server's answers are on their way.

The proxy speaks TLS when the upstream does (a scheme change would make the server's
absolute URLs wrong), with its own local CA; ``trust_bundle`` is a CA file holding that
CA, the upstream's CA and the usual public roots (presigned storage URLs of a real
deployment go straight to S3). Each client connection gets its own thread and its own
upstream connection; the TLS handshake happens in that thread, so one slow client never
holds up the others. Bodies are read whole (the suite's parts are a few MiB).
"""

from __future__ import annotations

import contextlib
import http.client
import random
import re
import select
import socket
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gcbatch.sandbox.server import make_certificates

__all__ = ["FaultProxy", "ProxyEntry"]

#: hop-by-hop headers: about one connection, never forwarded
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
        "trailer", "upgrade", "content-length"}


@dataclass(frozen=True)
class ProxyEntry:
    """One request the proxy saw, in arrival order (``seq`` from 1)."""

    seq: int
    time: float  # when the answer came back from upstream (or the upstream failed)
    method: str
    path: str  # without the query
    query: str
    status: int  # the upstream's status; 0 when the upstream could not be reached
    dropped: bool  # the client never got this answer
    body: bytes  # the upstream's answer body (for a dropped job POST: the job made)


@dataclass(frozen=True)
class _DropRule:
    method: str
    path: re.Pattern[str]
    rate: float
    times: int | None  # at most this many drops (None: no limit)


class FaultProxy:
    """The proxy; start it with ``with`` (or :meth:`start`), stop it with :meth:`stop`."""

    def __init__(self, upstream_api_url: str, *, upstream_cafile: Path | None = None,
                 workdir: Path | None = None) -> None:
        parts = urlsplit(upstream_api_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {upstream_api_url!r}")
        self.upstream_scheme = parts.scheme
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or (443 if parts.scheme == "https" else 80)
        self.api_path = parts.path or "/"
        self._upstream_ctx: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._upstream_ctx = ssl.create_default_context(
                cafile=str(upstream_cafile) if upstream_cafile else None)
        self._workdir = workdir or Path(tempfile.mkdtemp(prefix="gcbatch-e2e-proxy-"))
        self._lock = threading.Lock()
        self._entries: list[ProxyEntry] = []
        self._rules: list[_DropRule] = []
        self._drops: dict[int, int] = {}
        self._rng = random.Random(0)
        self._holds: list[tuple[str, re.Pattern[str]]] = []
        self._held = 0
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.cafile: Path | None = None
        self.trust_bundle: Path | None = None
        self._upstream_cafile = upstream_cafile

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FaultProxy:
        server_ctx: ssl.SSLContext | None = None
        if self.upstream_scheme == "https":
            certs = make_certificates(self._workdir / "certs")
            server_ctx = certs.server_context()
            self.cafile = certs.cafile
            self.trust_bundle = self._bundle(certs.cafile)
        self._server = _Server(self, server_ctx)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                         kwargs={"poll_interval": 0.1},
                                         name="gcbatch-e2e-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _bundle(self, own_ca: Path) -> Path:
        pieces = [own_ca.read_text()]
        if self._upstream_cafile is not None:
            pieces.append(Path(self._upstream_cafile).read_text())
        with contextlib.suppress(ImportError, OSError):
            import certifi  # httpx's own dependency: the public roots

            pieces.append(Path(certifi.where()).read_text())
        bundle = self._workdir / "trust-bundle.pem"
        bundle.write_text("\n".join(pieces))
        return bundle

    # ------------------------------------------------------------------ addresses

    @property
    def port(self) -> int:
        assert self._server is not None, "start the proxy first"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        # "localhost" rather than 127.0.0.1: a live server's allowed hosts and the
        # proxy's certificate both name it
        return f"{self.upstream_scheme}://localhost:{self.port}"

    @property
    def api_url(self) -> str:
        return self.base_url + self.api_path

    # ------------------------------------------------------------------ faults

    def drop_answers(self, method: str, path: str, *, rate: float = 1.0, seed: int = 0,
                     times: int | None = None) -> None:
        """From now on, answer ``method path`` (a regex on the path, anchored at both
        ends) to the server but not to the client, with probability ``rate``."""
        with self._lock:
            self._rules.append(_DropRule(method.upper(), re.compile(path), rate, times))
            self._rng = random.Random(seed)

    def hold_answers(self, method: str, path: str) -> None:
        """From now on, keep ``method path``'s successful (2xx) answers from the client
        until :meth:`release_answers`; then close its connection without them."""
        with self._lock:
            self._holds.append((method.upper(), re.compile(path)))
            self._release.clear()

    def held(self) -> int:
        """How many answers were held so far."""
        with self._lock:
            return self._held

    def release_answers(self) -> None:
        with self._lock:
            self._holds.clear()
        self._release.set()

    def clear_faults(self) -> None:
        with self._lock:
            self._rules.clear()
            self._drops.clear()
        self.release_answers()

    def _decide_hold(self, method: str, path: str, status: int) -> bool:
        # only answers of requests the server carried out (2xx): a refusal (such as the
        # readiness probe's 400, a job POST that can make no job) is let through
        with self._lock:
            if 200 <= status < 300 and any(m == method and p.fullmatch(path)
                                           for m, p in self._holds):
                self._held += 1
                return True
            return False

    def _decide_drop(self, method: str, path: str) -> bool:
        with self._lock:
            for index, rule in enumerate(self._rules):
                if rule.method == method and rule.path.fullmatch(path):
                    if rule.times is not None and self._drops.get(index, 0) >= rule.times:
                        continue
                    if self._rng.random() < rule.rate:
                        self._drops[index] = self._drops.get(index, 0) + 1
                        return True
            return False

    # ------------------------------------------------------------------ the log

    def requests(self, since: int = 0) -> list[ProxyEntry]:
        """The requests answered after ``since`` (a ``seq``), oldest first."""
        with self._lock:
            return [e for e in self._entries if e.seq > since]

    def last_seq(self) -> int:
        with self._lock:
            return len(self._entries)

    def dropped(self) -> list[ProxyEntry]:
        return [e for e in self.requests() if e.dropped]

    def _record(self, **fields: Any) -> None:
        with self._lock:
            self._entries.append(ProxyEntry(seq=len(self._entries) + 1, time=time.time(),
                                            **fields))

    # ------------------------------------------------------------------ forwarding

    def _connect(self) -> http.client.HTTPConnection:
        if self._upstream_ctx is not None:
            return http.client.HTTPSConnection(self.upstream_host, self.upstream_port,
                                               context=self._upstream_ctx, timeout=300)
        return http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=300)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, proxy: FaultProxy, ssl_context: ssl.SSLContext | None) -> None:
        self.proxy = proxy
        self.ssl_context = ssl_context
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client killed mid-request (the suite's SIGKILLs) is expected, not news
        pass

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        # the handshake in the connection's own thread, never in the accept loop
        if self.ssl_context is not None:
            try:
                request.settimeout(30)
                request = self.ssl_context.wrap_socket(request, server_side=True)
                request.settimeout(None)
            except (OSError, ssl.SSLError):
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    _upstream: http.client.HTTPConnection | None = None

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self) -> None:
        proxy = self.server.proxy
        body = self._read_body()
        path, _, query = self.path.partition("?")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        if body or self.command in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        try:
            response, data = self._exchange(body, headers)
        except (OSError, http.client.HTTPException):
            proxy._record(method=self.command, path=path, query=query, status=0,
                          dropped=True, body=b"")
            self._hang_up()
            return
        hold = proxy._decide_hold(self.command, path, response.status)
        drop = hold or proxy._decide_drop(self.command, path)
        proxy._record(method=self.command, path=path, query=query, status=response.status,
                      dropped=drop, body=data)
        if hold:
            proxy._release.wait(600)
        if drop:
            self._hang_up()
            return
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        if response.will_close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _exchange(self, body: bytes, headers: dict[str, str]
                  ) -> tuple[http.client.HTTPResponse, bytes]:
        # Never retried: a request that may have reached the server (a job POST) must
        # not be sent twice by the proxy. A kept-alive upstream connection the server has
        # closed meanwhile is noticed before sending (it reads as ready: EOF) and replaced.
        if self._upstream is not None and self._upstream.sock is not None:
            ready, _, _ = select.select([self._upstream.sock], [], [], 0)
            if ready:
                self._close_upstream()
        if self._upstream is None:
            self._upstream = self.server.proxy._connect()
        try:
            self._upstream.request(self.command, self.path, body=body or None,
                                   headers=headers)
            response = self._upstream.getresponse()
            data = response.read()
        except BaseException:
            self._close_upstream()
            raise
        if response.will_close:
            self._close_upstream()
        return response, data

    def _close_upstream(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None

    def _hang_up(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._close_upstream()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _forward
