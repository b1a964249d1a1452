"""The sandbox's world, read from a YAML seed file.

A seed declares everything the real platform would already hold before a user arrives:

```yaml
config: {max_active_jobs: 16}          # optional SandboxConfig overrides
users:
  - {name: demo, token: demo-token, credits: 1000}   # credits: per-month override
sockets:
  - {slug: age, title: Age, kind: Integer, pk: 3}    # super_kind/relative_path derived
  - {slug: lab-report, title: Lab Report, kind: Anything, super_kind: File,
     relative_path: lab-report.json}
algorithms:
  - slug: risk-calculator
    title: Risk Calculator
    pk: 0b5c...                       # optional; else a stable uuid5 of the slug
    credits_per_job: 20               # optional; never below 20
    active_image: true                # false: "Algorithm image is not ready to be used"
    failing: false                    # true: every job ends Failed
    users: [demo]                     # optional: who may see and run it (default: all)
    outputs_mode: derived             # or "invocation" (the recorded oracle's echo)
    interfaces:
      - {inputs: [age, lung-volume], outputs: [malignancy-risk, report]}
archives:
  - slug: lung-archive
    title: Lung Archive
    items:
      - title: patient-001
        values:
          age: {value: 64}
          ct-image: {image: images/p001.mha}      # a local file, relative to the seed
```

Everything parsed here is immutable and cached by the app: the per-request path looks
sockets and algorithms up in dicts and never re-reads the seed. Ids that the seed does
not give are derived with uuid5 from the slug, so two runs (and two processes sharing a
database) agree on them.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SEEDS_DIR = Path(__file__).resolve().parent / "seeds"
DEFAULT_SEED = SEEDS_DIR / "default.yaml"
ORACLE_SEED = SEEDS_DIR / "oracle.yaml"

_NAMESPACE = uuid.UUID("6f1c3a52-3c1e-4d8e-9a57-0c9e5b1d2a10")

MIN_JOB_COST = 20


class SeedError(ValueError):
    """The seed file is malformed; the message names the offending entry."""


@dataclass(frozen=True)
class KindInfo:
    """What the platform knows about a socket kind (display label)."""

    code: str  # the internal kind code used in some error messages ("INT", "IMG", "JSON")
    super_kind: str  # "Value" | "File" | "Image"
    schema: Mapping[str, Any] | None  # JSON schema of a value (None: anything)
    extension: str  # default relative_path extension for File/Value sockets


# Display label -> kind facts. Value kinds are checked against the schema; JSON-ish kinds
# ("Anything", annotation kinds) become File sockets when the seed says super_kind: File.
KINDS: dict[str, KindInfo] = {
    "String": KindInfo("STR", "Value", {"type": "string"}, ".json"),
    "Integer": KindInfo("INT", "Value", {"type": "integer"}, ".json"),
    "Float": KindInfo("FLT", "Value", {"type": "number"}, ".json"),
    "Bool": KindInfo("BOOL", "Value", {"type": "boolean"}, ".json"),
    "Anything": KindInfo("JSON", "Value", None, ".json"),
    "Chart": KindInfo("CHART", "Value", {"type": "object"}, ".json"),
    "Choice": KindInfo("CHOI", "Value", {"type": "string"}, ".json"),
    "Multiple choice": KindInfo(
        "MCHO", "Value", {"type": "array", "items": {"type": "string"}}, ".json"
    ),
    "Point": KindInfo("POIN", "Value", {"type": "object"}, ".json"),
    "Multiple points": KindInfo("MPOI", "Value", {"type": "object"}, ".json"),
    "2D bounding box": KindInfo("2DBB", "Value", {"type": "object"}, ".json"),
    "Multiple 2D bounding boxes": KindInfo("M2DB", "Value", {"type": "object"}, ".json"),
    "Distance measurement": KindInfo("DIST", "Value", {"type": "object"}, ".json"),
    "Polygon": KindInfo("POLY", "Value", {"type": "object"}, ".json"),
    "Line": KindInfo("LINE", "Value", {"type": "object"}, ".json"),
    "Angle": KindInfo("ANGL", "Value", {"type": "object"}, ".json"),
    "Ellipse": KindInfo("ELLI", "Value", {"type": "object"}, ".json"),
    "Image": KindInfo("IMG", "Image", None, ""),
    "Segmentation": KindInfo("SEG", "Image", None, ""),
    "Heat Map": KindInfo("HMAP", "Image", None, ""),
    "Displacement field": KindInfo("DSPF", "Image", None, ""),
    "DICOM Image Set": KindInfo("DCMIS", "Image", None, ""),
    "PDF file": KindInfo("PDF", "File", None, ".pdf"),
    "CSV file": KindInfo("CSV", "File", None, ".csv"),
    "ZIP file": KindInfo("ZIP", "File", None, ".zip"),
    "Thumbnail jpg": KindInfo("JPEG", "File", None, ".jpeg"),
    "Thumbnail png": KindInfo("PNG", "File", None, ".png"),
    "OBJ file": KindInfo("OBJ", "File", None, ".obj"),
    "MP4 file": KindInfo("MP4", "File", None, ".mp4"),
    "Newick tree-format file": KindInfo("NEWICK", "File", None, ".newick"),
    "BIOM file": KindInfo("BIOM", "File", None, ".biom"),
    "SQREG file": KindInfo("SQREG", "File", None, ".sqreg"),
}


@dataclass(frozen=True)
class User:
    name: str
    token: str
    number: int  # the platform's integer user id (appears in upload keys)
    credits: int | None = None  # per-month credits; None: the config's


@dataclass(frozen=True)
class Socket:
    pk: int
    slug: str
    title: str
    kind: str  # display label
    super_kind: str  # Value | File | Image
    relative_path: str
    description: str = ""
    default_value: Any = None
    schema: Mapping[str, Any] | None = None
    kind_code: str = ""

    @property
    def is_json_file(self) -> bool:
        """A File socket whose contents must be JSON (kind code JSON or .json path)."""
        return self.super_kind == "File" and (
            self.kind_code == "JSON" or self.relative_path.endswith(".json")
        )

    def as_json(self) -> dict[str, Any]:
        """The ComponentInterface body, keys in the platform's order."""
        return {
            "title": self.title,
            "description": self.description,
            "slug": self.slug,
            "kind": self.kind,
            "pk": self.pk,
            "default_value": self.default_value,
            "super_kind": self.super_kind,
            "relative_path": self.relative_path,
            "overlay_segments": [],
            "look_up_table": None,
        }


