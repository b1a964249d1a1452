"""Expansion: a :class:`~gcbatch.manifest.Manifest` → sorted, fingerprinted :class:`Case`s.

Explicit cases are taken as written (defaults overlaid); ``foreach`` generators make one
case per glob match (sorted) or per archive item. Archive generators need the server's
list of items: without ``archive_items`` they are returned as :attr:`Expansion.needs_server`
instead of cases.

Fingerprints (see the design notes): a case's fingerprint is the sha256 of the canonical
JSON ``{"algorithm": slug, "inputs": [[socket, digest], ...]}``; each source's ``digest`` is
the sha256 of a canonical JSON describing its content:

- ``value`` and ``json``: ``{"value": <the value>}``. A value moved from the manifest to a
  JSON file (or back) is the same input, because the job gets the same value.
- ``file`` and ``files``: ``{"files": [<sha256 of each file's bytes>, sorted]}``; names
  do not count (renaming a scan does not change what the algorithm sees), and ``file: x``
  equals ``files: x``.
- ``archive_item``: ``{"archive_item": pk, "socket": item socket}``.
- ``image``: ``{"image": url}``.

File bytes are hashed by a :class:`gcbatch.hashing.Hasher` (streamed, stat-cached). With
``hasher=None`` nothing is read except JSON files: digests and fingerprints are empty
strings, which is what ``validate`` wants (instant, whatever the data size).

File-system checks (a glob matching nothing, a JSON file missing or invalid, a generated
id that is invalid or taken twice) are findings, all collected; :func:`expand` raises
:class:`~gcbatch.errors.ManifestError` with all of them unless ``collect=True``.
"""

from __future__ import annotations

import glob as globlib
import json
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

from gcbatch.errors import Finding, ManifestError
from gcbatch.hashing import Hasher, canonical_json, sha256_text
from gcbatch.manifest import (
    CASE_ID_RE,
    CaseSpec,
    Manifest,
    SourceSpec,
    render_template,
)
from gcbatch.perf import gc_paused

#: JSON files given as ``file`` are checked to parse (a JSON *file* socket given bytes that
#: are not JSON hangs the job on the platform); larger ones are left to the server.
JSON_CHECK_LIMIT = 64 * 1024 * 1024

_COMPRESSED = (".gz", ".bz2", ".xz", ".zst")
#: os.path.isabs is "starts with /" here (100,000 relative paths per run skip the call)
_POSIX = os.name == "posix"


@dataclass(frozen=True)
class Source:
    """One socket's input in one case (see docs/architecture.md)."""

    socket: str
    kind: str  # "value" | "json" | "file" | "files" | "archive_item" | "image"
    value: Any = field(default=None, hash=False)  # value/json: the parsed JSON value
    paths: tuple[Path, ...] = ()  # file/files: absolute paths, sorted
    archive: str | None = None  # archive_item: archive slug (if known)
    item_pk: str | None = None
    item_socket: str | None = None
    image_url: str | None = None
    summary: str = ""
    digest: str = ""


@dataclass(frozen=True)
class Case:
    id: str
    inputs: tuple[Source, ...]  # sorted by socket slug
    fingerprint: str
    #: where the case comes from, for messages: "cases[0]" or "cases[2]: scans/a.mha"
    origin: str = ""
    line: int | None = None  # the manifest line of its case/generator

    @property
    def sockets(self) -> tuple[str, ...]:
        return tuple(s.socket for s in self.inputs)

    def digests(self) -> dict[str, str]:
        """socket → digest (what the lockfile records per job)."""
        return {s.socket: s.digest for s in self.inputs}


@dataclass(frozen=True)
class PendingGenerator:
    """A ``foreach: {archive: ...}`` that could not be expanded without the server."""

    index: int
    archive: str
    id_template: str
    line: int | None = None

    @property
    def summary(self) -> str:
        return f"cases[{self.index}]: one case per item of archive {self.archive!r}"


