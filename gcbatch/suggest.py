""""Did you mean …?": the nearest of the names a user could have meant.

A mistyped socket slug, case id or algorithm slug is reported with the closest real ones
(difflib's ratio, which is what users see in git and pip). A name that differs only in
letter case is always the first suggestion: on a case-insensitive file system that is
the likeliest slip of all.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["closest", "did_you_mean"]


def closest(word: str, candidates: Iterable[str], *, n: int = 3,
            cutoff: float = 0.6) -> list[str]:
    """Up to ``n`` candidates close to ``word``, the closest first (never ``word``)."""
    pool = sorted({c for c in candidates if c != word})
    same_but_case = [c for c in pool if c.lower() == word.lower()]
    rest = difflib.get_close_matches(word, [c for c in pool if c not in same_but_case],
                                     n=n, cutoff=cutoff)
    return (same_but_case + rest)[:n]


def did_you_mean(word: str, candidates: Iterable[str], *, quote: str = "`") -> str:
    """``"; did you mean `ct-image`?"`` (or ``" or "``-joined for several), or ``""``."""
    found = closest(word, candidates)
    if not found:
        return ""
    return "; did you mean " + " or ".join(f"{quote}{c}{quote}" for c in found) + "?"
