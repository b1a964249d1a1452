"""Reading a manifest: safe YAML with node locations, JSON-Schema validation, semantic checks.

Every problem is collected and reported at once as a :class:`gcbatch.errors.Finding` with
``file:line:col`` (1-based) pointing at the offending YAML node (or its key). One module per
concept, in the order a file goes through them:

- :mod:`~gcbatch.manifest.loading`: :func:`parse_manifest` / :func:`load_manifest`, the
  file's bytes through the layers below into :class:`Manifest` values;
- :mod:`~gcbatch.manifest.yaml_reader`: the YAML layer (plain tags only, no duplicate keys,
  capped aliases; the libyaml fast path), giving data plus locations (:class:`Located`);
- :mod:`~gcbatch.manifest.validation`: the schema layer, ``schemas/manifest.schema.json``
  (draft-07, shipped in the package) with every error in one short sentence;
- :mod:`~gcbatch.manifest.semantics`: what a schema cannot express (placeholders, duplicate
  explicit ids, a case left with no inputs);
- :mod:`~gcbatch.manifest.model`: the values and vocabularies; :mod:`~gcbatch.manifest.templates`:
  ``{placeholder}`` templates; :mod:`~gcbatch.manifest.naming`: how findings name places.

Checks that need the file system (globs, JSON files, ids after expansion) belong to
:func:`gcbatch.sources.expand`.
"""

from gcbatch.manifest.loading import load_manifest, parse_manifest
from gcbatch.manifest.model import (
    ARCHIVE_PLACEHOLDERS,
    CASE_ID_RE,
    GLOB_PLACEHOLDERS,
    SOURCE_KINDS,
    CaseSpec,
    Foreach,
    ForeachKind,
    Manifest,
    SourceKind,
    SourceSpec,
    SpecKind,
)
from gcbatch.manifest.naming import JsonPath
from gcbatch.manifest.templates import TemplateError, render_template, template_names
from gcbatch.manifest.validation import schema
from gcbatch.manifest.yaml_reader import MAX_ALIAS_NODES, MAX_NODES, Located, read_yaml

__all__ = [
    "ARCHIVE_PLACEHOLDERS",
    "CASE_ID_RE",
    "GLOB_PLACEHOLDERS",
    "MAX_ALIAS_NODES",
    "MAX_NODES",
    "SOURCE_KINDS",
    "CaseSpec",
    "Foreach",
    "ForeachKind",
    "JsonPath",
    "Located",
    "Manifest",
    "SourceKind",
    "SourceSpec",
    "SpecKind",
    "TemplateError",
    "load_manifest",
    "parse_manifest",
    "read_yaml",
    "render_template",
    "schema",
    "template_names",
]
