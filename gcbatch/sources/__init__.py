"""Expansion: a :class:`~gcbatch.manifest.Manifest` → sorted, fingerprinted :class:`Case`s.

One module per concept:

- :mod:`~gcbatch.sources.expansion`: :func:`expand`, the walk over explicit cases and
  ``foreach`` generators (glob matches, archive items), generated ids and their checks;
- :mod:`~gcbatch.sources.expander`: one case's sources, read from the file system;
- :mod:`~gcbatch.sources.quick`: the fingerprint of a settled case from cached digests alone;
- :mod:`~gcbatch.sources.fingerprints`: what a fingerprint is made of (pure);
- :mod:`~gcbatch.sources.names`: a glob match's ``{stem}``, ``{ext}``, ... (pure);
- :mod:`~gcbatch.sources.model`: the values (:class:`Source`, :class:`Case`,
  :class:`Expansion`, ...).

Not pure: expansion reads the file system, because a case *is* its files (and a JSON
source's value). It only reads, never writes; what it learns goes into the hasher's
in-memory cache, which the caller saves (``hasher.save()``):

- ``foreach: {glob: ...}``: the glob's directory listings;
- ``file``/``files`` sources: the glob's directory listings and a ``stat`` per match (only
  regular files count), or one ``os.stat`` for a path without wildcards;
- ``json`` sources: each JSON file is opened and parsed once per run (a ``stat`` first
  when the hasher keeps JSON values); with a :class:`~gcbatch.hashing.FileHasher`, a file
  unchanged (size, mtime) since an earlier run is only ``stat``-ed, its value and digest
  coming from the hash cache. They are read with ``hasher=None`` too: their value is the
  input itself, not only a part of a fingerprint;
- a ``.mhd`` header among ``file``/``files``: its first 8 KiB, for the data file it names
  (which must be sent with it);
- a ``.json`` file given as ``file``: opened and parsed (up to
  :data:`~gcbatch.sources.expander.JSON_CHECK_LIMIT`) to check it is JSON, since a JSON
  file socket given other bytes hangs the job on the platform;
- file bytes, for fingerprints: only through ``hasher.digest`` (streamed, stat-cached;
  see :mod:`gcbatch.hashing`); with ``hasher=None`` nothing is hashed, and digests and
  fingerprints are empty strings, which is what ``validate`` wants (instant, whatever the
  data size); for settled cases only ``hasher.cached_digest`` / ``cached_json_digest``
  (a ``stat`` each, no file opened).

File-system problems (a glob matching nothing, a JSON file missing or invalid, a generated
id that is invalid or taken twice) are findings, all collected; :func:`expand` raises
:class:`~gcbatch.errors.ManifestError` with all of them unless ``collect=True``.
"""

from gcbatch.sources.expander import JSON_CHECK_LIMIT, mhd_data_file
from gcbatch.sources.expansion import expand
from gcbatch.sources.fingerprints import case_fingerprint, fingerprint_of
from gcbatch.sources.model import ArchiveItemLike, Case, Expansion, PendingGenerator, Source
from gcbatch.sources.names import glob_placeholders, split_name

__all__ = [
    "JSON_CHECK_LIMIT",
    "ArchiveItemLike",
    "Case",
    "Expansion",
    "PendingGenerator",
    "Source",
    "case_fingerprint",
    "expand",
    "fingerprint_of",
    "glob_placeholders",
    "mhd_data_file",
    "split_name",
]
