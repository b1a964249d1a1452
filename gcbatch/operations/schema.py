"""``gcbatch schema --algorithm SLUG``: the JSON Schema of that algorithm's manifests.

The algorithm is read from the server (GETs only; a token is used when there is one, and
not needed for a public algorithm) or from the embedded sandbox (``--sandbox``, offline);
the schema itself is :func:`gcbatch.manifest.algorithm_schema.algorithm_schema`. Written
as deterministic JSON (sorted keys, 2-space indent, trailing newline), so it diffs well.

A file at the target is replaced only when gcbatch made it (its ``$comment`` says so):
``gcbatch schema`` is also how a schema is refreshed when the algorithm changes, but a
mistyped ``--out`` must never clobber a manifest or anyone's own schema.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gcbatch.api.models import Algorithm
from gcbatch.api.settings import resolve_server
from gcbatch.errors import ConfigError
from gcbatch.events import Hook, ignore
from gcbatch.files import atomic_write_bytes
from gcbatch.manifest import schema as general_schema
from gcbatch.manifest.algorithm_schema import algorithm_schema, schema_file_name
from gcbatch.operations.session import Session, open_session
from gcbatch.operations.study import SANDBOX_DIR, SANDBOX_URL, ConnectionOptions
from gcbatch.preflight import check_algorithm
from gcbatch.suggest import did_you_mean

__all__ = [
    "MADE_BY",
    "SchemaResult",
    "fetch_algorithm",
    "made_by_gcbatch",
    "read_existing",
    "schema",
    "schema_text",
]

#: how a schema gcbatch made announces itself (the start of its ``$comment``)
MADE_BY = "Made by `gcbatch schema"


@dataclass(frozen=True)
class SchemaResult:
    algorithm: Algorithm
    #: where the algorithm was read
    server: str
    sandbox: bool
    #: the file written (None: the text went to stdout, ``--out -``)
    path: Path | None
    text: str
    #: False when the file already held exactly this text
    changed: bool


def server_for(connection: ConnectionOptions) -> str:
    """The server to ask: the sandbox's URL, else ``--server``, ``GCBATCH_SERVER``, the
    default (there is no manifest to name one yet)."""
    return SANDBOX_URL if connection.sandbox else resolve_server(connection.server)


def fetch_algorithm(slug: str, connection: ConnectionOptions, *, state_dir: Path,
                    on_event: Hook = ignore) -> tuple[Algorithm, str]:
    """(the algorithm, the server it came from); ConfigError (exit 2) when the server
    shows no such algorithm (with the slugs it does show that come close) or one with
    no interfaces. ``state_dir``: the sandbox's state, with ``--sandbox``."""
    server = server_for(connection)
    with open_session(server, connection,
                      sandbox_dir=state_dir if connection.sandbox else None,
                      token_required=False, on_event=on_event) as session:
        algorithm = session.view.algorithm(slug)
        if algorithm is None:
            raise ConfigError(_not_found(slug, server, session))
    problems = check_algorithm(algorithm, slug)
    if problems:
        raise ConfigError(problems[0].message)
    return algorithm, server


def _not_found(slug: str, server: str, session: Session) -> str:
    message = f"algorithm {slug!r} not found on {server}"
    try:  # one page of the algorithms this user can see, for a "did you mean"
        page = session.client.get_json("algorithms/", {"limit": 1000})
        slugs = [r.get("slug") for r in page.get("results", []) if isinstance(r, dict)]
    except Exception:  # a hint is not worth a second failure
        slugs = []
    message += did_you_mean(slug, [s for s in slugs if isinstance(s, str)], quote="'")
    if not session.client.has_token:
        message += (" (no token: only public algorithms are visible; set "
                    "GRAND_CHALLENGE_AUTHORIZATION or use --token-file)")
    else:
        message += " (check the slug, the last part of the algorithm's page URL, and that "
        message += "your account may run it)"
    return message


def schema_text(algorithm: Algorithm, server: str) -> str:
    """The schema as the file holds it."""
    document = algorithm_schema(algorithm, general_schema(), server=server)
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


#: larger than any schema gcbatch makes (an algorithm with thousands of sockets)
_SCHEMA_MAX_BYTES = 64 * 1024 * 1024


def read_existing(path: Path) -> bytes | None:
    """A regular file's bytes, when it is one of a schema's size; else None. A device or
    a pipe planted under a schema's name (``/dev/zero``) is never read."""
    try:
        if not path.is_file() or path.stat().st_size > _SCHEMA_MAX_BYTES:
            return None
        with path.open("rb") as fh:
            return fh.read(_SCHEMA_MAX_BYTES)
    except OSError:
        return None


def made_by_gcbatch(path: Path) -> bool:
    """The file is a schema ``gcbatch schema`` made (so it may be refreshed)."""
    data = read_existing(path)
    try:
        document: Any = json.loads(data) if data is not None else None
    except ValueError:
        return False
    comment = document.get("$comment") if isinstance(document, dict) else None
    return isinstance(comment, str) and comment.startswith(MADE_BY)


def schema(slug: str, connection: ConnectionOptions, out: Path | None, *,
           on_event: Hook = ignore) -> SchemaResult:
    """Fetch ``slug`` and write its schema to ``out`` (default:
    ``<slug>.manifest.schema.json`` in the current folder; ``-``: stdout, nothing
    written)."""
    to_stdout = out is not None and os.fspath(out) == "-"
    target = None if to_stdout else (out or Path(schema_file_name(slug)))
    if target is not None:
        _check_target(target)
    base = Path.cwd() if target is None else target.absolute().parent
    algorithm, server = fetch_algorithm(slug, connection, state_dir=base / SANDBOX_DIR,
                                        on_event=on_event)
    text = schema_text(algorithm, server)
    if target is None:
        return SchemaResult(algorithm, server, connection.sandbox, None, text, True)
    changed = write_schema(target, text)
    return SchemaResult(algorithm, server, connection.sandbox, target, text, changed)


def _check_target(target: Path) -> None:
    """Before anything is asked: the target is free, or a schema gcbatch made."""
    if target.is_dir():
        raise ConfigError(f"{target} is a folder; --out names the schema file to write")
    if target.exists() and not made_by_gcbatch(target):
        raise ConfigError(f"{target} exists and is not a schema gcbatch made; it is left "
                          "alone (choose another --out, or move it away)")


def write_schema(target: Path, text: str) -> bool:
    """Write ``text`` to ``target`` unless it holds it already; True when written."""
    data = text.encode("utf-8")
    if read_existing(target) == data:
        return False
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # a named part file: the schema is for sharing, so it gets the usual permissions
        # (tempfile's would be owner-only)
        atomic_write_bytes(target, data, part=target.with_name(f".{target.name}.part"),
                           durable=False)
    except OSError as exc:
        raise ConfigError(f"cannot write {target}: {exc.strerror or exc}") from None
    return True
