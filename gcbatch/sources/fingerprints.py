"""Fingerprints: what says that a case is still the case its job was made for.

A case's fingerprint is the sha256 of the canonical JSON
``{"algorithm": slug, "inputs": [[socket, digest], ...]}`` (sockets sorted); each source's
``digest`` is the sha256 of a canonical JSON describing its content:

- ``value`` and ``json``: ``{"value": <the value>}``. A value moved from the manifest to a
  JSON file (or back) is the same input, because the job gets the same value.
- ``file`` and ``files``: ``{"files": [<sha256 of each file's bytes>, sorted]}``; names
  do not count (renaming a scan does not change what the algorithm sees), and ``file: x``
  equals ``files: x``.
- ``archive_item``: ``{"archive_item": pk, "socket": item socket}``.
- ``image``: ``{"image": url}``.

These bytes are recorded in every lockfile: they must never change. Pure functions of
their arguments (the file digests come in already computed).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from gcbatch.hashing import canonical_json, sha256_text
from gcbatch.sources.model import Source

#: what canonical_json gives for a str (ensure_ascii=False): the C string encoder itself
_json_string: Any = json.encoder.encode_basestring


def case_fingerprint(algorithm: str, sources: Sequence[Source]) -> str:
    """sha256 of ``canonical_json({"algorithm": slug, "inputs": [[socket, digest], ...]})``,
    the text written out directly (the same bytes: "algorithm" sorts before "inputs")."""
    return fingerprint_of(algorithm, [(s.socket, s.digest) for s in sources])


def fingerprint_of(algorithm: str, pairs: Sequence[tuple[str, str]]) -> str:
    """:func:`case_fingerprint` of (socket, digest) pairs sorted by socket."""
    quote = _json_string  # canonical_json of a str
    text = ('{"algorithm":' + quote(algorithm) + ',"inputs":['
            + ",".join(["[" + quote(socket) + "," + quote(digest) + "]"
                        for socket, digest in pairs])
            + "]}")
    return sha256_text(text)


def value_text(value: Any) -> str:
    """canonical_json(value); a NaN (never from YAML, which refuses it) raises ValueError
    like :func:`value_digest` does."""
    return canonical_json(value)


def value_digest(value: Any) -> str:
    """The digest of a ``value`` or ``json`` source."""
    return sha256_text(canonical_json({"value": value}))


def value_text_digest(text: str) -> str:
    """:func:`value_digest` of a value whose :func:`value_text` is ``text`` (the same
    bytes: ``{"value": v}`` canonically is ``'{"value":' + text + '}'``), for a source that
    needs the text anyway (its summary shows it)."""
    return sha256_text('{"value":' + text + "}")


def files_digest(file_digests: Iterable[str]) -> str:
    """The digest of a ``file`` or ``files`` source from its files' digests."""
    return sha256_text(canonical_json({"files": sorted(file_digests)}))


def archive_item_digest(pk: str, item_socket: str) -> str:
    return sha256_text(canonical_json({"archive_item": pk, "socket": item_socket}))


def image_digest(url: str) -> str:
    return sha256_text(canonical_json({"image": url}))
