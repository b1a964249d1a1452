"""Lockfile → text: the deterministic bytes of format 2, written fast.

Same state → same bytes (sorted keys, 2-space indent, ``ensure_ascii=False``, trailing
newline), so a lockfile diffs and merges well in git. The reference form is
``indented_json(lockfile.as_json()) + "\\n"``; :func:`dumps` writes exactly that text from
string templates for the usual entry (100,000 of them are most of a big lockfile) in under
half the time, and falls back to the reference form for any value it would not write the
same way. The tests hold both to ``json.dumps(..., indent=2, sort_keys=True)``.

This module sits *below* :mod:`~gcbatch.lockfile.records` (whose ``Lockfile.dumps`` calls
:func:`dumps`): it reads the records by attribute only and imports them for type checking,
so the package's imports run one way. Reading is :mod:`~gcbatch.lockfile.decode`.
"""

from __future__ import annotations

import json
from typing import Any

from gcbatch.lockfile.records import FORMAT_VERSION, CaseEntry, Lockfile
from gcbatch.perf import gc_paused


def dumps(lockfile: Lockfile) -> str:
    """The deterministic text (same state → same bytes): ``indented_json(as_json())`` and
    a newline, written by :func:`_dump` in under half the time."""
    with gc_paused():  # 100,000 entries: see gcbatch.perf
        try:
            return _dump(lockfile)
        except (_OddValue, TypeError):  # a value _dump does not write itself
            return indented_json(lockfile.as_json()) + "\n"


def indented_json(value: Any) -> str:
    """``json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)``, the same text.

    With ``indent`` the standard library falls back to its pure-Python generator encoder,
    ~4 s for a 100,000-case lockfile; this writes the same layout with plain recursion and
    the C string encoder (values it does not know go through ``json.dumps`` itself).
    """
    out: list[str] = []
    try:
        _indent_into(value, "\n", out)
    except (_OddValue, TypeError):  # non-str keys, unsortable keys: json's way, and errors
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return "".join(out)


_quote: Any = json.encoder.encode_basestring  # json.dumps of a str, ensure_ascii=False
_LITERALS = {True: "true", False: "false"}


def _indent_into(value: Any, newline: str, out: list[str]) -> None:
    kind = type(value)
    if kind is str:
        out.append(_quote(value))
    elif kind is dict:
        if not value:
            out.append("{}")
            return
        inner = newline + "  "
        first = True
        for key in sorted(value):
            if type(key) is not str:  # json's own rules for other keys: see indented_json
                raise _OddValue
            out.append(("{" if first else ",") + inner + _quote(key) + ": ")
            first = False
            _indent_into(value[key], inner, out)
        out.append(newline + "}")
    elif kind is list or kind is tuple:
        if not value:
            out.append("[]")
            return
        inner = newline + "  "
        first = True
        for item in value:
            out.append(("[" if first else ",") + inner)
            first = False
            _indent_into(item, inner, out)
        out.append(newline + "]")
    elif value is None:
        out.append("null")
    elif kind is bool:
        out.append(_LITERALS[value])
    else:  # numbers and anything else: exactly as json.dumps writes them
        out.append(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
                   .replace("\n", newline))


class _OddValue(Exception):
    pass


def _dump(lockfile: Lockfile) -> str:
    """``indented_json(lockfile.as_json()) + "\\n"``, without building ``as_json``.

    Raises :class:`_OddValue` or ``TypeError`` (from ``_quote`` of a non-string) for any
    value it would not write exactly as :func:`indented_json` does; :func:`dumps` then
    takes the generic way.
    """
    out = ['{\n  "algorithm": ']
    _indent_into(lockfile.algorithm.as_json(), "\n  ", out)
    cases = lockfile.cases
    if cases:
        out.append(',\n  "cases": {\n    ')
        out.append(",\n    ".join([_quote(cid) + ": " + _entry_text(cases[cid])
                                    for cid in sorted(cases)]))
        out.append("\n  }")
    else:
        out.append(',\n  "cases": {}')
    out.append(f',\n  "format_version": {FORMAT_VERSION},\n  "server": ')
    _indent_into(lockfile.server, "\n  ", out)
    out.append("\n}\n")
    return "".join(out)


# A usual entry (its job got what the entry describes, no history, nothing pending) as
# indented_json writes it at a case's depth: 100,000 of these are most of a lockfile.
_USUAL_ENTRY = (
    '{\n      "fingerprint": %s,\n      "inputs": %s,\n      "job": {\n'
    '        "api_url": %s,\n        "pk": %s,\n        "status": %s,\n'
    '        "submitted_at": %s\n      }\n    }'
)
_ENTRY_WITHOUT_JOB = '{\n      "fingerprint": %s,\n      "inputs": %s,\n      "job": null\n    }'


def _entry_text(entry: CaseEntry) -> str:
    """``indented_json(entry.as_json())`` at a case's depth in the lockfile: from a
    template for a usual entry, the generic way for any other."""
    job, fingerprint, inputs = entry.job, entry.fingerprint, entry.inputs
    if entry.history or entry.pending is not None or (
        job is not None and (job.fingerprint != fingerprint or job.inputs != inputs)
    ):
        out: list[str] = []
        _indent_into(entry.as_json(), "\n    ", out)
        return "".join(out)
    if inputs:
        inputs_text = "{\n        " + ",\n        ".join(
            [_quote(k) + ": " + _quote(v) for k, v in sorted(inputs.items())]) + "\n      }"
    else:
        inputs_text = "{}"
    if job is None:
        return _ENTRY_WITHOUT_JOB % (_quote(fingerprint), inputs_text)
    return _USUAL_ENTRY % (_quote(fingerprint), inputs_text, _quote(job.api_url),
                           _quote(job.pk), _quote(job.status), _quote(job.submitted_at))
