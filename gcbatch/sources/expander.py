"""The sources and cases of one manifest, read from the file system.

:class:`Expander` turns a :class:`~gcbatch.manifest.SourceSpec` with its placeholders
filled in into a :class:`Source` (and a case's sources into a :class:`Case`): it runs the
source's globs, reads JSON files, checks that a ``.json`` file given as ``file`` parses, and
has file bytes digested by the hasher. Whatever it cannot find or read is a finding, never
an exception: a missing or unreadable file, and a JSON file that is not a regular file (a
FIFO would block the read, a device never end it), larger than :data:`JSON_VALUE_MAX`,
or nested deeper than :data:`~gcbatch.jsonvalues.MAX_DEPTH`.

Made for 100,000 cases per run: a source without placeholders (a default shared by every
case) is made once; each JSON file is read once; a JSON file unchanged since an earlier run
comes from the hasher's stat cache without being opened; ``Path`` objects share their
folder's.
"""

from __future__ import annotations

import glob as globlib
import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from gcbatch.errors import Finding
from gcbatch.hashing import Hasher
from gcbatch.jsonvalues import MAX_DEPTH, too_deep
from gcbatch.manifest import CaseSpec, Manifest, SourceSpec, render_template
from gcbatch.sources.fingerprints import (
    archive_item_digest,
    case_fingerprint,
    files_digest,
    image_digest,
    value_digest,
    value_text,
    value_text_digest,
)
from gcbatch.sources.model import Case, Source

#: JSON files given as ``file`` are checked to parse (a JSON *file* socket given bytes that
#: are not JSON hangs the job on the platform); larger ones are left to the server.
JSON_CHECK_LIMIT = 64 * 1024 * 1024
#: the largest ``{json:}`` value file: the value travels in the job POST, and the platform
#: takes request bodies of up to 16 MiB (its nginx ``client_max_body_size``)
JSON_VALUE_MAX = 16 * 1024 * 1024

#: os.path.isabs is "starts with /" here (100,000 relative paths per run skip the call)
_POSIX = os.name == "posix"


def fill(text: str, values: Mapping[str, str] | None, escape: bool = False) -> str:
    """A source argument with its placeholders filled (glob-escaped with ``escape``)."""
    if "{" not in text and "}" not in text:
        return text
    if values is None:
        return render_template(text, {})
    return render_template(text, values, globlib.escape if escape else None)


class Expander:
    """Sources and cases of one manifest; the findings they met, in :attr:`findings`."""

    def __init__(self, manifest: Manifest, hasher: Hasher | None) -> None:
        self.m = manifest
        self.base = manifest.base_dir
        self.hasher = hasher
        self.findings: list[Finding] = []
        self._json_cache: dict[str, Any] = {}
        #: JSON file → digest of its value, for each JSON file read (or cached) this run
        self.json_digests: dict[str, str] = {}
        # sources that are the same in every case (no placeholders): made once
        self._static: dict[int, Source | None] = {}
        self._base_prefix = os.path.join(str(self.base), "")
        self._effective: dict[int, tuple[SourceSpec, ...]] = {}
        self._json_stat: dict[str, os.stat_result] = {}
        self._folders: dict[str, Path] = {}
        self._is_static: dict[int, bool] = {}

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
        socket, kind = spec.socket, spec.kind
        if kind == "value":
            # one encoding for both: the summary's text and the digest's
            text = value_text(spec.value)
            return Source(socket, kind, value=spec.value, summary=f"value {_shorten(text)}",
                          digest=value_text_digest(text))
        if kind == "json":
            rel = fill(spec.args[0], values)
            full = self.absolute(rel)
            known = self.json_value(full, rel, spec)
            if known is None:
                return None
            value, digest = known
            return Source(socket, kind, value=value, paths=(self.path(full),),
                          summary=f"json {rel}", digest=digest)
        if kind == "file" or kind == "files":
            return self._file_source(spec, kind, values)
        if kind == "archive_item":
            pk = fill(spec.args[0], values)
            item_socket = spec.item_socket or socket
            return Source(socket, kind, archive=archive, item_pk=pk, item_socket=item_socket,
                          summary=f"archive item {pk} socket {item_socket}",
                          digest=archive_item_digest(pk, item_socket))
        if kind == "image":
            url = fill(spec.args[0], values)
            return Source(socket, kind, image_url=url, summary=f"image {url}",
                          digest=image_digest(url))
        raise AssertionError(kind)

    def _file_source(self, spec: SourceSpec, kind: Literal["file", "files"],
                     values: Mapping[str, str] | None) -> Source | None:
        """A ``file`` (exactly one regular file) or ``files`` (one or more) source."""
        paths: list[str] = []
        for arg in spec.args:
            pattern = fill(arg, values, escape=True)
            found = self.match_files(pattern)
            shown = fill(arg, values)
            if found is None:
                what = "no such file" if not globlib.has_magic(pattern) else \
                    "the glob matches nothing"
                self.find(f"{spec.where}: {shown}: {what}", spec.line, spec.col)
                return None
            if not found:
                self.find(f"{spec.where}: {shown}: matches only folders, no files",
                          spec.line, spec.col)
                return None
            if kind == "file" and len(found) > 1:
                self.find(f"{spec.where}: {shown}: matches {len(found)} files; `file` takes "
                          "exactly one (use `files` for several)", spec.line, spec.col)
                return None
            paths.extend(found)
        unique = sorted(set(paths))
        if (kind == "file" and unique[0].lower().endswith(".json")
                and not self.check_json_file(unique[0], spec)):
            return None
        if not self.check_mhd_pairs(unique, spec, kind):
            return None
        as_paths = tuple(self.path(p) for p in unique)
        digest = ""
        if self.hasher is not None:
            digests = []
            for p in as_paths:
                try:
                    digests.append(self.hasher.digest(p))
                except OSError as exc:  # unreadable (permissions, I/O error), or gone
                    self.find(f"{spec.where}: {self.rel(str(p))}: cannot read: "
                              f"{exc.strerror or exc}", spec.line, spec.col)
                    return None
            digest = files_digest(digests)
        if kind == "file":
            summary = f"file {self.rel(unique[0])}"
        else:
            n = len(unique)
            summary = f"files {', '.join(fill(a, values) for a in spec.args)} ({n} file" + \
                ("s)" if n != 1 else ")")
        return Source(spec.socket, kind, paths=as_paths, summary=summary, digest=digest)

    def json_value(self, full: str, rel: str, spec: SourceSpec) -> tuple[Any, str] | None:
        """(value, digest of ``{"value": value}``) of a JSON file, None when it is missing
        or broken (a finding). Each file once per run; with a :class:`FileHasher`, a file
        unchanged since an earlier run comes from its stat cache without being opened."""
        if full in self._json_cache:
            value = self._json_cache[full]
            return None if value is _MISSING else (value, self.json_digests[full])
        lookup = getattr(self.hasher, "cached_json", None)
        known: tuple[Any, str] | None = None if lookup is None else lookup(full)
        if known is not None:
            self._json_cache[full], self.json_digests[full] = known
            return known
        value = self.read_json(rel, spec)
        if value is _MISSING:
            return None
        digest = self.json_digests[full] = value_digest(value)
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
        except _Unusable as exc:
            self.find(f"{spec.where}: {rel}: {exc}", spec.line, spec.col)
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
        except RecursionError:
            self.find(f"{spec.where}: {self.rel(path)}: a .json file nested too deeply to "
                      "be read", spec.line, spec.col)
            return False
        except OSError:
            return True  # the stat/glob above found it; let hashing report real I/O errors
        return True

    def check_mhd_pairs(self, paths: list[str], spec: SourceSpec, kind: str) -> bool:
        """Every ``.mhd`` header among a source's files is sent with the data file it
        names (``ElementDataFile = vol.raw``, beside it): without it the platform cannot
        import the image and the job ends Cancelled (its credits spent)."""
        ok = True
        sent = set(paths)
        for path in paths:
            data = mhd_data_file(path)
            if data is None:
                continue
            target = os.path.normpath(os.path.join(os.path.dirname(path), data))
            if target in sent:
                continue
            ok = False
            header = self.rel(path)
            if not os.path.isfile(target):
                why = "which does not exist beside it"
            elif kind == "file":
                why = (f"which `file` cannot send with it: use `files: [{header}, "
                       f"{self.rel(target)}]`")
            else:
                why = f"which this source does not send: add {self.rel(target)} to its files"
            self.find(f"{spec.where}: {header} names its data file {data} (ElementDataFile), "
                      f"{why}; without it the platform cannot import the image",
                      spec.line, spec.col)
        return ok

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


