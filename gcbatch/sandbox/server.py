"""The sandbox over real sockets: a small threaded HTTP/1.1 server, optionally with TLS.

Why not ``http.server.BaseHTTPRequestHandler``: it writes the status line, the headers and
the body with separate writes. With Nagle's algorithm on, a response split like that waits
for the client's delayed ACK (40 ms on Linux) before its last segment leaves, and every
benchmark of gcbatch would then measure the sandbox's stall instead of gcbatch. So this
server parses requests itself (a few lines of HTTP/1.1: request line, headers,
``Content-Length`` or chunked bodies, ``Expect: 100-continue``, keep-alive), sets
``TCP_NODELAY`` on every accepted socket and sends each response in ONE ``sendall``.

It also plays the transport-level faults of :mod:`gcbatch.sandbox.faults` (connection
reset, commit-then-drop), which only a server that owns its sockets can do.

Safe to run on a workstation (whoever can reach the port is a client, not a friend):

- **Nothing is buffered before it is allowed.** A request's head is read (64 KiB at most),
  then checked before a byte of its body is: the admin API (``/_sandbox/``) needs the
  admin token (header :data:`ADMIN_HEADER`, made at start and printed by ``sandbox
  serve``; a browser's cross-site "simple" request cannot carry it); the app may refuse
  the request on its head (``SandboxApp.admit``: a bad token, a large body without one, a
  storage PUT with a bad signature). A refusal is answered at once and the connection
  closed without reading the body.
- **Limits**: a body of at most 16 MiB to the API (the platform's own limit) and 64 MiB
  for a storage part, all bodies in flight together at most :data:`BODY_BUDGET` (503 with
  ``Retry-After`` past it), at most :data:`MAX_CONNECTIONS` connections (503 past them).
- **Strict framing**: ``Content-Length`` together with ``Transfer-Encoding``, a transfer
  coding other than ``chunked``, a chunk size that is not plain hex (a negative one), a
  malformed or folded header line: 400 (501 for a coding), answered, then closed.
- **No tracebacks in answers**: a failing handler is a plain 500, its traceback only in
  the server's log.

TLS: :mod:`gcbatch.sandbox.certificates` makes a throw-away local CA and a server
certificate for ``localhost``/``127.0.0.1``/``::1``. The TLS handshake runs in the
connection's own thread, so a slow or broken client never blocks the accept loop.
"""

from __future__ import annotations

import contextlib
import email.utils
import hmac
import http
import json
import logging
import re
import secrets
import socket
import socketserver
import ssl
import struct
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Protocol, cast
from urllib.parse import parse_qs, urlsplit

from gcbatch.sandbox.certificates import CertificateError, Certificates, make_certificates
from gcbatch.sandbox.faults import (
    DROP_AFTER_COMMIT,
    GARBLE,
    LATE_COMMIT,
    RESET,
    STATUS,
    FaultInjector,
    fault_response,
    garble_response,
    late_commit_answer,
    schedule_late,
)
from gcbatch.sandbox.http import Request, Response

__all__ = [
    "ADMIN_HEADER",
    "CertificateError",
    "Certificates",
    "SandboxHTTPServer",
    "SupportsHandle",
    "make_certificates",
]

log = logging.getLogger("gcbatch.sandbox.server")

MAX_LINE = 65536  # request line or one header line
MAX_HEADERS = 200
MAX_HEAD = 65536  # request line and headers together
#: the platform's nginx and Django take bodies of up to 16 MiB
#: (``client_max_body_size 16m``, ``DATA_UPLOAD_MAX_MEMORY_SIZE``)
MAX_BODY = 16 * 1024 * 1024
#: a storage part: gcapi and gcbatch send 32 MiB parts at most (the platform's own
#: uploads location takes 64 MiB)
MAX_PART_BODY = 64 * 1024 * 1024
#: request bodies held in memory at once, over all connections
BODY_BUDGET = 512 * 1024 * 1024
MAX_CONNECTIONS = 512
#: what is read and thrown away of a refused request's body before closing, so the
#: client sees the answer rather than a reset
_DRAIN_BYTES = 1024 * 1024
_DRAIN_SECONDS = 1.0
#: the header that carries the admin token to ``/_sandbox/``
ADMIN_HEADER = "X-Gcbatch-Sandbox-Admin"
ADMIN_PREFIX = "/_sandbox"
IDLE_TIMEOUT_S = 300.0  # an idle keep-alive connection is closed after this long
HANDSHAKE_TIMEOUT_S = 10.0
_NO_BODY_STATUSES = frozenset({204, 304})
# Headers the server owns; the app's own copies of these are dropped.
_SERVER_HEADERS = frozenset({"content-length", "connection", "transfer-encoding", "date"})
_REASONS = {s.value: s.phrase for s in http.HTTPStatus}


