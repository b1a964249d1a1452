""".mhd headers sent without the data file they name: a finding at the source's line.

The platform imports a MetaImage pair only with both files (the header names its data
file, ``ElementDataFile``); a header alone makes a job that ends Cancelled, credits spent.
validate (offline, no hashing) and plan/apply (through ``expand``) must say so first.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from studies import manifest, write

from gcbatch.errors import ManifestError
from gcbatch.hashing import FileHasher
from gcbatch.manifest import load_manifest
from gcbatch.operations.validate import check_manifest
from gcbatch.sources import expand, mhd_data_file


def header(data_file: str) -> str:
    return ("ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\n"
            f"ElementDataFile = {data_file}\n")


@pytest.fixture
def volumes(tmp_path: Path) -> Path:
    write(tmp_path / "v/a.mhd", header("a.raw"))
    write(tmp_path / "v/a.raw", b"\0" * 8)
    write(tmp_path / "v/b.mhd", header("b.raw"))  # its data file is missing
    write(tmp_path / "v/c.mhd", header("LOCAL"))  # data inside the header
    write(tmp_path / "v/d.mhd", header("other.raw"))
    write(tmp_path / "v/other.raw", b"\0" * 8)
    return tmp_path


def test_mhd_data_file_reads_the_header() -> None:
    root = Path(__file__).resolve().parents[2] / "examples" / "mhd-pair" / "volumes"
    assert mhd_data_file(root / "chest-a.mhd") == "chest-a.raw"
    assert mhd_data_file(root / "chest-a.raw") is None


def test_pairs_sent_whole_are_fine(volumes: Path) -> None:
    path = manifest(volumes, """\
        cases:
          - id: a
            inputs:
              ct-image: {files: [v/a.mhd, v/a.raw]}
          - id: c
            inputs:
              ct-image: {file: v/c.mhd}
          - id: d
            inputs:
              ct-image: {files: [v/d.mhd, v/other.raw]}
        """)
    assert check_manifest(path).findings == ()
    assert [c.id for c in expand(load_manifest(path), hasher=FileHasher()).cases] == \
        ["a", "c", "d"]


def test_a_header_without_its_data_file_is_a_finding_at_the_source(volumes: Path) -> None:
    path = manifest(volumes, """\
        cases:
          - id: alone
            inputs:
              ct-image: {file: v/a.mhd}
          - id: missing
            inputs:
              ct-image: {files: "v/b.*"}
          - id: glob-only-headers
            inputs:
              ct-image: {files: "v/d.mhd"}
        """)
    findings = check_manifest(path).findings
    text = [f.render() for f in findings]
    assert len(findings) == 3, text
    alone, missing, headers = findings
    assert alone.line == 6 and "v/a.mhd names its data file a.raw" in alone.message
    assert "use `files: [v/a.mhd, v/a.raw]`" in alone.message
    assert missing.line == 9 and "b.raw" in missing.message \
        and "does not exist beside it" in missing.message
    assert headers.line == 12 and "add v/other.raw to its files" in headers.message
    # plan and apply expand the same way: nothing is sent for such a manifest
    with pytest.raises(ManifestError) as raised:
        expand(load_manifest(path), hasher=FileHasher())
    assert "cannot import the image" in str(raised.value)


def test_a_generator_names_the_header_it_matched(volumes: Path) -> None:
    write(volumes / "v/d.raw", b"\0" * 8)  # sent, but the header names other.raw
    path = manifest(volumes, """\
        cases:
          - foreach: {glob: "v/[abd].mhd"}
            id: "vol-{stem}"
            inputs:
              ct-image: {files: ["{path}", "v/{stem}.raw"]}
        """)
    # b.raw is missing (the glob source finds it), d.mhd names other.raw (this check)
    messages = [f.message for f in check_manifest(path).findings]
    assert len(messages) == 2, messages
    assert any("v/b.raw: no such file" in m for m in messages), messages
    assert any("v/d.mhd names its data file other.raw" in m for m in messages), messages