@dataclass(frozen=True)
class Interface:
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class Algorithm:
    pk: str
    slug: str
    title: str
    interfaces: tuple[Interface, ...]
    image_pk: str  # the active algorithm image's pk
    credits_per_job: int = MIN_JOB_COST
    active_image: bool = True
    failing: bool = False
    users: tuple[str, ...] | None = None  # None: every authenticated user
    outputs_mode: str = "derived"  # "derived" | "invocation"
    description: str | None = None
    average_duration: float | None = None
    failure_message: str = "The algorithm failed."

    def visible_to(self, user: str | None) -> bool:
        if user is None:
            return False
        return self.users is None or user in self.users


@dataclass(frozen=True)
class SeedImage:
    pk: str
    file_pk: str
    name: str
    path: Path  # absolute path of the image file


@dataclass(frozen=True)
class SeedValue:
    socket: str
    civ_pk: int | None = None
    value: Any = None
    has_value: bool = False
    image: SeedImage | None = None
    file: Path | None = None  # a File socket's content


@dataclass(frozen=True)
class ArchiveItem:
    pk: str
    title: str
    values: tuple[SeedValue, ...]


@dataclass(frozen=True)
class Archive:
    pk: str
    slug: str
    title: str
    description: str | None
    items: tuple[ArchiveItem, ...]
    users: tuple[str, ...] | None = None

    def visible_to(self, user: str | None) -> bool:
        if user is None:
            return False
        return self.users is None or user in self.users


