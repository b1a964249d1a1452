"""``gcbatch init [PATH] --algorithm SLUG``: a starting manifest, and its schema beside it.

One look at the algorithm (GETs only, or the sandbox with ``--sandbox``), then two files:
``PATH`` (default ``study.yaml``), the starter of :mod:`gcbatch.manifest.starter`, and
``<slug>.manifest.schema.json`` beside it (:mod:`gcbatch.operations.schema`), which the
starter's modeline names. Nothing is overwritten: an existing ``PATH`` is refused, and so
is an existing schema file with other contents (``gcbatch schema`` refreshes that one);
both are checked before anything is asked or written, so a refusal leaves no half-made
study behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gcbatch.api.models import Algorithm
from gcbatch.errors import ConfigError
from gcbatch.events import Hook, ignore
from gcbatch.manifest.algorithm_schema import schema_file_name
from gcbatch.manifest.starter import Starter, starter_manifest
from gcbatch.operations.schema import (
    fetch_algorithm,
    read_existing,
    schema_text,
    write_schema,
)
from gcbatch.operations.study import SANDBOX_DIR, ConnectionOptions

__all__ = ["DEFAULT_MANIFEST", "InitResult", "init"]

DEFAULT_MANIFEST = Path("study.yaml")


@dataclass(frozen=True)
class InitResult:
    manifest: Path
    schema: Path
    #: False: an identical schema was already there
    schema_written: bool
    algorithm: Algorithm
    server: str
    starter: Starter
    #: what the next commands need to reach the same server (``--sandbox``)
    connect_flags: tuple[str, ...]


def init(path: Path | None, slug: str, connection: ConnectionOptions, *,
         on_event: Hook = ignore) -> InitResult:
    """Write a starting manifest for ``slug`` at ``path`` and its schema beside it."""
    if connection.lockfile is not None:
        raise ConfigError("init makes a manifest, not a lockfile: drop --lockfile")
    manifest = path or DEFAULT_MANIFEST
    if manifest.suffix.lower() not in (".yaml", ".yml"):
        raise ConfigError(f"{manifest}: a manifest is a .yaml file (e.g. study.yaml)")
    if manifest.exists() or manifest.is_symlink():
        raise ConfigError(f"{manifest} already exists; init never overwrites a file "
                          "(choose another name, or move it away)")
    folder = manifest.absolute().parent
    schema_path = manifest.with_name(schema_file_name(slug))
    if schema_path.is_dir():
        raise ConfigError(f"{schema_path} is a folder")
    algorithm, server = fetch_algorithm(slug, connection, state_dir=folder / SANDBOX_DIR,
                                        on_event=on_event)
    schema = schema_text(algorithm, server)
    if ((schema_path.exists() or schema_path.is_symlink())
            and read_existing(schema_path) != schema.encode("utf-8")):
        raise ConfigError(
            f"{schema_path} exists with other contents; init never overwrites a file "
            f"(refresh it with `gcbatch schema --algorithm {slug} --out {schema_path}`, "
            "then run init again)")
    starter = starter_manifest(algorithm, schema_ref=schema_path.name,
                               manifest_name=manifest.name, server=server,
                               server_line=server if connection.server else None)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot make the folder {folder}: {exc.strerror or exc}") from None
    _create(manifest, starter.text)
    try:
        written = write_schema(schema_path, schema)
    except BaseException:
        os.unlink(manifest)  # no manifest pointing at a schema that is not there
        raise
    # a --server is written into the manifest (server:), so only --sandbox is to repeat
    flags: tuple[str, ...] = ("--sandbox",) if connection.sandbox else ()
    return InitResult(manifest, schema_path, written, algorithm, server, starter, flags)


def _create(path: Path, text: str) -> None:
    """Create ``path`` with ``text``; refused if it appeared meanwhile (never truncates).
    LF line endings on every system: the manifest is meant for a repository."""
    try:
        with path.open("x", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; init never overwrites a file") from None
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
