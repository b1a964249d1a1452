"""How much a server can make gcbatch read, and for how long: bounds on every answer.

A server is input like any other: a misbehaving or hostile one must not make gcbatch
buffer gigabytes or wait forever. Two bounds, applied by :mod:`gcbatch.api.http` to every
request it sends:

**Size, per kind of answer** (:class:`Limits`): an API answer read into memory (a page
of 1,000 jobs is about 10 MB) may be at most ``json_max``; an error answer is read up to
``error_max`` (only its first line is shown) and the rest ignored; a downloaded output
file, streamed to disk, at most ``download_max``. Sizes count the decoded bytes, so a
compressed answer cannot inflate past them either.

**Time, per request** (:class:`Deadline`): httpx's timeouts bound each socket operation,
so a server sending one byte every 20 s never trips a 60 s read timeout. A deadline
bounds the whole exchange instead, from the first byte sent to the last byte received,
headers included: an API request gets ``deadline`` seconds; a transfer (an upload part,
a download) gets ``transfer_grace`` seconds plus one second per ``transfer_min_rate``
bytes moved, so a large file may take as long as it needs at any sane speed while a
trickle still ends. It is enforced where the bytes are read and written: each socket
read or write of a request made under :func:`within` waits at most for what is left of
its deadline (:class:`DeadlineTransport`), and one that runs out fails as
``httpx.ReadTimeout``/``WriteTimeout``, which the retry policy treats as any timeout.
In-process transports (the sandbox's, ``httpx.MockTransport``) have no sockets; only the
size bounds apply to them.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

__all__ = [
    "Deadline",
    "DeadlineTransport",
    "Limits",
    "ResponseTooLarge",
    "bounded_stream",
    "buffered",
    "read_capped",
    "within",
]

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """The bounds of one client (see the module docstring); tests pass small ones."""

    #: an API answer parsed in memory (JSON object, list page)
    json_max: int = 64 * MIB
    #: the part of an error answer that is read (the rest is dropped, not an error)
    error_max: int = 1 * MIB
    #: one downloaded file, streamed to disk
    download_max: int = 64 * 1024 * MIB
    #: seconds for a whole API request (twice the default per-read timeout)
    deadline: float = 120.0
    #: a transfer's base time, in seconds ...
    transfer_grace: float = 120.0
    #: ... plus one second per this many bytes moved
    transfer_min_rate: int = 64 * 1024

    def api_deadline(self, clock: Callable[[], float] = time.monotonic) -> Deadline:
        return Deadline(self.deadline, clock=clock)

    def transfer_deadline(self, clock: Callable[[], float] = time.monotonic) -> Deadline:
        return Deadline(self.transfer_grace, min_rate=self.transfer_min_rate, clock=clock)


class ResponseTooLarge(Exception):
    """An answer had more than ``limit`` bytes; reading stopped there."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {_size(limit)}")
        self.limit = limit


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1024 * MIB), ("MiB", MIB), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} bytes"


