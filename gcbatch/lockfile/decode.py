"""Text → lockfile: formats 1 and 2 read into a :class:`~gcbatch.lockfile.records.Lockfile`.

Anything unusable is a :class:`~gcbatch.errors.LockfileError` naming the file (exit 2):
not JSON, not an object, a format this gcbatch does not read, a malformed entry. Format 1
(every field, jobs in full) reads to the same lockfile its format-2 rewrite does.

A 100,000-case re-apply parses a lockfile of that size before it can decide that nothing
is to be done, so the usual entry (see :func:`_usual_entry`) skips the generic reader:
the dicts ``json.loads`` made become the records' own ``__dict__``. Any other entry takes
:meth:`~gcbatch.lockfile.records.CaseEntry.from_json`, with its checks and messages.
Writing is :mod:`~gcbatch.lockfile.encode`.
"""

from __future__ import annotations

import json
from typing import Any

from gcbatch.errors import LockfileError
from gcbatch.lockfile.records import (
    AlgorithmRef,
    CaseEntry,
    JobRecord,
    Lockfile,
    Malformed,
    expect,
)
from gcbatch.perf import gc_paused

#: The lockfile formats this gcbatch reads (it writes :data:`~.encode.FORMAT_VERSION`).
READ_FORMAT_VERSIONS = (1, 2)


def parse(text: str, *, source: str = "<lockfile>") -> Lockfile:
    """Parse lockfile text; :class:`LockfileError` (naming ``source``) when it is unusable."""
    with gc_paused():  # 100,000 entries: see gcbatch.perf
        return _parse(text, source=source)


def _parse(text: str, *, source: str) -> Lockfile:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LockfileError(
            f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "it may have been edited by hand or merged badly"
        ) from None
    if not isinstance(data, dict):
        raise LockfileError(f"{source}: not a gcbatch lockfile (expected a JSON object)")
    version = data.get("format_version")
    if type(version) is not int or version not in READ_FORMAT_VERSIONS:  # (not True, 1.0)
        raise LockfileError(
            f"{source}: lockfile format_version is {version!r}, but this gcbatch reads "
            f"format_version {' or '.join(map(str, READ_FORMAT_VERSIONS))}; "
            "use the gcbatch version that wrote it"
        )
    try:
        expect(isinstance(data.get("server"), str), "server")
        cases = data.get("cases", {})
        cases = {} if cases is None else cases
        expect(isinstance(cases, dict), "cases")
        return Lockfile(
            server=data["server"],
            algorithm=AlgorithmRef.from_json(data.get("algorithm")),
            cases=_cases_from_json(cases, format_version=version),
        )
    except Malformed as exc:
        raise LockfileError(f"{source}: {exc}") from None


def _cases_from_json(cases: dict[str, Any], *, format_version: int) -> dict[str, CaseEntry]:
    """The entries of a lockfile's parsed ``cases``, as :meth:`CaseEntry.from_json` makes
    them, in half the time for 100,000 usual ones (see :func:`_usual_entry`).

    ``cases`` itself becomes the result, each value replaced in place (its keys, all that
    iteration needs unchanged, stay): no second 100,000-key dict.
    """
    lean = format_version != 1
    for cid, data in cases.items():
        cases[cid] = (_usual_entry(data, lean)
                      or CaseEntry.from_json(data, format_version=2 if lean else 1))
    return cases


# object's own: a frozen dataclass's __setattr__ refuses even "__dict__" (see _usual_entry)
_new, _adopt = object.__new__, object.__setattr__


def _usual_entry(data: Any, lean: bool) -> CaseEntry | None:
    """The parsed entry of a usual case made into a :class:`CaseEntry`; None for any other.

    Usual: ``fingerprint``, ``inputs`` and a job that got them, nothing else, strings where
    strings belong; the job is ``pk``/``api_url``/``status``/``submitted_at`` (``lean``,
    format 2) or all its fields with an empty ``history`` and no ``pending`` (format 1).
    Anything else is left to :meth:`CaseEntry.from_json`, with its checks and messages.

    The parsed dicts, which nobody else holds, become the instances' own ``__dict__`` (the
    :func:`~gcbatch.perf.frozen_instance` trick without building a dict per instance): the
    job's gets the entry's fingerprint and inputs when it left them out, the entry's its
    JobRecord and defaults. Nothing is changed until every check passed.
    """
    if type(data) is not dict or len(data) != (3 if lean else 5):
        return None
    try:
        fingerprint, inputs, job = data["fingerprint"], data["inputs"], data["job"]
        if type(job) is not dict or len(job) != (4 if lean else 6):
            return None
        if lean:
            job_fingerprint, job_inputs = fingerprint, inputs
        elif data["history"] == [] and data["pending"] is None:
            job_fingerprint, job_inputs = job["fingerprint"], job["inputs"]
        else:
            return None
        if not (type(fingerprint) is str and type(job_fingerprint) is str
                and type(inputs) is dict and type(job_inputs) is dict
                and type(job["pk"]) is str and type(job["api_url"]) is str
                and type(job["status"]) is str and type(job["submitted_at"]) is str):
            return None
    except KeyError:  # not the usual keys after all
        return None
    for value in inputs.values():  # (JSON keys are strings already)
        if type(value) is not str:
            return None
    if job_inputs is not inputs:
        for value in job_inputs.values():
            if type(value) is not str:
                return None
    if lean:
        job["fingerprint"] = fingerprint
        job["inputs"] = inputs
    record = _new(JobRecord)
    _adopt(record, "__dict__", job)
    data["job"] = record
    data["history"] = ()
    data["pending"] = None
    entry = _new(CaseEntry)
    _adopt(entry, "__dict__", data)
    return entry
