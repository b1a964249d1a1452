"""API value types, parsed from the JSON the Grand Challenge server sends.

Every type is a frozen dataclass built by a ``from_json`` classmethod that is *tolerant*:
unknown fields are ignored (the server adds fields over time), optional fields default, and
only the fields gcbatch relies on are required. A required field that is missing or of the
wrong type raises :class:`MalformedResponse` (a ``ValueError``); the client turns that into
an :class:`gcbatch.errors.ApiError` naming the URL.

Shapes follow the captures recorded from the real application in ``tests/data/gc-observed/``:

- A socket value carries its socket under ``"interface"`` (and, on newer servers, also
  under ``"socket"``). In a job *list/detail* that is the full socket object; in the 201
  answer to a job POST it is only the slug string. :class:`SocketValue` accepts both.
- The 201 answer to a job POST has only ``pk``, ``inputs`` and ``status`` (no ``api_url``):
  :meth:`Job.from_json` takes a fallback ``api_url`` for that case.
- Durations are ISO 8601 (``"P0DT00H22M17S"``) or null.

Mapping/list-valued fields (``SocketValue.value`` may be a dict) make some instances
unhashable; nothing in gcbatch hashes these values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from gcbatch.statuses import FAILED_STATUSES, TERMINAL_STATUSES, JobStatus

__all__ = [
    "Algorithm",
    "Archive",
    "ArchiveItem",
    "Image",
    "ImageFile",
    "Interface",
    "Job",
    "MalformedResponse",
    "Socket",
    "SocketValue",
    "Upload",
    "UploadPart",
    "parse_iso_duration",
]


class MalformedResponse(ValueError):
    """A server answer lacks a field gcbatch needs (or has it with the wrong type)."""


# ---------------------------------------------------------------------------------------
# small typed accessors: the only place that looks at raw JSON types


def _obj(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise MalformedResponse(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


def _req_str(data: Mapping[str, Any], key: str, what: str) -> str:
    value = data.get(key)
    # pks are uuids (strings) for most objects but ints for sockets/socket values;
    # accept ints where a string id is wanted so a server change does not break us.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise MalformedResponse(f"{what}: missing or invalid field {key!r}")
    return str(value)


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


def _str(data: Mapping[str, Any], key: str, default: str = "") -> str:
    value = _opt_str(data, key)
    return default if value is None else value


def _opt_int(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _opt_float(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _list(data: Mapping[str, Any], key: str, what: str) -> Sequence[Any]:
    value = data.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise MalformedResponse(f"{what}: field {key!r} is not a list")
    return value


_DURATION = re.compile(
    r"^P(?:(?P<weeks>\d+(?:\.\d+)?)W)?(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


def parse_iso_duration(text: Any) -> timedelta | None:
    """``"P0DT00H22M17S"`` → ``timedelta(minutes=22, seconds=17)``; None/unparsable → None.

    Durations are informative only, so a format we do not know yields None rather than an
    error (the job itself is still usable).
    """
    if not isinstance(text, str):
        return None
    match = _DURATION.match(text.strip())
    if match is None or text.strip() in ("P", "PT"):
        return None
    parts = {k: float(v) for k, v in match.groupdict().items() if v is not None}
    return timedelta(**parts)


# ---------------------------------------------------------------------------------------
# sockets, interfaces, algorithms


@dataclass(frozen=True)
class Socket:
    """A component interface ("socket"): what one input or output of an algorithm is."""

    slug: str
    pk: int | None = None
    title: str = ""
    kind: str = ""
    #: "Image", "File" or "Value" (what source a job input for it must use)
    super_kind: str = ""
    #: where gcapi stores it below an output directory ("images/<x>", "<x>.json", ...)
    relative_path: str = ""
    default_value: Any = None

    @classmethod
    def from_json(cls, data: Any) -> Socket:
        d = _obj(data, "socket")
        return cls(
            slug=_req_str(d, "slug", "socket"),
            pk=_opt_int(d, "pk"),
            title=_str(d, "title"),
            kind=_str(d, "kind"),
            super_kind=_str(d, "super_kind"),
            relative_path=_str(d, "relative_path"),
            default_value=d.get("default_value"),
        )

    @property
    def is_image(self) -> bool:
        return self.super_kind == "Image"

    @property
    def is_file(self) -> bool:
        return self.super_kind == "File"

    @property
    def is_value(self) -> bool:
        return self.super_kind == "Value"


@dataclass(frozen=True)
class Interface:
    """One input combination an algorithm accepts, and the outputs it then produces."""

    inputs: tuple[Socket, ...]
    outputs: tuple[Socket, ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> Interface:
        d = _obj(data, "interface")
        return cls(
            inputs=tuple(Socket.from_json(s) for s in _list(d, "inputs", "interface")),
            outputs=tuple(Socket.from_json(s) for s in _list(d, "outputs", "interface")),
        )

    @property
    def input_slugs(self) -> frozenset[str]:
        return frozenset(s.slug for s in self.inputs)


@dataclass(frozen=True)
class Algorithm:
    pk: str
    api_url: str
    slug: str
    title: str = ""
    url: str = ""
    #: seconds; None when the server has no estimate yet
    average_duration: float | None = None
    interfaces: tuple[Interface, ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> Algorithm:
        d = _obj(data, "algorithm")
        return cls(
            pk=_req_str(d, "pk", "algorithm"),
            api_url=_req_str(d, "api_url", "algorithm"),
            slug=_req_str(d, "slug", "algorithm"),
            title=_str(d, "title"),
            url=_str(d, "url"),
            average_duration=_opt_float(d, "average_duration"),
            interfaces=tuple(Interface.from_json(i) for i in _list(d, "interfaces", "algorithm")),
        )

    @property
    def input_sets(self) -> tuple[frozenset[str], ...]:
        """The socket-slug sets a job's inputs must equal one of (server check no. 6)."""
        return tuple(i.input_slugs for i in self.interfaces)

    def interface_for(self, slugs: Sequence[str] | frozenset[str]) -> Interface | None:
        """The interface whose input set equals ``slugs`` exactly, else None."""
        wanted = frozenset(slugs)
        for interface in self.interfaces:
            if interface.input_slugs == wanted:
                return interface
        return None

    def input_sockets(self) -> dict[str, Socket]:
        """Every input socket of every interface, by slug."""
        return {s.slug: s for interface in self.interfaces for s in interface.inputs}


