"""A starting manifest for one algorithm: what ``gcbatch init`` writes.

A user knows their algorithm's slug, not its sockets' slugs, kinds and interface
combinations; the starter lays them out. Its shape:

- line 1, the modeline: ``# yaml-language-server: $schema=<slug>.manifest.schema.json``
  (the per-algorithm schema written beside it, :mod:`gcbatch.manifest.algorithm_schema`);
- a header: where it came from, what to do next, the rule that a case gives exactly one
  interface's sockets;
- one block per interface, each socket listed with its slug, kind and the sources it
  accepts (``##`` comments: prose; ``#``: a commented-out line to uncomment). One block is live (the interface with an image socket and the fewest inputs:
  usually one path to fill in), the others are commented out, ready to swap in;
- a block with a path to fill is a ``foreach`` over a glob (one case per file; a DICOM
  series: one case per folder), its first image or file socket fed ``{path}``; a block
  of values only is one explicit case.

What the user must fill in is marked ``FILL-IN`` (a path that matches nothing until it is
replaced, so ``gcbatch validate`` says where) or ``value: null`` with a comment naming the
value's type (the per-algorithm schema underlines it in an editor; ``gcbatch plan`` refuses
it). A socket's default value, when the platform gives one, is written instead of null.

Pure: an :class:`~gcbatch.api.models.Algorithm` in, the text and its fill-ins out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gcbatch.api.models import Algorithm, Interface, Socket
from gcbatch.manifest.algorithm_schema import socket_summary, value_type

__all__ = ["FILL_IN", "FillIn", "Starter", "live_interface", "starter_manifest"]

#: the mark of a path to fill in
FILL_IN = "FILL-IN"


@dataclass(frozen=True)
class FillIn:
    """Something the user must write before the manifest is useful (1-based line)."""

    line: int
    socket: str
    what: str


@dataclass(frozen=True)
class Starter:
    text: str
    #: 1-based number of the interface whose block is live
    live: int
    #: what to fill in, in the live block
    fill_ins: tuple[FillIn, ...]


def live_interface(algorithm: Algorithm) -> int:
    """The 0-based index of the interface to leave uncommented: one with an image socket
    (a glob over images is the common study), the fewest inputs, the first listed."""
    def key(indexed: tuple[int, Interface]) -> tuple[int, int, int]:
        index, interface = indexed
        has_image = any(s.super_kind == "Image" for s in interface.inputs)
        return (0 if has_image else 1, len(interface.inputs), index)

    return min(enumerate(algorithm.interfaces), key=key)[0]


def _extension(socket: Socket) -> str:
    """The file extension a glob for this socket's files should end with."""
    if socket.super_kind == "Image":
        return ".dcm" if _is_dicom(socket) else ".mha"
    name = socket.relative_path.rpartition("/")[2]
    dot = name.rfind(".")
    return name[dot:] if dot > 0 else ""


def _is_dicom(socket: Socket) -> bool:
    return "dicom" in socket.kind.lower()


def _flow(value: Any) -> str:
    """A value as YAML flow text (JSON is YAML)."""
    return json.dumps(value, ensure_ascii=False)


@dataclass
class _Line:
    text: str
    fill: tuple[str, str] | None = None  # (socket, what) when this line holds a FILL-IN


def _block(number: int, total: int, interface: Interface) -> list[_Line]:
    """An interface's block (uncommented): header comments, then the case."""
    slugs = sorted(s.slug for s in interface.inputs)
    lines = [_Line(f"  ## Interface {number} of {total}: {', '.join(slugs)}")]
    width = max(len(s) for s in slugs) if slugs else 0
    for socket in sorted(interface.inputs, key=lambda s: s.slug):
        lines.append(_Line(f"  ##   {socket.slug.ljust(width)}  {socket_summary(socket)}"))
    path_sockets = [s for s in interface.inputs if s.super_kind in ("Image", "File")]
    images = [s for s in path_sockets if s.super_kind == "Image"]
    lead: Socket | None = (images or path_sockets)[0] if path_sockets else None
    inputs: list[_Line] = []
    for socket in sorted(interface.inputs, key=lambda s: s.slug):
        inputs.append(_input(socket, lead, generator=lead is not None))
    if lead is not None:
        ext = _extension(lead)
        if _is_dicom(lead):
            glob, note = f"{FILL_IN}/*/", "one case per folder of DICOM files, e.g. series/*/"
        else:
            glob = f"{FILL_IN}/*{ext}"
            folder = "scans" if lead.super_kind == "Image" else "files"
            note = f"one case per file, e.g. {folder}/*{ext or '.*'}"
        lines.append(_Line(f'  - foreach: {{glob: "{glob}"}}   # {FILL_IN}: {note}',
                           (lead.slug, f"the glob of your {lead.slug} files ({note})")))
        lines.append(_Line('    id: "case-{stem}"   # {stem}: the file name without extension'))
    else:
        lines.append(_Line("  - id: case-001"))
    lines.append(_Line("    inputs:"))
    lines.extend(_aligned(inputs))
    return lines


