"""The manifest as values: what a study asks for, as written, before anything is expanded.

Frozen dataclasses made by :func:`gcbatch.manifest.parse_manifest` and read by
:mod:`gcbatch.sources` (expansion), the CLI and the executor. Templates in them (``{stem}``,
``{item.pk}``) are not filled in yet: that is expansion's work, per glob match or archive
item.

The vocabularies are ``Literal`` types, not an ``Enum``: the values stay the plain strings
the rest of the package compares with (``source.kind == "file"``) and prints (``f"a
{source.kind}: source …"``), byte for byte, while mypy refuses a kind that is not one of
them (a typo in ``kind == "fiel"`` is a non-overlapping comparison under ``--strict``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from gcbatch.errors import Finding

#: where a socket's input comes from (the keys of a source mapping in the manifest)
SourceKind = Literal["value", "json", "file", "files", "archive_item", "image"]
#: a source as written: one of :data:`SourceKind`, or ``"none"`` for ``null`` (a case's way
#: of dropping a default)
SpecKind = Literal[SourceKind, "none"]
#: what a ``foreach`` generator walks over
ForeachKind = Literal["glob", "archive"]

#: the source kinds in the order a source mapping is searched for its kind
SOURCE_KINDS: tuple[SourceKind, ...] = get_args(SourceKind)
#: placeholders a ``foreach: {glob: ...}`` generator fills in, per match
GLOB_PLACEHOLDERS = ("path", "name", "stem", "ext", "parent", "dir")
#: placeholders a ``foreach: {archive: ...}`` generator fills in, per item
ARCHIVE_PLACEHOLDERS = ("item.pk", "item.title")
#: placeholders an ``image_name`` may use in every case (besides its generator's)
IMAGE_NAME_PLACEHOLDERS = ("id",)
#: a case id (the schema's ``caseId`` pattern; generated ids are checked with it too)
CASE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class SourceSpec:
    """One socket's source as written in the manifest (templates not yet filled in)."""

    socket: str
    kind: SpecKind
    value: Any = field(default=None, hash=False)  # kind "value": the literal
    args: tuple[str, ...] = ()  # json/file/archive_item/image: (text,); files: the globs
    item_socket: str | None = None  # archive_item: the item's socket (default: socket)
    #: file/files on a DICOM Image Set socket: the image's name (a template: {id}, ...)
    image_name: str | None = None
    #: file/files holding DICOM: de-identify locally (None: the default, on)
    deidentify: bool | None = None
    line: int | None = None  # where the source's argument is
    col: int | None = None
    where: str = ""  # e.g. "cases[2].inputs.ct-image", for messages


@dataclass(frozen=True)
class Foreach:
    """A case generator: one case per glob match, or per item of an archive."""

    kind: ForeachKind
    pattern: str  # the glob, or the archive slug
    line: int | None = None
    col: int | None = None


@dataclass(frozen=True)
class CaseSpec:
    """An explicit case (``foreach`` is None) or a generator, in manifest order."""

    index: int  # position in ``cases``
    id: str  # the id, or for a generator the id template
    inputs: tuple[SourceSpec, ...]  # the case's own inputs, sorted by socket (no defaults)
    foreach: Foreach | None = None
    line: int | None = None  # of the case
    id_line: int | None = None
    id_col: int | None = None
    col: int | None = None

    @property
    def where(self) -> str:
        return f"cases[{self.index}]"

    def effective_inputs(self, defaults: Sequence[SourceSpec]) -> tuple[SourceSpec, ...]:
        """Defaults overlaid with the case's own inputs; ``null`` sources removed."""
        merged = {s.socket: s for s in defaults}
        merged.update({s.socket: s for s in self.inputs})
        return tuple(merged[k] for k in sorted(merged) if merged[k].kind != "none")


@dataclass(frozen=True)
class Manifest:
    """A whole manifest: the parts of it that had no finding (see ``parse_manifest``)."""

    path: Path  # absolute
    display: str  # as the user named it, for messages
    version: int
    algorithm: str
    server: str | None
    defaults: tuple[SourceSpec, ...]
    cases: tuple[CaseSpec, ...]

    @property
    def base_dir(self) -> Path:
        """Relative paths in the manifest are relative to its folder."""
        return self.path.parent

    def finding(self, message: str, line: int | None = None, col: int | None = None,
                path: str = "") -> Finding:
        """A finding in this manifest; ``path`` ("cases/3/id") marks the part it is about."""
        return Finding(file=self.display, message=message, line=line, col=col, path=path)
