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

TLS: :func:`make_certificates` makes a throw-away local CA and a server certificate for
``localhost``/``127.0.0.1``/``::1`` (with the ``openssl`` tool, else the ``cryptography``
package). Clients verify against the CA file (``cafile``), e.g. ``SSL_CERT_FILE=<cafile>``
for gcapi or ``verify=<cafile>`` for httpx. The TLS handshake runs in the connection's
own thread, so a slow or broken client never blocks the accept loop.
"""

from __future__ import annotations

import contextlib
import email.utils
import http
import logging
import os
import shutil
import socket
import socketserver
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, cast
from urllib.parse import parse_qs, urlsplit

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
    "CertificateError",
    "Certificates",
    "SandboxHTTPServer",
    "SupportsHandle",
    "make_certificates",
]

log = logging.getLogger("gcbatch.sandbox.server")

MAX_LINE = 65536  # request line or one header line
MAX_HEADERS = 200
MAX_BODY = 1 << 30  # 1 GiB: far above gcapi's 32 MiB parts; beyond that is a client bug
IDLE_TIMEOUT_S = 300.0  # an idle keep-alive connection is closed after this long
HANDSHAKE_TIMEOUT_S = 10.0
_NO_BODY_STATUSES = frozenset({204, 304})
# Headers the server owns; the app's own copies of these are dropped.
_SERVER_HEADERS = frozenset({"content-length", "connection", "transfer-encoding", "date"})
_REASONS = {s.value: s.phrase for s in http.HTTPStatus}


class SupportsHandle(Protocol):
    """What the server needs from an app: ``SandboxApp`` has it."""

    def handle(self, request: Request) -> Response: ...


class CertificateError(RuntimeError):
    """No way to make a TLS certificate here (no ``openssl`` and no ``cryptography``)."""


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
class _Parsed:
    method: str
    target: str
    version: str
    headers: dict[str, str]
    body: bytes


def _read_line(rfile: IO[bytes]) -> bytes:
    line = rfile.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise _BadRequest(431, "header line too long")
    return line


def _read_request(rfile: IO[bytes], send_continue: Callable[[], None]) -> _Parsed | None:
    """One request from the stream; None on a clean end of stream between requests."""
    line = _read_line(rfile)
    for _ in range(8):  # RFC 9112: ignore a few empty lines before a request
        if line not in (b"\r\n", b"\n"):
            break
        line = _read_line(rfile)
    if not line:
        return None
    parts = line.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(400, "malformed request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        raw = _read_line(rfile)
        if raw in (b"\r\n", b"\n", b""):
            break
        name, sep, value = raw.decode("latin-1").partition(":")
        name = name.strip().lower()
        if not sep or not name or " " in name:
            raise _BadRequest(400, "malformed header line")
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    else:
        raise _BadRequest(431, "too many headers")

    body = b""
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    length_raw = headers.get("content-length")
    expects_continue = headers.get("expect", "").lower() == "100-continue"
    if expects_continue and version == "HTTP/1.1" and (chunked or length_raw not in (None, "0")):
        send_continue()
    if chunked:
        body = _read_chunked(rfile)
    elif length_raw is not None:
        try:
            length = int(length_raw)
        except ValueError:
            raise _BadRequest(400, "bad Content-Length") from None
        if length < 0:
            raise _BadRequest(400, "bad Content-Length")
        if length > MAX_BODY:
            raise _BadRequest(413, "request body too large")
        body = rfile.read(length) if length else b""
        if len(body) != length:
            raise _BadRequest(400, "request body ended early")
    return _Parsed(method.upper(), target, version, headers, body)


def _read_chunked(rfile: IO[bytes]) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        size_line = _read_line(rfile).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise _BadRequest(400, "bad chunk size") from None
        if size == 0:
            while _read_line(rfile) not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        total += size
        if total > MAX_BODY:
            raise _BadRequest(413, "request body too large")
        data = rfile.read(size)
        if len(data) != size:
            raise _BadRequest(400, "chunked body ended early")
        chunks.append(data)
        rfile.read(2)  # the CRLF after each chunk


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

        def send_continue() -> None:
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

        while not srv.stopping:
            try:
                parsed = _read_request(rfile, send_continue)
            except _BadRequest as bad:
                body = (str(bad) + "\n").encode()
                answer = Response(bad.status, (("Content-Type", "text/plain"),), body)
                sock.sendall(serialize_response(answer, keep_alive=False))
                return
            except TimeoutError:
                return
            if parsed is None:
                return
            conn = parsed.headers.get("connection", "").lower()
            if parsed.version == "HTTP/1.0":
                keep_alive = "keep-alive" in conn
            else:
                keep_alive = "close" not in conn
            keep_alive = keep_alive and not srv.stopping
            path, query = _split_target(parsed.target)
            host = parsed.headers.get("host") or srv.default_host
            request = Request(
                method=parsed.method,
                path=path,
                query=query,
                headers=parsed.headers,
                body=parsed.body,
                base_url=f"{scheme}://{host}",
            )
            response = srv.respond(request)
            data = serialize_response(
                response, keep_alive=keep_alive, head_only=parsed.method == "HEAD"
            )
            sock.sendall(data)
            if srv.access_log is not None:
                srv.log_access(request, response.status)
            if not keep_alive:
                return


class SandboxHTTPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """A threaded HTTP/1.1 server around an app with ``handle(Request) -> Response``.

    One thread per connection (connections are kept alive). Call :meth:`serve_forever`
    in a thread and :meth:`stop` to end it; :meth:`stop` also closes idle keep-alive
    connections so their threads end and clients see the close.
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
    ) -> None:
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


