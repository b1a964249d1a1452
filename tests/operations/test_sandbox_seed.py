"""``derive_seed``: a sandbox world from a manifest (the kinds read from the sources), and
``connect``'s choice of world for ``--sandbox`` (sandbox-seed.yaml beside the manifest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gcbatch.errors import ConfigError
from gcbatch.operations.sandbox_seed import OUTPUT_SOCKET, derive_seed
from gcbatch.operations.session import SANDBOX_SEED, connect
from gcbatch.operations.study import ConnectionOptions, open_study
from gcbatch.sandbox.seed import load_seed


def _manifest(folder: Path, body: str, algorithm: str = "my-algorithm") -> Path:
    path = folder / "study.yaml"
    path.write_text(f"version: 1\nalgorithm: {algorithm}\n{body}")
    return path


def _sockets(seed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["slug"]: s for s in seed["sockets"]}


def test_kinds_come_from_the_sources(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, """\
defaults:
  threshold: {value: 0.5}
cases:
  - id: a
    inputs:
      count: {value: 3}
      flag: {value: true}
      label: {value: "x"}
      extra: {value: {k: 1}}
      meta: {json: meta.json}
      ct: {file: scans/a.nii.gz}
      report: {file: docs/r.json}
      paper: {file: docs/p.pdf}
  - foreach: {glob: "dicom/*/"}
    id: "d-{stem}"
    inputs:
      ct: {files: "{path}*.dcm"}
  - foreach: {glob: "more/*.mha"}
    id: "m-{stem}"
    inputs:
      ct: {file: "{path}"}
""")
    derived = derive_seed(manifest)
    sockets = _sockets(derived.seed)
    kinds = {slug: (s["kind"], s.get("super_kind"), s["relative_path"])
             for slug, s in sockets.items()}
    assert kinds == {
        "count": ("Integer", None, "count.json"),
        "flag": ("Bool", None, "flag.json"),
        "label": ("String", None, "label.json"),
        "extra": ("Anything", None, "extra.json"),
        "meta": ("Anything", None, "meta.json"),
        "threshold": ("Float", None, "threshold.json"),
        "ct": ("Image", None, "images/ct"),
        "report": ("Anything", "File", "report.json"),
        "paper": ("PDF file", None, "paper.pdf"),
        OUTPUT_SOCKET: ("Anything", None, f"{OUTPUT_SOCKET}.json"),
    }
    (alg,) = derived.seed["algorithms"]
    assert alg["slug"] == "my-algorithm"
    # one interface per distinct set of inputs (defaults included), in manifest order
    assert [i["inputs"] for i in alg["interfaces"]] == [
        ["count", "ct", "extra", "flag", "label", "meta", "paper", "report", "threshold"],
        ["ct", "threshold"],
    ]
    assert all(i["outputs"] == [OUTPUT_SOCKET] for i in alg["interfaces"])
    assert derived.seed["archives"] == [] and derived.images == () and derived.notes == ()


def test_the_derived_world_loads_and_an_integer_and_a_float_make_a_float(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, """\
cases:
  - {id: a, inputs: {score: {value: 3}}}
  - {id: b, inputs: {score: {value: 3.5}}}
""")
    derived = derive_seed(manifest)
    assert _sockets(derived.seed)["score"]["kind"] == "Float"
    seed = load_seed(derived.seed)
    assert seed.algorithm_by_slug("my-algorithm") is not None


def test_archives_get_three_items_with_images_assumed_and_said(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, """\
cases:
  - foreach: {archive: lungs}
    id: "item-{item.pk}"
    inputs:
      ct: {archive_item: "{item.pk}"}
      age: {archive_item: "{item.pk}"}
  - {id: x, inputs: {age: {value: 61}, ct: {file: a.mha}}}
  - {id: y, inputs: {scan: {image: "https://gc.example/api/v1/cases/images/1/"}}}
""")
    derived = derive_seed(manifest, images_dir="imgs")
    (archive,) = derived.seed["archives"]
    assert archive["slug"] == "lungs" and len(archive["items"]) == 3
    values = archive["items"][0]["values"]
    assert values["age"] == {"value": 1}  # typed by the explicit case: an Integer
    assert values["ct"] == {"image": "imgs/lungs-1-ct.mha"}
    assert derived.images == tuple(f"imgs/lungs-{i}-ct.mha" for i in (1, 2, 3))
    assert any("image: source" in note for note in derived.notes)
    # the image: source's socket has no kind, so its interface is left out
    interfaces = derived.seed["algorithms"][0]["interfaces"]
    assert [i["inputs"] for i in interfaces] == [["age", "ct"]]


def test_an_archive_socket_used_nowhere_else_is_assumed_an_image_and_noted(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, """\
cases:
  - foreach: {archive: lungs}
    id: "item-{item.pk}"
    inputs:
      ct: {archive_item: "{item.pk}", socket: ct-image}
