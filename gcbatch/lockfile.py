"""The lockfile, its journal and its OS lock: gcbatch's memory of what it submitted.

Three files live beside the manifest (``study.yaml`` → ``study.lock``; against the
sandbox ``study.sandbox.lock``):

``study.lock``
    JSON, deterministic bytes (sorted keys, 2-space indent, trailing newline), so it diffs
    and merges well in git. Written atomically (temp file in the same folder, fsync,
    ``os.replace``, fsync of the folder). It never holds the token.
    ``format_version`` 2 leaves out what the reader fills in (a 100,000-case lockfile:
    59 MB instead of 96): an entry's ``history`` when empty, ``pending`` when none, and its
    job's ``fingerprint``/``inputs`` when they equal the entry's own (the usual case: the
    entry describes what its job got); other jobs and history records are in full, as in
    journal events. Format 1 (everything in full) is still read.
``study.lock.journal``
    JSON lines, one event each, appended and fsynced *before* we act on it (intent) and
    right after (outcome). Appending is O(1) per event, where rewriting a 100k-case
    lockfile per event would not be. :func:`replay` folds events into a :class:`Lockfile`;
    a :meth:`LockfileStore.checkpoint` saves the folded lockfile and truncates the journal.
``study.lock.lck``
    Held with ``fcntl.flock`` for the whole run; it holds ``{"pid", "host",
    "started_at"}`` so a second gcbatch can say who is in the way.

Journal events (every one carries ``"event"``, ``"case"`` (except ``begin``) and ``"at"``):

``begin``      ``server``, ``algorithm`` — written first in every fresh journal, so a
               crash before the first checkpoint still leaves a usable record.
``intent``     ``fingerprint``, ``inputs`` (socket → digest), ``uploads`` (filenames we
               chose), ``payload`` (inputs as sent, free JSON for reconciliation).
``submitted``  ``job`` (a :class:`JobRecord` as JSON): the server created it.
``rejected``   ``reason``: the server definitely created nothing.
``status``     ``job`` (pk) and ``status``: the last status seen.
``adopted``    ``job``: reconciliation found the job an in-doubt intent had created.

An ``intent`` with no later outcome for its case means the case is **in doubt**
(:attr:`CaseEntry.pending` is set after replay).

The executor should use :class:`LockfileStore`, which ties the three together and is
thread-safe; the free functions are its parts (and what ``plan`` uses read-only).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from gcbatch.errors import LockfileError, LockHeldError
from gcbatch.files import atomic_write_bytes
from gcbatch.perf import frozen_instance, gc_paused

#: The lockfile format this gcbatch writes, and those it reads.
FORMAT_VERSION = 2
READ_FORMAT_VERSIONS = (1, 2)

#: Statuses after which a job never changes on its own.
TERMINAL_STATUSES = frozenset({"Succeeded", "Failed", "Cancelled"})


def utc_now() -> str:
    """The current time as ``2026-11-27T14:00:00Z`` (seconds; what the lockfile stores)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def normalize_server(url: str) -> str:
    """Compare servers by URL with exactly one trailing slash (API roots end in ``/``)."""
    return url.rstrip("/") + "/"


def lockfile_path_for(manifest: Path, *, sandbox: bool = False) -> Path:
    """``study.yaml`` → ``study.lock`` (``study.sandbox.lock`` for the sandbox)."""
    suffix = ".sandbox.lock" if sandbox else ".lock"
    return manifest.with_name(manifest.stem + suffix)


def journal_path_for(lockfile: Path) -> Path:
    return lockfile.with_name(lockfile.name + ".journal")


def oslock_path_for(lockfile: Path) -> Path:
    return lockfile.with_name(lockfile.name + ".lck")


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class AlgorithmRef:
    """The algorithm a lockfile belongs to. ``pk``/``api_url`` are empty until known."""

    slug: str
    pk: str = ""
    api_url: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"slug": self.slug, "pk": self.pk, "api_url": self.api_url}

    @classmethod
    def from_json(cls, data: Any) -> AlgorithmRef:
        _expect(isinstance(data, dict) and isinstance(data.get("slug"), str), "algorithm")
        return cls(slug=data["slug"], pk=str(data.get("pk") or ""),
                   api_url=str(data.get("api_url") or ""))


