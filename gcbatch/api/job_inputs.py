"""What a job POST carries per socket, typed: the one place that knows its wire format.

A job's inputs name each socket by slug and give exactly one source (the contract,
``POST algorithms/jobs/``): a JSON ``value`` for a Value socket, an existing ``image``'s
API URL, ``user_uploads`` (uploads that become one image; with ``image_name`` for a DICOM Image
Set socket) for an Image socket, or one
``user_upload`` for a File socket. Callers build these values; only
:meth:`gcbatch.api.client.GrandChallengeClient.create_job` turns them into JSON (uploads
are named by pk here and become API URLs there, on the client's own base URL).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ImageInput", "JobInput", "UploadInput", "UploadsInput", "ValueInput"]


@dataclass(frozen=True)
class ValueInput:
    """A Value socket's JSON value (never null: the server refuses it)."""

    socket: str
    value: Any


@dataclass(frozen=True)
class ImageInput:
    """An existing image (its API URL) on an Image socket."""

    socket: str
    image_url: str


@dataclass(frozen=True)
class UploadsInput:
    """Completed uploads (by pk) that the platform builds one image from.

    ``image_name``: a DICOM Image Set socket requires it with the uploads (the platform's
    "either user_uploads with image_name, or image are required for interface kind
    DCMIS") and names the image after it; "" (never sent) for every other socket.
    """

    socket: str
    upload_pks: tuple[str, ...]
    image_name: str = ""


@dataclass(frozen=True)
class UploadInput:
    """One completed upload (by pk) that becomes a File socket's value."""

    socket: str
    upload_pk: str


JobInput = ValueInput | ImageInput | UploadsInput | UploadInput
