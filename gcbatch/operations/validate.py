"""``gcbatch validate``: every problem of every manifest, offline and at once.

Checks the YAML (safe: no tags beyond plain YAML), the schema, the semantics (placeholders,
duplicate ids, empty cases) and the file system (globs that match nothing, JSON files that
are missing or invalid, generated ids). File contents are not hashed, so it is instant on
any data size.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gcbatch.errors import Finding
from gcbatch.manifest import parse_manifest
from gcbatch.sources import expand

__all__ = ["Checked", "ValidateResult", "check_manifest", "looks_like_manifest", "validate"]

_MODELINE = re.compile(r"manifest\.schema\.json")
_TOP_KEYS = (re.compile(r"^algorithm\s*:", re.M), re.compile(r"^cases\s*:", re.M))


@dataclass(frozen=True)
class Checked:
    """One manifest's findings (sorted by place), and what it holds when valid."""

    path: Path
    findings: tuple[Finding, ...]
    #: "3 cases", "2 cases + 1 archive generator, expanded online"; "" when unreadable
    summary: str
    #: not problems, but worth saying (case ids that differ only in letter case)
    warnings: tuple[Finding, ...] = ()


@dataclass(frozen=True)
class ValidateResult:
    checked: tuple[Checked, ...]

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(f for c in self.checked for f in c.findings)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(w for c in self.checked for w in c.warnings)

    @property
    def invalid(self) -> int:
        return sum(1 for c in self.checked if c.findings)


def check_manifest(path: Path) -> Checked:
    """All findings for one manifest, and what it holds."""
    manifest, findings = parse_manifest(path)
    if manifest is None:
        return Checked(path, tuple(findings), "")
    expansion = expand(manifest, hasher=None, collect=True)
    combined = sorted([*findings, *expansion.findings],
                      key=lambda f: (f.line or 0, f.col or 0, f.message))
    n = len(expansion.cases)
    summary = f"{n} case{'s' if n != 1 else ''}"
    g = len(expansion.needs_server)
    if g:
        summary += f" + {g} archive generator{'s' if g != 1 else ''}, expanded online"
    return Checked(path, tuple(combined), summary, expansion.warnings)


def looks_like_manifest(path: Path) -> bool:
    """For ``--manifests-only`` (the pre-commit hook): the schema modeline, or top-level
    ``algorithm:`` and ``cases:`` keys."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True  # let the real check report it
    head = "\n".join(text.splitlines()[:5])
    return bool(_MODELINE.search(head)) or all(rx.search(text) for rx in _TOP_KEYS)


def validate(paths: Iterable[Path], *, manifests_only: bool = False) -> ValidateResult:
    """Check each manifest (with ``manifests_only``, skip YAML files that are not ours)."""
    checked = []
    for path in paths:
        if manifests_only and path.is_file() and not looks_like_manifest(path):
            continue
        checked.append(check_manifest(path))
    return ValidateResult(tuple(checked))
