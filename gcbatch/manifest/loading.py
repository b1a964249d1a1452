"""Reading a manifest file: bytes → YAML → schema → :class:`Manifest` values → semantics.

:func:`parse_manifest` returns what could be understood plus every finding (``validate``
uses it to go on and expand the good parts); :func:`load_manifest` raises
:class:`~gcbatch.errors.ManifestError` unless there are none. Both are plain functions of
the file: each call reads and parses it again. A command that needs the manifest more than
once loads it once and passes the value on.

The libyaml fast path: a manifest is first read with libyaml (when it may be, see
:func:`~gcbatch.manifest.yaml_reader.fast_yaml_ok`); if that gives any finding at all
(YAML, schema or semantics), the file is read again with PyYAML's pure-Python loader, whose
words and locations the findings then carry. So findings never depend on libyaml.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from gcbatch.errors import Finding, ManifestError
from gcbatch.manifest.model import (
    SOURCE_KINDS,
    CaseSpec,
    Foreach,
    ForeachKind,
    Manifest,
    SourceSpec,
)
from gcbatch.manifest.naming import JsonPath, human, json_type, path_of
from gcbatch.manifest.semantics import semantic_findings
from gcbatch.manifest.validation import schema_findings
from gcbatch.manifest.yaml_reader import Located, fast_yaml_ok, read_yaml
from gcbatch.perf import gc_paused


def parse_manifest(path: Path | str) -> tuple[Manifest | None, list[Finding]]:
    """Read and check a manifest; return what could be understood and every finding.

    The returned :class:`Manifest` holds only the parts without findings (so expansion can
    still check the rest); it is ``None`` when the file is not a YAML mapping at all.
    """
    display = os.fspath(path)
    absolute = Path(os.path.abspath(path))
    try:
        raw = absolute.read_bytes()
    except FileNotFoundError:
        return None, [Finding(display, "no such file")]
    except IsADirectoryError:
        return None, [Finding(display, "is a folder, not a manifest")]
    except OSError as exc:
        return None, [Finding(display, f"cannot read: {exc.strerror}")]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad_line = raw.count(b"\n", 0, exc.start) + 1
        bad_col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        return None, [Finding(display, "not UTF-8 text (save the manifest as UTF-8)",
                              bad_line, bad_col)]

    with gc_paused():  # millions of live objects: see gcbatch.perf
        parsed = None
        if fast_yaml_ok(text):
            parsed = _parse_text(text, display, absolute, fast=True)
            # findings: read again with PyYAML's own parser, whose words and locations
            # they are (libyaml is only trusted for documents without a single finding)
        if parsed is None or parsed[1]:
            parsed = _parse_text(text, display, absolute, fast=False)
    return parsed


def load_manifest(path: Path | str) -> Manifest:
    """The manifest at ``path``; :class:`ManifestError` carrying every finding otherwise."""
    manifest, findings = parse_manifest(path)
    if findings or manifest is None:
        raise ManifestError(findings)
    return manifest


def _parse_text(text: str, display: str, absolute: Path, *, fast: bool
                ) -> tuple[Manifest | None, list[Finding]]:
    doc, findings = read_yaml(text, display, fast=fast)
    if doc is None:
        return None, findings
    if not isinstance(doc.data, dict):
        findings.append(Finding(display, f"a manifest is a mapping (version, algorithm, "
                                f"cases, ...), not {json_type(doc.data)}", 1, 1))
        return None, findings
    # YAML-layer findings mark their subtrees unusable, like schema findings do
    bad: set[JsonPath] = {path_of(f) for f in findings}
    found_by_schema = schema_findings(doc, display)
    findings.extend(found_by_schema)
    bad |= {path_of(f) for f in found_by_schema}
    data = doc.data

    def good(p: JsonPath) -> bool:
        return _usable(p, bad) and _present(data, p)

    defaults = _inputs(data.get("defaults"), ("defaults",), doc) if good(("defaults",)) else ()
    defaults_ok = _usable(("defaults",), bad)
    cases: list[CaseSpec] = []
    raw_cases: list[Any] = data["cases"] if isinstance(data.get("cases"), list) else []
    for i, raw in enumerate(raw_cases):
        p: JsonPath = ("cases", i)
        if not good(p) or not isinstance(raw, dict):
            continue
        foreach = None
        if "foreach" in raw:
            kind: ForeachKind = "glob" if "glob" in raw["foreach"] else "archive"
            fline, fcol = doc.where((*p, "foreach", kind))
            pattern = raw["foreach"][kind]
            foreach = Foreach(kind, _slashes(pattern) if kind == "glob" else pattern,
                              fline, fcol)
        line, col = doc.where(p)
        id_line, id_col = doc.where((*p, "id"))
        cases.append(CaseSpec(i, raw["id"], _inputs(raw.get("inputs"), (*p, "inputs"), doc),
                              foreach, line, id_line, id_col, col))

    manifest = Manifest(
        path=absolute,
        display=display,
        version=1,
        algorithm=data["algorithm"] if good(("algorithm",)) else "",
        server=data["server"] if good(("server",)) else None,
        defaults=defaults,
        cases=tuple(cases),
    )
    semantic = semantic_findings(manifest, check_empty=defaults_ok)
    findings.extend(semantic)
    # keep only the parts without findings, so that expansion never meets a bad template
    broken = {path_of(f)[:2] for f in semantic}
    manifest = dataclasses.replace(
        manifest,
        defaults=() if ("defaults",) in broken else manifest.defaults,
        cases=tuple(c for c in manifest.cases if ("cases", c.index) not in broken),
    )
    findings.sort(key=lambda f: (f.line or 0, f.col or 0, f.message))
    return manifest, _dedupe(findings)


def _usable(path: JsonPath, bad: set[JsonPath]) -> bool:
    """No schema finding at or below ``path``."""
    n = len(path)
    return not any(b[:n] == path for b in bad)


def _present(data: Any, path: JsonPath) -> bool:
    for part in path:
        if isinstance(data, dict) and isinstance(part, str) and part in data:
            data = data[part]
            continue
        if isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
            continue
        return False
    return True


def _source(socket: str, spec: Any, path: JsonPath, doc: Located) -> SourceSpec:
    """One source mapping (already accepted by the schema: exactly one kind) as a value."""
    line, col = doc.where(path)
    where = human(path)
    if spec is None:
        return SourceSpec(socket, "none", line=line, col=col, where=where)
    kind = next(k for k in SOURCE_KINDS if k in spec)
    aline, acol = doc.where((*path, kind))
    if kind == "value":
        return SourceSpec(socket, kind, value=spec[kind], line=aline, col=acol, where=where)
    arg = spec[kind]
    args = tuple(arg) if isinstance(arg, list) else (arg,)
    if kind in ("json", "file", "files"):
        args = tuple(_slashes(a) for a in args)
    item_socket = spec.get("socket", socket) if kind == "archive_item" else None
    return SourceSpec(socket, kind, args=args, item_socket=item_socket, line=aline, col=acol,
                      where=where)


def _slashes(path: str) -> str:
    """A manifest path with ``\\`` read as ``/``: a manifest written on Windows
    (``scans\\p001.mha``) means the same on every system. (No glob syntax uses a
    backslash, so nothing else is lost.)"""
    return path.replace("\\", "/") if "\\" in path else path


def _inputs(data: Any, path: JsonPath, doc: Located) -> tuple[SourceSpec, ...]:
    if not isinstance(data, dict):
        return ()
    return tuple(_source(k, data[k], (*path, k), doc) for k in sorted(data))


def _dedupe(findings: list[Finding]) -> list[Finding]:
    """The first of findings with the same place and message (two layers, one problem)."""
    seen: set[tuple[Any, ...]] = set()
    out = []
    for f in findings:
        key = (f.line, f.col, f.message)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out
