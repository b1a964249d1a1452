"""Expansion: a :class:`~gcbatch.manifest.Manifest` → sorted, fingerprinted :class:`Case`s.

Explicit cases are taken as written (defaults overlaid); ``foreach`` generators make one
case per glob match (sorted) or per archive item. Archive generators need the server's
list of items: without ``archive_items`` they are returned as :attr:`Expansion.needs_server`
instead of cases. Generated ids are checked here (valid, not reserved, and not taken
twice), because only expansion knows them; ids that differ only in letter case are a
warning (:attr:`Expansion.warnings`): their result folders are one on macOS and Windows.
"""

from __future__ import annotations

import glob as globlib
import os
from collections.abc import Iterable, Mapping, Sequence

from gcbatch.errors import Finding, ManifestError
from gcbatch.hashing import Hasher
from gcbatch.manifest import CASE_ID_RE, CaseSpec, Manifest, render_template
from gcbatch.manifest.semantics import reserved_id_problem
from gcbatch.perf import gc_paused
from gcbatch.sources.expander import Expander
from gcbatch.sources.model import ArchiveItemLike, Case, Expansion, PendingGenerator
from gcbatch.sources.names import glob_placeholders
from gcbatch.sources.quick import QuickFingerprints


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
    ex = Expander(manifest, hasher)
    quick = QuickFingerprints(ex) if settled is not None else None
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
        if settled is not None and quick is not None:
            locked = settled.get(case_id)
            if locked is not None and quick.fingerprint(spec, values, archive) == locked:
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
                if (reserved := reserved_id_problem(case_id)) is not None:
                    ex.find(f"{where}.id: made from {match}: {reserved}", spec.id_line,
                            spec.id_col)
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
                if (reserved := reserved_id_problem(case_id)) is not None:
                    ex.find(f"{spec.where}.id: made from archive item {item.pk}: {reserved}",
                            spec.id_line, spec.id_col)
                    continue
                add(spec, case_id, values, origin, archive=slug)

    cases.sort(key=lambda c: c.id)
    settled_ids.sort()
    findings = tuple(sorted(ex.findings, key=lambda f: (f.line or 0, f.col or 0)))
    if findings and not collect:
        raise ManifestError(findings)
    return Expansion(tuple(cases), tuple(pending), findings, tuple(settled_ids),
                     warnings=_case_clashes(manifest, seen))


def _case_clashes(manifest: Manifest, seen: Mapping[str, tuple[str, int | None, bool]]
                  ) -> tuple[Finding, ...]:
    """A warning for each case id that differs from an earlier one only in letter case:
    on a case-insensitive file system (macOS, Windows) their result folders are one."""
    first: dict[str, str] = {}
    warnings = []
    for case_id in sorted(seen):
        folded = case_id.casefold()
        other = first.setdefault(folded, case_id)
        if other != case_id:
            origin, line, _ = seen[case_id]
            warnings.append(manifest.finding(
                f"case id {case_id!r} ({origin}) differs from {other!r} only in letter case; "
                "on macOS and Windows their result folders would be one, and downloads "
                "would mix", line, None))
    return tuple(warnings)


def _glob_matches(ex: Expander, spec: CaseSpec) -> Iterable[tuple[str, dict[str, str]]]:
    """A ``foreach: {glob: ...}`` generator's matches, sorted and ``/``-separated, as the
    glob gives them (relative to the manifest's folder unless the pattern is absolute),
    each with its placeholder values; no match at all is a finding."""
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
