"""Reading request bodies the way DRF's parsers and serializers do, errors included."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gcbatch.sandbox.http import Request
from gcbatch.sandbox.responses import MSG_NULL, MSG_REQUIRED, HttpError, detail, json_response


def type_name(value: Any) -> str:
    """The Python type name DRF puts in its messages (it runs on Python, too)."""
    return {dict: "dict", list: "list", str: "str", int: "int", float: "float", bool: "bool"}.get(
        type(value), "NoneType" if value is None else type(value).__name__
    )


def json_body(req: Request, allow: str | None) -> Any:
    """The body as JSON (an empty body is ``{}``), or DRF's 400 parse error."""
    if not req.body.strip():
        return {}
    try:
        return json.loads(req.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise HttpError(detail(400, f"JSON parse error - {exc}", allow=allow)) from exc


def json_object_body(req: Request, allow: str | None) -> dict[str, Any]:
    """The body as a JSON object, or the serializer's 400 for any other JSON value."""
    body = json_body(req, allow)
    if not isinstance(body, dict):
        raise HttpError(json_response(
            400,
            {"non_field_errors": [
                f"Invalid data. Expected a dictionary, but got {type_name(body)}."
            ]},
            allow=allow,
        ))
    return body


def required_list(body: Mapping[str, Any], key: str, allow: str | None, *,
                  missing: str | None = None) -> list[Any]:
    """``body[key]`` as a list, or DRF's 400 for a missing field, a null or a non-list.

    ``missing``: the serializer's own ``validate()`` message for a missing key, as a
    ``non_field_errors`` entry. The upload PATCH actions validate partially (fields are
    not required there), so a missing list is caught by ``validate()``, not by DRF."""
    if key not in body:
        if missing is not None:
            raise HttpError(json_response(400, {"non_field_errors": [missing]}, allow=allow))
        raise HttpError(json_response(400, {key: [MSG_REQUIRED]}, allow=allow))
    value = body[key]
    if value is None:
        raise HttpError(json_response(400, {key: [MSG_NULL]}, allow=allow))
    if not isinstance(value, list):
        raise HttpError(json_response(
            400,
            {key: [f'Expected a list of items but got type "{type_name(value)}".']},
            allow=allow,
        ))
    return value