@dataclass(frozen=True)
class Expansion:
    cases: tuple[Case, ...]  # sorted by id
    needs_server: tuple[PendingGenerator, ...] = ()
    findings: tuple[Finding, ...] = ()
    #: ids of the cases found settled (see ``expand``'s ``settled``), sorted; no Case built
    settled: tuple[str, ...] = ()

    @property
    def case_ids(self) -> list[str]:
        """Every case's id: built and settled ones."""
        return [c.id for c in self.cases] + list(self.settled)

    def by_id(self) -> dict[str, Case]:
        return {c.id: c for c in self.cases}


class ArchiveItemLike(Protocol):
    """What expansion needs of an archive item (``gcbatch.models.ArchiveItem`` fits)."""

    @property
    def pk(self) -> str: ...

    @property
    def title(self) -> str: ...


# --------------------------------------------------------------------------- helpers


def split_name(name: str) -> tuple[str, str]:
    """``("p001", ".nii.gz")`` for ``p001.nii.gz``; ``("p001", ".mha")``; ``("README", "")``."""
    if name.lower().endswith(_COMPRESSED):
        lower = name.lower()
        for comp in _COMPRESSED:
            if lower.endswith(comp) and len(name) > len(comp):
                inner, inner_ext = os.path.splitext(name[: -len(comp)])
                return (inner, inner_ext + name[-len(comp):]) if inner else (name, "")
    if "/" in name:
        return os.path.splitext(name)
    # os.path.splitext of a bare name, in str methods (100,000 glob matches per run): the
    # last dot starts the extension unless only dots come before it (".bashrc")
    dot = name.rfind(".")
    if dot > 0 and name[:dot].lstrip("."):
        return name[:dot], name[dot:]
    return name, ""


def glob_placeholders(match: str) -> dict[str, str]:
    """The placeholder values for one glob match (a path as the glob returned it)."""
    trimmed = match.rstrip("/") or match
    if "//" not in trimmed and not trimmed.startswith("/"):
        # the common case, as os.path would split it (no doubled or leading slash), in
        # str methods: 100,000 matches per run
        directory, _, name = trimmed.rpartition("/")
        stem, ext = split_name(name)
        return {"path": trimmed, "name": name, "stem": stem, "ext": ext,
                "parent": directory.rpartition("/")[2], "dir": directory or "."}
    name = os.path.basename(trimmed)
    stem, ext = split_name(name)
    directory = os.path.dirname(trimmed)
    return {"path": trimmed, "name": name, "stem": stem, "ext": ext,
            "parent": os.path.basename(directory), "dir": directory or "."}


def _value_digest(value: Any) -> str:
    return sha256_text(canonical_json({"value": value}))


def case_fingerprint(algorithm: str, sources: Sequence[Source]) -> str:
    """sha256 of ``canonical_json({"algorithm": slug, "inputs": [[socket, digest], ...]})``,
    the text written out directly (the same bytes: "algorithm" sorts before "inputs")."""
    return fingerprint_of(algorithm, [(s.socket, s.digest) for s in sources])


def fingerprint_of(algorithm: str, pairs: Sequence[tuple[str, str]]) -> str:
    """:func:`case_fingerprint` of (socket, digest) pairs sorted by socket."""
    quote = _json_string  # canonical_json of a str
    text = ('{"algorithm":' + quote(algorithm) + ',"inputs":['
            + ",".join(["[" + quote(socket) + "," + quote(digest) + "]"
                        for socket, digest in pairs])
            + "]}")
    return sha256_text(text)


def _files_digest(file_digests: Iterable[str]) -> str:
    return sha256_text(canonical_json({"files": sorted(file_digests)}))


def _archive_item_digest(pk: str, item_socket: str) -> str:
    return sha256_text(canonical_json({"archive_item": pk, "socket": item_socket}))


def _image_digest(url: str) -> str:
    return sha256_text(canonical_json({"image": url}))


def _fill(text: str, values: Mapping[str, str] | None, escape: bool = False) -> str:
    """A source argument with its placeholders filled (glob-escaped with ``escape``)."""
    if "{" not in text and "}" not in text:
        return text
    if values is None:
        return render_template(text, {})
    return render_template(text, values, globlib.escape if escape else None)


