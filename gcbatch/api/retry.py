"""Retry policy as data, in the style of the ``stamina`` library.

A :class:`RetryPolicy` says *what* is retried (methods, statuses, exception types), *how
often* (``attempts``), *how long to wait* (exponential backoff with full jitter, capped,
``Retry-After`` honoured) and *for how long in total* (``timeout``). The decision is a pure
function, :meth:`RetryPolicy.decide`, so it is unit-tested without sleeping or sockets; the
client owns the loop and the sleeping.

Safety rules encoded here:

- Only idempotent methods are retried on an *answer* (429/502/503/504) or an ambiguous
  transport failure (read timeout, reset after sending). POST is not in the default set.
- A failure that proves the request was never sent (connect refused/timeout, no pool slot)
  is retried for any method unless the caller says ``idempotent=False``. The client passes
  ``idempotent=False`` for the job POST, which is therefore **never** retried: a job POST
  with no definite answer makes the case *in doubt* (see ``client.create_job``).
- 500 is not retried (a deterministic server bug, e.g. completing an upload twice).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import httpx

__all__ = [
    "IDEMPOTENT_METHODS",
    "RETRYABLE_STATUSES",
    "UNSENT_EXCEPTIONS",
    "GiveUp",
    "Retry",
    "RetryPolicy",
    "parse_retry_after",
]

IDEMPOTENT_METHODS: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: 429 throttled; 502/503/504 from the infrastructure in front of the app. Not 500.
RETRYABLE_STATUSES: frozenset[int] = frozenset({429, 502, 503, 504})
#: The request certainly never reached the server: safe to retry for any method.
UNSENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
#: The request may have reached the server (read timeout, reset, protocol error).
SENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)


@dataclass(frozen=True)
class Retry:
    """Try again after ``delay`` seconds."""

    delay: float
    reason: str


@dataclass(frozen=True)
class GiveUp:
    """Do not try again; ``reason`` says why (for messages and logs)."""

    reason: str


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP-date; None if absent/bad.

    A date in the past gives 0. Negative or non-finite numbers are ignored.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None  # pragma: no cover - older Pythons returned None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = now if now is not None else datetime.now(timezone.utc)
    return max(0.0, (when - current).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """What to retry and how; the defaults suit Grand Challenge behind its load balancer.

    ``attempts`` counts every try, the first included. Backoff before retry *n* (1-based)
    is ``uniform(0, min(wait_max, wait_initial * wait_exp_base ** (n - 1)))`` ("full
    jitter": many threads retrying at once spread out instead of stampeding). A
    ``Retry-After`` header replaces the backoff (never shortened by jitter; capped by
    ``max_retry_after``). ``timeout`` bounds the total time spent, waits included: a retry
    whose wait would end past it is not attempted.
    """

    attempts: int = 8
    wait_initial: float = 0.25
    wait_max: float = 8.0
    wait_exp_base: float = 2.0
    timeout: float | None = 90.0
    max_retry_after: float = 120.0
    methods: frozenset[str] = IDEMPOTENT_METHODS
    statuses: frozenset[int] = RETRYABLE_STATUSES
    unsent_exceptions: tuple[type[BaseException], ...] = UNSENT_EXCEPTIONS
    sent_exceptions: tuple[type[BaseException], ...] = SENT_EXCEPTIONS
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def backoff(self, attempt: int) -> float:
        """The jittered wait before retry number ``attempt`` (1 = the first retry)."""
        ceiling = min(self.wait_max, self.wait_initial * self.wait_exp_base ** max(0, attempt - 1))
        return self.rng.uniform(0.0, ceiling)

    def decide(
        self,
        attempt: int,
        method: str,
        outcome: int | BaseException,
        headers: Mapping[str, str] | None = None,
        *,
        elapsed: float = 0.0,
        idempotent: bool | None = None,
        now: datetime | None = None,
    ) -> Retry | GiveUp:
        """Whether to retry after try number ``attempt`` (1-based) ended with ``outcome``.

        ``outcome`` is the HTTP status of the answer or the exception raised. ``idempotent``
        overrides the method rule: True lets a non-idempotent method be retried (e.g. an
        upload PATCH made safe by the caller), False forbids every retry, even of a request
        that was never sent. ``elapsed`` is the time since the first try started.
        """
        verb = method.upper()
        may_repeat = verb in self.methods if idempotent is None else idempotent

        if isinstance(outcome, BaseException):
            what = type(outcome).__name__
            if idempotent is False:
                return GiveUp(f"{verb} is never retried ({what})")
            if isinstance(outcome, self.unsent_exceptions):
                pass  # never reached the server: safe whatever the method
            elif isinstance(outcome, self.sent_exceptions):
                if not may_repeat:
                    return GiveUp(f"{verb} may have reached the server ({what}); not retried")
            else:
                return GiveUp(f"{what} is not retryable")
            retry_after: float | None = None
        else:
            what = f"HTTP {outcome}"
            if outcome not in self.statuses:
                return GiveUp(f"{what} is not retryable")
            if not may_repeat:
                return GiveUp(f"{verb} is not retried ({what})")
            retry_after = parse_retry_after(_header(headers, "retry-after"), now=now)

        if attempt >= self.attempts:
            return GiveUp(f"{what}; gave up after {attempt} attempts")

        if retry_after is not None:
            if retry_after > self.max_retry_after:
                return GiveUp(
                    f"{what}; server asked to wait {retry_after:.0f}s "
                    f"(more than {self.max_retry_after:.0f}s)"
                )
            delay = retry_after
        else:
            delay = self.backoff(attempt)

        if self.timeout is not None and elapsed + delay > self.timeout:
            return GiveUp(f"{what}; retrying would exceed the {self.timeout:.0f}s deadline")
        return Retry(delay=delay, reason=f"{what}; retry {attempt} in {delay:.2f}s")


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if headers is None:
        return None
    value = headers.get(name)
    if value is not None:
        return value
    # plain dicts are case-sensitive; httpx.Headers is not
    lowered = name.lower()
    for key, val in headers.items():
        if key.lower() == lowered:
            return val
    return None
