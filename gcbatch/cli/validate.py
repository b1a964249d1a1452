"""``gcbatch validate MANIFEST...``: every problem in every manifest, offline and at once.

Checks the YAML (safe: no tags beyond plain YAML), the schema, the semantics (placeholders,
duplicate ids, empty cases) and the file system (globs that match nothing, JSON files that
are missing or invalid, generated ids). File contents are not hashed, so it is instant on
any data size. Findings go to stdout as ``file:line:col: message`` (or a JSON list with
``--json``); the verdict goes to stderr. Exit 0 when every manifest is valid, 2 otherwise.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from gcbatch.errors import EXIT_INVALID, EXIT_OK, Finding
from gcbatch.manifest import parse_manifest
from gcbatch.report import findings_json, render_findings
from gcbatch.sources import expand

_MODELINE = re.compile(r"manifest\.schema\.json")
_TOP_KEYS = (re.compile(r"^algorithm\s*:", re.M), re.compile(r"^cases\s*:", re.M))


def check_manifest(path: Path) -> tuple[list[Finding], str]:
    """All findings for one manifest, and what it holds ("3 cases, 1 archive generator")."""
    manifest, findings = parse_manifest(path)
    if manifest is None:
        return findings, ""
    expansion = expand(manifest, hasher=None, collect=True)
    combined = sorted([*findings, *expansion.findings],
                      key=lambda f: (f.line or 0, f.col or 0, f.message))
    n = len(expansion.cases)
    summary = f"{n} case{'s' if n != 1 else ''}"
    g = len(expansion.needs_server)
    if g:
        summary += f" + {g} archive generator{'s' if g != 1 else ''}, expanded online"
    return combined, summary


def looks_like_manifest(path: Path) -> bool:
    """For ``--manifests-only`` (the pre-commit hook): the schema modeline, or top-level
    ``algorithm:`` and ``cases:`` keys."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True  # let the real check report it
    head = "\n".join(text.splitlines()[:5])
    return bool(_MODELINE.search(head)) or all(rx.search(text) for rx in _TOP_KEYS)


@click.command()
@click.argument("manifests", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, default=False,
              help="Print the findings as a JSON list of {file, line, col, path, message}.")
@click.option("--manifests-only", is_flag=True, default=False,
              help="Skip YAML files that are not gcbatch manifests (no schema modeline and no "
              "top-level algorithm:/cases:); for pre-commit hooks given every YAML file.")
def validate(manifests: tuple[Path, ...], as_json: bool, manifests_only: bool) -> int:
    """Check manifests offline: every problem at once, with file:line:col.

    Exit 0 when all are valid, 2 when any is not.
    """
    all_findings: list[Finding] = []
    bad = 0
    checked = 0
    for path in manifests:
        if manifests_only and path.is_file() and not looks_like_manifest(path):
            continue
        checked += 1
        findings, summary = check_manifest(path)
        if findings:
            bad += 1
            all_findings.extend(findings)
        elif not as_json:
            click.echo(f"{path}: ok ({summary})", err=True)
    if as_json:
        click.echo(findings_json(all_findings))
    elif all_findings:
        click.echo(render_findings(all_findings))
    if bad:
        n = len(all_findings)
        click.echo(f"{n} problem{'s' if n != 1 else ''} in {bad} of {checked} "
                   f"manifest{'s' if checked != 1 else ''}", err=True)
        return EXIT_INVALID
    return EXIT_OK


COMMANDS = [validate]
