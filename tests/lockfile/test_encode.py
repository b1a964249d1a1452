"""The writer: deterministic bytes, exactly the generic ``indented_json`` form, odd values
too (gcbatch.lockfile.encode)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from gcbatch import lockfile as lf

from .samples import ALG, SERVER, v1_text, varied


def test_dumps_is_the_generic_indented_json() -> None:
    """The per-case writer gives exactly ``indented_json(as_json())``, odd values too."""
    lock = varied()
    assert lf.dumps(lock) == lf.indented_json(lock.as_json()) + "\n"
    odd_input = lf.CaseEntry("sha256:1", {"n": 1}, None)  # type: ignore[dict-item]
    odd_job = lf.JobRecord("p", "u", None, "t", "sha256:1", {})  # type: ignore[arg-type]
    odd = replace(lock, cases={**lock.cases, "odd-input": odd_input,
                               "odd-status": lf.CaseEntry("sha256:1", {}, odd_job)})
    assert lf.dumps(odd) == lf.indented_json(odd.as_json()) + "\n"
    assert '"n": 1\n' in lf.dumps(odd) and '"status": null' in lf.dumps(odd)
    empty = lf.Lockfile("https://ü.example/", lf.AlgorithmRef("a"))
    assert lf.dumps(empty) == lf.indented_json(empty.as_json()) + "\n"
    int_ids = lf.Lockfile(SERVER, ALG, {1: lf.CaseEntry()})  # type: ignore[dict-item]
    assert lf.dumps(int_ids) == lf.indented_json(int_ids.as_json()) + "\n"


_TEXT = st.text(max_size=6)
_INPUTS = st.dictionaries(_TEXT, _TEXT, max_size=3)


@st.composite
def _entries(draw: st.DrawFn) -> lf.CaseEntry:
    fingerprint, inputs = draw(_TEXT), draw(_INPUTS)
    job = None
    if draw(st.booleans()):
        job = lf.JobRecord(draw(_TEXT), draw(_TEXT), draw(_TEXT), draw(_TEXT),
                           draw(st.sampled_from([fingerprint, "sha256:other"])),
                           draw(st.sampled_from([inputs, dict(inputs), {}, {"x": "y"}])))
    history = tuple(lf.JobRecord(pk, "u", "Failed", "t", draw(_TEXT), draw(_INPUTS))
                    for pk in draw(st.lists(_TEXT, max_size=2)))
    pending = None
    if draw(st.booleans()):
        pending = lf.Intent(draw(_TEXT), "t", draw(_INPUTS), ("a.mha",),
                            draw(st.one_of(st.none(), st.lists(st.integers(), max_size=2))))
    return lf.CaseEntry(fingerprint, inputs, job, history, pending)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_TEXT, _entries(), max_size=4))
def test_dumps_and_parse_agree_with_the_generic_form(cases: dict[str, lf.CaseEntry]) -> None:
    lock = lf.Lockfile(SERVER, ALG, cases)
    text = lf.dumps(lock)
    assert text == lf.indented_json(lock.as_json()) + "\n"
    assert lf.parse(text) == lock and lf.parse(v1_text(lock)) == lock
