"""What one submission attempt of a case sends, as journalled before it is sent.

An *intent* in the journal carries a :class:`Sent` as its payload: the inputs by socket
(values, image URLs, and the upload filenames we chose, with the upload pks once they
exist) and the *stage* the attempt reached. ``upload``: the job POST was never sent, so
there is certainly no job (a crash there needs no reconciliation: the next run resumes
the uploads). ``post``: the POST may have gone out; the case is in doubt until an answer
or reconciliation settles it. The JSON form (``"v": 1``) is part of the journal format.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Literal, get_args

from gcbatch.api.job_inputs import ImageInput, JobInput, UploadInput, UploadsInput, ValueInput

__all__ = ["INPUT_KINDS", "InputKind", "Sent", "SentFile", "SentInput", "Stage", "job_inputs"]


class Stage(str, Enum):
    """How far an attempt got (``str`` so the journal's JSON stays as it was)."""

    UPLOAD = "upload"
    POST = "post"


#: value | image | uploads (an Image socket) | upload (a File socket)
InputKind = Literal["value", "image", "uploads", "upload"]
INPUT_KINDS: frozenset[str] = frozenset(get_args(InputKind))


@dataclass(frozen=True)
class SentFile:
    """One file we upload for a case: the name we chose, and the upload once created."""

    name: str
    path: str = ""
    size: int = 0
    upload_pk: str = ""
    s3_upload_id: str = ""
    #: ``sha256:<hex>`` of the bytes the completed upload holds ("" until known)
    sha256: str = ""

    def as_json(self) -> dict[str, Any]:
        out = {"name": self.name, "path": self.path, "size": self.size,
               "upload_pk": self.upload_pk, "s3_upload_id": self.s3_upload_id}
        if self.sha256:
            out["sha256"] = self.sha256
        return out

    @classmethod
    def from_json(cls, data: Any) -> SentFile:
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise ValueError("malformed sent file")
        return cls(name=data["name"], path=str(data.get("path") or ""),
                    size=int(data.get("size") or 0),
                    upload_pk=str(data.get("upload_pk") or ""),
                    s3_upload_id=str(data.get("s3_upload_id") or ""),
                    sha256=str(data.get("sha256") or ""))


@dataclass(frozen=True)
class SentInput:
    """One socket's input as POSTed: a value, an existing image, uploads that become one
    image (an Image socket), or one upload that becomes a file (a File socket)."""

    socket: str
    kind: InputKind
    value: Any = None
    image: str = ""
    files: tuple[SentFile, ...] = ()

    @property
    def is_upload(self) -> bool:
        return self.kind in ("uploads", "upload")

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"socket": self.socket, "kind": self.kind}
        if self.kind == "value":
            out["value"] = self.value
        elif self.kind == "image":
            out["image"] = self.image
        else:
            out["files"] = [f.as_json() for f in self.files]
        return out

    @classmethod
    def from_json(cls, data: Any) -> SentInput:
        if not isinstance(data, dict) or data.get("kind") not in INPUT_KINDS:
            raise ValueError("malformed sent input")
        return cls(
            socket=str(data.get("socket") or ""),
            kind=data["kind"],
            value=data.get("value"),
            image=str(data.get("image") or ""),
            files=tuple(SentFile.from_json(f) for f in data.get("files") or ()),
        )


@dataclass(frozen=True)
class Sent:
    """The inputs of one submission attempt, as journalled in the intent's ``payload``."""

    attempt: str
    inputs: tuple[SentInput, ...]
    stage: Stage = Stage.UPLOAD

    @property
    def uploads(self) -> tuple[SentFile, ...]:
        return tuple(f for i in self.inputs for f in i.files)

    @property
    def has_uploads(self) -> bool:
        return any(i.is_upload for i in self.inputs)

    def at_stage(self, stage: Stage) -> Sent:
        return replace(self, stage=stage)

    def with_file(self, socket: str, index: int, sent_file: SentFile) -> Sent:
        new_inputs = []
        for item in self.inputs:
            if item.socket == socket:
                files = list(item.files)
                files[index] = sent_file
                item = replace(item, files=tuple(files))
            new_inputs.append(item)
        return replace(self, inputs=tuple(new_inputs))

    def as_json(self) -> dict[str, Any]:
        return {"v": 1, "attempt": self.attempt, "stage": self.stage.value,
                "inputs": [i.as_json() for i in self.inputs]}

    @classmethod
    def from_json(cls, data: Any) -> Sent:
        if not isinstance(data, dict) or data.get("v") != 1:
            raise ValueError("not a gcbatch v1 intent payload")
        return cls(
            attempt=str(data.get("attempt") or ""),
            stage=Stage(data.get("stage") or Stage.UPLOAD.value),
            inputs=tuple(SentInput.from_json(i) for i in data.get("inputs") or ()),
        )


def job_inputs(sent: Sent) -> list[JobInput]:
    """The job POST's inputs for ``sent`` (every upload must have its pk by now)."""
    out: list[JobInput] = []
    for item in sent.inputs:
        if item.kind == "value":
            out.append(ValueInput(item.socket, item.value))
        elif item.kind == "image":
            out.append(ImageInput(item.socket, item.image))
        elif item.kind == "uploads":
            out.append(UploadsInput(item.socket, tuple(f.upload_pk for f in item.files)))
        else:
            out.append(UploadInput(item.socket, item.files[0].upload_pk))
    return out
