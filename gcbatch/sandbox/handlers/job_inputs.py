"""One element of a job POST's ``inputs``: validated as the platform's serializer does.

Field errors of one input come together (``{"interface": [...], "image": [...]}``);
only when there are none do the object-level checks run, one message at a time, in
the platform's order (a source given at all, then the source the socket's kind needs,
then the value's schema).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gcbatch.sandbox import lifecycle as lc
from gcbatch.sandbox.context import Ctx
from gcbatch.sandbox.handlers.uploads import upload_live
from gcbatch.sandbox.parsing import type_name
from gcbatch.sandbox.responses import MSG_NO_OBJECT, MSG_NULL, MSG_REQUIRED
from gcbatch.sandbox.seed import Algorithm, Seed, Socket, User
from gcbatch.sandbox.store import Store
from gcbatch.sandbox.urls import hyperlink

_SOURCES_MESSAGE = (
    "You must provide at least one of ['image', 'value', 'file', 'user_upload', "
    "'upload_session', ('image_name', 'user_uploads')]."
)


@dataclass(frozen=True)
class ParsedInput:
    """A valid input: a JSON value, an existing image, or uploads to validate later."""

    socket: Socket
    source: Literal["value", "image", "upload", "uploads"]
    value: Any = None  # source "value"
    value_json: str = ""  # source "value": the canonical JSON (the CIV's identity)
    image: str | None = None  # source "image": the image pk
    uploads: Sequence[str] = ()  # sources "upload" (File) and "uploads" (Image)
    image_name: str | None = None  # source "uploads"


def parse_input(ctx: Ctx, item: Any, user: User) -> tuple[ParsedInput | None, dict[str, Any]]:
    """Validate one element of ``inputs``: (parsed, {}) or (None, errors)."""
    if not isinstance(item, dict):
        return None, {
            "non_field_errors": [f"Invalid data. Expected a dictionary, but got {type_name(item)}."]
        }
    errors: dict[str, Any] = {}
    socket: Socket | None = None
    if "interface" not in item:
        errors["interface"] = [MSG_REQUIRED]
    elif item["interface"] is None:
        errors["interface"] = [MSG_NULL]
    else:
        socket = ctx.seed.socket(str(item["interface"]))
        if socket is None:
            errors["interface"] = [f"Object with slug={item['interface']} does not exist."]
    image_pk: str | None = None
    if item.get("image") is not None:
        pk, err = hyperlink(item["image"], "image")
        if err is None:
            assert pk is not None
            img = ctx.store.image(pk)
            if img is None or not ctx.visibility.image(img, user):
                err = MSG_NO_OBJECT
            else:
                image_pk = pk
        if err is not None:
            errors["image"] = [err]
    if item.get("file") is not None:
        errors["file"] = ["The submitted data was not a file. Check the encoding type on the form."]
    if item.get("upload_session") is not None:
        # Upload sessions are not emulated: any one is a missing object.
        _, err = hyperlink(item["upload_session"], "upload_session")
        errors["upload_session"] = [err or MSG_NO_OBJECT]
    uploads: list[str] = []
    if item.get("user_upload") is not None:
        pk, err = hyperlink(item["user_upload"], "upload")
        if err is None:
            assert pk is not None
            err = _check_own_upload(ctx, pk, user)
        if err is not None:
            errors["user_upload"] = [err]
        elif pk is not None:
            uploads = [pk]
    many: list[str] = []
    if item.get("user_uploads") is not None:
        value = item["user_uploads"]
        if not isinstance(value, list):
            errors["user_uploads"] = [
                f'Expected a list of items but got type "{type_name(value)}".'
            ]
        else:
            for entry in value:
                pk, err = hyperlink(entry, "upload")
                if err is None:
                    assert pk is not None
                    err = _check_own_upload(ctx, pk, user)
                if err is not None:
                    errors["user_uploads"] = [err]
                    break
                assert pk is not None
                many.append(pk)
    image_name = item.get("image_name")
    if image_name is not None and not isinstance(image_name, str):
        errors["image_name"] = ["Not a valid string."]
    if errors:
        return None, errors
    assert socket is not None
    # The object-level checks of one input, in the platform's order.
    has_value = item.get("value") is not None
    provided = [image_pk is not None, has_value, bool(uploads), bool(many)]
    if not any(provided):
        return None, {"non_field_errors": [_SOURCES_MESSAGE]}
    kind = socket.kind_code
    if kind == "DCMIS":
        # components/serializers.py _validate_dicom_image: uploads only with a name
        if image_pk is None and not (many and image_name):
            return None, {"non_field_errors": [
                f"either user_uploads with image_name, or image are required for interface "
                f"kind {kind}"]}
        if image_pk is not None:
            return ParsedInput(socket, "image", image=image_pk), {}
        return ParsedInput(socket, "uploads", uploads=many, image_name=image_name), {}
    if socket.super_kind == "Image":
        if image_pk is None and not many:
            return None, {
                "non_field_errors": [
                    f"upload_session, user_uploads or image are required for interface kind {kind}"
                ]
            }
        if image_pk is not None:
            return ParsedInput(socket, "image", image=image_pk), {}
        return ParsedInput(socket, "uploads", uploads=many, image_name=image_name), {}
    if socket.super_kind == "File":
        if not uploads:
            return None, {
                "non_field_errors": [f"user_upload or file is required for interface kind {kind}"]
            }
        return ParsedInput(socket, "upload", uploads=uploads), {}
    if not has_value:
        return None, {"non_field_errors": [f"value is required for interface kind {kind}"]}
    message = lc.schema_error(item["value"], socket.schema)
    if message is not None:
        return None, {"__all__": [message]}
    value = item["value"]
    return ParsedInput(socket, "value", value=value, value_json=lc.canonical_json(value)), {}


def _check_own_upload(ctx: Ctx, pk: str, user: User) -> str | None:
    up = ctx.store.upload(pk)
    if up is None or up.user != user.name or up.consumed or not upload_live(ctx, up):
        return MSG_NO_OBJECT
    return None


def existing_civ(store: Store, p: ParsedInput) -> int | None:
    """The CIV that already holds a value or image input, if any (values and images
    are shared between jobs; that is what the duplicate check compares)."""
    if p.source == "value":
        return store.find_value_civ(p.socket.slug, p.value_json)
    assert p.image is not None
    return store.find_image_civ(p.socket.slug, p.image)


def _oxford(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    if len(items) == 2:
        return f"{items[0]} and {items[1]}"
    return ", ".join(items[:-1]) + f", and {items[-1]}"


def interfaces_message(seed: Seed, alg: Algorithm) -> str:
    """The platform's message for inputs that match none of ``alg``'s interfaces."""
    described = []
    for i, iface in enumerate(alg.interfaces, start=1):
        names = []
        for slug in iface.inputs:
            socket = seed.socket(slug)
            assert socket is not None
            names.append(f"{socket.title} ({socket.kind})")
        described.append(f"Interface {i}: {_oxford(names)}")
    return (
        "The set of inputs provided does not match any of the algorithm's interfaces. "
        "This algorithm supports the following input combinations: " + _oxford(described)
    )