""")
    derived = derive_seed(manifest)
    assert _sockets(derived.seed)["ct-image"]["kind"] == "Image"
    assert any("'ct-image' is assumed to be an image" in n for n in derived.notes)


@pytest.mark.parametrize(("body", "message"), [
    ("cases:\n  - {id: a, inputs: {doc: {file: notes.txt}}}\n",
     "cannot tell the kind of socket 'doc' from 'notes.txt'"),
    ("cases:\n  - {id: a, inputs: {x: {value: 1}}}\n  - {id: b, inputs: {x: {file: a.mha}}}\n",
     "socket 'x' is a Image here but a Integer in cases[0].inputs.x"),
    (f"cases:\n  - {{id: a, inputs: {{{OUTPUT_SOCKET}: {{value: 1}}}}}}\n",
     f"the manifest uses the socket name {OUTPUT_SOCKET!r}"),
])
def test_what_cannot_be_known_is_a_clear_error(tmp_path: Path, body: str, message: str) -> None:
    manifest = _manifest(tmp_path, body)
    with pytest.raises(ConfigError, match=r"write sandbox-seed\.yaml by hand") as caught:
        derive_seed(manifest)
    assert message in str(caught.value)


# ------------------------------------------------------------------ --sandbox's world


def _sandbox_study(manifest: Path) -> Any:
    return open_study(manifest, ConnectionOptions(sandbox=True))


def test_sandbox_without_a_seed_for_the_algorithm_says_how(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, "cases:\n  - {id: a, inputs: {n: {value: 1}}}\n")
    with pytest.raises(ConfigError) as caught:
        connect(_sandbox_study(manifest), ConnectionOptions(sandbox=True))
    message = str(caught.value)
    assert "the built-in default world has no algorithm 'my-algorithm'" in message
    assert "gcbatch sandbox seed" in message and SANDBOX_SEED in message
    assert not (tmp_path / ".gcbatch" / "sandbox.db").exists()  # nothing made


def test_sandbox_uses_the_seed_beside_the_manifest_and_keeps_to_its_world(
    tmp_path: Path
) -> None:
    manifest = _manifest(tmp_path, "cases:\n  - {id: a, inputs: {n: {value: 1}}}\n")
    (tmp_path / SANDBOX_SEED).write_text(
        "users: [{name: me, token: my-token}]\n"
        "sockets: [{slug: n, kind: Integer}, {slug: out, kind: Float}]\n"
        "algorithms: [{slug: my-algorithm, interfaces: [{inputs: [n], outputs: [out]}]}]\n")
    study = _sandbox_study(manifest)
    with connect(study, ConnectionOptions(sandbox=True)) as session:
        alg = session.view.algorithm("my-algorithm")  # as the seed's first user
        assert alg.slug == "my-algorithm"
    # the database now belongs to that world: a changed world is refused, saying what
    # to delete, rather than mixing jobs of two worlds
    (tmp_path / SANDBOX_SEED).write_text(
        (tmp_path / SANDBOX_SEED).read_text().replace("Float", "Integer"))
    with pytest.raises(ConfigError, match="made with another world") as caught:
        connect(study, ConnectionOptions(sandbox=True))
    assert "sandbox.db" in str(caught.value) and "study.sandbox.lock" in str(caught.value)


def test_a_database_of_the_default_world_refuses_a_seed_added_later(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, "cases:\n  - {id: a, inputs: {age: {value: 1}}}\n",
                         algorithm="risk-calculator")
    with connect(_sandbox_study(manifest), ConnectionOptions(sandbox=True)):
        pass
    (tmp_path / ".gcbatch" / "sandbox.seed").unlink()  # as a gcbatch before worlds left it
    (tmp_path / SANDBOX_SEED).write_text(
        "users: [{name: demo, token: t}]\nsockets: [{slug: age, kind: Integer}]\n"
        "algorithms: [{slug: risk-calculator, interfaces: [{inputs: [age]}]}]\n")
    with pytest.raises(ConfigError, match="made with another world"):
        connect(_sandbox_study(manifest), ConnectionOptions(sandbox=True))
