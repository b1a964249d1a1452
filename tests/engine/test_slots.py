"""Slots: the admission state under a lock; each POST's kind goes with its answer."""

from __future__ import annotations

import threading

from gcbatch.engine import admission as adm
from gcbatch.engine.slots import Slots


def _slots() -> Slots:
    return Slots(max_active=None, lookahead=0, stop=threading.Event(), clock=lambda: 1.0)


def test_each_answer_counts_as_what_its_own_thread_reserved() -> None:
    slots = _slots()
    # the ramp: a lone probe reserved on another thread, answered there, adds a slot
    worker = threading.Thread(target=lambda: (slots.reserve(), slots.created("a")))
    worker.start()
    worker.join(5)
    assert slots.state.level == 1 and slots.state.probing == 0
    # and on this thread
    assert slots.reserve()
    slots.created("b")
    state = slots.state
    assert state.level == 2 and state.reserved == state.probing == 0
    assert state.active == {"a", "b"}


def test_a_refused_lone_probe_sets_the_level_to_what_is_held() -> None:
    slots = _slots()
    for pk in ("a", "b"):
        assert slots.reserve()
        slots.created(pk)
    assert slots.reserve()
    slots.refused_too_many_active()
    state = slots.state
    assert adm.phase(state) == "steady" and state.level == 2 and state.probing == 0
    assert slots.limit() == 2
