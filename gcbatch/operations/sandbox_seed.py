"""``gcbatch sandbox seed``: a sandbox world derived from a manifest, for ``--sandbox``.

The built-in sandbox world knows two algorithms. A user with their own algorithm wants to
try *their* manifest offline, so this derives a seed (the sandbox's world, format in
:mod:`gcbatch.sandbox.seed`) from what the manifest says:

- the algorithm, named as the manifest names it, with one interface per distinct set of
  input sockets the cases use (defaults included), each with one Value output
  (``sandbox-result``, derived from the inputs as every sandbox output is);
- a socket per input socket, its kind read from its sources: ``value`` by the JSON type
  (Integer, Float, String, Bool; lists and objects: Anything), ``json`` as Anything,
  ``file``/``files`` by the file extension (images: Image; ``.json``: a JSON file socket;
  ``.pdf``, ``.csv``, ``.zip``...: that file kind);
- an archive per ``foreach: {archive: ...}``, three items, each with a value for every
  socket its cases take from the item (an Image socket gets a small generated image).

What cannot be known is said, not guessed silently: a socket whose sources disagree or
whose file type is unknown is a problem (nothing is written); an archive item socket
used nowhere else is assumed to hold images (a note says so). ``image:`` sources name
images of a real server, which no derived world holds (a note says so).

The result is a value; the CLI writes it (and the images it names) beside the manifest
as ``sandbox-seed.yaml``, which ``--sandbox`` then uses.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from gcbatch.errors import ConfigError
from gcbatch.manifest import SourceSpec, load_manifest

__all__ = ["OUTPUT_SOCKET", "SEED_TOKEN", "SEED_USER", "DerivedSeed", "derive_seed"]

#: the derived algorithm's one output (a Value, made from the inputs by the sandbox)
OUTPUT_SOCKET = "sandbox-result"
#: the user ``--sandbox`` runs as (its token is test data for a local emulator)
SEED_USER = "demo"
SEED_TOKEN = "demo-token"
#: items made per archive
ARCHIVE_ITEMS = 3

_IMAGE_EXTENSIONS = (".mha", ".mhd", ".raw", ".nii", ".nii.gz", ".nrrd", ".tif", ".tiff",
                     ".dcm", ".png", ".jpg", ".jpeg")
#: file extension → the platform's File socket kind (the sandbox's kind names)
_FILE_KINDS = {
    ".pdf": "PDF file", ".csv": "CSV file", ".zip": "ZIP file", ".mp4": "MP4 file",
    ".obj": "OBJ file", ".newick": "Newick tree-format file", ".biom": "BIOM file",
    ".sqreg": "SQREG file",
}


@dataclass(frozen=True)
class DerivedSeed:
    """The seed as a mapping (ready for YAML), the images it names (paths relative to the
    seed file), and notes for the user about what was assumed."""

    seed: dict[str, Any]
    images: tuple[str, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class _Kind:
    kind: str  # the sandbox's kind label
    super_kind: str  # Value | File | Image
    relative_path: str
    why: str  # the source that decided it, for messages


def derive_seed(manifest_path: Path, *, images_dir: str = "sandbox-seed-images") -> DerivedSeed:
    """Derive a world from the manifest at ``manifest_path`` (ManifestError, exit 2, if it
    has findings; ConfigError, exit 2, for sockets whose kind cannot be told)."""
    manifest = load_manifest(manifest_path)
    notes: list[str] = []
    kinds: dict[str, _Kind] = {}
    problems: list[str] = []
    item_sockets: dict[str, set[str]] = {}  # archive slug → item sockets its cases use
    interfaces: dict[frozenset[str], None] = {}
    for case in manifest.cases:
        inputs = case.effective_inputs(manifest.defaults)
        interfaces.setdefault(frozenset(s.socket for s in inputs), None)
        glob = case.foreach.pattern if case.foreach and case.foreach.kind == "glob" else ""
        for source in inputs:
            if source.kind == "archive_item":
                if case.foreach is not None and case.foreach.kind == "archive":
                    item_sockets.setdefault(case.foreach.pattern, set()).add(
                        source.item_socket or source.socket)
                continue
            if source.kind == "image":
                notes.append(f"{source.where}: an image: source names an image on a real "
                             "server, which the derived world does not hold; replace it "
                             "with a file: source to try this case offline")
                continue
            found = _kind_of(source, glob)
            if found is None:
                problems.append(
                    f"{source.where}: cannot tell the kind of socket {source.socket!r} from "
                    f"{source.args[0] if source.args else source.kind!r}")
                continue
            known = kinds.get(source.socket)
            merged = found if known is None else _merge(known, found)
            if merged is None:
                problems.append(
                    f"{source.where}: socket {source.socket!r} is a {found.kind} here "
                    f"but a {known.kind if known else '?'} in {known.why if known else '?'}")
                continue
            kinds[source.socket] = merged
    for archive, sockets in item_sockets.items():
        for socket in sorted(sockets):
            if socket not in kinds:
                kinds[socket] = _Kind("Image", "Image", f"images/{socket}", f"archive {archive}")
                notes.append(f"archive {archive!r}: its items' {socket!r} is assumed to be "
                             "an image (nothing else in the manifest says what it is)")
    if OUTPUT_SOCKET in kinds:
        problems.append(f"the manifest uses the socket name {OUTPUT_SOCKET!r}, which the "
                        "derived world keeps for its output")
    if problems:
        raise ConfigError(
            "cannot derive a sandbox world from the manifest (write sandbox-seed.yaml by "
            "hand instead):\n  " + "\n  ".join(problems))
    images: list[str] = []
    seed = {
        "users": [{"name": SEED_USER, "token": SEED_TOKEN}],
        "sockets": [_socket(slug, kinds[slug]) for slug in sorted(kinds)]
        + [{"slug": OUTPUT_SOCKET, "title": "Sandbox Result", "kind": "Anything",
            "relative_path": f"{OUTPUT_SOCKET}.json"}],
        "algorithms": [{
            "slug": manifest.algorithm,
            "title": manifest.algorithm,
            "description": f"derived from {manifest.display} by gcbatch sandbox seed",
            "interfaces": [
                {"inputs": sorted(inputs), "outputs": [OUTPUT_SOCKET]}
                for inputs in _usable(interfaces, kinds)
            ],
        }],
        "archives": [
            _archive(slug, sorted(sockets), kinds, images_dir, images)
            for slug, sockets in sorted(item_sockets.items())
        ],
    }
    return DerivedSeed(seed, tuple(images), tuple(dict.fromkeys(notes)))


def _usable(interfaces: Iterable[frozenset[str]], kinds: dict[str, _Kind]
            ) -> list[frozenset[str]]:
    """Interfaces made of typed sockets (an image: source's socket may be untyped)."""
    return [i for i in interfaces if i and i <= set(kinds)]


def _kind_of(source: SourceSpec, glob: str) -> _Kind | None:
    where = source.where
    if source.kind == "value":
        value = source.value
        if isinstance(value, bool):
            return _Kind("Bool", "Value", f"{source.socket}.json", where)
        if isinstance(value, int):
            return _Kind("Integer", "Value", f"{source.socket}.json", where)
        if isinstance(value, float):
            return _Kind("Float", "Value", f"{source.socket}.json", where)
        if isinstance(value, str):
            return _Kind("String", "Value", f"{source.socket}.json", where)
        return _Kind("Anything", "Value", f"{source.socket}.json", where)
    if source.kind == "json":
        return _Kind("Anything", "Value", f"{source.socket}.json", where)
    if source.kind == "files":
        return _Kind("Image", "Image", f"images/{source.socket}", where)
    if source.kind == "file":
        ext = _extension(source.args[0] if source.args else "", glob)
        if ext in _IMAGE_EXTENSIONS:
            return _Kind("Image", "Image", f"images/{source.socket}", where)
        if ext == ".json":
            return _Kind("Anything", "File", f"{source.socket}.json", where)
        if ext in _FILE_KINDS:
            return _Kind(_FILE_KINDS[ext], "File", f"{source.socket}{ext}", where)
    return None


def _extension(path: str, glob: str) -> str:
    """The file extension a source's path has (from its generator's glob when the path
    is a template such as ``{path}``), lower case, ``.nii.gz`` kept whole."""
    name = PurePosixPath(path).name
    if "{" in name:
        name = PurePosixPath(glob).name
    name = name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return PurePosixPath(name).suffix


def _merge(a: _Kind, b: _Kind) -> _Kind | None:
    if a.kind == b.kind and a.super_kind == b.super_kind:
        return a
    if {a.kind, b.kind} == {"Integer", "Float"}:  # 3 and 3.5 given to one socket
        return a if a.kind == "Float" else b
    if a.super_kind == b.super_kind == "Value" and "Anything" in (a.kind, b.kind):
        return a if a.kind == "Anything" else b
    return None


def _socket(slug: str, kind: _Kind) -> dict[str, Any]:
    entry: dict[str, Any] = {"slug": slug, "title": slug, "kind": kind.kind}
    if kind.super_kind == "File" and kind.kind == "Anything":
        entry["super_kind"] = "File"
    entry["relative_path"] = kind.relative_path
    return entry


def _archive(slug: str, sockets: list[str], kinds: dict[str, _Kind], images_dir: str,
             images: list[str]) -> dict[str, Any]:
    items = []
    for i in range(ARCHIVE_ITEMS):
        values: dict[str, Any] = {}
        for socket in sockets:
            kind = kinds[socket]
            if kind.super_kind == "Image":
                path = f"{images_dir}/{slug}-{i + 1}-{socket}.mha"
                images.append(path)
                values[socket] = {"image": path}
            elif kind.super_kind == "Value":
                values[socket] = {"value": _sample(kind.kind, i)}
            else:
                raise ConfigError(
                    f"archive {slug!r}: its items' {socket!r} is a {kind.kind} socket; the "
                    "derived world cannot make such files (write sandbox-seed.yaml by hand)")
        items.append({"title": f"{slug}-{i + 1}", "values": values})
    return {"slug": slug, "title": slug, "items": items}


def _sample(kind: str, i: int) -> Any:
    return {"Integer": i + 1, "Float": i + 0.5, "String": f"item-{i + 1}",
            "Bool": i % 2 == 0}.get(kind, {"item": i + 1})