# ---------------------------------------------------------------------------------------
# socket values and jobs


@dataclass(frozen=True)
class SocketValue:
    """One input or output of a job, or one value of an archive item.

    ``socket_slug`` is always known; ``socket`` is the full socket when the server sent the
    object (lists and details) and None when it sent only the slug (the 201 of a job POST).
    Exactly one of ``value`` / ``file`` / ``image`` is meaningful, by the socket's super kind.
    """

    socket_slug: str
    pk: int | None = None
    socket: Socket | None = None
    value: Any = None
    #: URL of the stored file (a GET answers 302 to storage)
    file: str | None = None
    #: api URL of the image (``.../cases/images/<pk>/``)
    image: str | None = None
    image_name: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> SocketValue:
        d = _obj(data, "socket value")
        raw = d.get("socket")
        if raw is None:
            raw = d.get("interface")
        socket: Socket | None = None
        if isinstance(raw, str):
            slug = raw
        elif isinstance(raw, Mapping):
            socket = Socket.from_json(raw)
            slug = socket.slug
        else:
            raise MalformedResponse("socket value: missing 'interface'/'socket'")
        return cls(
            socket_slug=slug,
            pk=_opt_int(d, "pk"),
            socket=socket,
            value=d.get("value"),
            file=_opt_str(d, "file"),
            image=_opt_str(d, "image"),
            image_name=_opt_str(d, "image_name"),
        )

    @property
    def image_pk(self) -> str | None:
        """The pk at the end of ``image`` (``.../cases/images/<pk>/``), if any."""
        return _last_path_segment(self.image)


def _last_path_segment(url: str | None) -> str | None:
    if not url:
        return None
    stripped = url.split("?", 1)[0].rstrip("/")
    last = stripped.rsplit("/", 1)[-1]
    return last or None


@dataclass(frozen=True)
class Job:
    pk: str
    api_url: str
    status: str
    url: str = ""
    algorithm: str = ""
    algorithm_image: str = ""
    inputs: tuple[SocketValue, ...] = ()
    outputs: tuple[SocketValue, ...] = ()
    exec_duration: timedelta | None = None
    invoke_duration: timedelta | None = None

    @classmethod
    def from_json(cls, data: Any, *, api_url: str = "") -> Job:
        """Parse a job; ``api_url`` is the fallback when the server omits it (job POST 201)."""
        d = _obj(data, "job")
        own_url = _opt_str(d, "api_url") or api_url
        if not own_url:
            raise MalformedResponse("job: missing field 'api_url'")
        return cls(
            pk=_req_str(d, "pk", "job"),
            api_url=own_url,
            status=_req_str(d, "status", "job"),
            url=_str(d, "url"),
            algorithm=_str(d, "algorithm"),
            algorithm_image=_str(d, "algorithm_image"),
            inputs=tuple(SocketValue.from_json(v) for v in _list(d, "inputs", "job")),
            outputs=tuple(SocketValue.from_json(v) for v in _list(d, "outputs", "job")),
            exec_duration=parse_iso_duration(d.get("exec_duration")),
            invoke_duration=parse_iso_duration(d.get("invoke_duration")),
        )

    @property
    def is_terminal(self) -> bool:
        """Ended: Succeeded, Failed or Cancelled. An unknown status is NOT terminal."""
        return self.status in TERMINAL_STATUSES

    @property
    def is_active(self) -> bool:
        """Counts against the active-jobs limit (everything not terminal)."""
        return not self.is_terminal

    @property
    def succeeded(self) -> bool:
        return self.status == JobStatus.SUCCEEDED

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES

    def input(self, slug: str) -> SocketValue | None:
        return next((v for v in self.inputs if v.socket_slug == slug), None)

    def output(self, slug: str) -> SocketValue | None:
        return next((v for v in self.outputs if v.socket_slug == slug), None)


