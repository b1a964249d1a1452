"""How a sandbox job moves through time, and what it produces. Pure functions, no I/O.

Statuses (as recorded in ``gc-observed/job-status-sequences.json``)::

    Validating inputs → Queued → Provisioned → Executing → Executed → Succeeded | Failed
    Validating inputs → Cancelled          (an upload that is incomplete or not valid)
    Validating inputs (forever)            (the platform bug, see below)

Each job stores its creation time and the phase durations in force when it was made
(``schedule``). Its status is a function of the clock: ``jobrunner.py`` "advances" due
jobs at the start of every request, applying the side effects of crossing a boundary — at
the end of validation the uploads are checked, turned into inputs and consumed; at the end
the outputs appear (``outputs.py``; or the job fails). A zero duration makes a job jump
straight through.

**Upload checks at the end of validation** (:func:`check_upload_contents`): an upload that
was never completed → Cancelled; an Image socket given bytes that are no image we know
(MHA/MHD, TIFF, DICOM, NIfTI) → Cancelled; a JSON File socket given bytes that do not parse
→ *stays "Validating inputs" forever*, because that is what the recorded platform does
(capture 154, job ``df912743``): it holds one of the user's active-job slots until the
operator intervenes. ``SandboxConfig.emulate_stuck_json_bug=False`` ends such a job
Cancelled instead.

**Failure**: a job of an algorithm marked ``failing`` always ends Failed; otherwise it
fails with probability ``failure_rate``, drawn from a generator seeded with
``(rng_seed, job pk)`` so the same job always has the same fate.

**Outputs** (``outputs_mode: derived``, the default) are derived from the inputs only, so a
test can recompute them with :func:`derive_outputs`:

1. ``inputs`` = a mapping socket slug → description: a Value socket's JSON value; a File
   socket's ``{"file_sha256": <hex>}``; an Image socket's ``{"image_sha256": <hex of the
   image file's bytes>}``.
2. ``digest`` = sha256 hex of the canonical JSON (sorted keys, no spaces) of
   ``{"algorithm": <slug>, "inputs": inputs}``.
3. Per output socket: Integer → ``int(digest[0:8], 16) % 100``; Float →
   ``round(int(digest[8:16], 16) / 2**32, 6)``; Bool → ``int(digest[16], 16) % 2 == 1``;
   String/Choice → ``"sandbox-" + digest[:12]``; other Value kinds → ``{"algorithm",
   "digest", "inputs"}``; a JSON File → that same object as indented JSON bytes; any other
   File → the text ``"<socket slug>,<digest>\\n"``; an Image → an 8x8 2-D MHA image
   (MET_UCHAR, spacing 1 1) whose 64 voxels are the 32 digest bytes twice, named
   ``<socket slug>.mha``.

``outputs_mode: invocation`` reproduces the recorded fixture algorithm, whose single Value
output echoes how it was invoked (``{"acc": 0.5, "score": 1, "invocation_json": [...]}``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gcbatch.sandbox.config import SandboxConfig
from gcbatch.sandbox.seed import Algorithm, Socket

VALIDATING = "Validating inputs"
QUEUED = "Queued"
PROVISIONED = "Provisioned"
EXECUTING = "Executing"
EXECUTED = "Executed"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
CANCELLED = "Cancelled"

PHASES = (VALIDATING, QUEUED, PROVISIONED, EXECUTING, EXECUTED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})

CANCELLED_MESSAGE = "One or more of the inputs failed validation."


def make_schedule(config: SandboxConfig) -> str:
    """The phase durations in force now, frozen into the job ("v,q,p,e,x" seconds)."""
    return ",".join(repr(float(d)) for d in config.phase_durations())


@functools.lru_cache(maxsize=64)
def parse_schedule(schedule: str) -> tuple[float, ...]:
    # Cached: a sandbox has a handful of distinct schedules and this runs per job event.
    return tuple(float(x) for x in schedule.split(","))


def boundaries(created: float, schedule: str) -> tuple[float, ...]:
    """Absolute end times of the five phases."""
    out = []
    t = created
    for d in parse_schedule(schedule):
        t += d
        out.append(t)
    return tuple(out)


def phase_at(created: float, schedule: str, now: float) -> int:
    """Index of the phase at ``now``: 0..4 for PHASES, 5 once the job has ended."""
    for i, end in enumerate(boundaries(created, schedule)):
        if now < end:
            return i
    return len(PHASES)


def decide_outcome(algorithm: Algorithm, config: SandboxConfig, job_pk: str) -> str:
    """'fail' or 'succeed', reproducibly for a given job pk and rng seed."""
    if algorithm.failing:
        return "fail"
    if config.failure_rate <= 0.0:
        return "succeed"
    rng = random.Random(f"{config.rng_seed}:{job_pk}")
    return "fail" if rng.random() < config.failure_rate else "succeed"


def iso_duration(seconds: float) -> str:
    """Seconds as the platform writes durations: ``P0DT00H22M17S``."""
    total = round(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"P{days}DT{hours:02d}H{minutes:02d}M{secs:02d}S"


# -- values ------------------------------------------------------------------------------


def canonical_json(value: Any) -> str:
    """The one text of a JSON value used for identity (dedup keys, digests)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        # JSON Schema counts 2.0 as an integer; booleans are never numbers.
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "null":
        return value is None
    return True