@dataclass(frozen=True)
class JobRecord:
    """One job we created (or adopted) for a case."""

    pk: str
    api_url: str
    status: str
    submitted_at: str
    fingerprint: str
    #: socket slug → digest of what this job was given (lets plan name changed sockets)
    inputs: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def as_json(self) -> dict[str, Any]:
        return {
            "pk": self.pk,
            "api_url": self.api_url,
            "status": self.status,
            "submitted_at": self.submitted_at,
            "fingerprint": self.fingerprint,
            "inputs": dict(sorted(self.inputs.items())),
        }

    @classmethod
    def from_json(cls, data: Any) -> JobRecord:
        """A job record in full (journal events, history, format-1 lockfiles)."""
        return _job_record(data, None, None)


def _job_record(data: Any, fingerprint: str | None, inputs: dict[str, str] | None) -> JobRecord:
    """A :class:`JobRecord` from JSON; a ``"fingerprint"``/``"inputs"`` it leaves out is
    ``fingerprint``/``inputs`` (the entry's, in a format-2 lockfile), or, given None,
    required / empty.

    The same checks and values as the dataclass constructor would get, in fewer steps
    (a 100,000-case lockfile has 100,000 of these).
    """
    if type(data) is not dict:
        _expect(isinstance(data, dict), "job record")
    get = data.get
    pk, job_fingerprint = get("pk"), get("fingerprint", fingerprint)
    if type(pk) is not str or type(job_fingerprint) is not str:
        for key, value in (("pk", pk), ("fingerprint", job_fingerprint)):
            _expect(isinstance(value, str), f"job record field {key!r}")
    job_inputs = get("inputs", inputs)
    if job_inputs is not inputs or job_inputs is None:  # not the entry's: check it
        job_inputs = job_inputs or {}
        _expect(isinstance(job_inputs, dict), "job record inputs")
        job_inputs = _str_map(job_inputs)
    api_url, status, submitted_at = get("api_url"), get("status"), get("submitted_at")
    if type(api_url) is not str or type(status) is not str or type(submitted_at) is not str:
        api_url, status, submitted_at = (str(v or "") for v in (api_url, status, submitted_at))
    return frozen_instance(JobRecord, {
        "pk": pk,
        "api_url": api_url,
        "status": status,
        "submitted_at": submitted_at,
        "fingerprint": job_fingerprint,
        "inputs": job_inputs,
    })


@dataclass(frozen=True)
class Intent:
    """A submission that was started: journalled before the job POST went out."""

    fingerprint: str
    started_at: str
    inputs: Mapping[str, str] = field(default_factory=dict, hash=False)
    #: the upload filenames we chose (they name the images the server makes)
    uploads: tuple[str, ...] = ()
    #: the inputs as sent (JSON), for reconciliation; free-form for the executor
    payload: Any = field(default=None, hash=False)

    def as_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "started_at": self.started_at,
            "inputs": dict(sorted(self.inputs.items())),
            "uploads": list(self.uploads),
            "payload": self.payload,
        }

    @classmethod
    def from_json(cls, data: Any) -> Intent:
        _expect(isinstance(data, dict) and isinstance(data.get("fingerprint"), str), "intent")
        inputs = data.get("inputs") or {}
        uploads = data.get("uploads") or []
        _expect(isinstance(inputs, dict) and isinstance(uploads, list), "intent fields")
        return cls(
            fingerprint=data["fingerprint"],
            started_at=str(data.get("started_at") or data.get("at") or ""),
            inputs={str(k): str(v) for k, v in inputs.items()},
            uploads=tuple(str(u) for u in uploads),
            payload=data.get("payload"),
        )