# ---------------------------------------------------------------------------------------
# uploads


@dataclass(frozen=True)
class UploadPart:
    """A part the storage holds for a multipart upload (from ``list-parts``)."""

    part_number: int
    etag: str
    size: int | None = None

    @classmethod
    def from_json(cls, data: Any) -> UploadPart:
        d = _obj(data, "upload part")
        number = _opt_int(d, "PartNumber")
        if number is None:
            raise MalformedResponse("upload part: missing 'PartNumber'")
        return cls(
            part_number=number, etag=_req_str(d, "ETag", "upload part"), size=_opt_int(d, "Size")
        )


@dataclass(frozen=True)
class Upload:
    """A user upload (``uploads/``); single-use, consumed by the job that uses it.

    ``presigned_urls`` is only filled by ``generate-presigned-urls``; ``parts`` only by
    ``list-parts``.
    """

    pk: str
    api_url: str
    filename: str
    s3_upload_id: str
    status: str = ""
    key: str = ""
    created: str = ""
    presigned_urls: Mapping[int, str] = field(default_factory=dict, hash=False)
    parts: tuple[UploadPart, ...] = ()

    INITIALIZED = "Initialized"
    COMPLETED = "Completed"
    ABORTED = "Aborted"
    PENDING = "Pending"

    @classmethod
    def from_json(cls, data: Any) -> Upload:
        d = _obj(data, "upload")
        raw_urls = d.get("presigned_urls") or {}
        if not isinstance(raw_urls, Mapping):
            raise MalformedResponse("upload: 'presigned_urls' is not an object")
        urls: dict[int, str] = {}
        for number, url in raw_urls.items():
            try:
                urls[int(number)] = str(url)
            except ValueError as exc:
                raise MalformedResponse(f"upload: bad part number {number!r}") from exc
        return cls(
            pk=_req_str(d, "pk", "upload"),
            api_url=_req_str(d, "api_url", "upload"),
            filename=_str(d, "filename"),
            s3_upload_id=_req_str(d, "s3_upload_id", "upload"),
            status=_str(d, "status"),
            key=_str(d, "key"),
            created=_str(d, "created"),
            presigned_urls=urls,
            parts=tuple(UploadPart.from_json(p) for p in _list(d, "parts", "upload")),
        )

    @property
    def is_completed(self) -> bool:
        return self.status == self.COMPLETED


# ---------------------------------------------------------------------------------------
# archives and images


@dataclass(frozen=True)
class Archive:
    pk: str
    api_url: str
    title: str = ""
    slug: str = ""
    url: str = ""

    @classmethod
    def from_json(cls, data: Any) -> Archive:
        d = _obj(data, "archive")
        return cls(
            pk=_req_str(d, "pk", "archive"),
            api_url=_req_str(d, "api_url", "archive"),
            title=_str(d, "title"),
            slug=_str(d, "slug"),
            url=_str(d, "url"),
        )


@dataclass(frozen=True)
class ArchiveItem:
    pk: str
    archive: str = ""
    title: str = ""
    values: tuple[SocketValue, ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> ArchiveItem:
        d = _obj(data, "archive item")
        return cls(
            pk=_req_str(d, "pk", "archive item"),
            archive=_str(d, "archive"),
            title=_str(d, "title"),
            values=tuple(SocketValue.from_json(v) for v in _list(d, "values", "archive item")),
        )

    def value_for(self, slug: str) -> SocketValue | None:
        return next((v for v in self.values if v.socket_slug == slug), None)


@dataclass(frozen=True)
class ImageFile:
    pk: str
    file: str
    image_type: str = ""
    image: str = ""

    @classmethod
    def from_json(cls, data: Any) -> ImageFile:
        d = _obj(data, "image file")
        return cls(
            pk=_req_str(d, "pk", "image file"),
            file=_req_str(d, "file", "image file"),
            image_type=_str(d, "image_type"),
            image=_str(d, "image"),
        )

    @property
    def filename(self) -> str:
        """The last segment of the file URL (what gcapi saves it as)."""
        return _last_path_segment(self.file) or self.pk


@dataclass(frozen=True)
class Image:
    pk: str
    api_url: str
    name: str = ""
    files: tuple[ImageFile, ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> Image:
        d = _obj(data, "image")
        return cls(
            pk=_req_str(d, "pk", "image"),
            api_url=_req_str(d, "api_url", "image"),
            name=_str(d, "name"),
            files=tuple(ImageFile.from_json(f) for f in _list(d, "files", "image")),
        )
