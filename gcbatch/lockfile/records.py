"""The frozen values a lockfile is made of, and their JSON forms.

:class:`Lockfile` (server, algorithm, case id → :class:`CaseEntry`), an entry's current
:class:`JobRecord`, its history and its pending :class:`Intent`, and the
:class:`AlgorithmRef` the lockfile belongs to. They are frozen so a snapshot handed to
``plan`` or a results command can never change under it; the store replaces entries whole.

``as_json``/``from_json`` are the shapes the lockfile (format 2) and the journal hold;
reading is lenient where format 1 was (values turned into strings) and strict where a
value would be unusable (:class:`Malformed`, which the reader turns into a
:class:`~gcbatch.errors.LockfileError` naming the file). :func:`check_belongs` is the rule
that a lockfile belongs to one server and one algorithm.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from gcbatch.errors import LockfileError
from gcbatch.perf import frozen_instance
from gcbatch.statuses import TERMINAL_STATUSES

#: Statuses after which a job never changes on its own.


#: The lockfile format this gcbatch writes (what ``as_json`` and
#: :func:`~gcbatch.lockfile.encode.dumps` produce).
FORMAT_VERSION = 2

def utc_now() -> str:
    """The current time as ``2026-11-27T14:00:00Z`` (seconds; what the lockfile stores)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def normalize_server(url: str) -> str:
    """One spelling per server URL: scheme and host in lower case, the default port
    dropped, the path with exactly one trailing slash (``HTTPS://GC.org:443/api/v1`` and
    ``https://gc.org/api/v1/`` are the same server), query and fragment ignored."""
    parts = urlsplit(url.strip())
    if not parts.scheme or not parts.hostname:
        return url.rstrip("/") + "/"
    scheme = parts.scheme.lower()
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port is None or port == {"https": 443, "http": 80}.get(scheme) \
        else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}/"


class Malformed(Exception):
    """A record's JSON is not what gcbatch writes; the message says which part.

    Raised deep in the readers, where the file's name is not known; the caller that knows
    it (a lockfile parse, a journal replay) turns it into a :class:`LockfileError`.
    """


def expect(condition: bool, what: str) -> None:
    """Raise :class:`Malformed` ``"malformed <what>"`` unless ``condition``."""
    if not condition:
        raise Malformed(f"malformed {what}")


def _str_map(data: dict[Any, Any]) -> dict[str, str]:
    """``{str(k): str(v)}``; JSON keys are strings already, values usually are."""
    for k, v in data.items():
        if type(k) is not str or type(v) is not str:
            return {str(k): str(v) for k, v in data.items()}
    return dict(data)


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
        expect(isinstance(data, dict) and isinstance(data.get("slug"), str), "algorithm")
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
        expect(isinstance(data, dict), "job record")
    get = data.get
    pk, job_fingerprint = get("pk"), get("fingerprint", fingerprint)
    if type(pk) is not str or type(job_fingerprint) is not str:
        for key, value in (("pk", pk), ("fingerprint", job_fingerprint)):
            expect(isinstance(value, str), f"job record field {key!r}")
    job_inputs = get("inputs", inputs)
    if job_inputs is not inputs or job_inputs is None:  # not the entry's: check it
        job_inputs = job_inputs or {}
        expect(isinstance(job_inputs, dict), "job record inputs")
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

    @property
    def may_have_posted(self) -> bool:
        """Whether this unfinished submission may have made a job: its job POST may have
        gone out (stage ``post``), or its payload is not gcbatch's v1 and we cannot tell.
        An intent still at stage ``upload`` never sent its POST (or its POST was refused):
        certainly no job, so its case is not in doubt."""
        payload = self.payload
        return not (isinstance(payload, dict) and payload.get("v") == 1
                    and payload.get("stage") == "upload")

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
        expect(isinstance(data, dict) and isinstance(data.get("fingerprint"), str), "intent")
        inputs = data.get("inputs") or {}
        uploads = data.get("uploads") or []
        expect(isinstance(inputs, dict) and isinstance(uploads, list), "intent fields")
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
            expect(isinstance(data, dict), "case entry")
        get = data.get
        fingerprint, inputs = get("fingerprint") or "", get("inputs") or {}
        history = get("history") or []
        if type(inputs) is not dict or type(history) is not list:
            expect(isinstance(history, list) and isinstance(inputs, dict), "case entry fields")
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

    @property
    def in_doubt(self) -> tuple[str, ...]:
        """Case ids whose submission may have made a job we do not know, sorted."""
        return tuple(sorted(cid for cid, e in self.cases.items()
                            if e.pending is not None and e.pending.may_have_posted))


def check_belongs(
    lockfile: Lockfile,
    *,
    source: str,
    server: str | None = None,
    algorithm: str | None = None,
) -> None:
    """Refuse a lockfile made for another server or algorithm (exit 2, naming the file).

    Job pks are only meaningful on the server that made them, so a lockfile used against
    another server would mark cases as done that were never submitted there.
    """
    if server is not None and normalize_server(lockfile.server) != normalize_server(server):
        doubt = len(lockfile.in_doubt)
        raise LockfileError(
            f"{source} belongs to server {lockfile.server}, not {server}: its job pks only "
            "mean something there. If both URLs reach the same server (a proxy, another "
            f"name), run with --server {lockfile.server}, or move the study to the new URL "
            "as README's 'Moving a study to another URL' says. Do not start a new lockfile "
            "for the same server: every case would be submitted again"
            + (f", {doubt} in doubt included" if doubt else "")
        )
    if algorithm is not None and lockfile.algorithm.slug != algorithm:
        raise LockfileError(
            f"{source} was made for algorithm {lockfile.algorithm.slug!r}, but the manifest "
            f"names {algorithm!r}; move the lockfile away to start afresh"
        )