#: what canonical_json gives for a str (ensure_ascii=False): the C string encoder itself
_json_string: Any = json.encoder.encode_basestring


class _Expander:
    def __init__(self, manifest: Manifest, hasher: Hasher | None) -> None:
        self.m = manifest
        self.base = manifest.base_dir
        self.hasher = hasher
        self.findings: list[Finding] = []
        self._json_cache: dict[str, Any] = {}
        self._digest_cache: dict[str, str] = {}  # json file → digest of its value
        # sources that are the same in every case (no placeholders): made once
        self._static: dict[int, Source | None] = {}
        self._base_prefix = os.path.join(str(self.base), "")
        self._effective: dict[int, tuple[SourceSpec, ...]] = {}
        self._json_stat: dict[str, os.stat_result] = {}
        self._folders: dict[str, Path] = {}
        self._is_static: dict[int, bool] = {}
        #: per case spec: see :meth:`_recipe`
        self._recipes: dict[int, list[tuple[str, str | None, SourceSpec, Any]]] = {}
        self._cached_json_digest = getattr(hasher, "cached_json_digest", None)
        self._cached_digest = getattr(hasher, "cached_digest", None)

    def find(self, message: str, line: int | None, col: int | None) -> None:
        self.findings.append(self.m.finding(message, line, col))

    # --- file system -------------------------------------------------------------

    def absolute(self, text: str) -> str:
        # os.path.join(base, text) for a relative text, without its per-call overhead
        if text.startswith("/") or (not _POSIX and os.path.isabs(text)):
            return text
        return self._base_prefix + text

    def match_files(self, pattern: str) -> list[str] | None:
        """Regular files matching ``pattern`` (absolute, sorted); None when nothing matched
        at all, [] when only folders did."""
        full = self.absolute(pattern)
        if not globlib.has_magic(full):
            try:
                st = os.stat(full)
            except OSError:
                return None
            return [os.path.normpath(full)] if stat.S_ISREG(st.st_mode) else []
        matches = globlib.glob(full, recursive=True)
        if not matches:
            return None
        return sorted(os.path.normpath(p) for p in matches if os.path.isfile(p))

    def rel(self, path: str) -> str:
        """A path for messages: relative to the manifest's folder when inside it."""
        if path.startswith(self._base_prefix):
            return path[len(self._base_prefix):].replace(os.sep, "/")
        return path

    # --- sources -----------------------------------------------------------------

    def source(self, spec: SourceSpec, values: Mapping[str, str] | None,
               archive: str | None) -> Source | None:
        """The source for one case; a source without placeholders is made only once (a
        default given to 100,000 cases is read and digested once)."""
        if not self.is_static(spec):
            return self._make_source(spec, values, archive)
        key = id(spec)
        if key not in self._static:
            self._static[key] = self._make_source(spec, values, archive)
            if self._static[key] is None:
                return None
        made = self._static[key]
        if made is None:
            return None
        if made.kind == "archive_item" and made.archive != archive:
            return replace(made, archive=archive)
        return made

    def is_static(self, spec: SourceSpec) -> bool:
        """No placeholders: the same source in every case."""
        static = self._is_static.get(id(spec))
        if static is None:
            static = self._is_static[id(spec)] = spec.kind == "value" or not any(
                "{" in a or "}" in a for a in spec.args)
        return static

    def _make_source(self, spec: SourceSpec, values: Mapping[str, str] | None,
                     archive: str | None) -> Source | None:
        def fill(text: str, escape: bool = False) -> str:
            return _fill(text, values, escape)

        socket, kind, where = spec.socket, spec.kind, spec.where
        if kind == "value":
            # one encoding for both: {"value": v} canonically is '{"value":' + text + '}'
            text = _value_text(spec.value)
            return Source(socket, kind, value=spec.value, summary=f"value {_shorten(text)}",
                          digest=sha256_text('{"value":' + text + "}"))
        if kind == "json":
            rel = fill(spec.args[0])
            full = self.absolute(rel)
            known = self.json_value(full, rel, spec)
            if known is None:
                return None
            value, digest = known
            return Source(socket, kind, value=value, paths=(self.path(full),),
                          summary=f"json {rel}", digest=digest)
        if kind in ("file", "files"):
            paths: list[str] = []
            for arg in spec.args:
                pattern = fill(arg, escape=True)
                found = self.match_files(pattern)
                shown = fill(arg)
                if found is None:
                    what = "no such file" if not globlib.has_magic(pattern) else \
                        "the glob matches nothing"
                    self.find(f"{where}: {shown}: {what}", spec.line, spec.col)
                    return None
                if not found:
                    self.find(f"{where}: {shown}: matches only folders, no files",
                              spec.line, spec.col)
                    return None
                if kind == "file" and len(found) > 1:
                    self.find(f"{where}: {shown}: matches {len(found)} files; `file` takes "
                              "exactly one (use `files` for several)", spec.line, spec.col)
                    return None
                paths.extend(found)
            unique = sorted(set(paths))
            if (kind == "file" and unique[0].lower().endswith(".json")
                    and not self.check_json_file(unique[0], spec)):
                return None
            as_paths = tuple(self.path(p) for p in unique)
            digest = ""
            if self.hasher is not None:
                hasher = self.hasher
                digest = _files_digest(hasher.digest(p) for p in as_paths)
            if kind == "file":
                summary = f"file {self.rel(unique[0])}"
            else:
                n = len(unique)
                summary = f"files {', '.join(fill(a) for a in spec.args)} ({n} file" + \
                    ("s)" if n != 1 else ")")
            return Source(socket, kind, paths=as_paths, summary=summary, digest=digest)
        if kind == "archive_item":
            pk = fill(spec.args[0])
            item_socket = spec.item_socket or socket
            return Source(socket, kind, archive=archive, item_pk=pk, item_socket=item_socket,
                          summary=f"archive item {pk} socket {item_socket}",
                          digest=_archive_item_digest(pk, item_socket))
        if kind == "image":
            url = fill(spec.args[0])
            return Source(socket, kind, image_url=url, summary=f"image {url}",
                          digest=_image_digest(url))
        raise AssertionError(kind)

    def json_value(self, full: str, rel: str, spec: SourceSpec) -> tuple[Any, str] | None:
        """(value, digest of ``{"value": value}``) of a JSON file, None when it is missing
        or broken (a finding). Each file once per run; with a :class:`FileHasher`, a file
        unchanged since an earlier run comes from its stat cache without being opened."""
        if full in self._json_cache:
            value = self._json_cache[full]
            return None if value is _MISSING else (value, self._digest_cache[full])
        lookup = getattr(self.hasher, "cached_json", None)
        known: tuple[Any, str] | None = None if lookup is None else lookup(full)
        if known is not None:
            self._json_cache[full], self._digest_cache[full] = known
            return known
        value = self.read_json(rel, spec)
        if value is _MISSING:
            return None
        digest = self._digest_cache[full] = _value_digest(value)
        remember = getattr(self.hasher, "remember_json", None)
        st = self._json_stat.pop(full, None)
        if remember is not None and st is not None:
            remember(full, st, value, digest)
        return value, digest

    def read_json(self, rel: str, spec: SourceSpec) -> Any:
        full = self.absolute(rel)
        if full in self._json_cache:
            return self._json_cache[full]
        try:
            if self.hasher is not None and hasattr(self.hasher, "remember_json"):
                # stat BEFORE reading: a change after it is caught by the next run's stat
                self._json_stat[full] = os.stat(full)
            value = _load_json_file(full)
        except FileNotFoundError:
            self.find(f"{spec.where}: {rel}: no such file", spec.line, spec.col)
            value = _MISSING
        except IsADirectoryError:
            self.find(f"{spec.where}: {rel}: is a folder, not a JSON file", spec.line, spec.col)
            value = _MISSING
        except UnicodeDecodeError:
            self.find(f"{spec.where}: {rel}: not UTF-8 text", spec.line, spec.col)
            value = _MISSING
        except json.JSONDecodeError as exc:
            self.find(f"{spec.where}: {rel}: not valid JSON (line {exc.lineno}, column "
                      f"{exc.colno}: {exc.msg})", spec.line, spec.col)
            value = _MISSING
        except OSError as exc:
            self.find(f"{spec.where}: {rel}: cannot read: {exc.strerror}", spec.line, spec.col)
            value = _MISSING
        self._json_cache[full] = value
        return value

    def check_json_file(self, path: str, spec: SourceSpec) -> bool:
        try:
            if os.path.getsize(path) > JSON_CHECK_LIMIT:
                return True
            with open(path, encoding="utf-8") as fh:
                json.load(fh)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self.find(f"{spec.where}: {self.rel(path)}: a .json file that is not valid JSON "
                      f"({exc})", spec.line, spec.col)
            return False
        except OSError:
            return True  # the stat/glob above found it; let hashing report real I/O errors
        return True

    # --- locked cases --------------------------------------------------------------

    def quick_fingerprint(self, spec: CaseSpec, values: Mapping[str, str] | None,
                          archive: str | None = None) -> str | None:
        """The fingerprint :meth:`case` would give, from cached digests alone; None when
        that needs the full work (a file not in the hash cache, a glob to run, a JSON file
        to check). It builds no :class:`Source`: for a case already locked, only whether
        its fingerprint is the locked one matters, and that is most of a re-apply."""
        recipe = self._recipes.get(spec.index)
        if recipe is None:
            recipe = self._recipes[spec.index] = self._recipe(spec, values, archive)
        pairs: list[tuple[str, str]] = []
        for socket, digest, src, quick in recipe:
            if digest is None:
                digest = quick(src, values, archive)
                if digest is None:
                    return None
            pairs.append((socket, digest))
        return fingerprint_of(self.m.algorithm, pairs)

    def _recipe(self, spec: CaseSpec, values: Mapping[str, str] | None, archive: str | None
                ) -> list[tuple[str, str | None, SourceSpec, Any]]:
        """Per source of a case spec: (socket, its digest if it has no placeholders, the
        spec, the function that digests it per case). Made once per case spec."""
        recipe: list[tuple[str, str | None, SourceSpec, Any]] = []
        for src in self.effective(spec):
            if self.is_static(src):
                made = self.source(src, values, archive)  # made once per run, then shared
                # (None: a finding, which only the full expansion reports)
                recipe.append((src.socket, None if made is None else made.digest, src,
                               self._quick_none))
            else:
                quick = self._QUICK.get(src.kind, _Expander._quick_none)
                recipe.append((src.socket, None, src, quick.__get__(self)))
        return recipe

    def _quick_none(self, spec: SourceSpec, values: Mapping[str, str] | None,
                    archive: str | None) -> str | None:
        return None  # files: globs to run; a static source with a finding

    def _quick_json(self, spec: SourceSpec, values: Mapping[str, str] | None,
                    archive: str | None) -> str | None:
        full = self.absolute(_fill(spec.args[0], values))
        known = self._digest_cache.get(full)  # read in full earlier in this run
        if known is not None:
            return known
        lookup = self._cached_json_digest
        return None if lookup is None else lookup(full)

    def _quick_file(self, spec: SourceSpec, values: Mapping[str, str] | None,
                    archive: str | None) -> str | None:
        pattern = _fill(spec.args[0], values, escape=True)
        if len(spec.args) != 1 or globlib.has_magic(pattern) or self._cached_digest is None:
            return None
        full = self.absolute(pattern)
        if (full != os.path.normpath(full) or full.startswith("//")
                or full.lower().endswith(".json")):
            return None  # paths the full work spells out; a JSON file gets checked
        digest = self._cached_digest(full)
        return None if digest is None else _files_digest([digest])

    def _quick_archive_item(self, spec: SourceSpec, values: Mapping[str, str] | None,
                            archive: str | None) -> str | None:
        return _archive_item_digest(_fill(spec.args[0], values),
                                    spec.item_socket or spec.socket)

    def _quick_image(self, spec: SourceSpec, values: Mapping[str, str] | None,
                     archive: str | None) -> str | None:
        return _image_digest(_fill(spec.args[0], values))

    #: how a source with placeholders is digested from caches alone, by kind (``files``:
    #: never, it has globs to run)
    _QUICK: ClassVar[dict[str, Any]] = {
        "json": _quick_json, "file": _quick_file, "archive_item": _quick_archive_item,
        "image": _quick_image,
    }

    # --- cases -------------------------------------------------------------------

    def effective(self, spec: CaseSpec) -> tuple[SourceSpec, ...]:
        """The case's sources with the defaults overlaid (once per case spec)."""
        effective = self._effective.get(spec.index)
        if effective is None:  # the same for every case a generator makes
            effective = self._effective[spec.index] = spec.effective_inputs(self.m.defaults)
        return effective

    def case(self, spec: CaseSpec, case_id: str, values: Mapping[str, str] | None,
             origin: str, archive: str | None = None) -> Case | None:
        sources: list[Source] = []
        ok = True
        for src in self.effective(spec):
            made = self.source(src, values, archive)
            if made is None:
                ok = False
            else:
                sources.append(made)
        if not ok:
            return None
        fingerprint = ""
        if self.hasher is not None:
            fingerprint = case_fingerprint(self.m.algorithm, sources)
        return Case(case_id, tuple(sources), fingerprint, origin, spec.line)

    def path(self, full: str) -> Path:
        """``Path(full)``, made as ``<folder Path> / name`` with the folder's Path made once
        (parsing a whole path per file is most of the cost of 100,000 Paths)."""
        folder, sep, name = full.rpartition("/")
        if not sep or not folder or "//" in full:  # ("//x" is a root of its own in POSIX)
            return Path(full)
        parent = self._folders.get(folder)
        if parent is None:
            parent = self._folders[folder] = Path(folder)
        return parent / name


