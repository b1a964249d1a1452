"""The quick fingerprint of a settled case: from cached digests alone, no Source built.

Re-applying a locked 100,000-case study mostly asks "is this case's fingerprint still the
locked one?". :class:`QuickFingerprints` answers with what the expander already made once
(sources without placeholders) and what the hasher's stat cache knows (a file's digest, a
JSON file's value digest): a stat per input file, no file opened, no :class:`Source` or
:class:`Case` built. Whenever that cannot tell (a file not in the cache, a glob to run, a
``.json`` file that must be checked to parse, a source with a finding) it says None, and
the case is expanded in full, so the answer is always the full expansion's.
"""

from __future__ import annotations

import glob as globlib
import os
from collections.abc import Callable, Mapping
from typing import ClassVar

from gcbatch.manifest import CaseSpec, SourceSpec
from gcbatch.sources.expander import Expander, fill
from gcbatch.sources.fingerprints import (
    archive_item_digest,
    files_digest,
    fingerprint_of,
    image_digest,
)

#: a source's digest for one case from caches alone, None when the full work is needed
_QuickDigest = Callable[["QuickFingerprints", SourceSpec, Mapping[str, str] | None, str | None],
                        str | None]
#: per source of a case spec: (socket, its digest if it is the same in every case, the
#: spec, how to digest it per case)
_Recipe = list[tuple[str, str | None, SourceSpec, _QuickDigest]]


class QuickFingerprints:
    """Quick fingerprints of the cases of one expansion (sharing its :class:`Expander`)."""

    def __init__(self, expander: Expander) -> None:
        self.ex = expander
        self.algorithm = expander.m.algorithm
        self._absolute = expander.absolute
        self._json_digests = expander.json_digests
        #: per case spec: see :meth:`_recipe`
        self._recipes: dict[int, _Recipe] = {}
        hasher = expander.hasher
        self._cached_json_digest: Callable[[str], str | None] | None = getattr(
            hasher, "cached_json_digest", None)
        self._cached_digest: Callable[[str], str | None] | None = getattr(
            hasher, "cached_digest", None)

    def fingerprint(self, spec: CaseSpec, values: Mapping[str, str] | None,
                    archive: str | None = None) -> str | None:
        """The fingerprint :meth:`Expander.case` would give, from cached digests alone;
        None when that needs the full work (a file not in the hash cache, a glob to run, a
        JSON file to check). It builds no :class:`Source`: for a case already locked, only
        whether its fingerprint is the locked one matters, and that is most of a re-apply."""
        recipe = self._recipes.get(spec.index)
        if recipe is None:
            recipe = self._recipes[spec.index] = self._recipe(spec, values, archive)
        pairs: list[tuple[str, str]] = []
        for socket, digest, src, quick in recipe:
            if digest is None:
                digest = quick(self, src, values, archive)
                if digest is None:
                    return None
            pairs.append((socket, digest))
        return fingerprint_of(self.algorithm, pairs)

    def _recipe(self, spec: CaseSpec, values: Mapping[str, str] | None, archive: str | None
                ) -> _Recipe:
        """Per source of a case spec: (socket, its digest if it has no placeholders, the
        spec, the function that digests it per case). Made once per case spec."""
        ex = self.ex
        recipe: _Recipe = []
        for src in ex.effective(spec):
            if ex.is_static(src):
                made = ex.source(src, values, archive)  # made once per run, then shared
                # (None: a finding, which only the full expansion reports)
                recipe.append((src.socket, None if made is None else made.digest, src,
                               QuickFingerprints._quick_none))
            else:
                quick = self._QUICK.get(src.kind, QuickFingerprints._quick_none)
                recipe.append((src.socket, None, src, quick))
        return recipe

    def _quick_none(self, spec: SourceSpec, values: Mapping[str, str] | None,
                    archive: str | None) -> str | None:
        return None  # files: globs to run; a static source with a finding

    def _quick_json(self, spec: SourceSpec, values: Mapping[str, str] | None,
                    archive: str | None) -> str | None:
        full = self._absolute(fill(spec.args[0], values))
        known = self._json_digests.get(full)  # read in full earlier in this run
        if known is not None:
            return known
        lookup = self._cached_json_digest
        return None if lookup is None else lookup(full)

    def _quick_file(self, spec: SourceSpec, values: Mapping[str, str] | None,
                    archive: str | None) -> str | None:
        pattern = fill(spec.args[0], values, escape=True)
        if len(spec.args) != 1 or globlib.has_magic(pattern) or self._cached_digest is None:
            return None
        full = self._absolute(pattern)
        if (full != os.path.normpath(full) or full.startswith("//")
                or full.lower().endswith(".json")):
            return None  # paths the full work spells out; a JSON file gets checked
        digest = self._cached_digest(full)
        return None if digest is None else files_digest([digest])

    def _quick_archive_item(self, spec: SourceSpec, values: Mapping[str, str] | None,
                            archive: str | None) -> str | None:
        return archive_item_digest(fill(spec.args[0], values), spec.item_socket or spec.socket)

    def _quick_image(self, spec: SourceSpec, values: Mapping[str, str] | None,
                     archive: str | None) -> str | None:
        return image_digest(fill(spec.args[0], values))

    #: how a source with placeholders is digested from caches alone, by kind (``files``:
    #: never, it has globs to run)
    _QUICK: ClassVar[dict[str, _QuickDigest]] = {
        "json": _quick_json, "file": _quick_file, "archive_item": _quick_archive_item,
        "image": _quick_image,
    }