@dataclass(frozen=True)
class Seed:
    users: tuple[User, ...]
    sockets: tuple[Socket, ...]
    algorithms: tuple[Algorithm, ...]
    archives: tuple[Archive, ...]
    config: Mapping[str, Any] = field(default_factory=dict)
    source: str = "<mapping>"

    # Cached lookups (built once in __post_init__; the dataclass stays frozen).
    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_token", {u.token: u for u in self.users})
        object.__setattr__(self, "_users", {u.name: u for u in self.users})
        object.__setattr__(self, "_sockets", {s.slug: s for s in self.sockets})
        object.__setattr__(self, "_sockets_pk", {s.pk: s for s in self.sockets})
        object.__setattr__(self, "_algorithms", {a.pk: a for a in self.algorithms})
        object.__setattr__(self, "_algorithms_slug", {a.slug: a for a in self.algorithms})
        object.__setattr__(self, "_archives", {a.pk: a for a in self.archives})

    def user_by_token(self, token: str) -> User | None:
        return self._by_token.get(token)  # type: ignore[attr-defined, no-any-return]

    def user(self, name: str) -> User | None:
        return self._users.get(name)  # type: ignore[attr-defined, no-any-return]

    def socket(self, slug: str) -> Socket | None:
        return self._sockets.get(slug)  # type: ignore[attr-defined, no-any-return]

    def socket_by_pk(self, pk: int) -> Socket | None:
        return self._sockets_pk.get(pk)  # type: ignore[attr-defined, no-any-return]

    def algorithm(self, pk: str) -> Algorithm | None:
        return self._algorithms.get(pk)  # type: ignore[attr-defined, no-any-return]

    def algorithm_by_slug(self, slug: str) -> Algorithm | None:
        return self._algorithms_slug.get(slug)  # type: ignore[attr-defined, no-any-return]

    def archive(self, pk: str) -> Archive | None:
        return self._archives.get(pk)  # type: ignore[attr-defined, no-any-return]


def stable_uuid(kind: str, name: str) -> str:
    """A uuid that depends only on ``kind`` and ``name`` (so restarts agree)."""
    return str(uuid.uuid5(_NAMESPACE, f"{kind}:{name}"))