def _aligned(lines: list[_Line]) -> list[_Line]:
    """The inputs' trailing comments in one column (split at the last "   # ": a default
    value written before it may hold anything)."""
    split = [line.text.rpartition("   # ") for line in lines]
    width = max(len(code) for code, _, _ in split)
    return [_Line(f"{code.ljust(width)}   # {note}" if sep else note, line.fill)
            for (code, sep, note), line in zip(split, lines, strict=True)]


def _input(socket: Socket, lead: Socket | None, *, generator: bool) -> _Line:
    slug = socket.slug
    if socket is lead:
        if _is_dicom(socket):
            return _Line(f'      {slug}: {{files: "{{path}}*.dcm"}}   # every file of the folder')
        return _Line(f'      {slug}: {{file: "{{path}}"}}   # the matched file')
    if socket.super_kind in ("Image", "File"):
        ext = _extension(socket)
        path = f"{FILL_IN}/{{stem}}{ext}" if generator else f"{FILL_IN}{ext}"
        return _Line(f'      {slug}: {{file: "{path}"}}   # {FILL_IN}: this case\'s file',
                     (slug, f"the {slug} file of each case"))
    if socket.super_kind == "Value":
        words = value_type(socket)[1]
        if socket.default_value is not None:
            return _Line(f"      {slug}: {{value: {_flow(socket.default_value)}}}   "
                         f"# the socket's default; {words}")
        return _Line(f"      {slug}: {{value: null}}   # {FILL_IN}: {words} "
                     "(or json: a JSON file)", (slug, f"a value: {words}"))
    return _Line(f'      {slug}: {{file: "{FILL_IN}"}}   # {FILL_IN}: a socket of unknown '
                 "kind; see the algorithm's page", (slug, "a source (unknown kind)"))


def starter_manifest(algorithm: Algorithm, *, schema_ref: str, manifest_name: str,
                     server: str, server_line: str | None = None) -> Starter:
    """The starting manifest for ``algorithm`` (at least one interface).

    ``schema_ref``: the modeline's target (relative to the manifest); ``server``: where the
    algorithm was read (for the header); ``server_line``: a ``server:`` to write, if any.
    """
    if not algorithm.interfaces:
        raise ValueError(f"algorithm {algorithm.slug!r} has no interfaces")
    total = len(algorithm.interfaces)
    live = live_interface(algorithm)
    title = f" ({algorithm.title})" if algorithm.title else ""
    head = [
        f"# yaml-language-server: $schema={schema_ref}",
        f"# A gcbatch manifest for {algorithm.slug}{title},",
        f"# made by `gcbatch init` from its interfaces on {server}.",
        f"# Replace every {FILL_IN}, then: gcbatch validate {manifest_name}",
        f"#                         and: gcbatch plan {manifest_name}",
        "#",
        "# Each case gives exactly the sockets of one interface (the server fills in no",
        f"# defaults). This algorithm has {total} interface{'s' if total != 1 else ''}; "
        f"interface {live + 1} is live below,",
        "# the others are commented out: uncomment one (its lines with a single #) to use",
        "# it, giving its cases ids of their own. Sources: docs/manifest.md; the schema",
        "# beside this file checks the manifest as you type.",
        "version: 1",
        f"algorithm: {algorithm.slug}",
    ]
    if server_line:
        head.append(f"server: {server_line}")
    head.append("cases:")
    text_lines = list(head)
    fill_ins: list[FillIn] = []
    for index, interface in enumerate(algorithm.interfaces):
        if index:
            text_lines.append("")
        block = _block(index + 1, total, interface)
        is_live = index == live
        for line in block:
            if is_live or line.text.lstrip().startswith("#"):
                text_lines.append(line.text)
            else:  # comment it out, keeping the indentation YAML needs once uncommented
                text_lines.append("  # " + line.text[2:])
            if is_live and line.fill is not None:
                fill_ins.append(FillIn(len(text_lines), *line.fill))
    return Starter("\n".join(text_lines) + "\n", live + 1, tuple(fill_ins))