# --- TLS -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    """A local CA (``cafile``, what clients trust) and the server's certificate and key."""

    cafile: Path
    certfile: Path
    keyfile: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.certfile), str(self.keyfile))
        return context


_CA_CONF = """\
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
CN = gcbatch sandbox local CA
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""

_LEAF_CONF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = localhost
"""

_LEAF_EXT = """\
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1,IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def make_certificates(directory: Path, *, days: int = 30) -> Certificates:
    """A fresh local CA and a server certificate for localhost, written to ``directory``.

    Two certificates rather than one self-signed leaf because strict verifiers (Python
    3.13's default ``VERIFY_X509_STRICT``) refuse a CA certificate used as a server's.
    """
    directory.mkdir(parents=True, exist_ok=True)
    certs = Certificates(
        cafile=directory / "sandbox-ca.pem",
        certfile=directory / "sandbox-server.pem",
        keyfile=directory / "sandbox-server.key",
    )
    openssl = shutil.which("openssl")
    if openssl is not None:
        _make_with_openssl(openssl, directory, certs, days)
        return certs
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise CertificateError(
            "--tls needs the 'openssl' command or the Python 'cryptography' package; "
            "install one of them (e.g. apt-get install openssl, or pip install cryptography)"
        ) from None
    _make_with_cryptography(certs, days)
    return certs


def _make_with_openssl(openssl: str, directory: Path, certs: Certificates, days: int) -> None:
    with tempfile.TemporaryDirectory(dir=directory) as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "ca.cnf").write_text(_CA_CONF)
        (tmp / "leaf.cnf").write_text(_LEAF_CONF)
        (tmp / "leaf.ext").write_text(_LEAF_EXT)
        ca_key = tmp / "ca.key"
        csr = tmp / "leaf.csr"
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        env = {**os.environ, "OPENSSL_CONF": str(tmp / "ca.cnf")}
        commands = [
            [
                openssl,
                "req",
                "-x509",
                *ec,
                "-keyout",
                str(ca_key),
                "-out",
                str(certs.cafile),
                "-days",
                str(days),
                "-config",
                str(tmp / "ca.cnf"),
            ],
            [
                openssl,
                "req",
                "-new",
                *ec,
                "-keyout",
                str(certs.keyfile),
                "-out",
                str(csr),
                "-config",
                str(tmp / "leaf.cnf"),
            ],
            [
                openssl,
                "x509",
                "-req",
                "-in",
                str(csr),
                "-CA",
                str(certs.cafile),
                "-CAkey",
                str(ca_key),
                "-set_serial",
                str(int.from_bytes(os.urandom(8), "big")),
                "-days",
                str(days),
                "-out",
                str(certs.certfile),
                "-extfile",
                str(tmp / "leaf.ext"),
            ],
        ]
        for command in commands:
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                raise CertificateError(
                    f"openssl failed ({' '.join(command[1:3])}): {done.stderr.strip()}"
                )
    os.chmod(certs.keyfile, 0o600)


def _make_with_cryptography(certs: Certificates, days: int) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    not_before = now - datetime.timedelta(minutes=5)
    not_after = now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gcbatch sandbox local CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    certs.cafile.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    certs.certfile.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    certs.keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(certs.keyfile, 0o600)