class SupportsHandle(Protocol):
    """What the server needs from an app: ``SandboxApp`` has it."""

    def handle(self, request: Request) -> Response: ...


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Abort(Exception):
    """Close this connection now without an answer (a fault)."""

    def __init__(self, close: str) -> None:
        super().__init__(close)
        self.close = close


_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    """The ``Date`` header value, formatted at most once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True))
    return _date_cache[1]


def serialize_response(response: Response, *, keep_alive: bool, head_only: bool = False) -> bytes:
    """Status line, headers and body as the single buffer that is sent in one write."""
    status = response.status
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
    has_server = False
    for name, value in response.headers:
        lname = name.lower()
        if lname in _SERVER_HEADERS:
            continue
        has_server = has_server or lname == "server"
        lines.append(f"{name}: {value}")
    body = response.body
    if status in _NO_BODY_STATUSES or 100 <= status < 200:
        body = b""
    else:
        lines.append(f"Content-Length: {len(body)}")
    if not has_server:
        lines.append("Server: gcbatch-sandbox")
    lines.append(f"Date: {_http_date()}")
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body


@dataclass(frozen=True)
class _Head:
    """A request's line and headers; its body not read yet."""

    method: str
    target: str
    version: str
    headers: dict[str, str]
    chunked: bool
    length: int | None  # Content-Length; None for chunked or no body


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


def _read_line(rfile: IO[bytes], budget: list[int]) -> bytes:
    line = rfile.readline(MAX_LINE + 1)
    budget[0] -= len(line)
    if len(line) > MAX_LINE or budget[0] < 0:
        raise _BadRequest(431, "request header fields too large")
    return line


