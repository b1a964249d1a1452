"""``derive_seed``: a sandbox world from a manifest (the kinds read from the sources), and
``connect``'s choice of world for ``--sandbox`` (sandbox-seed.yaml beside the manifest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gcbatch.errors import ConfigError
from gcbatch.operations.sandbox_seed import OUTPUT_SOCKET, derive_seed
from gcbatch.operations.session import SANDBOX_SEED, connect, open_session
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


def test_more_kinds_and_merges(tmp_path: Path) -> None:
    """``.nii.gz`` kept whole, an upper-case extension, a ``files:`` pair, a value that
    is an Integer once and an object once (Anything), a CSV file socket."""
    manifest = _manifest(tmp_path, """\
cases:
  - id: a
    inputs:
      ct: {file: scans/A.NII.GZ}
      pair: {files: [v/a.mhd, v/a.raw]}
      any: {value: 1}
      table: {file: t/x.CSV}
  - id: b
    inputs:
      ct: {file: scans/b.nii.gz}
      pair: {files: [v/b.mhd, v/b.raw]}
      any: {value: {k: [1, 2]}}
      table: {file: t/y.csv}
""")
    sockets = _sockets(derive_seed(manifest).seed)
    assert {slug: (s["kind"], s["relative_path"]) for slug, s in sockets.items()} == {
        "ct": ("Image", "images/ct"),
        "pair": ("Image", "images/pair"),
        "any": ("Anything", "any.json"),
        "table": ("CSV file", "table.csv"),
        OUTPUT_SOCKET: ("Anything", f"{OUTPUT_SOCKET}.json"),
    }
    assert load_seed(derive_seed(manifest).seed).algorithm_by_slug("my-algorithm")


def test_an_archive_item_socket_that_is_a_file_socket_cannot_be_derived(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, """\
cases:
  - foreach: {archive: reports}
    id: "r-{item.pk}"
    inputs:
      report: {archive_item: "{item.pk}"}
  - {id: x, inputs: {report: {file: r.pdf}}}
""")
    with pytest.raises(ConfigError, match="'report' is a PDF file socket; the derived world "
                       "cannot make such files"):
        derive_seed(manifest)


def test_the_values_an_archive_item_gets_follow_its_sockets_kinds(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, """\
cases:
  - foreach: {archive: a}
    id: "i-{item.pk}"
    inputs:
      n: {archive_item: "{item.pk}"}
      f: {archive_item: "{item.pk}"}
      s: {archive_item: "{item.pk}"}
      b: {archive_item: "{item.pk}"}
  - {id: x, inputs: {n: {value: 1}, f: {value: 1.5}, s: {value: x}, b: {value: false}}}
""")
    (archive,) = derive_seed(manifest).seed["archives"]
    assert [item["values"] for item in archive["items"]] == [
        {"b": {"value": b}, "f": {"value": i + 0.5}, "n": {"value": i + 1},
         "s": {"value": f"item-{i + 1}"}}
        for i, b in enumerate((True, False, True))]


# ------------------------------------------------------------------ which world, which user


_WORLD = ("sockets: [{slug: n, kind: Integer}, {slug: out, kind: Float}]\n"
          "algorithms: [{slug: my-algorithm, users: [%s], "
          "interfaces: [{inputs: [n], outputs: [out]}]}]\n")


@pytest.mark.parametrize(("users", "runs_as"), [
    ("[{name: alice, token: a}, {name: demo, token: d}]", "demo"),  # demo, when there
    ("[{name: alice, token: a}, {name: bob, token: b}]", "alice"),  # else the first
])
def test_sandbox_runs_as_demo_else_the_seeds_first_user(
    tmp_path: Path, users: str, runs_as: str
) -> None:
    manifest = _manifest(tmp_path, "cases:\n  - {id: a, inputs: {n: {value: 1}}}\n")
    # only that user may see the algorithm: finding it proves whose token was used
    (tmp_path / SANDBOX_SEED).write_text(f"users: {users}\n" + _WORLD % runs_as)
    with connect(_sandbox_study(manifest), ConnectionOptions(sandbox=True)) as session:
        assert session.view.algorithm("my-algorithm").slug == "my-algorithm"


@pytest.mark.parametrize(("seed", "message"), [
    ("users: [}\n", "is not valid YAML"),
    ("- a list\n", "the top level must be a mapping"),
    ("users: []\n" + _WORLD % "demo", "has no users (the sandbox needs one)"),
    ("users: [{name: demo, token: d}]\nsockets: [{slug: n, kind: Integr}]\n", "Integr"),
])
def test_a_broken_world_beside_the_manifest_is_a_clear_error_and_nothing_is_made(
    tmp_path: Path, seed: str, message: str
) -> None:
    manifest = _manifest(tmp_path, "cases:\n  - {id: a, inputs: {n: {value: 1}}}\n")
    (tmp_path / SANDBOX_SEED).write_text(seed)
    with pytest.raises(ConfigError) as caught:
        connect(_sandbox_study(manifest), ConnectionOptions(sandbox=True))
    assert str(caught.value).startswith("--sandbox: ") and message in str(caught.value)
    assert not (tmp_path / ".gcbatch").exists()


def test_the_same_world_opens_the_same_state_again(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, "cases:\n  - {id: a, inputs: {n: {value: 1}}}\n")
    (tmp_path / SANDBOX_SEED).write_text("users: [{name: demo, token: d}]\n" + _WORLD % "demo")
    for _ in range(2):
        with connect(_sandbox_study(manifest), ConnectionOptions(sandbox=True)) as session:
            assert session.view.algorithm("my-algorithm").slug == "my-algorithm"
    mark = (tmp_path / ".gcbatch" / "sandbox.seed").read_text()
    assert mark.startswith("sha256:") and len(mark.strip()) == len("sha256:") + 64


def test_a_link_planted_at_the_world_record_is_refused(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, "cases:\n  - {id: a, inputs: {age: {value: 1}}}\n",
                         algorithm="risk-calculator")
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    (tmp_path / ".gcbatch").mkdir()
    (tmp_path / ".gcbatch" / "sandbox.seed").symlink_to(victim)
    with pytest.raises(Exception, match="link"):
        connect(_sandbox_study(manifest), ConnectionOptions(sandbox=True))
    assert victim.read_text() == "keep\n"


def test_open_session_without_a_study_uses_the_world_beside_its_state(tmp_path: Path) -> None:
    """``init``/``schema --sandbox`` (no manifest yet): the world is sandbox-seed.yaml in
    the folder whose ``.gcbatch/`` holds the state."""
    (tmp_path / SANDBOX_SEED).write_text("users: [{name: demo, token: d}]\n" + _WORLD % "demo")
    with open_session("http://localhost/api/v1/", ConnectionOptions(sandbox=True),
                      sandbox_dir=tmp_path / ".gcbatch") as session:
        assert session.view.algorithm("my-algorithm") is not None
    with open_session("http://localhost/api/v1/", ConnectionOptions(sandbox=True),
                      sandbox_dir=tmp_path / "elsewhere" / ".gcbatch") as session:
        assert session.view.algorithm("my-algorithm") is None  # the built-in world
