"""The checks a JSON Schema cannot express, on the :class:`Manifest` values.

Placeholders: every name known, and known to the kind of generator it is in (``{stem}`` in
an archive generator gets "belongs to the other kind of foreach", a near miss gets "did you
mean"); none in defaults or explicit cases (they are filled per generated case only); a
generator's id must have one, or every generated case would get the same id. Explicit case
ids must be unique, must not be a name ``download`` gives its own files beside the case
folders (:data:`RESERVED_CASE_IDS`, in any letter case: a case folder ``results.csv`` would
clash with the table), and every case must be left with at least one input once the
defaults are overlaid. (Our dot-files cannot clash: a case id starts with a letter or a
digit.)

Checks that need the file system (globs, JSON files, ids after expansion) are expansion's
(:func:`gcbatch.sources.expand`).
"""

from __future__ import annotations

import difflib

from gcbatch.errors import Finding
from gcbatch.manifest.model import ARCHIVE_PLACEHOLDERS, GLOB_PLACEHOLDERS, Manifest, SourceSpec
from gcbatch.manifest.templates import TemplateError, template_names

#: names ``gcbatch download`` writes into the output folder beside the case folders
#: (``gcbatch.operations.download``), compared in lower case
RESERVED_CASE_IDS = frozenset({"results.csv", "results.json"})


def reserved_id_problem(case_id: str) -> str | None:
    """Why ``case_id`` cannot be a case id although it matches the pattern, or None."""
    if case_id.lower() in RESERVED_CASE_IDS:
        return (f"case id {case_id!r} is reserved: `gcbatch download` writes "
                f"{case_id.lower()} beside the case folders; choose another id")
    return None


def semantic_findings(m: Manifest, *, check_empty: bool) -> list[Finding]:
    """Every semantic finding of ``m`` (which holds only the parts the schema accepted);
    ``check_empty``: also report cases without inputs (not when the defaults themselves
    were broken, which would make every case look empty)."""
    out: list[Finding] = []
    for src in m.defaults:
        out.extend(_template_findings(m, src, allowed=None, in_defaults=True, path="defaults"))
    first_id: dict[str, int | None] = {}
    for case in m.cases:
        idp = f"cases/{case.index}/id"
        if case.foreach is None:
            allowed: tuple[str, ...] | None = None
        elif case.foreach.kind == "glob":
            allowed = GLOB_PLACEHOLDERS
        else:
            allowed = ARCHIVE_PLACEHOLDERS
        for src in case.inputs:
            out.extend(_template_findings(m, src, allowed=allowed, in_defaults=False,
                                          path=f"cases/{case.index}/inputs/{src.socket}"))
        if case.foreach is not None:
            try:
                names = template_names(case.id)
            except TemplateError as exc:
                out.append(m.finding(f"{case.where}.id: {exc}", case.id_line, case.id_col, idp))
            else:
                out.extend(_unknown_names(m, names, allowed, case.id_line, case.id_col,
                                          f"{case.where}.id", idp))
                if not names:
                    example = "{stem}" if case.foreach.kind == "glob" else "{item.pk}"
                    out.append(m.finding(
                        f"{case.where}.id: a foreach case's id needs a placeholder such as "
                        f"{example}, or every generated case gets the same id",
                        case.id_line, case.id_col, idp))
        elif case.id in first_id:
            out.append(m.finding(f"{case.where}.id: duplicate case id {case.id!r} (first at "
                                 f"line {first_id[case.id]})", case.id_line, case.id_col, idp))
        elif (reserved := reserved_id_problem(case.id)) is not None:
            out.append(m.finding(f"{case.where}.id: {reserved}", case.id_line, case.id_col,
                                 idp))
        else:
            first_id[case.id] = case.id_line
        if check_empty and not case.effective_inputs(m.defaults):
            out.append(m.finding(f"{case.where}: this case has no inputs (give `inputs`, or "
                                 "`defaults` for every case)", case.line, case.col,
                                 f"cases/{case.index}"))
    return out


def _template_findings(m: Manifest, src: SourceSpec, *, allowed: tuple[str, ...] | None,
                       in_defaults: bool, path: str) -> list[Finding]:
    """The placeholders of one source's arguments (``allowed`` None: none allowed)."""
    out: list[Finding] = []
    if src.kind in ("value", "none"):
        return out
    for arg in src.args:
        try:
            names = template_names(arg)
        except TemplateError as exc:
            out.append(m.finding(f"{src.where}: {exc}", src.line, src.col, path))
            continue
        if names and allowed is None:
            kind = "defaults" if in_defaults else "an explicit case"
            out.append(m.finding(
                f"{src.where}: placeholder {{{names[0]}}} cannot be used in {kind}; "
                "placeholders work in foreach cases only (write {{ and }} for literal braces)",
                src.line, src.col, path))
            continue
        out.extend(_unknown_names(m, names, allowed, src.line, src.col, src.where, path))
    return out


def _unknown_names(m: Manifest, names: list[str], allowed: tuple[str, ...] | None,
                   line: int | None, col: int | None, where: str, path: str) -> list[Finding]:
    out = []
    for name in names:
        if allowed is not None and name not in allowed:
            other = GLOB_PLACEHOLDERS if allowed == ARCHIVE_PLACEHOLDERS else ARCHIVE_PLACEHOLDERS
            if name in other:
                kind = "a glob" if allowed == GLOB_PLACEHOLDERS else "an archive"
                out.append(m.finding(
                    f"{where}: placeholder {{{name}}} belongs to the other kind of foreach; "
                    f"this one is over {kind} (available: "
                    f"{', '.join('{' + a + '}' for a in allowed)})", line, col, path))
                continue
            hint = difflib.get_close_matches(name, allowed, n=1, cutoff=0.5)
            tip = f"did you mean {{{hint[0]}}}?" if hint else "available: " + ", ".join(
                f"{{{a}}}" for a in allowed)
            out.append(m.finding(f"{where}: unknown placeholder {{{name}}} ({tip})", line, col,
                                 path))
    return out
