"""File names as a glob generator sees them: the ``{stem}``, ``{ext}``, ... of one match.

Compressed extensions count as one (``p001.nii.gz`` → ``p001`` + ``.nii.gz``), because
``{stem}`` is what studies build case ids from. Written in ``str`` methods where
``os.path`` would give the same answer: a glob over 100,000 files calls these 100,000 times.
"""

from __future__ import annotations

import os

_COMPRESSED = (".gz", ".bz2", ".xz", ".zst")


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