@dataclass(frozen=True)
class CaseEntry:
    """What the lockfile knows about one case.

    ``fingerprint``/``inputs`` describe what the current ``job`` was given; ``pending`` is
    a started submission whose outcome is unknown (the case is in doubt).
    """

    fingerprint: str = ""
    inputs: Mapping[str, str] = field(default_factory=dict, hash=False)
    job: JobRecord | None = None
    history: tuple[JobRecord, ...] = ()
    pending: Intent | None = None

    def as_json(self) -> dict[str, Any]:
        """The entry as the lockfile holds it (format 2): ``history`` only when there is
        one, ``pending`` only when set, and the job's ``fingerprint``/``inputs`` only when
        they are not the entry's own (normally they are: the entry describes its job).
        Journal events carry jobs in full (:meth:`JobRecord.as_json`)."""
        data: dict[str, Any] = {
            "fingerprint": self.fingerprint,
            "inputs": dict(sorted(self.inputs.items())),
            "job": None,
        }
        if self.job is not None:
            job = data["job"] = self.job.as_json()
            if self.job.fingerprint == self.fingerprint:
                del job["fingerprint"]
            if self.job.inputs == self.inputs:
                del job["inputs"]
        if self.history:
            data["history"] = [j.as_json() for j in self.history]
        if self.pending is not None:
            data["pending"] = self.pending.as_json()
        return data

    @classmethod
    def from_json(cls, data: Any, *, format_version: int = FORMAT_VERSION) -> CaseEntry:
        """An entry as :meth:`as_json` writes it; in format 2 a job without ``fingerprint``
        /``inputs`` got the entry's (and shares its ``inputs`` dict, read-only like every
        record's), in format 1 every job is in full."""
        if type(data) is not dict:
            _expect(isinstance(data, dict), "case entry")
        get = data.get
        fingerprint, inputs = get("fingerprint") or "", get("inputs") or {}
        history = get("history") or []
        if type(inputs) is not dict or type(history) is not list:
            _expect(isinstance(history, list) and isinstance(inputs, dict), "case entry fields")
        if type(fingerprint) is not str:
            fingerprint = str(fingerprint)
        inputs = _str_map(inputs)
        job, pending = get("job"), get("pending")
        defaults = (fingerprint, inputs) if format_version >= 2 else (None, None)
        return frozen_instance(cls, {
            "fingerprint": fingerprint,
            "inputs": inputs,
            "job": _job_record(job, *defaults) if job else None,
            "history": tuple(_job_record(h, None, None) for h in history) if history else (),
            "pending": Intent.from_json(pending) if pending else None,
        })


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
    the :func:`~gcbatch.perf.frozen_instance` trick without building a dict per instance): the job's gets the entry's
    fingerprint and inputs when it left them out, the entry's its JobRecord and defaults.
    Nothing is changed until every check passed.
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


@dataclass(frozen=True)
class Lockfile:
    """The whole lockfile. ``cases`` maps case id → entry (saved sorted by id)."""

    server: str
    algorithm: AlgorithmRef
    cases: Mapping[str, CaseEntry] = field(default_factory=dict, hash=False)

    def as_json(self) -> dict[str, Any]:
        """The file's JSON, in the format this gcbatch writes (:data:`FORMAT_VERSION`)."""
        return {
            "format_version": FORMAT_VERSION,
            "server": self.server,
            "algorithm": self.algorithm.as_json(),
            "cases": {cid: self.cases[cid].as_json() for cid in sorted(self.cases)},
        }

    def dumps(self) -> str:
        """The deterministic text (same state → same bytes): ``indented_json(self.as_json())``
        and a newline, written by :func:`_dump` in under half the time."""
        with gc_paused():  # 100,000 entries: see gcbatch.perf
            try:
                return _dump(self)
            except (_OddValue, TypeError):  # a value _dump does not write itself
                return indented_json(self.as_json()) + "\n"

    def with_case(self, case_id: str, entry: CaseEntry) -> Lockfile:
        cases = dict(self.cases)
        cases[case_id] = entry
        return replace(self, cases=cases)

    @property
    def in_doubt(self) -> tuple[str, ...]:
        """Case ids with an intent and no outcome, sorted."""
        return tuple(sorted(cid for cid, e in self.cases.items() if e.pending is not None))


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
    value it would not write exactly as :func:`indented_json` does; :meth:`Lockfile.dumps`
    then takes the generic way.
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


class _Corrupt(Exception):
    pass


