"""Validate HTTP responses against Grand Challenge's own OpenAPI 3 schema (issue 7).

The schema is the one the real server published about itself
(``shared/gc-observed/openapi.json``), copied into ``tests/data/gc-openapi.json`` so that a
clone without ``shared/`` can still run the checks; ``test_openapi_check.py`` proves the
copy still equals the shared original whenever that is present.

Why a hand-made validator instead of a library: the OpenAPI 3.0 dialect is not JSON
Schema. ``nullable: true`` must become "or null" (``jsonschema`` would reject a ``null``
``hanging_protocol``), ``writeOnly`` properties are never required in a response, and
``$ref`` points into the whole document. We convert the document once into plain
draft-04 JSON Schema, register it with :mod:`referencing`, and validate with
``jsonschema`` using a format checker for the formats the server declares (``uuid``,
``uri``, ``date-time``, ``date``), so a job ``pk`` that is not a UUID is a violation.

drf-spectacular documents only the success status of each operation. A response whose
status the schema does not document (the 400/401/403/404 error bodies) has nothing to be
checked against here; their wording is checked by the replay test against the captures.

The schema also has a few statements that the real server itself breaks (see
:data:`ERRATA`); each is relaxed here on the evidence of a recorded capture, and
``test_openapi_check.py`` proves that each erratum is still needed and sufficient.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = TESTS_DIR.parent
#: The committed copy every run uses.
SPEC_PATH = TESTS_DIR / "data" / "gc-openapi.json"
#: The original beside the repository (present on the developers' machines and in CI).
SHARED_DIR = REPO_ROOT.parent / "shared" / "gc-observed"
SHARED_SPEC_PATH = SHARED_DIR / "openapi.json"
#: The recorded exchanges, committed by the replay test (tests/sandbox/test_replay.py).
LOCAL_CAPTURES_DIR = TESTS_DIR / "data" / "gc-observed"


def captures_dir() -> Path:
    """Where the recorded exchanges are: the committed copy, else shared/ beside the repo."""
    return LOCAL_CAPTURES_DIR if (LOCAL_CAPTURES_DIR / "captures").is_dir() else SHARED_DIR


_BASE_URI = "urn:gc-openapi"
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@dataclass(frozen=True)
class Erratum:
    """A place where the published schema is wrong about the real server's answers.

    ``pointer`` is a JSON pointer into the document; ``fix(node, document)`` edits that
    node in place.
    ``evidence`` names the capture(s) in which the real server contradicts the schema.
    """

    pointer: str
    reason: str
    evidence: str
    fix: Callable[[dict[str, Any], dict[str, Any]], None]


def _make_nullable(node: dict[str, Any], document: dict[str, Any]) -> None:
    node["nullable"] = True


def _not_required(name: str) -> Callable[[dict[str, Any], dict[str, Any]], None]:
    def fix(node: dict[str, Any], document: dict[str, Any]) -> None:
        node["required"] = [key for key in node.get("required", []) if key != name]

    return fix


def _forbid_pattern(node: dict[str, Any], document: dict[str, Any]) -> None:
    # The model's RegexValidator has inverse_match=True and re.IGNORECASE: the value must
    # NOT match, in either case (JSON Schema patterns have no flags, hence [0-9a-fA-F]).
    node["not"] = {"pattern": node.pop("pattern").replace("[0-9a-f]", "[0-9a-fA-F]")}


ERRATA: tuple[Erratum, ...] = (
    Erratum(
        pointer="/components/schemas/ComponentInterface/properties/relative_path",
        reason=(
            "The schema demands that relative_path CONTAIN a UUID; the server's model has "
            "the opposite rule (a RegexValidator with inverse_match=True: 'No uuids in "
            "path'), which drf-spectacular rendered as a plain pattern. The real server "
            "sends 'oracle-integer.json', 'results.json', ''. We check the real rule."
        ),
        evidence="captures/161-algorithm-detail-final-GET-200.json (every socket)",
        fix=_forbid_pattern,
    ),
    Erratum(
        pointer="/components/schemas/HyperlinkedJob/properties/exec_duration",
        reason="exec_duration is declared a string, but it is null until the job has run.",
        evidence="captures/019-job-detail-after-create-value-GET-200.json",
        fix=_make_nullable,
    ),
    Erratum(
        pointer="/components/schemas/HyperlinkedJob/properties/invoke_duration",
        reason="invoke_duration is declared a string, but it is null until the job has run.",
        evidence="captures/019-job-detail-after-create-value-GET-200.json",
        fix=_make_nullable,
    ),
    Erratum(
        pointer="/components/schemas/HyperlinkedImage",
        reason=(
            "HyperlinkedImage requires 'shape', but the server leaves the key out when the "
            "image's color_space is blank (Image.shape raises KeyError on "
            "COLOR_SPACE_COMPONENTS[''] and DRF skips a read-only field whose attribute "
            "lookup fails); seen for the archive's images in the image list."
        ),
        evidence="captures/011-cases-images-list-GET-200.json",
        fix=_not_required("shape"),
    ),
)


def _pointer_get(doc: Any, pointer: str) -> Any:
    node = doc
    for raw in pointer.lstrip("/").split("/"):
        node = node[raw.replace("~1", "/").replace("~0", "~")]
    return node


def _to_json_schema(node: Any, *, response: bool) -> Any:
    """Convert an OpenAPI 3.0 schema object (recursively) into draft-04 JSON Schema."""
    if isinstance(node, list):
        return [_to_json_schema(item, response=response) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str) and value.startswith("#"):
            out[key] = _BASE_URI + value
        elif key in ("properties", "patternProperties") and isinstance(value, dict):
            out[key] = {
                name: _to_json_schema(sub, response=response) for name, sub in value.items()
            }
        elif key in ("example", "examples", "description", "title", "default", "discriminator"):
            continue  # annotations; "example" values need not even be valid
        else:
            out[key] = _to_json_schema(value, response=response)
    if (
        response
        and isinstance(out.get("properties"), dict)
        and isinstance(out.get("required"), list)
    ):
        # A writeOnly property is never part of a response, so it cannot be required there.
        write_only = {
            name
            for name, sub in node.get("properties", {}).items()
            if isinstance(sub, dict) and sub.get("writeOnly")
        }
        out["required"] = [name for name in out["required"] if name not in write_only]
        if not out["required"]:
            del out["required"]
    if out.pop("nullable", False):
        for key in ("readOnly", "writeOnly"):
            out.pop(key, None)
        return {"anyOf": [{"type": "null"}, out]}
    return out


def _is_uuid(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return len(value) == 36


def _is_uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return bool(parts.scheme) and bool(parts.netloc) and " " not in value


def _is_datetime(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})", value):
        return False
    try:
        dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _is_date(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return len(value) == 10


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("uuid")(_is_uuid)
    checker.checks("uri")(_is_uri)
    checker.checks("date-time")(_is_datetime)
    checker.checks("date")(_is_date)
    return checker


@dataclass(frozen=True)
class Operation:
    """One (method, path template) of the schema, with a matcher for concrete paths."""

    method: str
    template: str
    regex: re.Pattern[str]
    literal_segments: int
    responses: Mapping[str, Any]


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one response.

    ``checked`` is False when there was nothing to check it against: ``reason`` says why
    (no operation for that method and path, or a status the schema does not document).
    ``errors`` lists every schema violation, each with the JSON path where it happened.
    """

    method: str
    path: str
    status: int
    operation: str | None
    checked: bool
    errors: tuple[str, ...] = ()
    reason: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class OpenAPISpec:
    """The server's OpenAPI document, converted once, with per-schema validators cached."""

    document: dict[str, Any]
    errata: tuple[Erratum, ...] = ERRATA
    #: The OpenAPI document with the errata applied (what schemathesis is given).
    patched: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _operations: list[Operation] = field(default_factory=list, init=False, repr=False)
    _registry: Registry[Any] = field(init=False, repr=False)
    _validators: dict[tuple[str, str, str], jsonschema.protocols.Validator] = field(
        default_factory=dict, init=False, repr=False
    )

    def __post_init__(self) -> None:
        patched = copy.deepcopy(self.document)
        for erratum in self.errata:
            erratum.fix(_pointer_get(patched, erratum.pointer), patched)
        self.patched = patched
        converted = _to_json_schema(patched, response=True)
        self._registry = Registry().with_resource(
            _BASE_URI, Resource(contents=converted, specification=DRAFT4)
        )
        self._converted = converted
        for template, item in patched.get("paths", {}).items():
            regex, literal = _template_regex(template)
            for method, op in item.items():
                if method in _METHODS:
                    self._operations.append(
                        Operation(method.upper(), template, regex, literal, op.get("responses", {}))
                    )
        # Prefer the most literal template: "/algorithms/images/" over "/algorithms/{id}/".
        self._operations.sort(key=lambda op: (-op.literal_segments, op.template))

    @classmethod
    def load(cls, path: Path = SPEC_PATH, *, errata: tuple[Erratum, ...] = ERRATA) -> OpenAPISpec:
        return cls(json.loads(path.read_text(encoding="utf-8")), errata=errata)

    @property
    def operations(self) -> tuple[Operation, ...]:
        return tuple(self._operations)

    def match(self, method: str, path: str) -> Operation | None:
        """The operation for ``method`` and a concrete ``path`` (query string ignored)."""
        path = urlsplit(path).path
        for op in self._operations:
            if op.method == method.upper() and op.regex.fullmatch(path):
                return op
        return None

    def path_known(self, path: str) -> bool:
        """Whether any method is documented for ``path``."""
        path = urlsplit(path).path
        return any(op.regex.fullmatch(path) for op in self._operations)

    def validate(
        self,
        method: str,
        path: str,
        status: int,
        body: Any,
        *,
        content_type: str | None = "application/json",
    ) -> Verdict:
        """Check one response. ``body`` is the parsed JSON (or raw bytes if not JSON)."""
        op = self.match(method, path)
        if op is None:
            return Verdict(
                method, path, status, None, False, reason="no such operation in the schema"
            )
        response = op.responses.get(str(status))
        if response is None:
            return Verdict(
                method,
                path,
                status,
                op.template,
                False,
                reason=f"status {status} not documented for {op.method} {op.template}",
            )
        content = response.get("content") or {}
        if not content:
            return Verdict(method, path, status, op.template, True)  # e.g. 204: nothing to check
        media = (content_type or "").split(";")[0].strip().lower()
        if media not in content:
            return Verdict(
                method,
                path,
                status,
                op.template,
                True,
                errors=(f"content type {content_type!r}; the schema documents {sorted(content)}",),
            )
        validator = self._validator(op, str(status), media)
        errors = sorted(
            (_describe(err) for err in validator.iter_errors(body)),
        )
        return Verdict(method, path, status, op.template, True, errors=tuple(errors))

    def _validator(self, op: Operation, status: str, media: str) -> jsonschema.protocols.Validator:
        key = (op.method + " " + op.template, status, media)
        found = self._validators.get(key)
        if found is None:
            pointer = "/".join(
                part.replace("~", "~0").replace("/", "~1")
                for part in (
                    "paths",
                    op.template,
                    op.method.lower(),
                    "responses",
                    status,
                    "content",
                    media,
                    "schema",
                )
            )
            schema = {"$ref": f"{_BASE_URI}#/{pointer}"}
            found = jsonschema.Draft4Validator(
                schema, registry=self._registry, format_checker=_format_checker()
            )
            self._validators[key] = found
        return found


def _template_regex(template: str) -> tuple[re.Pattern[str], int]:
    parts = re.split(r"(\{[^/{}]+\})", template)
    literal = sum(1 for seg in template.strip("/").split("/") if not seg.startswith("{"))
    pattern = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(pattern), literal


def _describe(err: jsonschema.ValidationError) -> str:
    where = "$" + "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]" for p in err.absolute_path)
    text = err.message
    if len(text) > 300:
        text = text[:300] + "…"
    return f"{where}: {text}"


def iter_captures(folder: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """The recorded exchanges in ``folder`` (``NNN-....json``), in order."""
    for path in sorted(folder.glob("*.json")):
        yield path.name, json.loads(path.read_text(encoding="utf-8"))


def capture_verdict(spec: OpenAPISpec, capture: Mapping[str, Any]) -> Verdict:
    """Validate one recorded exchange's response against ``spec``."""
    headers = {k.lower(): v for k, v in (capture.get("response_headers") or {}).items()}
    return spec.validate(
        capture["method"],
        capture["path"],
        int(capture["status"]),
        capture.get("response_body"),
        content_type=headers.get("content-type"),
    )