class _Unusable(Exception):
    """A JSON value file that is no regular file, too large or nested too deeply."""


_MHD_DATA_FILE = re.compile(rb"^\s*ElementDataFile\s*=\s*(.*?)\s*$")


def mhd_data_file(path: str | os.PathLike[str]) -> str | None:
    """The data file a MetaImage ``.mhd`` header names (``ElementDataFile = vol.raw``),
    a bare name beside the header; None for any other file, for data inside the header
    (``LOCAL``) or in a list of files (``LIST``), or a header that cannot be read."""
    if not os.fspath(path).lower().endswith(".mhd"):
        return None
    try:
        with open(path, "rb") as handle:
            head = handle.read(8192)
    except OSError:
        return None
    for line in head.splitlines():
        match = _MHD_DATA_FILE.match(line)
        if match:
            name = match.group(1).decode("utf-8", "replace")
            return None if name in ("LOCAL", "LIST") or "/" in name or not name else name
    return None


def _load_json_file(path: str) -> Any:
    """``json.load(open(path, encoding="utf-8"))``, the same value and errors, faster: one
    binary read and a decode instead of a text stream (100,000 small files per run).

    Only a regular file is read (opened without blocking, so a FIFO is refused instead of
    waited on), at most :data:`JSON_VALUE_MAX` bytes of it, and its value may nest at
    most ``MAX_DEPTH`` levels: :class:`_Unusable` otherwise."""
    fd = os.open(path, os.O_RDONLY | _NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Unusable("not a regular file (a FIFO, a socket or a device?)")
        # plain os.read, no buffered file object (100,000 small files: a third of the
        # time); one byte more than the file holds shows a file that grew past the limit
        want = min(st.st_size, JSON_VALUE_MAX) + 1
        parts: list[bytes] = []
        got = 0
        while got < want:
            chunk = os.read(fd, want - got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
    finally:
        os.close(fd)
    data = parts[0] if len(parts) == 1 else b"".join(parts)
    if len(data) > JSON_VALUE_MAX:
        raise _Unusable(f"larger than {JSON_VALUE_MAX // (1024 * 1024)} MiB, more than a "
                        "job's request may carry")
    text = data.decode("utf-8")
    if "\r" in text:  # what text mode's universal newlines would have made of it
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    try:
        value = json.loads(text)
    except RecursionError:
        value = _TOO_DEEP
    if value is _TOO_DEEP or (isinstance(value, (list, dict)) and too_deep(value)):
        raise _Unusable(f"nested more than {MAX_DEPTH} levels deep")
    return value


_TOO_DEEP = object()
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


class _Missing:
    """The value of a JSON file that could not be read (it has its finding)."""


_MISSING: Any = _Missing()


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
