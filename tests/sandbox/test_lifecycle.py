"""The sandbox's pure job-lifecycle rules: time, fate, value checks, images, outputs."""

from __future__ import annotations

import hashlib
import json

import pytest

from gcbatch.sandbox import lifecycle as lc
from gcbatch.sandbox.config import SandboxConfig
from gcbatch.sandbox.seed import DEFAULT_SEED, Socket, load_seed


def _socket(slug: str, kind: str, super_kind: str, code: str, rel: str = "") -> Socket:
    return Socket(
        pk=1,
        slug=slug,
        title=slug,
        kind=kind,
        super_kind=super_kind,
        relative_path=rel or f"{slug}.json",
        kind_code=code,
    )


def test_phases_follow_the_schedule() -> None:
    config = SandboxConfig(
        validating_seconds=1,
        queued_seconds=2,
        provisioned_seconds=3,
        executing_seconds=4,
        executed_seconds=5,
    )
    schedule = lc.make_schedule(config)
    assert lc.boundaries(100.0, schedule) == (101.0, 103.0, 106.0, 110.0, 115.0)
    seen = [lc.phase_at(100.0, schedule, t) for t in (100, 100.99, 101, 105, 109, 114.9, 115, 1e9)]
    assert seen == [0, 0, 1, 2, 3, 4, 5, 5]


def test_zero_durations_end_at_once() -> None:
    config = SandboxConfig(
        validating_seconds=0,
        queued_seconds=0,
        provisioned_seconds=0,
        executing_seconds=0,
        executed_seconds=0,
    )
    assert lc.phase_at(50.0, lc.make_schedule(config), 50.0) == len(lc.PHASES)


def test_schedule_is_frozen_at_creation() -> None:
    schedule = lc.make_schedule(SandboxConfig(validating_seconds=7))
    assert lc.parse_schedule(schedule)[0] == 7.0


def test_fate_is_reproducible_and_follows_the_rate() -> None:
    seed = load_seed(DEFAULT_SEED)
    alg = seed.algorithms[0]
    config = SandboxConfig(failure_rate=0.3, rng_seed=42)
    fates = [lc.decide_outcome(alg, config, f"job-{i}") for i in range(2000)]
    assert fates == [lc.decide_outcome(alg, config, f"job-{i}") for i in range(2000)]
    assert 0.25 < fates.count("fail") / len(fates) < 0.35
    other = [lc.decide_outcome(alg, config.replace(rng_seed=43), f"job-{i}") for i in range(2000)]
    assert other != fates
    assert {lc.decide_outcome(alg, SandboxConfig(), f"j{i}") for i in range(100)} == {"succeed"}


def test_failing_algorithm_always_fails() -> None:
    import dataclasses

    alg = dataclasses.replace(load_seed(DEFAULT_SEED).algorithms[0], failing=True)
    assert lc.decide_outcome(alg, SandboxConfig(), "x") == "fail"


def test_iso_duration_is_the_platforms_format() -> None:
    assert lc.iso_duration(1337) == "P0DT00H22M17S"
    assert lc.iso_duration(90061.4) == "P1DT01H01M01S"


@pytest.mark.parametrize(
    ("value", "schema", "message"),
    [
        (
            "abc",
            {"type": "integer"},
            "JSON does not fulfill schema: instance 'abc' is not of type 'integer'",
        ),
        (
            1.5,
            {"type": "integer"},
            "JSON does not fulfill schema: instance is not of type 'integer'",
        ),
        (
            True,
            {"type": "integer"},
            "JSON does not fulfill schema: instance is not of type 'integer'",
        ),
        (
            "x",
            {"type": "number"},
            "JSON does not fulfill schema: instance 'x' is not of type 'number'",
        ),
        (3, {"type": "boolean"}, "JSON does not fulfill schema: instance is not of type 'boolean'"),
        (2.0, {"type": "integer"}, None),
        (3, {"type": "number"}, None),
        ({"a": 1}, None, None),
        (
            ["a", 1],
            {"type": "array", "items": {"type": "string"}},
            "JSON does not fulfill schema: instance is not of type 'string'",
        ),
    ],
)
def test_schema_errors_read_like_the_platforms(
    value: object, schema: dict[str, object] | None, message: str | None
) -> None:
    assert lc.schema_error(value, schema) == message


def test_mha_images_are_recognised_with_their_geometry() -> None:
    data = lc.make_mha(6, 5, bytes(120), depth=4, spacing=(1, 1, 2))
    meta = lc.parse_image(data, "tiny.mha")
    assert meta is not None
    assert (meta.width, meta.height, meta.depth) == (6, 5, 4)
    assert (meta.voxel_width_mm, meta.voxel_height_mm, meta.voxel_depth_mm) == (1.0, 1.0, 2.0)
    assert meta.shape() == [4, 5, 6]
    assert meta.image_type == "MHD"
    flat = lc.parse_image(lc.make_mha(3, 2, bytes(6)), "flat.mha")
    assert flat is not None and flat.depth is None and flat.shape_without_color() == [2, 3]