def _str_map(data: dict[Any, Any]) -> dict[str, str]:
    """``{str(k): str(v)}``; JSON keys are strings already, values usually are."""
    for k, v in data.items():
        if type(k) is not str or type(v) is not str:
            return {str(k): str(v) for k, v in data.items()}
    return dict(data)


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise _Corrupt(f"malformed {what}")


# --------------------------------------------------------------------------- load / save


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
        _expect(isinstance(data.get("server"), str), "server")
        cases = data.get("cases", {})
        cases = {} if cases is None else cases
        _expect(isinstance(cases, dict), "cases")
        return Lockfile(
            server=data["server"],
            algorithm=AlgorithmRef.from_json(data.get("algorithm")),
            cases=_cases_from_json(cases, format_version=version),
        )
    except _Corrupt as exc:
        raise LockfileError(f"{source}: {exc}") from None


def check_belongs(
    lockfile: Lockfile,
    *,
    source: str,
    server: str | None = None,
    algorithm: str | None = None,
) -> None:
    """Refuse a lockfile made for another server or algorithm (exit 2, naming the file)."""
    if server is not None and normalize_server(lockfile.server) != normalize_server(server):
        raise LockfileError(
            f"{source} belongs to server {lockfile.server}, not {server}; a lockfile is "
            "tied to one server (use --lockfile for another file, or --sandbox)"
        )
    if algorithm is not None and lockfile.algorithm.slug != algorithm:
        raise LockfileError(
            f"{source} was made for algorithm {lockfile.algorithm.slug!r}, but the manifest "
            f"names {algorithm!r}; move the lockfile away to start afresh"
        )


def load(
    path: Path,
    *,
    server: str | None = None,
    algorithm: str | None = None,
    replay_journal: bool = True,
) -> Lockfile | None:
    """Read ``path`` (and fold its journal in). ``None`` when neither exists.

    With ``server``/``algorithm`` given, a lockfile for anything else is refused.
    Read-only: the journal is folded in memory, not checkpointed.
    """
    return _load(path, server=server, algorithm=algorithm, replay_journal=replay_journal)[0]


def _load(
    path: Path,
    *,
    server: str | None = None,
    algorithm: str | None = None,
    replay_journal: bool = True,
) -> tuple[Lockfile | None, bool]:
    """:func:`load`, and whether the result is exactly what the file holds (it exists and
    no journal event was folded in): then there is nothing to write back."""
    lockfile: Lockfile | None = None
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise LockfileError(f"{path}: cannot read lockfile: {exc.strerror}") from None
    else:
        lockfile = parse(text, source=str(path))
    as_on_disk = lockfile is not None
    if replay_journal:
        events, _ = read_journal(journal_path_for(path))
        folded = replay(lockfile, events, source=str(journal_path_for(path)))
        if folded is not lockfile:  # (a journal of "begin" alone changes nothing)
            as_on_disk = False
            lockfile = folded
    if lockfile is not None:
        check_belongs(lockfile, source=str(path), server=server, algorithm=algorithm)
    return lockfile, as_on_disk


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so a reader sees the old or the new file, never half
    (durably, through a unique part file only its owner may read)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def save(path: Path, lockfile: Lockfile) -> None:
    """Atomically write the lockfile's deterministic text to ``path``."""
    atomic_write_text(path, lockfile.dumps())


# --------------------------------------------------------------------------- journal


