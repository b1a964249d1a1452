"""Admission: keep exactly the limit in flight, never above; learn caps; stop on credits."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gcbatch import admission as adm


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
    # a successful POST above the cap drops it entirely
    state = adm.job_created(adm.reserve(state, 11.1), "d")
    assert state.cap is None


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
    assert "10 wave(s)" in f.render() and "credits" in f.render()
    assert adm.forecast(0).render() == "quota: nothing to submit"
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
