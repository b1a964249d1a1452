"""Admission: keep exactly the limit in flight, never above; learn caps; stop on credits."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gcbatch.engine import admission as adm
from gcbatch.views.text import render_forecast


def test_fills_up_to_the_limit_and_never_above() -> None:
    state = adm.AdmissionState(max_active=3)
    for _ in range(3):
        assert adm.may_submit(state, 0.0)
        state = adm.reserve(state, 0.0)
    assert not adm.may_submit(state, 0.0)
    with pytest.raises(ValueError):
        adm.reserve(state, 0.0)
    state = adm.job_created(state, "a")
    state = adm.job_created(state, "b")
    assert state.in_use == 3 and not adm.may_submit(state, 0.0)


def test_a_slot_is_refilled_the_moment_a_job_ends() -> None:
    state = adm.AdmissionState(max_active=2)
    for pk in ("a", "b"):
        state = adm.job_created(adm.reserve(state, 0.0), pk)
    assert adm.free_slots(state, 0.0) == 0
    state = adm.jobs_ended(state, {"a"})
    assert adm.free_slots(state, 0.0) == 1
    # ending an unknown or already-ended job changes nothing
    assert adm.jobs_ended(state, {"a", "zzz"}) == state


def test_jobs_active_from_an_earlier_run_hold_slots() -> None:
    state = adm.track_active(adm.AdmissionState(max_active=4), {"old1", "old2"})
    assert adm.free_slots(state, 0.0) == 2


def test_too_many_active_learns_a_cap_then_probes_again() -> None:
    state = adm.AdmissionState(max_active=16, probe_after=10.0)
    for pk in ("a", "b", "c"):
        state = adm.job_created(adm.reserve(state, 0.0), pk)
    state = adm.reserve(state, 1.0)
    state = adm.refused_too_many_active(state, now=1.0)
    # invisible jobs hold the other slots: we may use only the 3 we hold
    assert adm.slot_limit(state, 1.0) == 3
    assert not adm.may_submit(state, 5.0)
    # one of ours ends: exactly one slot frees up under the cap
    state = adm.jobs_ended(state, {"a"})
    assert adm.free_slots(state, 5.0) == 1
    # after probe_after the cap is lifted (a refusal costs one round trip, nothing else)
    assert adm.slot_limit(state, 11.1) == 16
    # a POST that ends up within the cap proves nothing: the cap stays
    state = adm.job_created(adm.reserve(state, 11.1), "d")
    assert state.cap == 3
    # a successful POST above the cap drops it entirely
    state = adm.job_created(adm.reserve(state, 11.2), "e")
    assert state.cap is None


def test_auto_has_no_limit_until_the_server_refuses() -> None:
    state = adm.AdmissionState()  # auto: no --max-active
    assert state.max_active is None
    assert adm.slot_limit(state, 0.0) is None
    assert adm.free_slots(state, 0.0) == adm.UNLIMITED
    # a burst of 6 POSTs goes out at once (more than any fixed default would allow here)
    for _ in range(6):
        state = adm.reserve(state, 0.0)
    # the server takes 4 of them, in any order with its refusals of the other 2
    state = adm.job_created(state, "a")
    state = adm.refused_too_many_active(state, now=0.1)
    # the first refusal counts the 4 POSTs still in flight: they may have been created first
    assert state.cap == 5
    state = adm.job_created(state, "b")
    state = adm.job_created(state, "c")
    state = adm.refused_too_many_active(state, now=0.2)  # each refusal lowers it
    assert state.cap == 4
    state = adm.job_created(state, "d")
    # learned: exactly the 4 the server accepted; successes within the cap keep it
    assert state.cap == 4 and state.in_use == 4
    assert adm.slot_limit(state, 0.3) == 4
    assert not adm.may_submit(state, 0.3)
    # one ends: exactly one slot frees, and its refill does not lift the cap
    state = adm.jobs_ended(state, {"a"})
    state = adm.job_created(adm.reserve(state, 1.0), "e")
    assert state.cap == 4
    assert not adm.may_submit(state, 1.0)
    # after probe_after: no limit again until the next refusal re-teaches it
    assert adm.slot_limit(state, 0.2 + state.probe_after) is None


def test_refusals_only_lower_a_fresh_cap() -> None:
    state = adm.AdmissionState()
    for pk in ("a", "b"):
        state = adm.job_created(adm.reserve(state, 0.0), pk)
    state = adm.refused_too_many_active(adm.reserve(state, 0.0), now=0.0)
    assert state.cap == 2
    # jobs we had not seen end: a refusal while fresh never raises the cap ...
    state = adm.jobs_ended(state, {"a"})
    state = adm.refused_too_many_active(adm.reserve(state, 1.0), now=1.0)
    assert state.cap == 1
    # ... a refusal after probe_after sets it afresh
    state = adm.job_created(adm.reserve(state, 20.0), "c")
    state = adm.refused_too_many_active(adm.reserve(state, 20.0), now=20.0)
    assert state.cap == 2


def test_refusal_with_nothing_of_ours_active_waits_for_the_probe() -> None:
    state = adm.refused_too_many_active(adm.reserve(adm.AdmissionState(), 0.0), now=0.0)
    assert state.cap == 0
    assert not adm.may_submit(state, 1.0)
    assert adm.may_submit(state, state.probe_after + 0.01)


def test_credits_stop_all_submitting_and_uploading() -> None:
    state = adm.credits_exhausted(adm.reserve(adm.AdmissionState(), 0.0))
    assert state.stopped
    assert not adm.may_submit(state, 0.0)
    assert not adm.may_upload(state, 1e9)


def test_in_doubt_posts_hold_a_slot_until_resolved() -> None:
    state = adm.AdmissionState(max_active=1)
    state = adm.post_in_doubt(adm.reserve(state, 0.0), "case-1")
    assert not adm.may_submit(state, 0.0)
    adopted = adm.resolve_in_doubt(state, "case-1", "job-1")
    assert adopted.active == {"job-1"} and not adopted.doubtful
    none = adm.resolve_in_doubt(state, "case-1", None)
    assert adm.may_submit(none, 0.0)
    ended = adm.resolve_in_doubt(state, "case-1", "job-1", job_active=False)
    assert adm.may_submit(ended, 0.0)


def test_rejected_post_frees_its_slot() -> None:
    state = adm.post_rejected(adm.reserve(adm.AdmissionState(max_active=1), 0.0))
    assert adm.may_submit(state, 0.0)
    with pytest.raises(ValueError):
        adm.post_rejected(state)


def test_too_many_uploads_backs_off_and_resets() -> None:
    state = adm.uploads_refused(adm.AdmissionState(), now=100.0)
    assert not adm.may_upload(state, 100.0 + adm.UPLOAD_PAUSE_FIRST - 0.01)
    assert adm.may_upload(state, 100.0 + adm.UPLOAD_PAUSE_FIRST)
    again = adm.uploads_refused(state, now=200.0)
    assert again.upload_pause == 2 * adm.UPLOAD_PAUSE_FIRST
    capped = again
    for _ in range(20):
        capped = adm.uploads_refused(capped, now=0.0)
    assert capped.upload_pause == adm.UPLOAD_PAUSE_MAX
    assert adm.uploads_succeeded(capped).upload_pause == 0.0


def test_max_active_must_be_positive() -> None:
    with pytest.raises(ValueError):
        adm.AdmissionState(max_active=0)


def test_forecast_is_the_ideal_schedule() -> None:
    f = adm.forecast(160, max_active=16, average_duration=2.0)
    assert f.waves == 10 and f.makespan == 20.0
    assert "10 wave(s)" in render_forecast(f) and "credits" in render_forecast(f)
    assert render_forecast(adm.forecast(0)) == "quota: nothing to submit"
    assert adm.forecast(5, average_duration=None).makespan is None


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 20),
    ops=st.lists(st.sampled_from(["reserve", "create", "reject", "refuse", "doubt", "end"]),
                 max_size=80),
)
def test_never_above_the_limit(limit: int, ops: list[str]) -> None:
    """Whatever happens, what we hold never exceeds max_active (or a fresh learned cap)."""
    state = adm.AdmissionState(max_active=limit)
    counter = 0
    now = 0.0
    for op in ops:
        now += 0.5
        if op == "reserve" and adm.may_submit(state, now):
            state = adm.reserve(state, now)
        elif op in ("create", "reject", "refuse", "doubt") and state.reserved:
            counter += 1
            if op == "create":
                state = adm.job_created(state, f"j{counter}")
            elif op == "reject":
                state = adm.post_rejected(state)
            elif op == "refuse":
                state = adm.refused_too_many_active(state, now)
            else:
                state = adm.post_in_doubt(state, f"c{counter}")
        elif op == "end" and state.active:
            state = adm.jobs_ended(state, {sorted(state.active)[0]})
        assert state.in_use <= limit
        assert adm.free_slots(state, now) <= limit - state.in_use
    assert math.isfinite(now)


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.sampled_from(["reserve", "create", "reject", "refuse", "doubt", "end"]),
                    max_size=80))
def test_auto_never_above_a_fresh_learned_cap(ops: list[str]) -> None:
    """Auto: while a learned cap is fresh, what we hold never exceeds it."""
    state = adm.AdmissionState(probe_after=2.0)
    counter = 0
    now = 0.0
    for op in ops:
        now += 0.5
        if op == "reserve" and adm.may_submit(state, now):
            state = adm.reserve(state, now)
        elif op in ("create", "reject", "refuse", "doubt") and state.reserved:
            counter += 1
            if op == "create":
                state = adm.job_created(state, f"j{counter}")
            elif op == "reject":
                state = adm.post_rejected(state)
            elif op == "refuse":
                state = adm.refused_too_many_active(state, now)
                assert state.cap is not None and state.cap <= state.in_use
            else:
                state = adm.post_in_doubt(state, f"c{counter}")
        elif op == "end" and state.active:
            state = adm.jobs_ended(state, {sorted(state.active)[0]})
        limit = adm.slot_limit(state, now)
        if limit is not None:
            assert state.in_use <= limit
            assert adm.free_slots(state, now) == limit - state.in_use
