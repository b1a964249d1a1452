"""Templates in source arguments and generated ids: ``"scans/{stem}.mha"``, ``"item-{item.pk}"``.

``{name}`` is a placeholder (spaces around the name are ignored), ``{{`` and ``}}`` are
literal braces, and any other brace is a :class:`TemplateError` (a finding telling to double
it). The names are checked when the manifest is read (:mod:`gcbatch.manifest.semantics`);
expansion fills them in, once per glob match or archive item, so a template is compiled
once and rendered up to 100,000 times.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import lru_cache

_TEMPLATE_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


class TemplateError(ValueError):
    """A brace that is neither ``{{``, ``}}`` nor part of a ``{placeholder}``."""


def template_names(text: str) -> list[str]:
    """The placeholder names in ``text``; :class:`TemplateError` on unmatched braces."""
    names = []
    for m in _TEMPLATE_RE.finditer(text):
        token = m.group(0)
        if token in ("{{", "}}"):
            continue
        if m.group(1) is None:
            raise TemplateError(f"unmatched {token!r} (write {token * 2} for a literal brace)")
        names.append(m.group(1).strip())
    return names


@lru_cache(maxsize=1024)
def _compile(text: str) -> tuple[tuple[bool, str], ...]:
    """A template as parts: (False, literal) or (True, placeholder name)."""
    parts: list[tuple[bool, str]] = []
    pos = 0
    for m in _TEMPLATE_RE.finditer(text):
        if m.start() > pos:
            parts.append((False, text[pos:m.start()]))
        token = m.group(0)
        if token in ("{{", "}}"):
            parts.append((False, token[0]))
        elif m.group(1) is None:
            raise TemplateError(f"unmatched {token!r}")
        else:
            parts.append((True, m.group(1).strip()))
        pos = m.end()
    if pos < len(text):
        parts.append((False, text[pos:]))
    return tuple(parts)


def render_template(text: str, values: Mapping[str, str],
                    escape: Callable[[str], str] | None = None) -> str:
    """Fill placeholders (names must have been checked); ``escape`` is applied to values.

    Templates are compiled once (a generator renders the same few templates per match).
    """
    out = []
    for is_name, part in _compile(text):
        if is_name:
            value = values[part]
            out.append(escape(value) if escape else value)
        else:
            out.append(part)
    return "".join(out)
