"""Server-side pre-flight: do the cases fit the algorithm, before anything is uploaded?

The server checks a job's inputs only when the job is POSTed, and some problems it finds
only later, asynchronously (bad upload contents end the job ``Cancelled``, after the
upload was spent; a JSON-file socket given bytes that are not JSON leaves the job in
"Validating inputs" *forever*, holding one of the user's active-job slots). So before the
first upload, ``apply`` checks every case it is about to send (and ``plan`` every case
that is not unchanged: a locked job is never blocked) against what the API shows about
the algorithm, and reports *every* problem at once, each naming its case and socket:

1. The algorithm exists, is visible to the user and has at least one interface. (Whether
   its container image is ready the API does not show; the server's "Algorithm image is
   not ready to be used" still stops the first POST, which creates nothing.)
2. A case's socket set equals exactly one interface's input set (the server does not
   fill in defaults; check no. 6 of the job POST).
3. Each source fits its socket's super kind: ``value``/``json`` → Value; ``file`` →
   File or Image; ``files``/``image`` → Image; ``archive_item`` → the super kind of the
   item's value. Obvious JSON type mismatches for typed Value kinds (a string for an
   Integer socket) are caught too; the server's JSON schema stays the final word.
4. A File socket that holds JSON (``.json`` relative path or a JSON kind) gets a file
   that parses as JSON locally (read here, hence :func:`check_json_files` does I/O).
5. Two cases whose inputs are all values/existing images and equal would meet the
   server's own dedup ("A result for these inputs ... already exists"): the second could
   never get a job of its own, so that is reported too.

:func:`check_cases` is pure (values in, problems out); :func:`check_json_files` reads
files; :func:`run_preflight` does both and raises :class:`PreflightError` (exit 2).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gcbatch.api.models import Algorithm, ArchiveItem, Socket
from gcbatch.errors import PreflightError
from gcbatch.lockfile import CaseEntry
from gcbatch.manifest.naming import json_type
from gcbatch.sources import Case, Source
from gcbatch.suggest import did_you_mean

__all__ = [
    "Problem",
    "blocked_cases",
    "check_algorithm",
    "check_cases",
    "check_json_files",
    "duplicate_values",
    "is_json_file_socket",
    "require_algorithm",
    "run_preflight",
    "value_only_key",
]

#: Which source kinds each socket super kind accepts.
_ACCEPTS: Mapping[str, frozenset[str]] = {
    "Value": frozenset({"value", "json"}),
    "File": frozenset({"file"}),
    "Image": frozenset({"file", "files", "image"}),
}

#: What to suggest when a source does not fit.
_HINT = {
    "Value": "use value: or json: for a Value socket",
    "File": "use file: (one file, uploaded) for a File socket",
    "Image": "use file:, files: or image: for an Image socket",
}


@dataclass(frozen=True)
class Problem:
    """One reason a case cannot be submitted as it is. ``socket`` is "" for case-level."""

    case: str
    socket: str
    message: str

    def render(self) -> str:
        where = f"case {self.case}" if self.case else "algorithm"
        if self.socket:
            where += f", socket {self.socket}"
        return f"{where}: {self.message}"

    def as_json(self) -> dict[str, str]:
        return {"case": self.case, "socket": self.socket, "message": self.message}


def is_json_file_socket(socket: Socket) -> bool:
    """A File socket whose contents must be JSON (the platform's stuck-job bug)."""
    if socket.super_kind != "File":
        return False
    return socket.relative_path.lower().endswith(".json") or "json" in socket.kind.lower()


def check_algorithm(algorithm: Algorithm | None, slug: str) -> list[Problem]:
    """The algorithm is visible and has at least one interface."""
    if algorithm is None:
        return [Problem("", "", f"algorithm {slug!r} does not exist or you may not run it "
                                "(check the slug and that you have access)")]
    if not algorithm.interfaces:
        return [Problem("", "", f"algorithm {slug!r} has no interfaces: it takes no inputs "
                                "that a job could be made of")]
    return []


def _describe_sets(algorithm: Algorithm) -> str:
    return "; ".join(
        "{" + ", ".join(sorted(s)) + "}" for s in sorted(algorithm.input_sets, key=sorted)
    )


def _interface_problem(case: Case, algorithm: Algorithm) -> Problem | None:
    slugs = frozenset(s.socket for s in case.inputs)
    matches = [i for i in algorithm.interfaces if i.input_slugs == slugs]
    if len(matches) == 1:
        return None
    if len(matches) > 1:  # the server would be as confused as we are; say so plainly
        return Problem(case.id, "", "the algorithm lists this input set more than once")
    # name the closest interface's differences: what to add, what to drop
    best = min(algorithm.interfaces, key=lambda i: len(i.input_slugs ^ slugs))
    missing = sorted(best.input_slugs - slugs)
    extra = sorted(slugs - best.input_slugs)
    detail = []
    if missing:
        detail.append("missing " + ", ".join(missing))
    if extra:
        detail.append("not expected " + ", ".join(extra))
    known = algorithm.input_sockets()
    unknown = "".join(f"unknown socket `{slug}`{did_you_mean(slug, known)}; "
                      for slug in sorted(slugs) if slug not in known)
    return Problem(
        case.id,
        "",
        unknown + "inputs {" + ", ".join(sorted(slugs)) + "} match none of the algorithm's "
        f"interfaces ({'; '.join(detail)} for the closest one); "
        f"it accepts: {_describe_sets(algorithm)}",
    )


def _json_type_problem(socket: Socket, value: Any) -> str | None:
    """An obvious mismatch between a value and a typed Value kind (None when fine/unknown)."""
    if value is None:
        return "value is null, which the server refuses for a Value socket"
    kind = socket.kind.lower()
    if kind == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
        return f"{socket.kind} socket needs an integer, got {json_type(value, exact_numbers=True)}"
    if kind == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return f"{socket.kind} socket needs a number, got {json_type(value, exact_numbers=True)}"
    if kind == "bool" and not isinstance(value, bool):
        return f"{socket.kind} socket needs true or false, got {json_type(value, exact_numbers=True)}"
    if kind == "string" and not isinstance(value, str):
        return f"{socket.kind} socket needs a string, got {json_type(value, exact_numbers=True)}"
    return None


def _source_problems(
    case: Case,
    source: Source,
    socket: Socket,
    items: Mapping[str, ArchiveItem],
) -> list[Problem]:
    def problem(message: str) -> list[Problem]:
        return [Problem(case.id, source.socket, message)]

    super_kind = socket.super_kind
    if super_kind not in _ACCEPTS:
        return problem(f"socket has an unknown super kind {super_kind!r}; gcbatch cannot "
                       "tell which source it takes")
    if source.kind == "archive_item":
        item = items.get(source.item_pk or "")
        if item is None:
            return problem(f"archive item {source.item_pk} does not exist or is not visible")
        item_socket = source.item_socket or source.socket
        value = item.value_for(item_socket)
        if value is None:
            held = ", ".join(sorted(v.socket_slug for v in item.values)) or "nothing"
            return problem(f"archive item {item.pk} has no value for socket {item_socket} "
                           f"(it holds {held})")
        item_kind = value.socket.super_kind if value.socket is not None else ""
        if item_kind and item_kind != super_kind:
            return problem(f"archive item {item.pk}'s {item_socket} is a {item_kind} value, "
                           f"but this socket takes a {super_kind}")
        if super_kind == "Image" and not value.image:
            return problem(f"archive item {item.pk}'s {item_socket} holds no image")
        if super_kind == "File" and not value.file:
            return problem(f"archive item {item.pk}'s {item_socket} holds no file")
        if super_kind == "Value":
            text = _json_type_problem(socket, value.value)
            if text:
                return problem(f"archive item {item.pk}'s {item_socket}: {text}")
        return []
    if source.kind not in _ACCEPTS[super_kind]:
        return problem(f"a {source.kind}: source does not fit a {super_kind} socket "
                       f"({socket.kind or super_kind}); {_HINT[super_kind]}")
    if super_kind == "Value":
        text = _json_type_problem(socket, source.value)
        return problem(text) if text else []
    if source.kind in ("file", "files") and not source.paths:
        return problem(f"{source.summary or source.kind} matches no file")
    if source.kind == "file" and len(source.paths) != 1:
        return problem(f"file: must name exactly one file, {len(source.paths)} match")
    if source.kind == "image" and not source.image_url:
        return problem("image: needs the image's API URL")
    return []


def value_only_key(case: Case) -> str | None:
    """A canonical key of a case whose every input is a value or an existing image.

    Such cases are what the server deduplicates (uploads always make new inputs). None
    for cases with any upload (or an archive item, which is resolved later). Expanded
    sources carry digests (sha256 of the canonical value or image URL): equal exactly when
    the values are, and far cheaper to join than re-encoding 100,000 values.
    """
    digests: list[str] = []
    for source in case.inputs:
        if source.kind not in _VALUE_ONLY_KINDS:
            return None
        digests.append(source.digest)
    if all(digests):
        return "\n".join([s.socket + " " + s.digest for s in case.inputs])
    parts: list[Any] = []
    for source in case.inputs:
        if source.kind in ("value", "json"):
            parts.append([source.socket, "value", source.value])
        elif source.kind == "image":
            parts.append([source.socket, "image", source.image_url])
        else:
            return None
    return _KEY_JSON(parts)


_VALUE_ONLY_KINDS = frozenset({"value", "json", "image"})

#: json.dumps(parts, sort_keys=True, separators=(",", ":")) without building an encoder
#: per call (one call per case: 100,000 in a big re-apply)
_KEY_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


def check_cases(
    cases: Sequence[Case],
    algorithm: Algorithm,
    *,
    items: Mapping[str, ArchiveItem] | None = None,
    all_cases: Sequence[Case] | None = None,
    locked: Mapping[str, CaseEntry] | None = None,
) -> list[Problem]:
    """Every problem of every case (pure). Sockets are looked up across all interfaces.

    ``all_cases`` (default ``cases``): what the duplicate-values check compares. ``apply``
    checks only the cases it is about to send, but one of them may duplicate another
    case, so that check sees them all (it is cheap: digests only), and ``locked`` (the
    lockfile's entries) stands for the cases expansion did not build because they are
    settled (see :func:`gcbatch.sources.expand`).
    """
    problems: list[Problem] = []
    sockets = algorithm.input_sockets()
    resolved = items or {}
    for case in cases:
        interface_problem = _interface_problem(case, algorithm)
        if interface_problem is not None:
            problems.append(interface_problem)
        for source in case.inputs:
            socket = sockets.get(source.socket)
            if socket is None:
                if interface_problem is None:  # cannot happen, but never pass silently
                    problems.append(Problem(case.id, source.socket, "not an input socket"))
                continue
            problems.extend(_source_problems(case, source, socket, resolved))
    problems += duplicate_values(cases if all_cases is None else all_cases, locked=locked)
    return problems


def duplicate_values(cases: Iterable[Case], *,
                     locked: Mapping[str, CaseEntry] | None = None) -> list[Problem]:
    """Check 5: each case whose value-only inputs equal an earlier case's, or those of a
    locked case not among ``cases`` (its job's digests in the lockfile; its job exists, so
    the server would refuse another with those inputs).

    Digest keys only match digest keys: a locked entry's inputs of another kind (a file)
    have digests of another form, which no value's digest equals.
    """
    problems: list[Problem] = []
    seen_values: dict[str, str] = {}
    keys: list[tuple[str, str]] = []
    ids: set[str] = set()
    for case in cases:
        ids.add(case.id)
        key = value_only_key(case)
        if key is not None:
            keys.append((key, case.id))
    if keys and locked:
        for cid, entry in sorted(locked.items()):
            if cid not in ids and entry.job is not None and entry.inputs:
                key = "\n".join([s + " " + entry.inputs[s] for s in sorted(entry.inputs)])
                seen_values.setdefault(key, cid)
    for key, case_id in keys:
        first = seen_values.setdefault(key, case_id)
        if first != case_id:
            problems.append(Problem(
                case_id, "",
                f"has exactly the same inputs as case {first}; the server keeps one job "
                "per set of value inputs, so this case could never get its own job",
            ))
    return problems


def _default_json_reader(path: Path) -> str | None:
    """None when ``path`` holds valid JSON (UTF-8), else why not."""
    try:
        with path.open("rb") as fh:
            json.load(fh)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    except UnicodeDecodeError:
        return f"{path} is not UTF-8 text, so not JSON"
    except json.JSONDecodeError as exc:
        return f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
    return None


def check_json_files(
    cases: Iterable[Case],
    algorithm: Algorithm,
    *,
    reader: Callable[[Path], str | None] = _default_json_reader,
) -> list[Problem]:
    """Files bound for JSON-file sockets must parse as JSON, or the job sticks forever.

    The platform leaves a job whose JSON file does not parse in "Validating inputs" with
    no end, holding one of the user's active-job slots; we never send such bytes. Each
    distinct path is read once.
    """
    sockets = algorithm.input_sockets()
    verdicts: dict[Path, str | None] = {}
    problems: list[Problem] = []
    for case in cases:
        for source in case.inputs:
            socket = sockets.get(source.socket)
            if socket is None or not is_json_file_socket(socket) or source.kind != "file":
                continue
            for path in source.paths:
                if path not in verdicts:
                    verdicts[path] = reader(path)
                message = verdicts[path]
                if message is not None:
                    problems.append(Problem(
                        case.id, source.socket,
                        f"{message}; the platform would leave the job in 'Validating inputs' "
                        "forever, holding one of your active-job slots",
                    ))
    return problems


def run_preflight(
    cases: Sequence[Case],
    algorithm: Algorithm | None,
    slug: str,
    *,
    items: Mapping[str, ArchiveItem] | None = None,
    json_reader: Callable[[Path], str | None] = _default_json_reader,
    all_cases: Sequence[Case] | None = None,
    locked: Mapping[str, CaseEntry] | None = None,
) -> None:
    """All checks; :class:`PreflightError` (exit 2) listing every problem, if any.

    ``all_cases``: see :func:`check_cases` (the per-case checks cover ``cases`` only).
    """
    known = require_algorithm(algorithm, slug)
    problems = check_cases(cases, known, items=items, all_cases=all_cases, locked=locked)
    problems += check_json_files(cases, known, reader=json_reader)
    if problems:
        raise PreflightError([p.render() for p in problems])


def require_algorithm(algorithm: Algorithm | None, slug: str) -> Algorithm:
    """``algorithm`` when it can run jobs at all; else :class:`PreflightError` (exit 2)."""
    problems = check_algorithm(algorithm, slug)
    if problems or algorithm is None:
        raise PreflightError([p.render() for p in problems])
    return algorithm


def blocked_cases(
    cases: Sequence[Case], algorithm: Algorithm, items: Mapping[str, ArchiveItem]
) -> dict[str, str]:
    """case id → every problem of that case, joined (what ``plan`` shows as ``! blocked``)."""
    problems = check_cases(cases, algorithm, items=items)
    problems += check_json_files(cases, algorithm)
    out: dict[str, list[str]] = {}
    for p in problems:
        out.setdefault(p.case, []).append(f"{p.socket}: {p.message}" if p.socket else p.message)
    return {case: "; ".join(msgs) for case, msgs in out.items()}