def _load_json_file(path: str) -> Any:
    """``json.load(open(path, encoding="utf-8"))``, the same value and errors, faster: one
    binary read and a decode instead of a text stream (100,000 small files per run)."""
    with open(path, "rb") as fh:
        data = fh.read()
    text = data.decode("utf-8")
    if "\r" in text:  # what text mode's universal newlines would have made of it
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return json.loads(text)


class _Missing:
    pass


_MISSING: Any = _Missing()


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _value_text(value: Any) -> str:
    """canonical_json(value); a NaN (never from YAML, which refuses it) raises ValueError
    like :func:`_value_digest` did."""
    return canonical_json(value)


def expand(
    manifest: Manifest,
    archive_items: Mapping[str, Sequence[ArchiveItemLike]] | None = None,
    hasher: Hasher | None = None,
    *,
    collect: bool = False,
    settled: Mapping[str, str] | None = None,
) -> Expansion:
    """Expand ``manifest`` into cases sorted by id.

    ``archive_items`` maps an archive slug to its items (from the server); generators over
    an archive not in it are returned in :attr:`Expansion.needs_server`. ``hasher`` hashes
    file contents for fingerprints (None: no fingerprints, nothing read but JSON files).
    Findings raise :class:`ManifestError` (all of them) unless ``collect``.

    ``settled`` (case id → fingerprint) names cases whose job stays as long as their
    fingerprint is that one (``apply`` passes its lockfile's). A case whose fingerprint,
    computed from cached digests alone, is the settled one is listed in
    :attr:`Expansion.settled` instead of being built: re-applying a locked 100,000-case
    study costs a stat per input file, not a full expansion. Anything the quick way cannot
    tell (an uncached file, a glob inside a source) is expanded in full, so the answer is
    always the full expansion's.
    """
    with gc_paused():  # 100,000s of live objects: see gcbatch.perf
        return _expand(manifest, archive_items, hasher, collect=collect,
                       settled=settled if hasher is not None else None)