def _read_head(rfile: IO[bytes]) -> _Head | None:
    """One request's line and headers (at most :data:`MAX_HEAD` bytes), strictly framed;
    None on a clean end of stream between requests."""
    budget = [MAX_HEAD]
    line = _read_line(rfile, budget)
    for _ in range(8):  # RFC 9112: ignore a few empty lines before a request
        if line not in (b"\r\n", b"\n"):
            break
        line = _read_line(rfile, budget)
    if not line:
        return None
    parts = line.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not _TOKEN.fullmatch(parts[0]):
        raise _BadRequest(400, "malformed request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        raw = _read_line(rfile, budget)
        if raw in (b"\r\n", b"\n", b""):
            break
        name, sep, value = raw.decode("latin-1").partition(":")
        # no whitespace around a name, no folded continuation lines (RFC 9112 5.1, 5.2):
        # what a proxy and this server read differently is how requests are smuggled
        if not sep or not _TOKEN.fullmatch(name):
            raise _BadRequest(400, "malformed header line")
        name = name.lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    else:
        raise _BadRequest(431, "too many headers")
    coding = headers.get("transfer-encoding")
    length_raw = headers.get("content-length")
    if coding is not None:
        if length_raw is not None:
            raise _BadRequest(400, "Content-Length and Transfer-Encoding together")
        if coding.strip().lower() != "chunked":
            raise _BadRequest(501, "only the chunked transfer coding is understood")
        return _Head(method.upper(), target, version, headers, True, None)
    length = None
    if length_raw is not None:
        if not length_raw.isdigit() or not length_raw.isascii():
            raise _BadRequest(400, "bad Content-Length")
        length = int(length_raw)
    return _Head(method.upper(), target, version, headers, False, length)


def _read_body(rfile: IO[bytes], head: _Head, limit: int, budget: _BodyBudget) -> bytes:
    """The body, at most ``limit`` bytes, each byte reserved in ``budget`` first (the
    caller releases ``budget.held`` of it once answered)."""
    if not head.chunked:
        length = head.length or 0
        if length > limit:
            raise _BadRequest(413, "request body too large")
        budget.reserve(length)
        body = rfile.read(length) if length else b""
        if len(body) != length:
            raise _BadRequest(400, "request body ended early")
        return body
    chunks: list[bytes] = []
    total = 0
    line_budget = [MAX_HEAD]
    while True:
        size_line = _read_line(rfile, line_budget).split(b";", 1)[0].strip()
        if not _HEX.fullmatch(size_line):  # not "-5", "+5", "0x5" or 20 digits
            raise _BadRequest(400, "bad chunk size")
        size = int(size_line, 16)
        if size == 0:
            while _read_line(rfile, line_budget) not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        total += size
        if total > limit:
            raise _BadRequest(413, "request body too large")
        budget.reserve(size)
        data = rfile.read(size)
        if len(data) != size:
            raise _BadRequest(400, "chunked body ended early")
        chunks.append(data)
        if rfile.read(2) not in (b"\r\n",):
            raise _BadRequest(400, "a chunk does not end with CRLF")


class _BodyBudget:
    """Bytes of request bodies held in memory, over all connections (thread-safe)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._used = 0
        self._lock = threading.Lock()

    def reserve(self, n: int) -> None:
        """Take ``n`` bytes of the budget for the calling connection, or _BadRequest 503."""
        with self._lock:
            if self._used + n > self.total:
                raise _BadRequest(503, "too many request bodies in flight; retry shortly")
            self._used += n
        _held.n = getattr(_held, "n", 0) + n

    def release(self) -> None:
        """Give back what the calling connection's current request took."""
        n = getattr(_held, "n", 0)
        _held.n = 0
        with self._lock:
            self._used -= n

    @property
    def used(self) -> int:
        return self._used


#: per connection thread: bytes of the budget its current request holds
_held = threading.local()


def _split_target(target: str) -> tuple[str, dict[str, tuple[str, ...]]]:
    if not target.startswith("/"):  # absolute-form (a proxy's) or "*"
        target = urlsplit(target)._replace(scheme="", netloc="").geturl() or "/"
    path, _, query_string = target.partition("?")
    if not query_string:
        return path, {}
    query = {k: tuple(v) for k, v in parse_qs(query_string, keep_blank_values=True).items()}
    return path, query


def _set_linger_zero(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class _Handler(socketserver.BaseRequestHandler):
    server: SandboxHTTPServer

    def handle(self) -> None:
        srv = self.server
        sock: socket.socket = self.request
        if srv.ssl_context is not None:
            try:
                sock.settimeout(HANDSHAKE_TIMEOUT_S)
                sock = srv.ssl_context.wrap_socket(sock, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                log.debug("TLS handshake failed: %s", exc)
                return
        sock.settimeout(IDLE_TIMEOUT_S)
        srv.track(sock, True)
        rfile = cast(IO[bytes], sock.makefile("rb", buffering=65536))
        try:
            self._serve(sock, rfile)
        except _Abort as abort:
            rfile.close()
            if abort.close == "rst":
                _set_linger_zero(sock)
            else:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        except (OSError, ssl.SSLError):
            pass  # the client went away; nothing to answer
        finally:
            srv.track(sock, False)
            if not rfile.closed:
                rfile.close()
            if sock is not self.request:
                with contextlib.suppress(OSError):
                    sock.close()

    def _serve(self, sock: socket.socket, rfile: IO[bytes]) -> None:
        srv = self.server
        scheme = "https" if srv.ssl_context is not None else "http"

        def refuse(status: int, message: str) -> None:
            body = (message + "\n").encode()
            answer = Response(status, (("Content-Type", "text/plain"),), body)
            if status == 503:
                answer = Response(status, (*answer.headers, ("Retry-After", "1")), body)
            sock.sendall(serialize_response(answer, keep_alive=False))

        while not srv.stopping:
            try:
                head = _read_head(rfile)
            except _BadRequest as bad:
                refuse(bad.status, str(bad))
                return
            except TimeoutError:
                return
            if head is None:
                return
            conn = head.headers.get("connection", "").lower()
            http10 = head.version == "HTTP/1.0"
            keep_alive = ("keep-alive" in conn if http10 else "close" not in conn)
            keep_alive = keep_alive and not srv.stopping
            path, query = _split_target(head.target)
            host = head.headers.get("host") or srv.default_host
            request = Request(method=head.method, path=path, query=query,
                              headers=head.headers, body=b"", base_url=f"{scheme}://{host}")
            # Decided on the head alone, before a byte of the body is read or buffered.
            refusal = srv.admit(request, None if head.chunked else (head.length or 0))
            if refusal is not None:
                sock.sendall(serialize_response(refusal, keep_alive=False,
                                                head_only=head.method == "HEAD"))
                _drain(sock, rfile)
                return
            if (head.headers.get("expect", "").lower() == "100-continue"
                    and head.version == "HTTP/1.1" and (head.chunked or head.length)):
                sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            try:
                body = _read_body(rfile, head, srv.body_limit(request), srv.budget)
                request = Request(method=request.method, path=path, query=query,
                                  headers=head.headers, body=body, base_url=request.base_url)
                response = srv.respond(request)
                data = serialize_response(
                    response, keep_alive=keep_alive, head_only=head.method == "HEAD"
                )
            except _BadRequest as bad:
                refuse(bad.status, str(bad))
                _drain(sock, rfile)
                return
            finally:
                srv.budget.release()
            sock.sendall(data)
            if srv.access_log is not None:
                srv.log_access(request, response.status)
            if not keep_alive:
                return


def _drain(sock: socket.socket, rfile: IO[bytes]) -> None:
    """Before closing on a refused request: stop sending, read and drop what the client
    still sends (a little, briefly), so it reads our answer instead of a reset."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(0.2)
        deadline = time.monotonic() + _DRAIN_SECONDS
        dropped = 0
        while dropped < _DRAIN_BYTES and time.monotonic() < deadline:
            chunk = rfile.read1(65536) if hasattr(rfile, "read1") else rfile.read(65536)
            if not chunk:
                break
            dropped += len(chunk)


class SandboxHTTPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """A threaded HTTP/1.1 server around an app with ``handle(Request) -> Response``.

    One thread per connection (connections are kept alive). Call :meth:`serve_forever`
    in a thread and :meth:`stop` to end it; :meth:`stop` also closes idle keep-alive
    connections so their threads end and clients see the close.

    ``admin_token``: what ``/_sandbox/`` requests must carry in :data:`ADMIN_HEADER`
    (None: a random one, see :attr:`admin_token`). An app with an ``admit(request,
    body_size)`` method is asked, before a body is read, whether to refuse the request.
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(
        self,
        app: SupportsHandle,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        faults: FaultInjector | None = None,
        sleep: Callable[[float], None] = time.sleep,
        access_log: IO[str] | None = None,
        admin_token: str | None = None,
        body_budget: int = BODY_BUDGET,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.admin_token = admin_token or secrets.token_urlsafe(24)
        self.budget = _BodyBudget(body_budget)
        self.max_connections = max_connections
        self._open = 0
        self._open_lock = threading.Lock()
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.app = app
        self.ssl_context = ssl_context
        self.faults = faults if faults is not None else FaultInjector()
        self.sleep = sleep
        self.access_log = access_log
        self.stopping = False
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__((host, port), _Handler)
        bound_host, bound_port = self.server_address[:2]
        self.port = int(bound_port)
        self.bound_host = str(bound_host)
        shown = str(bound_host)
        if shown in ("0.0.0.0", ""):
            shown = "127.0.0.1"
        elif shown == "::":
            shown = "::1"
        self.default_host = f"[{shown}]:{self.port}" if ":" in shown else f"{shown}:{self.port}"

    @property
    def base_url(self) -> str:
        """``scheme://host:port`` of this server (https when TLS is on)."""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.default_host}"

    @property
    def listens_beyond_loopback(self) -> bool:
        """Whether other machines may reach it (bound to a non-loopback or any address)."""
        import ipaddress

        try:
            return not ipaddress.ip_address(self.bound_host).is_loopback
        except ValueError:
            return self.bound_host not in ("localhost",)

    @property
    def open_connections(self) -> int:
        """Connections being served now (each has a thread)."""
        return self._open

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread per connection, up to :attr:`max_connections`; past them a 503 at once
        (from the accepting thread, without reading anything)."""
        with self._open_lock:
            full = self._open >= self.max_connections
            if not full:
                self._open += 1
        if full:
            answer = Response(503, (("Content-Type", "text/plain"), ("Retry-After", "1")),
                              b"too many connections; retry shortly\n")
            with contextlib.suppress(OSError):
                request.settimeout(0.5)
                request.sendall(serialize_response(answer, keep_alive=False))
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._open -= 1

    def admit(self, request: Request, body_size: int | None) -> Response | None:
        """The answer that refuses ``request`` on its head alone, or None to read its
        body: the admin API without the admin token; what the app refuses."""
        if request.path == ADMIN_PREFIX or request.path.startswith(ADMIN_PREFIX + "/"):
            given = request.headers.get(ADMIN_HEADER.lower(), "")
            if not hmac.compare_digest(given.encode(), self.admin_token.encode()):
                body = {"detail": f"the sandbox's admin API needs its admin token in the "
                                  f"{ADMIN_HEADER} header (printed by `gcbatch sandbox "
                                  f"serve`; `gcbatch sandbox inspect --admin-token`)"}
                return Response(403, (("Content-Type", "application/json"),),
                                json.dumps(body).encode())
            return None
        admit = getattr(self.app, "admit", None)
        return None if admit is None else cast(Response | None, admit(request, body_size))

    def body_limit(self, request: Request) -> int:
        """The largest body this request may have (a storage part's is larger)."""
        return MAX_PART_BODY if request.path.startswith("/_storage/") else MAX_BODY

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        # Responses go out in one write, and without this the last segment of anything
        # the kernel splits would still wait for the peer's delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.error("unexpected error serving %s:\n%s", client_address, traceback.format_exc())

    def track(self, sock: socket.socket, alive: bool) -> None:
        with self._conns_lock:
            if alive:
                self._conns.add(sock)
            else:
                self._conns.discard(sock)

    def respond(self, request: Request) -> Response:
        """Faults first (never on ``/_sandbox/``), then the app.

        Raises :class:`_Abort` for faults that end the connection without an answer.
        """
        admin = self.faults.handle_admin(request)
        if admin is not None:
            return admin
        decision = self.faults.decide(request.method, request.path)
        if decision.delay_s > 0:
            self.sleep(decision.delay_s)
        rule = decision.rule
        if rule is not None:
            if rule.action == STATUS:
                return fault_response(rule)
            if rule.action == RESET:
                raise _Abort(rule.close)
            if rule.action == DROP_AFTER_COMMIT:
                self._call_app(request)
                raise _Abort(rule.close)
            if rule.action == LATE_COMMIT:
                schedule_late(decision.commit_after_s, lambda: self._call_app(request))
                answer = late_commit_answer(rule)
                if answer is None:
                    raise _Abort(rule.close)
                return answer
            if rule.action == GARBLE:
                return garble_response(rule, self._call_app(request))
        return self._call_app(request)

    def _call_app(self, request: Request) -> Response:
        try:
            return self.app.handle(request)
        except Exception:
            # Like Django without DEBUG: a plain 500, details only in the server's log.
            log.error(
                "app error on %s %s:\n%s", request.method, request.path, traceback.format_exc()
            )
            return Response(500, (("Content-Type", "text/html"),), b"<h1>Server Error (500)</h1>")

    def log_access(self, request: Request, status: int) -> None:
        stream = self.access_log
        if stream is None:
            return
        stamp = time.strftime("%H:%M:%S")
        try:
            stream.write(f"{stamp} {request.method} {request.path} {status}\n")
            stream.flush()
        except (OSError, ValueError):
            pass

    def stop(self) -> None:
        """Stop accepting, close every open connection, release the port."""
        self.stopping = True
        self.shutdown()
        self.server_close()
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