class Deadline:
    """When one request must be over: ``seconds`` from now, plus one second per
    ``min_rate`` bytes moved (0: a fixed deadline). Thread-confined: one per request."""

    def __init__(self, seconds: float, *, min_rate: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.min_rate = min_rate
        self._clock = clock
        self._end = clock() + seconds
        self.moved = 0

    def remaining(self) -> float:
        return self._end - self._clock()

    def count(self, n: int) -> None:
        """``n`` bytes went through: a transfer earns time for them."""
        self.moved += n
        if self.min_rate and n:
            self._end += n / self.min_rate

    def describe(self) -> str:
        if self.min_rate:
            return (f"the transfer was slower than {_size(self.min_rate)}/s after its first "
                    f"{self.seconds:g} s")
        return f"no complete answer within {self.seconds:g} s"


#: the deadline of the request this thread is sending or reading, if any
_ACTIVE: ContextVar[Deadline | None] = ContextVar("gcbatch_deadline", default=None)


@contextlib.contextmanager
def within(deadline: Deadline | None) -> Iterator[None]:
    """Socket reads and writes made by this thread inside the block obey ``deadline``."""
    token = _ACTIVE.set(deadline)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def _bounded_timeout(timeout: float | None, deadline: Deadline, error: type[Exception]
                     ) -> float:
    left = deadline.remaining()
    if left <= 0:
        raise error(deadline.describe())
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose reads and writes wait no longer than the active deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        deadline = _ACTIVE.get()
        if deadline is None:
            return self._inner.read(max_bytes, timeout)
        try:
            data = self._inner.read(max_bytes, _bounded_timeout(timeout, deadline,
                                                                httpcore.ReadTimeout))
        except httpcore.ReadTimeout:
            if deadline.remaining() <= 0:
                raise httpcore.ReadTimeout(deadline.describe()) from None
            raise
        deadline.count(len(data))
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        deadline = _ACTIVE.get()
        if deadline is None:
            self._inner.write(buffer, timeout)
            return
        # in slices, so a peer that reads slowly meets the deadline between them
        view = memoryview(buffer)
        for start in range(0, len(view), 1024 * 1024):
            piece = bytes(view[start:start + 1024 * 1024])
            try:
                self._inner.write(piece, _bounded_timeout(timeout, deadline,
                                                          httpcore.WriteTimeout))
            except httpcore.WriteTimeout:
                if deadline.remaining() <= 0:
                    raise httpcore.WriteTimeout(deadline.describe()) from None
                raise
            deadline.count(len(piece))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's own socket backend, its connections wrapped in :class:`_DeadlineStream`."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address,
            socket_options=socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None
                            ) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class DeadlineTransport(httpx.HTTPTransport):
    """httpx's transport over sockets that obey :func:`within`'s deadlines.

    httpx has no parameter for a network backend, so the connection pool is made here
    with httpcore's public arguments and put where ``HTTPTransport`` keeps it
    (``tests/api/test_limits.py`` proves the deadline holds against a real socket, so an
    httpx that moved it would fail there, not silently).
    """

    def __init__(self, *, ssl_context: ssl.SSLContext, limits: httpx.Limits,
                 socket_options: Iterable[Any]) -> None:
        options = list(socket_options)
        super().__init__(verify=ssl_context, limits=limits, socket_options=options,
                         trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            socket_options=options,
            network_backend=_DeadlineBackend(),
        )


class _BoundedStream(httpx.SyncByteStream):
    """A response body whose reads happen under its request's deadline."""

    def __init__(self, inner: Any, deadline: Deadline) -> None:
        self._inner = inner
        self._deadline = deadline

    def __iter__(self) -> Iterator[bytes]:
        chunks = iter(self._inner)
        while True:
            with within(self._deadline):
                chunk = next(chunks, None)
            if chunk is None:
                return
            yield chunk

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


def bounded_stream(response: httpx.Response, deadline: Deadline) -> httpx.Response:
    """``response`` (not read yet) with its body read under ``deadline`` whoever reads it."""
    response.stream = _BoundedStream(response.stream, deadline)
    return response


def read_capped(response: httpx.Response, limit: int, *, truncate: bool = False) -> bytes:
    """The decoded body, at most ``limit`` bytes: :class:`ResponseTooLarge` past it (or,
    with ``truncate``, the first ``limit`` bytes). The response is closed either way."""
    chunks: list[bytes] = []
    total = 0
    try:
        for chunk in response.iter_bytes():
            total += len(chunk)
            if total > limit:
                if truncate:
                    chunks.append(chunk[: len(chunk) - (total - limit)])
                    break
                raise ResponseTooLarge(limit)
            chunks.append(chunk)
    finally:
        response.close()
    return b"".join(chunks)


def buffered(response: httpx.Response, content: bytes) -> httpx.Response:
    """``response``, whose body :func:`read_capped` read, holding ``content`` as its body
    (what ``response.read()`` would have stored: ``.content``, ``.text``, ``.json()``).

    httpx keeps a read body in ``_content``; setting it is what ``read()`` does, without
    reading again. (A copy made with ``httpx.Response(...)`` cost a sixth of a job
    POST's client time; every test that reads an answer fails if httpx moves it.)
    """
    response._content = content
    return response