def _expand(
    manifest: Manifest,
    archive_items: Mapping[str, Sequence[ArchiveItemLike]] | None,
    hasher: Hasher | None,
    *,
    collect: bool,
    settled: Mapping[str, str] | None = None,
) -> Expansion:
    ex = _Expander(manifest, hasher)
    cases: list[Case] = []
    settled_ids: list[str] = []
    pending: list[PendingGenerator] = []
    # id → (origin, line) of the first case with that id
    seen: dict[str, tuple[str, int | None, bool]] = {}

    def first_use(case_id: str, spec: CaseSpec, origin: str) -> bool:
        if case_id in seen:
            first, line, explicit = seen[case_id]
            if explicit and spec.foreach is None:
                return False  # two explicit cases: load_manifest reported it already
            ex.find(f"{spec.where}.id: case id {case_id!r} ({origin}) is already used by "
                    f"{first} (line {line})", spec.id_line, spec.id_col)
            return False
        seen[case_id] = (origin, spec.line, spec.foreach is None)
        return True

    def add(spec: CaseSpec, case_id: str, values: Mapping[str, str] | None, origin: str,
            archive: str | None = None) -> None:
        if settled is not None:
            locked = settled.get(case_id)
            if locked is not None and ex.quick_fingerprint(spec, values, archive) == locked:
                if first_use(case_id, spec, origin):
                    settled_ids.append(case_id)
                return
        case = ex.case(spec, case_id, values, origin, archive)
        if case is not None and first_use(case_id, spec, origin):
            cases.append(case)

    for spec in manifest.cases:
        if spec.foreach is None:
            add(spec, spec.id, None, spec.where)
        elif spec.foreach.kind == "glob":
            where, id_template, valid_id = spec.where, spec.id, CASE_ID_RE.match
            for match, values in _glob_matches(ex, spec):
                case_id = render_template(id_template, values)
                origin = where + ": " + match
                if not valid_id(case_id):
                    ex.find(f"{where}.id: {case_id!r} made from {match} is not a valid "
                            "case id (1-128 letters, digits, '.', '_' or '-', starting with a "
                            "letter or digit)", spec.id_line, spec.id_col)
                    continue
                add(spec, case_id, values, origin)
        else:
            slug = spec.foreach.pattern
            items = None if archive_items is None else archive_items.get(slug)
            if items is None:
                pending.append(PendingGenerator(spec.index, slug, spec.id, spec.line))
                continue
            for item in sorted(items, key=lambda it: str(it.pk)):
                values = {"item.pk": str(item.pk), "item.title": str(item.title or "")}
                case_id = render_template(spec.id, values)
                origin = f"{spec.where}: archive {slug} item {item.pk}"
                if not CASE_ID_RE.match(case_id):
                    ex.find(f"{spec.where}.id: {case_id!r} made from archive item {item.pk} "
                            "is not a valid case id (1-128 letters, digits, '.', '_' or '-', "
                            "starting with a letter or digit)", spec.id_line, spec.id_col)
                    continue
                add(spec, case_id, values, origin, archive=slug)

    cases.sort(key=lambda c: c.id)
    settled_ids.sort()
    findings = tuple(sorted(ex.findings, key=lambda f: (f.line or 0, f.col or 0)))
    if findings and not collect:
        raise ManifestError(findings)
    return Expansion(tuple(cases), tuple(pending), findings, tuple(settled_ids))


def _glob_matches(ex: _Expander, spec: CaseSpec) -> Iterable[tuple[str, dict[str, str]]]:
    assert spec.foreach is not None
    pattern = spec.foreach.pattern
    absolute = os.path.isabs(pattern)
    if absolute:
        matches = globlib.glob(pattern, recursive=True)
    else:
        matches = globlib.glob(pattern, root_dir=ex.base, recursive=True)
    if not matches:
        ex.find(f"{spec.where}.foreach.glob: {pattern}: the glob matches nothing",
                spec.foreach.line, spec.foreach.col)
        return []
    matches = sorted(m.replace(os.sep, "/") for m in matches)
    # one placeholder dict at a time: 100,000 of them alive at once cost ~50 MB
    return ((m, glob_placeholders(m)) for m in matches)