def load_seed(source: Path | str | Mapping[str, Any] | None = None) -> Seed:
    """Parse a seed (a YAML file path or an already-loaded mapping; None: the default)."""
    if source is None:
        source = DEFAULT_SEED
    if isinstance(source, Mapping):
        return _parse(source, base=Path.cwd(), origin="<mapping>")
    path = Path(source)
    try:
        with path.open(encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise SeedError(f"cannot read seed {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise SeedError(f"seed {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, Mapping):
        raise SeedError(f"seed {path}: the top level must be a mapping")
    return _parse(data, base=path.resolve().parent, origin=str(path))


def _req(entry: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in entry:
        raise SeedError(f"{where}: missing {key!r}")
    return entry[key]


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise SeedError(f"{key} must be a list")
    return value


def _parse(data: Mapping[str, Any], *, base: Path, origin: str) -> Seed:
    config = data.get("config") or {}
    if not isinstance(config, Mapping):
        raise SeedError("config must be a mapping")

    users: list[User] = []
    for i, entry in enumerate(_list(data, "users")):
        where = f"users[{i}]"
        users.append(
            User(
                name=str(_req(entry, "name", where)),
                token=str(_req(entry, "token", where)),
                number=int(entry.get("id", 8 + i)),
                credits=None if entry.get("credits") is None else int(entry["credits"]),
            )
        )

    sockets: list[Socket] = []
    used_pks: set[int] = {int(e["pk"]) for e in _list(data, "sockets") if "pk" in e}
    next_pk = 1
    for i, entry in enumerate(_list(data, "sockets")):
        where = f"sockets[{i}]"
        slug = str(_req(entry, "slug", where))
        kind = str(_req(entry, "kind", where))
        info = KINDS.get(kind)
        if info is None:
            raise SeedError(f"{where}: unknown kind {kind!r}")
        super_kind = str(entry.get("super_kind", info.super_kind))
        if super_kind not in ("Value", "File", "Image"):
            raise SeedError(f"{where}: super_kind must be Value, File or Image")
        if "pk" in entry:
            pk = int(entry["pk"])
        else:
            while next_pk in used_pks:
                next_pk += 1
            pk = next_pk
            used_pks.add(pk)
        if "relative_path" in entry:
            rel = str(entry["relative_path"])
        elif super_kind == "Image":
            rel = f"images/{slug}"
        else:
            rel = f"{slug}{info.extension or '.json'}"
        sockets.append(
            Socket(
                pk=pk,
                slug=slug,
                title=str(entry.get("title", slug)),
                kind=kind,
                super_kind=super_kind,
                relative_path=rel,
                description=str(entry.get("description", "")),
                default_value=entry.get("default_value"),
                schema=entry.get("schema", info.schema if super_kind == "Value" else None),
                kind_code=info.code,
            )
        )
    socket_slugs = {s.slug for s in sockets}

    algorithms: list[Algorithm] = []
    for i, entry in enumerate(_list(data, "algorithms")):
        where = f"algorithms[{i}]"
        slug = str(_req(entry, "slug", where))
        interfaces = []
        for j, iface in enumerate(_req(entry, "interfaces", where)):
            ins = tuple(str(s) for s in _req(iface, "inputs", f"{where}.interfaces[{j}]"))
            outs = tuple(str(s) for s in iface.get("outputs", []))
            for s in ins + outs:
                if s not in socket_slugs:
                    raise SeedError(f"{where}.interfaces[{j}]: unknown socket {s!r}")
            interfaces.append(Interface(ins, outs))
        mode = str(entry.get("outputs_mode", "derived"))
        if mode not in ("derived", "invocation"):
            raise SeedError(f"{where}: outputs_mode must be derived or invocation")
        users_field = entry.get("users")
        algorithms.append(
            Algorithm(
                pk=str(entry.get("pk") or stable_uuid("algorithm", slug)),
                slug=slug,
                title=str(entry.get("title", slug)),
                interfaces=tuple(interfaces),
                image_pk=str(entry.get("image_pk") or stable_uuid("algorithm-image", slug)),
                credits_per_job=max(MIN_JOB_COST, int(entry.get("credits_per_job", MIN_JOB_COST))),
                active_image=bool(entry.get("active_image", True)),
                failing=bool(entry.get("failing", False)),
                users=None if users_field is None else tuple(str(u) for u in users_field),
                outputs_mode=mode,
                description=entry.get("description"),
                average_duration=entry.get("average_duration"),
                failure_message=str(entry.get("failure_message", "The algorithm failed.")),
            )
        )

    archives: list[Archive] = []
    for i, entry in enumerate(_list(data, "archives")):
        where = f"archives[{i}]"
        slug = str(_req(entry, "slug", where))
        items = []
        for j, item in enumerate(entry.get("items") or []):
            iwhere = f"{where}.items[{j}]"
            item_pk = str(item.get("pk") or stable_uuid("archive-item", f"{slug}/{j}"))
            values = []
            raw_values = item.get("values") or {}
            if not isinstance(raw_values, Mapping):
                raise SeedError(f"{iwhere}: values must be a mapping of socket slug to value")
            for socket_slug, spec in raw_values.items():
                vwhere = f"{iwhere}.values.{socket_slug}"
                if socket_slug not in socket_slugs:
                    raise SeedError(f"{vwhere}: unknown socket")
                if not isinstance(spec, Mapping):
                    raise SeedError(f"{vwhere}: expected a mapping with value, image or file")
                civ_pk = None if spec.get("pk") is None else int(spec["pk"])
                if "value" in spec:
                    values.append(
                        SeedValue(str(socket_slug), civ_pk, spec["value"], has_value=True)
                    )
                elif "image" in spec:
                    img = spec["image"]
                    img_spec = img if isinstance(img, Mapping) else {"file": img}
                    path = (base / str(_req(img_spec, "file", vwhere))).resolve()
                    if not path.is_file():
                        raise SeedError(f"{vwhere}: image file {path} does not exist")
                    key = f"{slug}/{item_pk}/{socket_slug}"
                    image = SeedImage(
                        pk=str(img_spec.get("pk") or stable_uuid("image", key)),
                        file_pk=str(img_spec.get("file_pk") or stable_uuid("image-file", key)),
                        name=str(img_spec.get("name", path.name)),
                        path=path,
                    )
                    values.append(SeedValue(str(socket_slug), civ_pk, image=image))
                elif "file" in spec:
                    path = (base / str(spec["file"])).resolve()
                    if not path.is_file():
                        raise SeedError(f"{vwhere}: file {path} does not exist")
                    values.append(SeedValue(str(socket_slug), civ_pk, file=path))
                else:
                    raise SeedError(f"{vwhere}: expected value, image or file")
            items.append(ArchiveItem(item_pk, str(item.get("title", "")), tuple(values)))
        users_field = entry.get("users")
        archives.append(
            Archive(
                pk=str(entry.get("pk") or stable_uuid("archive", slug)),
                slug=slug,
                title=str(entry.get("title", slug)),
                description=entry.get("description"),
                items=tuple(items),
                users=None if users_field is None else tuple(str(u) for u in users_field),
            )
        )

    return Seed(
        users=tuple(users),
        sockets=tuple(sockets),
        algorithms=tuple(algorithms),
        archives=tuple(archives),
        config=dict(config),
        source=origin,
    )
