"""Admission: prove the limit one probe at a time, never above it after a refusal, one
request per probe; credits and readiness stop everything; one shared upload pause."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gcbatch.engine import admission as adm
from gcbatch.views.text import render_forecast


def _fill(state: adm.AdmissionState, n: int, now: float = 0.0,
          prefix: str = "j") -> adm.AdmissionState:
    """n POSTs, one after the other, each admitted."""
    for i in range(n):
        assert adm.may_submit(state, now), (i, state)
        kind = adm.post_kind(state)
        state = adm.job_created(adm.reserve(state, now), f"{prefix}{i}", now, kind=kind)
    return state


def _refuse(state: adm.AdmissionState, now: float) -> adm.AdmissionState:
    """One POST (a probe, when no slot is free), refused for the limit."""
    kind = adm.post_kind(state)
    return adm.refused_too_many_active(adm.reserve(state, now), now, kind=kind)


def test_max_active_is_trusted_and_filled_in_parallel() -> None:
    state = adm.AdmissionState.start(max_active=3)
    for _ in range(3):
        assert adm.may_submit(state, 0.0)
        state = adm.reserve(state, 0.0)
    assert not state.probing  # three in flight together: the user said 3 is fine
    assert not adm.may_submit(state, 0.0)
    with pytest.raises(ValueError):
        adm.reserve(state, 0.0)
    for pk in ("a", "b", "c"):
        state = adm.job_created(state, pk)
    assert state.in_use == 3 and not adm.may_submit(state, 1e9)  # never above it


def test_auto_proves_its_level_one_probe_at_a_time_up_to_the_default() -> None:
    state = adm.AdmissionState.start()
    assert adm.slot_limit(state) is None and adm.free_slots(state) == 0
    for i in range(adm.DEFAULT_MAX_ACTIVE):
        assert adm.phase(state) == "ramp"
        assert adm.may_submit(state, 0.0) and adm.post_kind(state) == "alone"
        state = adm.reserve(state, 0.0)
        # alone: nothing else goes while the probe is out, so its answer is exact
        assert not adm.may_submit(state, 0.0)
        state = adm.job_created(state, f"j{i}", 0.0, kind="alone")
        assert state.level == i + 1
    # at the default: growth, one probe first; refused, the default is the limit
    assert adm.phase(state) == "growth" and adm.may_submit(state, 0.0)
    state = _refuse(state, 0.0)
    assert state.level == adm.DEFAULT_MAX_ACTIVE and state.refused
    assert adm.phase(state) == "steady" and adm.slot_limit(state) == adm.DEFAULT_MAX_ACTIVE
    # the next probe above the default waits long
    assert state.probe_due == adm.PROBE_AT_DEFAULT_FIRST


def test_above_the_default_probes_go_in_a_growing_window() -> None:
    state = _fill(adm.AdmissionState.start(), adm.DEFAULT_MAX_ACTIVE, now=1.0)
    windows = []
    for _ in range(4):
        window = state.window
        for _ in range(window):  # the window goes together, without waiting for answers
            assert adm.may_submit(state, 1.0) and adm.post_kind(state) == "window"
            state = adm.reserve(state, 1.0)
        assert state.probing == window and not adm.may_submit(state, 1.0)
        for i in range(window):
            state = adm.job_created(state, f"w{len(windows)}-{i}", 1.0, kind="window")
        windows.append(window)
    assert windows == [1, 2, 4, 8]  # one more per admission: doubling per round trip
    assert state.level == adm.DEFAULT_MAX_ACTIVE + sum(windows)
    # ends seen before a look confirmed the window may be why it was admitted: they
    # take the level down; once a look confirmed it, POSTs go in parallel up to the
    # level (a server without a limit is found fast)
    assert adm.free_slots(adm.jobs_ended(state, {"j0", "j1"})) == 0
    state = adm.jobs_ended(state, set(), looked=1.5)
    assert adm.free_slots(adm.jobs_ended(state, {"j0", "j1"})) == 2
    # a refusal ends the growth: steady, the level no higher than what we hold, the
    # next probe waits and goes alone
    state = adm.reserve(adm.reserve(state, 1.0), 1.0)
    state = adm.refused_too_many_active(state, 1.0, kind="window")
    held = state.held
    assert adm.phase(state) == "steady" and state.level == held and state.window == 1
    state = adm.job_created(state, "late", 1.0, kind="window")  # its window-mate got in
    assert state.held == held + 1 and state.level == held  # which teaches nothing now
    assert not adm.may_submit(state, 1.0 + adm.PROBE_AT_DEFAULT_FIRST - 0.1)


def test_below_the_default_probes_go_one_at_a_time() -> None:
    state = _fill(adm.AdmissionState.start(), 3)
    assert adm.phase(state) == "ramp" and adm.free_slots(state) == 0
    state = adm.reserve(state, 0.0)
    assert not adm.may_submit(state, 0.0)  # the next waits for this one's answer
    # even when our jobs end (and are seen), the ramp goes on one POST at a time
    state = adm.jobs_ended(state, {"j0", "j1", "j2"}, looked=0.5)
    assert not adm.may_submit(state, 0.5)


def test_a_clean_refusal_is_the_limit_and_refills_stay_under_it() -> None:
    state = _fill(adm.AdmissionState.start(), 2)
    state = _refuse(state, 0.0)
    assert state.level == 2
    assert not adm.may_submit(state, 0.5)
    # a look confirms it; both of ours end: two refills may go together, no third
    state = adm.jobs_ended(state, set(), looked=0.1)
    state = adm.jobs_ended(state, {"j0", "j1"})
    assert adm.free_slots(state) == 2
    state = adm.reserve(adm.reserve(state, 0.6), 0.6)
    assert not state.probing and not adm.may_submit(state, 0.6)


def test_a_probe_never_goes_beside_other_posts() -> None:
    state = _refuse(_fill(adm.AdmissionState.start(), 2), 0.0)  # steady, level 2
    due = state.probe_due
    state = adm.jobs_ended(state, set(), looked=0.5)  # confirms the level of 2
    state = adm.jobs_ended(state, {"j0", "j1"}, looked=due)
    assert state.level == 2
    state = adm.reserve(adm.reserve(state, due), due)  # two refills in flight
    # at the level, and a probe would be due: but not while others are out
    assert not adm.may_submit(state, due)
    state = adm.job_created(adm.job_created(state, "a", due), "b", due)
    assert adm.may_probe(state, due)


def test_a_timed_probe_waits_its_time_and_a_fresh_look() -> None:
    state = _fill(adm.AdmissionState.start(), 2)
    state = _refuse(state, 10.0)
    due = state.probe_due
    assert due == 10.0 + adm.PROBE_BELOW_DEFAULT  # below the default: soon
    assert not adm.may_probe(state, due - 0.01)
    assert not adm.may_probe(state, due + 1)  # no look at our jobs since it became due
    looked = adm.jobs_ended(state, set(), looked=due + 0.5)
    assert adm.may_probe(looked, due + 1)
    # refused again: it backs off, up to a few times the first wait
    again = _refuse(looked, due + 1)
    assert again.probe_wait == 2 * adm.PROBE_BELOW_DEFAULT
    for _ in range(10):
        again = _refuse(adm.jobs_ended(again, set(), looked=again.probe_due), again.probe_due)
    assert again.probe_wait == adm.PROBE_BELOW_DEFAULT * adm.PROBE_BELOW_BACKOFF
    # admitted: one more slot, and the next probe may go at once
    won = adm.job_created(adm.reserve(adm.jobs_ended(again, set(), looked=again.probe_due),
                                      again.probe_due), "k", again.probe_due, kind="alone")
    assert won.level == 3 and adm.may_probe(won, again.probe_due)


def test_the_probe_wait_follows_our_jobs_duration_below_the_default() -> None:
    state = _fill(adm.AdmissionState.start(), 2)
    state = adm.jobs_ended(state, {"j0"}, durations=(8.0,))
    assert state.job_duration == 8.0
    state = _refuse(state, 0.0)
    assert state.probe_due == 2.0  # a quarter of a job


def test_a_look_takes_back_what_a_probe_taught_from_a_stale_count() -> None:
    state = _refuse(_fill(adm.AdmissionState.start(), 2), 0.0)  # the limit: 2, learned
    due = state.probe_due
    state = adm.jobs_ended(state, set(), looked=due)  # a fresh look, nothing ended
    # j0 has ended on the server since, unseen: the probe is admitted at a count of 1,
    # so the level of 3 it seems to teach is one too high
    state = adm.job_created(adm.reserve(state, due + 0.1), "k", due + 0.1, kind="alone")
    assert state.level == 3
    looked = adm.jobs_ended(state, {"j0"}, looked=due + 1)
    assert looked.level == 2 and looked.held == 2 and not looked.unconfirmed
    # ... and a probe may win it back at once, if it was taken off for nothing
    assert adm.may_probe(looked, due + 1)
    # a look that sees nothing ended confirms the level
    assert adm.jobs_ended(state, set(), looked=due + 1).level == 3
    # a look begun before the probe's answer does not confirm it; but the end it saw
    # (of a job last seen active before the probe) may have made it, so it counts
    late = adm.jobs_ended(state, {"j0"}, looked=due + 0.05)
    assert late.level == 2 and late.unconfirmed == (due + 0.1,)
    # ... and, that look done, the next end seen still counts until a look confirms
    later = adm.jobs_ended(late, {"j1"})
    assert later.level == 1 and later.held == 1
    # the ramp's probes are judged the same way
    ramp = _fill(adm.AdmissionState.start(), 3, now=1.0)
    assert adm.jobs_ended(ramp, {"j0"}, looked=2.0).level == 2
    assert adm.jobs_ended(adm.jobs_ended(ramp, set(), looked=1.5), {"j0"}).level == 3


def test_a_refusal_among_parallel_posts_only_lowers_the_level() -> None:
    state = adm.AdmissionState.start(max_active=8)
    state = _fill(state, 3)
    state = adm.reserve(adm.reserve(state, 0.0), 0.0)  # two in flight
    state = adm.refused_too_many_active(state, now=0.0)
    # the other POST may still be created: what we hold without it is the level
    assert state.level == 3
    state = adm.job_created(state, "x")
    assert state.level == 3 and state.in_use == 4  # over it: no refill until two end
    state = adm.jobs_ended(state, {"j0"})
    assert adm.free_slots(state) == 0


def test_refusal_with_nothing_of_ours_active_waits_for_a_probe() -> None:
    state = _refuse(adm.AdmissionState.start(), 0.0)
    assert state.level == 0
    assert not adm.may_submit(state, 1.0)
    assert adm.may_submit(state, state.probe_due)  # nothing of ours to look at first


def test_jobs_active_from_an_earlier_run_hold_and_prove_slots() -> None:
    state = adm.track_active(adm.AdmissionState.start(max_active=4), {"old1", "old2"})
    assert adm.free_slots(state) == 2
    auto = adm.track_active(adm.AdmissionState.start(), {"old1", "old2"})
    assert auto.level == 2 and adm.may_probe(auto, 0.0)


def test_credits_and_readiness_stop_all_submitting_and_uploading() -> None:
    state = adm.credits_exhausted(adm.reserve(adm.AdmissionState.start(max_active=2), 0.0))
    assert state.stopped and state.stop_reason == "credits"
    assert not adm.may_submit(state, 0.0) and not adm.may_upload(state)
    ready = adm.image_not_ready(adm.reserve(adm.AdmissionState.start(max_active=2), 0.0))
    assert ready.stop_reason == "not_ready" and not adm.may_upload(ready)
    told = adm.refuse_all(adm.AdmissionState.start(), "credits")
    assert told.stopped and told.reserved == 0 and not adm.may_submit(told, 0.0)


def test_in_doubt_posts_hold_a_slot_until_resolved() -> None:
    state = adm.AdmissionState.start(max_active=1)
    state = adm.post_in_doubt(adm.reserve(state, 0.0), "case-1")
    assert not adm.may_submit(state, 0.0)
    adopted = adm.resolve_in_doubt(state, "case-1", "job-1")
    assert adopted.active == {"job-1"} and not adopted.doubtful
    none = adm.resolve_in_doubt(state, "case-1", None)
    assert adm.may_submit(none, 0.0)
    ended = adm.resolve_in_doubt(state, "case-1", "job-1", job_active=False)
    assert adm.may_submit(ended, 0.0)


def test_rejected_post_frees_its_slot() -> None:
    state = adm.post_rejected(adm.reserve(adm.AdmissionState.start(max_active=1), 0.0))
    assert adm.may_submit(state, 0.0)
    with pytest.raises(ValueError):
        adm.post_rejected(state)


def test_upload_pause_is_one_for_a_burst_and_ends_when_the_count_goes_down() -> None:
    state = adm.AdmissionState.start()
    assert adm.may_upload(state)
    state = adm.uploads_refused(state, "count", now=10.0)
    paused = state.upload_pause
    assert paused is not None and not adm.may_upload(state)
    # more refusals of the same burst change nothing: one pause, no doubling
    for _ in range(15):
        state = adm.uploads_refused(state, "count", now=10.1)
    assert state.upload_pause == paused
    # the watcher counts the live uploads: the same number keeps the pause ...
    state = adm.upload_count_seen(state, 2000, now=10.2)
    state = adm.upload_count_seen(state, 2001, now=10.4)
    assert state.upload_pause is not None
    # ... fewer ends it: our jobs consumed some
    assert adm.upload_count_seen(state, 1999, now=10.6).upload_pause is None


def test_upload_pause_lets_one_trial_through_and_backs_off() -> None:
    state = adm.uploads_refused(adm.AdmissionState.start(), "count", now=0.0)
    assert adm.upload_trial(state, adm.UPLOAD_TRIAL_FIRST - 0.01) is None
    trial = adm.upload_trial(state, adm.UPLOAD_TRIAL_FIRST)
    assert trial is not None
    assert adm.upload_trial(trial, 100.0) is None  # one at a time
    refused = adm.uploads_refused(trial, "count", now=adm.UPLOAD_TRIAL_FIRST)
    assert refused.upload_pause is not None
    assert refused.upload_pause.interval == 2 * adm.UPLOAD_TRIAL_FIRST
    # another error ends the trial without an answer: someone tries again later
    ended = adm.upload_trial_ended(trial, now=3.0)
    assert ended.upload_pause is not None and not ended.upload_pause.trial
    assert adm.upload_trial(ended, 3.0 + adm.UPLOAD_TRIAL_FIRST) is not None
    for _ in range(20):
        refused = adm.uploads_refused(
            adm.upload_trial(refused, 1e9) or refused, "count", now=0.0)
    assert refused.upload_pause is not None
    assert refused.upload_pause.interval == adm.UPLOAD_TRIAL_MAX


def test_a_granted_upload_ends_only_the_pause_it_answers() -> None:
    count = adm.uploads_refused(adm.AdmissionState.start(), "count", now=5.0)
    assert adm.uploads_accepted(count, 4.0).upload_pause is not None  # asked before it began
    assert adm.uploads_accepted(count, 6.0, "send").upload_pause is not None  # not its quota
    assert adm.uploads_accepted(count, 6.0, "create").upload_pause is None
    size = adm.uploads_refused(adm.AdmissionState.start(), "size", now=5.0)
    assert adm.uploads_accepted(size, 6.0, "send").upload_pause is None
    # sending an existing upload's parts waits for the size quota only
    assert adm.upload_blocked(count, "create") and not adm.upload_blocked(count, "send")
    assert adm.upload_blocked(size, "send")


def test_an_upload_pause_stalls_only_with_nothing_of_ours_pending() -> None:
    state = adm.uploads_refused(adm.AdmissionState.start(), "count", now=0.0)
    assert not adm.uploads_stalled(state, 59.0, patience=60.0, pending=False)
    assert not adm.uploads_stalled(state, 600.0, patience=60.0, pending=True)
    assert adm.uploads_stalled(state, 60.0, patience=60.0, pending=False)
    stopped = adm.uploads_stopped(state)
    assert stopped.uploads_halted and not adm.may_upload(stopped)


def test_max_active_must_be_positive() -> None:
    with pytest.raises(ValueError):
        adm.AdmissionState(max_active=0)


def test_forecast_is_the_ideal_schedule() -> None:
    f = adm.forecast(160, max_active=16, average_duration=2.0)
    assert f.waves == 10 and f.makespan == 20.0
    assert "10 wave(s)" in render_forecast(f) and "credits" in render_forecast(f)
    assert render_forecast(adm.forecast(0)) == "quota: nothing to submit"
    assert adm.forecast(5, average_duration=None).makespan is None


# -------------------------------------------------------------------- against a server model

_OPS = st.lists(st.sampled_from(
    ["reserve", "reserve", "answer_first", "answer_last", "end", "look", "look_begin",
     "look_end", "doubt", "reject"]),
    max_size=120)


@settings(max_examples=3000, deadline=None)
@given(limit=st.integers(1, adm.DEFAULT_MAX_ACTIVE), invisible=st.integers(0, 3), ops=_OPS,
       max_active=st.one_of(st.none(), st.integers(1, 24)))
def test_never_above_the_limit_against_an_over_admitting_server(
        limit: int, invisible: int, ops: list[str], max_active: int | None) -> None:
    """A server whose check takes no lock: a POST is judged by the count when it was sent,
    whatever POSTs sent together with it do. Jobs end when they like; we learn it only by
    looking, and a look takes time (POSTs are answered while it runs). In auto mode our jobs never exceed what a limit up to the documented default
    leaves us (above it, probes go in batches: see the module); with --max-active, never
    more than that."""
    state = adm.AdmissionState.start(max_active)
    room = max(0, limit - invisible)
    truth: set[str] = set()  # our jobs active on the server
    # each POST in flight: the server's count when it was sent, and its kind
    flight: list[tuple[int, adm.PostKind]] = []
    now = 0.0
    made = 0
    look: tuple[float, frozenset[str], frozenset[str]] | None = None  # a look under way
    for op in ops:
        now += 0.25
        if op == "reserve" and adm.may_submit(state, now):
            kind = adm.post_kind(state)
            state = adm.reserve(state, now)
            if kind == "alone":
                assert state.reserved == 1  # a probe goes alone
            flight.append((len(truth), kind))
        elif op in ("answer_first", "answer_last", "doubt", "reject") and flight:
            seen, kind = flight.pop(0 if op != "answer_last" else -1)
            if op == "reject":
                state = adm.post_rejected(state, kind=kind)
            elif op == "doubt":  # no answer: a job may have been made, or not
                made += 1
                if seen < room and made % 2:
                    truth.add(f"d{made}")
                state = adm.post_in_doubt(state, f"c{made}", kind=kind)
            elif seen < room:
                made += 1
                truth.add(f"j{made}")
                state = adm.job_created(state, f"j{made}", now, kind=kind)
            else:
                state = adm.refused_too_many_active(state, now, kind=kind)
        elif op == "end" and truth:
            truth.discard(sorted(truth)[-1])
        elif op == "look":
            gone = state.active - truth
            state = adm.jobs_ended(state, gone, looked=now)
        elif op == "look_begin" and look is None:
            # it reads the statuses of the jobs active now, as they are now
            look = (now, state.active, frozenset(truth))
        elif op == "look_end" and look is not None:
            began, polled_pks, seen = look
            look = None
            state = adm.jobs_ended(state, (polled_pks - seen) & state.active, looked=began)
        if max_active is None:
            assert len(truth) <= room, (len(truth), room, state)
        else:
            assert state.in_use <= max_active
            assert len(truth) <= max_active
        assert state.level <= state.ceiling