def schema_error(value: Any, schema: Mapping[str, Any] | None) -> str | None:
    """The platform's message for a value that breaks its socket's schema, else None.

    Recorded: ``"abc"`` for an integer socket → ``JSON does not fulfill schema: instance
    'abc' is not of type 'integer'``; ``1.5`` → ``... instance is not of type 'integer'``
    (the platform shows string instances and elides others). Simple ``{"type": ...}``
    schemas take a fast path; anything richer goes through jsonschema.
    """
    if schema is None:
        return None
    keys = set(schema)
    if keys == {"type"} and isinstance(schema["type"], str):
        if _is_type(value, schema["type"]):
            return None
        return _message(value, f"is not of type {schema['type']!r}")
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(schema)
    error = jsonschema.exceptions.best_match(validator_cls(schema).iter_errors(value))
    if error is None:
        return None
    text = error.message
    shown = repr(error.instance)
    if text.startswith(shown):
        return _message(error.instance, text[len(shown) :].lstrip())
    return f"JSON does not fulfill schema: {text}"


def _message(instance: Any, rest: str) -> str:
    if isinstance(instance, str):
        return f"JSON does not fulfill schema: instance {instance!r} {rest}"
    return f"JSON does not fulfill schema: instance {rest}"


# -- images ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageMeta:
    """What the sandbox reports about an image (the parts of HyperlinkedImage it knows)."""

    image_type: str  # "MHD" | "TIFF" | "DCM" | "NII"
    width: int | None
    height: int | None
    depth: int | None
    voxel_width_mm: float | None = None
    voxel_height_mm: float | None = None
    voxel_depth_mm: float | None = None
    color_space: str = "GRAY"
    channels: int = 1

    def shape_without_color(self) -> list[int]:
        dims = [d for d in (self.depth, self.height, self.width) if d is not None]
        return dims

    def shape(self) -> list[int]:
        dims = self.shape_without_color()
        return [*dims, self.channels] if self.channels > 1 else dims

    def as_json(self) -> dict[str, Any]:
        return {
            "image_type": self.image_type,
            "width": self.width,
            "height": self.height,
            "depth": self.depth,
            "voxel_width_mm": self.voxel_width_mm,
            "voxel_height_mm": self.voxel_height_mm,
            "voxel_depth_mm": self.voxel_depth_mm,
            "color_space": self.color_space,
            "channels": self.channels,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageMeta:
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in names})


_MHA_KEY = re.compile(rb"^\s*([A-Za-z]+)\s*=\s*(.*?)\s*$")