def read_journal(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The events in a journal and the byte length of its well-formed prefix.

    A last line without its newline is a write torn by a crash: it is ignored (the event
    it held never took effect as far as anyone knows). Anything malformed before the last
    line is corruption and refused.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    events: list[dict[str, Any]] = []
    good = 0
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        last = number == len(lines)
        if last:
            break  # bytes after the final newline: empty, or a torn write
        try:
            event = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise LockfileError(f"{path}:{number}: corrupt journal line") from None
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            raise LockfileError(f"{path}:{number}: journal line is not an event")
        events.append(event)
        good += len(raw) + 1
    return events, good


def _job_from_event(event: Mapping[str, Any], source: str) -> JobRecord:
    try:
        return JobRecord.from_json(event.get("job"))
    except _Corrupt as exc:
        raise LockfileError(f"{source}: {event.get('event')} event: {exc}") from None


def _apply_begin(lockfile: Lockfile | None, event: Mapping[str, Any], *, source: str) -> Lockfile:
    """A ``begin`` event: the lockfile it opens, or the one it continues (checked)."""
    server = str(event.get("server") or "")
    try:
        algorithm = AlgorithmRef.from_json(event.get("algorithm"))
    except _Corrupt as exc:
        raise LockfileError(f"{source}: begin event: {exc}") from None
    if lockfile is None:
        return Lockfile(server=server, algorithm=algorithm)
    check_belongs(lockfile, source=source, server=server, algorithm=algorithm.slug)
    if algorithm.pk and not lockfile.algorithm.pk:
        return replace(lockfile, algorithm=algorithm)
    return lockfile


def _case_of(event: Mapping[str, Any], *, source: str) -> str:
    case = event.get("case")
    if not isinstance(case, str):
        raise LockfileError(f"{source}: {event.get('event')} event without a case id")
    return case


def fold_case(entry: CaseEntry | None, event: Mapping[str, Any], *, source: str) -> CaseEntry:
    """Fold one per-case journal event (anything but ``begin``) into that case's entry.

    Pure and O(1) in the number of cases: it sees one entry only (``None`` for a case the
    lockfile does not know yet), which is what lets :class:`LockfileStore` and
    :func:`replay` keep their state in one mutable dict instead of copying it per event.
    """
    kind = event.get("event")
    if entry is None:
        entry = CaseEntry()
    at = str(event.get("at") or "")
    if kind == "intent":
        try:
            intent = Intent.from_json({**event, "started_at": at})
        except _Corrupt as exc:
            raise LockfileError(f"{source}: intent event: {exc}") from None
        return replace(entry, pending=intent)
    if kind in ("submitted", "adopted"):
        job = _job_from_event(event, source)
        if any(old.pk == job.pk for old in entry.history):
            # an old event replayed over a state that already moved on (a crash between
            # checkpoint save and journal truncation): it only resolves its own intent
            pending = entry.pending
            if pending is not None and pending.fingerprint == job.fingerprint:
                pending = None
            return replace(entry, pending=pending)
        if not job.inputs and entry.pending is not None:
            job = replace(job, inputs=entry.pending.inputs)
        history = entry.history
        if entry.job is not None and entry.job.pk != job.pk:
            history = (*history, entry.job)
        return CaseEntry(fingerprint=job.fingerprint, inputs=job.inputs, job=job,
                         history=history, pending=None)
    if kind == "rejected":
        return replace(entry, pending=None)
    if kind == "status":
        status = str(event.get("status") or "")
        pk = event.get("job")
        if entry.job is not None and (pk is None or pk == entry.job.pk):
            return replace(entry, job=replace(entry.job, status=status))
        history = tuple(replace(j, status=status) if j.pk == pk else j for j in entry.history)
        return replace(entry, history=history)
    raise LockfileError(f"{source}: unknown journal event {kind!r}")


def replay(
    lockfile: Lockfile | None, events: list[dict[str, Any]], *, source: str = "<journal>"
) -> Lockfile | None:
    """Fold journal events, in order, into ``lockfile`` (pure; O(cases + events)).

    ``cases`` is copied once, on the first per-case event, and folded in place; a journal
    of ``begin`` events alone returns ``lockfile`` itself (callers use that identity).
    """
    cases: dict[str, CaseEntry] | None = None  # our own copy, once a case event came
    for event in events:
        if event.get("event") == "begin":
            # the header only; the final replace() below puts ``cases`` back in
            lockfile = _apply_begin(lockfile, event, source=source)
            continue
        if lockfile is None:
            raise LockfileError(f"{source}: journal does not start with a begin event")
        case = _case_of(event, source=source)
        if cases is None:
            cases = dict(lockfile.cases)
        cases[case] = fold_case(cases.get(case), event, source=source)
    if cases is not None and lockfile is not None:
        lockfile = replace(lockfile, cases=cases)
    return lockfile


class Journal:
    """An append-only, fsync-per-event JSON-lines file.

    Group commit: :meth:`write` appends and flushes (callers serialise writes, e.g. under
    the store's mutex) and returns a sequence number; :meth:`sync` makes everything up to
    it durable, and ONE fsync covers every write made before it, so threads journalling
    at the same time share fsyncs instead of queueing for one each (with 32 workers and a
    1-3 ms fsync that is the difference between ~300 and ~10,000 events/s). Nobody acts
    on an event before its ``sync`` returned, so the write-ahead rule holds.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        _, good = read_journal(path)
        # cut a torn tail so the next event starts on its own line
        self._fh: IO[bytes] = open(path, "ab")  # noqa: SIM115 - closed in close()
        if self._fh.tell() != good:
            self._fh.truncate(good)
            self._fh.seek(good)
        self._written = 0  # sequence number of the last write (flushed to the OS)
        self._synced = 0  # every write up to this one is on disk
        self._sync_lock = threading.Lock()

    def write(self, event: Mapping[str, Any]) -> int:
        """Append and flush one event (not yet durable); return its sequence number."""
        line = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        self._fh.write(line.encode("utf-8") + b"\n")
        self._fh.flush()
        self._written += 1
        return self._written

    def sync(self, upto: int) -> None:
        """Return once write number ``upto`` is durable (sharing an fsync if one runs)."""
        if self._synced >= upto:
            return
        with self._sync_lock:
            if self._synced >= upto:
                return  # another thread's fsync covered it while we waited
            target = self._written
            os.fsync(self._fh.fileno())
            self._synced = max(self._synced, target)

    def append(self, event: Mapping[str, Any]) -> None:
        self.sync(self.write(event))

    def append_many(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Append several events with ONE write and ONE fsync (a refresh of 2000 statuses
        must not cost 2000 fsyncs). A crash mid-write leaves a prefix of whole lines plus
        at most one torn line, which :func:`read_journal` ignores."""
        data = b"".join(
            json.dumps(e, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            + b"\n"
            for e in events
        )
        if not data:
            return
        self._fh.write(data)
        self._fh.flush()
        self._written += 1  # one write, made durable by one (possibly shared) fsync
        self.sync(self._written)

    def truncate(self) -> None:
        self._fh.truncate(0)
        self._fh.seek(0)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        # what was written before is in the checkpointed lockfile now: nothing to wait for
        self._synced = self._written

    def close(self) -> None:
        self._fh.close()


# --------------------------------------------------------------------------- OS lock


class FileLock:
    """An exclusive ``fcntl.flock`` on ``<lockfile>.lck`` naming its holder.

    The kernel drops the lock when the process dies, so a crash never leaves a stale lock;
    the pid/host/start inside the file are only there to tell a second gcbatch who holds it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockHeldError(
                f"{self.path} is held by another gcbatch ({holder}); wait for it to finish"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": utc_now()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info, sort_keys=True) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']}, since {info['started_at']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


# --------------------------------------------------------------------------- the store


class LockfileStore:
    """Lockfile + journal + OS lock for one run; thread-safe. The executor's interface.

    ::

        with LockfileStore.open(path, server=url, algorithm=AlgorithmRef(slug, pk, api)) as st:
            st.lockfile                      # folded state (journal replayed on open)
            st.entry("case-1")               # one case, O(1) (st.lockfile copies all)
            st.intent("case-1", fingerprint, inputs={...}, uploads=[...], payload=...)
            st.submitted("case-1", JobRecord(...))   # or st.rejected("case-1", "reason")
            st.status("case-1", job_pk, "Succeeded")
            st.checkpoint()                  # atomic save + truncate journal

    Opening takes the OS lock (:class:`LockHeldError` if taken), loads and checks the
    lockfile (:class:`LockfileError` on another server/algorithm/format), replays the journal
    and checkpoints, so every run starts from a clean lockfile and an empty journal.
    Every event is fsynced to the journal before the method returns; ``checkpoint`` runs
    every ``max(checkpoint_every, cases/4)`` events (a checkpoint rewrites every case, so
    its cost stays O(1) per event) and on close. Each event costs O(1): the state is a
    mutable dict of frozen entries, folded with :func:`fold_case`.
    """

    def __init__(
        self,
        path: Path,
        lockfile: Lockfile,
        journal: Journal,
        oslock: FileLock,
        checkpoint_every: int,
    ) -> None:
        self.path = path
        # The state, kept mutable so an event costs O(1), not a copy of 100,000 entries:
        # ``_header`` holds server/algorithm (its ``cases`` is not used), ``_cases`` the
        # entries (each still a frozen CaseEntry, replaced whole per event).
        self._header = lockfile
        self._cases: dict[str, CaseEntry] = dict(lockfile.cases)
        #: the immutable Lockfile of the current state, built on demand; None once stale
        self._snapshot: Lockfile | None = lockfile
        #: whether the state differs from what the lockfile file holds
        self._dirty = True
        self._journal = journal
        self._oslock = oslock
        self._mutex = threading.Lock()
        self._since_checkpoint = 0
        self._checkpoint_every = checkpoint_every

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        server: str,
        algorithm: AlgorithmRef,
        checkpoint_every: int = 500,
    ) -> LockfileStore:
        oslock = FileLock(oslock_path_for(path))
        oslock.acquire()
        try:
            existing, as_on_disk = _load(path, server=server, algorithm=algorithm.slug)
            if existing is None:
                existing = Lockfile(server=server, algorithm=algorithm)
            elif algorithm.pk and existing.algorithm.pk != algorithm.pk:
                existing = replace(existing, algorithm=algorithm)
                as_on_disk = False
            if not as_on_disk:
                # a re-apply of a fully locked 100,000-case study writes nothing here
                save(path, existing)
            journal = Journal(journal_path_for(path))
            journal.truncate()
            journal.append({"event": "begin", "server": existing.server,
                            "algorithm": existing.algorithm.as_json(), "at": utc_now()})
        except BaseException:
            oslock.release()
            raise
        store = cls(path, existing, journal, oslock, checkpoint_every)
        store._dirty = False  # the file holds exactly ``existing`` now
        return store

    @property
    def lockfile(self) -> Lockfile:
        """The current state as an immutable :class:`Lockfile`.

        Built (one O(cases) copy) on the first read after an event and cached until the
        next one, so read it once per pass, not per case: :meth:`entry` is the O(1) way
        to look at one case.
        """
        with self._mutex:
            return self._snapshot_locked()

    def _snapshot_locked(self) -> Lockfile:
        if self._snapshot is None:
            self._snapshot = replace(self._header, cases=dict(self._cases))
        return self._snapshot

    def entry(self, case_id: str) -> CaseEntry | None:
        """What the lockfile holds for ``case_id`` now (``None`` if nothing); O(1)."""
        with self._mutex:
            return self._cases.get(case_id)

    def _threshold(self) -> int:
        # Every checkpoint rewrites the whole file, O(cases): checkpointing at most once
        # per max(checkpoint_every, cases/4) events keeps its cost O(1) per event however
        # large the lockfile, and the journal (what a crash replays) within cases/4 events.
        # (The executor also checkpoints on a timer, and every run ends with one.)
        return max(self._checkpoint_every, len(self._cases) // 4)

    def record(self, event: Mapping[str, Any], *, durable: bool = True) -> CaseEntry | None:
        """Journal one event (fsynced), fold it in; O(1) in the number of cases.

        Returns the event's case entry as it is now (``None`` for a ``begin``); read
        :attr:`lockfile` for the whole state.

        ``durable=False`` (outcomes only): written and flushed to the OS, so it survives
        the process being killed, but not waited on to reach the disk; the next event's
        fsync carries it. Losing it in a machine crash only leaves its intent in doubt,
        which the next run reconciles. Intents must always be durable.
        """
        event = {"at": utc_now(), **event}
        source = str(self._journal.path)
        with self._mutex:
            result: CaseEntry | None = None
            if event.get("event") == "begin":
                # only server/algorithm matter to a begin: the header is enough
                header = _apply_begin(self._header, event, source=source)
                seq = self._journal.write(event)
                if header is not self._header:
                    self._header = header
                    self._snapshot = None
            else:
                case = _case_of(event, source=source)
                result = fold_case(self._cases.get(case), event, source=source)
                seq = self._journal.write(event)
                self._cases[case] = result
                self._snapshot = None
            self._dirty = True
            self._since_checkpoint += 1
            if self._since_checkpoint >= self._threshold():
                self._checkpoint_locked()
        # fsync outside the mutex (group commit): concurrent events share one fsync; the
        # caller acts on the event only after this returns, so it is durable by then
        if durable:
            self._journal.sync(seq)
        return result

    def record_many(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Journal several events with one fsync and fold them in, all or none.

        For batches of independent events, e.g. the statuses one job-list refresh found
        (``gcbatch status`` on 2000 jobs: one fsync instead of 2000).
        """
        at = utc_now()
        source = str(self._journal.path)
        with self._mutex:
            # fold into an overlay first: a bad event leaves state and journal untouched
            header = self._header
            changed: dict[str, CaseEntry] = {}
            stamped = []
            for raw in events:
                event = {"at": at, **raw}
                stamped.append(event)
                if event.get("event") == "begin":
                    header = _apply_begin(header, event, source=source)
                    continue
                case = _case_of(event, source=source)
                previous = changed[case] if case in changed else self._cases.get(case)
                changed[case] = fold_case(previous, event, source=source)
            if not stamped:
                return
            self._journal.append_many(stamped)
            self._header = header
            self._cases.update(changed)
            self._snapshot = None
            self._dirty = True
            self._since_checkpoint += len(stamped)
            if self._since_checkpoint >= self._threshold():
                self._checkpoint_locked()

    def intent(
        self,
        case: str,
        fingerprint: str,
        *,
        inputs: Mapping[str, str],
        uploads: tuple[str, ...] | list[str] = (),
        payload: Any = None,
    ) -> None:
        """Before the job POST: from here until an outcome, the case is in doubt."""
        self.record({"event": "intent", "case": case, "fingerprint": fingerprint,
                     "inputs": dict(inputs), "uploads": list(uploads), "payload": payload})

    def submitted(self, case: str, job: JobRecord, *, durable: bool = True) -> None:
        self.record({"event": "submitted", "case": case, "job": job.as_json()}, durable=durable)

    def adopted(self, case: str, job: JobRecord, *, durable: bool = True) -> None:
        self.record({"event": "adopted", "case": case, "job": job.as_json()}, durable=durable)

    def rejected(self, case: str, reason: str, *, durable: bool = True) -> None:
        self.record({"event": "rejected", "case": case, "reason": reason}, durable=durable)

    def status(self, case: str, job_pk: str, status: str) -> None:
        self.record({"event": "status", "case": case, "job": job_pk, "status": status})

    def statuses(self, updates: Iterable[tuple[str, str, str]]) -> None:
        """Many ``(case, job pk, status)`` at once (one fsync): see :meth:`record_many`."""
        self.record_many({"event": "status", "case": case, "job": pk, "status": status}
                         for case, pk, status in updates)

    def set_algorithm(self, algorithm: AlgorithmRef) -> None:
        """Record the algorithm's pk/api_url once the server told us (checkpoints)."""
        with self._mutex:
            self._header = replace(self._header, algorithm=algorithm)
            self._snapshot = None
            self._dirty = True
            self._checkpoint_locked()

    def forget(self, case: str) -> None:
        """Drop a case from the lockfile (checkpoints; not journalled)."""
        with self._mutex:
            if self._cases.pop(case, None) is not None:
                self._snapshot = None
                self._dirty = True
            self._checkpoint_locked()

    def checkpoint(self) -> None:
        with self._mutex:
            self._checkpoint_locked()

    def _checkpoint_locked(self) -> None:
        # save first, then truncate: a crash in between replays events already folded,
        # which is harmless because every event's fold is idempotent on the saved state
        if not self._dirty and self._since_checkpoint == 0:
            return  # nothing happened since the file was written (or read): keep both
        if self._dirty:
            save(self.path, self._snapshot_locked())
            self._dirty = False
        self._journal.truncate()
        self._journal.append({"event": "begin", "server": self._header.server,
                              "algorithm": self._header.algorithm.as_json(),
                              "at": utc_now()})
        self._since_checkpoint = 0

    def close(self) -> None:
        try:
            with self._mutex:
                self._checkpoint_locked()
                self._journal.close()
        finally:
            self._oslock.release()

    def __enter__(self) -> LockfileStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
