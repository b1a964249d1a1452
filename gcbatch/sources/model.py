"""What expansion gives: the cases of a study, each input resolved, fingerprinted.

Frozen values read by the plan (:mod:`gcbatch.plan`), the pre-flight checks, the executor
(which sends them) and the result tables. ``Source.kind`` is the manifest's
:data:`~gcbatch.manifest.SourceKind`: plain strings, checked by mypy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gcbatch.errors import Finding
from gcbatch.manifest import SourceKind


@dataclass(frozen=True)
class Source:
    """One socket's input in one case (see docs/architecture.md)."""

    socket: str
    kind: SourceKind
    value: Any = field(default=None, hash=False)  # value/json: the parsed JSON value
    paths: tuple[Path, ...] = ()  # file/files: absolute paths, sorted
    archive: str | None = None  # archive_item: archive slug (if known)
    item_pk: str | None = None
    item_socket: str | None = None
    image_url: str | None = None
    summary: str = ""
    digest: str = ""


@dataclass(frozen=True)
class Case:
    """One job to be: an id, its inputs and the fingerprint that says when it changed."""

    id: str
    inputs: tuple[Source, ...]  # sorted by socket slug
    fingerprint: str
    #: where the case comes from, for messages: "cases[0]" or "cases[2]: scans/a.mha"
    origin: str = ""
    line: int | None = None  # the manifest line of its case/generator

    @property
    def sockets(self) -> tuple[str, ...]:
        return tuple(s.socket for s in self.inputs)

    def digests(self) -> dict[str, str]:
        """socket → digest (what the lockfile records per job)."""
        return {s.socket: s.digest for s in self.inputs}


@dataclass(frozen=True)
class PendingGenerator:
    """A ``foreach: {archive: ...}`` that could not be expanded without the server."""

    index: int
    archive: str
    id_template: str
    line: int | None = None


@dataclass(frozen=True)
class Expansion:
    """Every case of a manifest (or the findings why not), sorted by id."""

    cases: tuple[Case, ...]  # sorted by id
    needs_server: tuple[PendingGenerator, ...] = ()
    findings: tuple[Finding, ...] = ()
    #: ids of the cases found settled (see ``expand``'s ``settled``), sorted; no Case built
    settled: tuple[str, ...] = ()
    #: not errors, but worth saying (e.g. case ids that differ only in letter case)
    warnings: tuple[Finding, ...] = ()

    @property
    def case_ids(self) -> list[str]:
        """Every case's id: built and settled ones."""
        return [c.id for c in self.cases] + list(self.settled)

    def by_id(self) -> dict[str, Case]:
        return {c.id: c for c in self.cases}


class ArchiveItemLike(Protocol):
    """What expansion needs of an archive item (``gcbatch.models.ArchiveItem`` fits)."""

    @property
    def pk(self) -> str: ...

    @property
    def title(self) -> str: ...