def parse_image(data: bytes, filename: str = "") -> ImageMeta | None:
    """Recognise an image the way the platform's importer would (roughly): MetaImage
    (.mha/.mhd), TIFF, DICOM and NIfTI. None means "not an image" (the job is Cancelled)."""
    head = data[:4096]
    if head.startswith(b"ObjectType") or b"\nObjectType" in head[:512]:
        return _parse_mha(data)
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return ImageMeta("TIFF", None, None, None)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return ImageMeta("DCM", None, None, None)
    if len(head) >= 4 and int.from_bytes(head[:4], "little") == 348:
        return ImageMeta("NII", None, None, None)
    if head[:2] == b"\x1f\x8b" and filename.lower().endswith((".nii.gz", ".mha.gz")):
        return ImageMeta("NII", None, None, None)
    return None


def mhd_data_file_name(data: bytes) -> str | None:
    """The data file a MetaImage header names (``ElementDataFile = vol.raw``); None when
    the data is in the file itself (``LOCAL``) or the header has none."""
    for raw in data[:8192].split(b"\n"):
        m = _MHA_KEY.match(raw)
        if not m:
            return None
        if m.group(1) == b"ElementDataFile":
            name = m.group(2).decode("utf-8", "replace")
            return None if name in ("LOCAL", "LIST") else name
    return None


def as_imported(meta: ImageMeta) -> ImageMeta:
    """An uploaded image as the platform's importer stores it: a MetaImage without
    ``ElementSpacing`` has ITK's default spacing, 1 mm along each of its axes (seen on the
    real application). Images a seed places keep what the seed says: on the platform such
    images are made without the importer and have no voxel sizes (the recorded world)."""
    if meta.image_type != "MHD":
        return meta
    return dataclasses.replace(
        meta,
        voxel_width_mm=1.0 if meta.voxel_width_mm is None else meta.voxel_width_mm,
        voxel_height_mm=1.0 if meta.voxel_height_mm is None else meta.voxel_height_mm,
        voxel_depth_mm=(None if meta.depth is None
                        else 1.0 if meta.voxel_depth_mm is None else meta.voxel_depth_mm),
    )


def _parse_mha(data: bytes) -> ImageMeta | None:
    fields: dict[str, str] = {}
    for raw in data[:8192].split(b"\n"):
        m = _MHA_KEY.match(raw)
        if not m:
            break
        key = m.group(1).decode("ascii", "replace")
        fields[key] = m.group(2).decode("utf-8", "replace")
        if key == "ElementDataFile":
            break
    if fields.get("ObjectType") != "Image" or "DimSize" not in fields:
        return None
    try:
        dims = [int(x) for x in fields["DimSize"].split()]
    except ValueError:
        return None
    if not 2 <= len(dims) <= 4 or any(d < 1 for d in dims):
        return None
    spacing: list[float | None] = [None, None, None]
    if "ElementSpacing" in fields:
        try:
            values = [float(x) for x in fields["ElementSpacing"].split()]
        except ValueError:
            values = []
        for i, v in enumerate(values[:3]):
            spacing[i] = v
    channels = int(fields.get("ElementNumberOfChannels", "1") or 1)
    return ImageMeta(
        image_type="MHD",
        width=dims[0],
        height=dims[1],
        depth=dims[2] if len(dims) >= 3 else None,
        voxel_width_mm=spacing[0],
        voxel_height_mm=spacing[1],
        voxel_depth_mm=spacing[2] if len(dims) >= 3 else None,
        color_space="RGB" if channels == 3 else "RGBA" if channels == 4 else "GRAY",
        channels=channels,
    )


def make_mha(
    width: int,
    height: int,
    voxels: bytes,
    depth: int | None = None,
    spacing: Sequence[float] | None = None,
) -> bytes:
    """A MetaImage (.mha) file with MET_UCHAR voxels (used for seeds and outputs)."""
    dims = [width, height] if depth is None else [width, height, depth]
    count = 1
    for d in dims:
        count *= d
    if len(voxels) != count:
        raise ValueError(f"need {count} voxels, got {len(voxels)}")
    lines = [
        "ObjectType = Image",
        f"NDims = {len(dims)}",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        "CompressedData = False",
    ]
    if spacing is not None:
        lines.append("ElementSpacing = " + " ".join(f"{s:g}" for s in spacing))
    lines += [
        "DimSize = " + " ".join(str(d) for d in dims),
        "ElementType = MET_UCHAR",
        "ElementDataFile = LOCAL",
    ]
    return ("\n".join(lines) + "\n").encode("ascii") + voxels


