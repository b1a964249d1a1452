"""retry.py: the pure retry decision (no sleeping, no sockets)."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gcbatch.api.retry import GiveUp, Retry, RetryPolicy, parse_retry_after

NOW = datetime(2026, 11, 27, 15, 0, 0, tzinfo=timezone.utc)


def policy(**kw: object) -> RetryPolicy:
    return RetryPolicy(rng=random.Random(1), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [429, 502, 503, 504])
@pytest.mark.parametrize("method", ["GET", "PUT", "HEAD", "DELETE"])
def test_idempotent_methods_retry_on_transient_statuses(method: str, status: int) -> None:
    assert isinstance(policy().decide(1, method, status), Retry)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 500, 501])
def test_non_transient_statuses_give_up(status: int) -> None:
    assert isinstance(policy().decide(1, "GET", status), GiveUp)


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_post_and_patch_not_retried_on_answers_by_default(status: int) -> None:
    assert isinstance(policy().decide(1, "POST", status), GiveUp)
    assert isinstance(policy().decide(1, "PATCH", status), GiveUp)
    # unless the caller vouches for idempotency
    assert isinstance(policy().decide(1, "PATCH", status, idempotent=True), Retry)


def request() -> httpx.Request:
    return httpx.Request("POST", "https://gc.test/api/v1/algorithms/jobs/")


@pytest.mark.parametrize(
    "exc", [httpx.ConnectError("refused"), httpx.ConnectTimeout("t"), httpx.PoolTimeout("p")]
)
def test_unsent_failures_retry_for_any_method_but_never_when_forbidden(exc: Exception) -> None:
    assert isinstance(policy().decide(1, "POST", exc), Retry)
    assert isinstance(policy().decide(1, "GET", exc), Retry)
    # the job POST passes idempotent=False: never retried, not even unsent
    decision = policy().decide(1, "POST", exc, idempotent=False)
    assert isinstance(decision, GiveUp) and "never retried" in decision.reason


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("t"),
        httpx.ReadError("reset"),
        httpx.RemoteProtocolError("closed"),
        httpx.WriteError("w"),
    ],
)
def test_maybe_sent_failures_retry_only_idempotent(exc: Exception) -> None:
    assert isinstance(policy().decide(1, "GET", exc), Retry)
    assert isinstance(policy().decide(1, "POST", exc), GiveUp)


def test_other_exceptions_give_up() -> None:
    assert isinstance(policy().decide(1, "GET", ValueError("x")), GiveUp)


def test_attempts_bound() -> None:
    p = policy(attempts=3)
    assert isinstance(p.decide(1, "GET", 503), Retry)
    assert isinstance(p.decide(2, "GET", 503), Retry)
    gave_up = p.decide(3, "GET", 503)
    assert isinstance(gave_up, GiveUp) and "3 attempts" in gave_up.reason


def test_full_jitter_backoff_is_bounded_and_grows() -> None:
    p = policy(wait_initial=0.5, wait_max=4.0, wait_exp_base=2.0, timeout=None, attempts=100)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0), (30, 4.0)]:
        delays = []
        for _ in range(200):
            d = p.decide(attempt, "GET", 503)
            assert isinstance(d, Retry)
            delays.append(d.delay)
        assert all(0.0 <= x <= ceiling for x in delays)
        # full jitter: spread over the whole range, not clustered at the ceiling
        assert min(delays) < ceiling * 0.2 and max(delays) > ceiling * 0.8


def test_retry_after_seconds_is_honoured_exactly() -> None:
    d = policy().decide(1, "GET", 429, {"Retry-After": "7"})
    assert d == Retry(delay=7.0, reason=d.reason)  # type: ignore[union-attr]
    # lower-case header names in a plain dict work too
    d2 = policy().decide(1, "GET", 503, {"retry-after": "2.5"})
    assert isinstance(d2, Retry) and d2.delay == 2.5


def test_retry_after_http_date() -> None:
    headers = {"Retry-After": "Fri, 27 Nov 2026 15:00:30 GMT"}
    d = policy().decide(1, "GET", 503, headers, now=NOW)
    assert isinstance(d, Retry) and d.delay == pytest.approx(30.0)
    past = {"Retry-After": "Fri, 27 Nov 2026 14:00:00 GMT"}
    d2 = policy().decide(1, "GET", 503, past, now=NOW)
    assert isinstance(d2, Retry) and d2.delay == 0.0


def test_retry_after_too_long_or_past_deadline_gives_up() -> None:
    assert isinstance(
        policy(max_retry_after=60).decide(1, "GET", 429, {"Retry-After": "61"}), GiveUp
    )
    d = policy(timeout=10).decide(1, "GET", 429, {"Retry-After": "5"}, elapsed=6.0)
    assert isinstance(d, GiveUp) and "deadline" in d.reason
    assert isinstance(
        policy(timeout=10).decide(1, "GET", 429, {"Retry-After": "5"}, elapsed=4.0), Retry
    )


def test_deadline_applies_to_backoff() -> None:
    p = policy(timeout=1.0, wait_initial=10.0, wait_max=10.0)
    # any jittered delay in [0,10) added to elapsed 0.999 almost surely exceeds 1.0
    results = [p.decide(1, "GET", 503, elapsed=0.999) for _ in range(50)]
    assert any(isinstance(r, GiveUp) for r in results)
    assert isinstance(p.decide(1, "GET", 503, elapsed=5.0), GiveUp)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("120", 120.0),
        (" 3 ", 3.0),
        ("-1", None),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("Fri, 27 Nov 2026 15:01:00 GMT", 60.0),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


@given(
    attempt=st.integers(min_value=1, max_value=50),
    status=st.integers(min_value=100, max_value=599),
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]),
    elapsed=st.floats(min_value=0, max_value=1000),
)
def test_decide_is_total_and_respects_bounds(
    attempt: int, status: int, method: str, elapsed: float
) -> None:
    p = policy()
    d = p.decide(attempt, method, status, elapsed=elapsed)
    assert isinstance(d, (Retry, GiveUp))
    if isinstance(d, Retry):
        assert attempt < p.attempts
        assert status in p.statuses and method in p.methods
        assert 0 <= d.delay <= p.wait_max
        assert p.timeout is not None and elapsed + d.delay <= p.timeout
    # the job POST is never retried, whatever happened
    assert isinstance(p.decide(attempt, "POST", status, idempotent=False), GiveUp)