@pytest.mark.parametrize(
    "data",
    [b"this is not an image\n", b"ObjectType = Image\nNDims = 3\n", b"", b'{"a": 1}'],
)
def test_non_images_are_refused(data: bytes) -> None:
    assert lc.parse_image(data, "x.mha") is None


def test_other_image_formats_are_recognised() -> None:
    assert lc.parse_image(b"II*\x00" + bytes(20), "a.tif") is not None
    assert lc.parse_image(bytes(128) + b"DICM" + bytes(10), "a.dcm") is not None


def test_upload_contents_checks() -> None:
    image = _socket("ct", "Image", "Image", "IMG")
    jsonfile = _socket("report", "Anything", "File", "JSON")
    pdf = _socket("pdf", "PDF file", "File", "PDF", "doc.pdf")
    assert lc.check_upload_contents(image, "a.mha", lc.make_mha(2, 2, bytes(4))) == "ok"
    assert lc.check_upload_contents(image, "a.mha", b"nope") == "cancel"
    assert lc.check_upload_contents(jsonfile, "a.json", b'{"a": 1}') == "ok"
    # The recorded platform bug: not-JSON for a JSON file socket never leaves validation.
    assert lc.check_upload_contents(jsonfile, "a.json", b"{not json") == "stuck"
    assert lc.check_upload_contents(pdf, "a.pdf", b"%PDF-1.4 whatever") == "ok"


def test_derived_outputs_follow_the_documented_formulas() -> None:
    seed = load_seed(DEFAULT_SEED)
    outputs = [
        seed.socket(s) for s in ("nodule-count", "malignancy-risk", "findings", "report", "heatmap")
    ]
    assert all(o is not None for o in outputs)
    inputs = {"lung-volume": 2.5, "ct-image": {"image_sha256": "ab" * 32}}
    derived = lc.derive_outputs("lung-nodule-detector", [o for o in outputs if o], inputs)
    doc = {"algorithm": "lung-nodule-detector", "inputs": inputs}
    digest = hashlib.sha256(
        json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    by_slug = {d.socket: d for d in derived}
    assert by_slug["nodule-count"].value == int(digest[0:8], 16) % 100
    assert by_slug["malignancy-risk"].value == round(int(digest[8:16], 16) / 2**32, 6)
    assert by_slug["findings"].value == {
        "algorithm": "lung-nodule-detector",
        "digest": digest,
        "inputs": inputs,
    }
    report = by_slug["report"]
    assert report.file_name == "report.json"
    assert report.data is not None and json.loads(report.data)["digest"] == digest
    heatmap = by_slug["heatmap"]
    assert heatmap.data is not None
    meta = lc.parse_image(heatmap.data, "heatmap.mha")
    assert meta is not None and (meta.width, meta.height) == (8, 8)
    assert heatmap.data.endswith(bytes.fromhex(digest) * 2)
    # Same inputs, same outputs; other inputs, other outputs; no data when not asked.
    again = lc.derive_outputs("lung-nodule-detector", [o for o in outputs if o], dict(inputs))
    assert again == derived
    changed = lc.derive_outputs(
        "lung-nodule-detector", [o for o in outputs if o], {**inputs, "lung-volume": 2.6}
    )
    assert changed[0].value != derived[0].value or changed[1].value != derived[1].value
    lazy = lc.derive_outputs(
        "lung-nodule-detector", [o for o in outputs if o], inputs, with_data=False
    )
    assert [d.value for d in lazy] == [d.value for d in derived]
    assert all(d.data is None for d in lazy)


def test_invocation_value_echoes_the_inputs() -> None:
    value = lc.invocation_value("abc", ["oracle-integer.json"])
    entry = value["invocation_json"][0]
    assert entry["pk"] == "algorithms-job-abc-00"
    assert [i["relative_path"] for i in entry["inputs"]] == ["oracle-integer.json", "inputs.json"]
    assert entry["inputs"][0]["bucket_key"] == "/io/algorithms/job/abc-00/oracle-integer.json"
    assert value["acc"] == 0.5 and value["score"] == 1


def test_an_imported_metaimage_without_spacing_gets_1_mm_per_axis_others_keep_theirs() -> None:
    flat = lc.parse_image(lc.make_mha(4, 4, bytes(16)))
    spaced = lc.parse_image(lc.make_mha(4, 4, bytes(32), depth=2, spacing=(0.5, 0.75, 2.5)))
    tiff = lc.ImageMeta("TIFF", None, None, None)
    assert flat is not None and spaced is not None
    assert flat.voxel_width_mm is None  # as the header says (a seed's image keeps that)
    imported = lc.as_imported(flat)
    assert (imported.voxel_width_mm, imported.voxel_height_mm, imported.voxel_depth_mm) == (
        1.0, 1.0, None)
    assert lc.as_imported(spaced) == spaced
    assert lc.as_imported(tiff) == tiff