# -- upload checks -----------------------------------------------------------------------


def check_upload_contents(socket: Socket, filename: str, data: bytes) -> str:
    """'ok', 'cancel' or 'stuck' for a completed upload given to ``socket``."""
    if socket.super_kind == "Image":
        return "ok" if parse_image(data, filename) is not None else "cancel"
    if socket.is_json_file:
        try:
            json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return "stuck"
        return "ok"
    return "ok"


# -- outputs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DerivedOutput:
    socket: str
    value: Any = None  # Value sockets
    data: bytes | None = None  # File and Image sockets: the bytes
    file_name: str | None = None  # File sockets: stored name; Image sockets: image name
    image_meta: ImageMeta | None = None


def input_digest(algorithm_slug: str, inputs: Mapping[str, Any]) -> str:
    doc = {"algorithm": algorithm_slug, "inputs": inputs}
    return hashlib.sha256(canonical_json(doc).encode("utf-8")).hexdigest()


def derive_outputs(
    algorithm_slug: str,
    outputs: Sequence[Socket],
    inputs: Mapping[str, Any],
    *,
    with_data: bool = True,
) -> list[DerivedOutput]:
    """The outputs a ``derived`` algorithm produces for ``inputs`` (see module docstring).

    ``with_data=False`` leaves the bytes of File and Image outputs out: the sandbox
    stores only that they exist and makes the bytes again when they are downloaded.
    """
    digest = input_digest(algorithm_slug, inputs)
    doc = {"algorithm": algorithm_slug, "digest": digest, "inputs": dict(inputs)}
    result: list[DerivedOutput] = []
    for socket in outputs:
        if socket.super_kind == "Value":
            result.append(DerivedOutput(socket.slug, value=_derived_value(socket, digest, doc)))
        elif socket.super_kind == "File":
            name = socket.relative_path.rsplit("/", 1)[-1] or f"{socket.slug}.json"
            data: bytes | None = None
            if not with_data:
                pass
            elif socket.is_json_file:
                data = (json.dumps(doc, sort_keys=True, indent=2) + "\n").encode("utf-8")
            else:
                data = f"{socket.slug},{digest}\n".encode()
            result.append(DerivedOutput(socket.slug, data=data, file_name=name))
        else:
            voxels = bytes.fromhex(digest) * 2
            result.append(
                DerivedOutput(
                    socket.slug,
                    data=make_mha(8, 8, voxels, spacing=(1.0, 1.0)) if with_data else None,
                    file_name=f"{socket.slug}.mha",
                    image_meta=ImageMeta("MHD", 8, 8, None, 1.0, 1.0, None),
                )
            )
    return result


def _derived_value(socket: Socket, digest: str, doc: Mapping[str, Any]) -> Any:
    code = socket.kind_code
    if code == "INT":
        return int(digest[0:8], 16) % 100
    if code == "FLT":
        return round(int(digest[8:16], 16) / 2**32, 6)
    if code == "BOOL":
        return int(digest[16], 16) % 2 == 1
    if code in ("STR", "CHOI"):
        return "sandbox-" + digest[:12]
    return dict(doc)


def invocation_value(job_pk: str, input_relative_paths: Sequence[str]) -> dict[str, Any]:
    """The recorded oracle algorithm's output: an echo of its invocation."""
    prefix = f"/io/algorithms/job/{job_pk}-00"
    entries = [
        {
            "bucket_key": f"{prefix}/{rel}",
            "decompress": False,
            "bucket_name": "grand-challenge-components-inputs",
            "relative_path": rel,
        }
        for rel in [*input_relative_paths, "inputs.json"]
    ]
    return {
        "acc": 0.5,
        "score": 1,
        "invocation_json": [
            {
                "pk": f"algorithms-job-{job_pk}-00",
                "inputs": entries,
                "timeout": "PT5M",
                "output_prefix": prefix,
                "output_bucket_name": "grand-challenge-components-outputs",
            }
        ],
    }
