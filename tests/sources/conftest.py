"""The ``study`` fixture: a glob generator, an explicit case and an archive generator."""

from __future__ import annotations

from pathlib import Path

import pytest
from studies import manifest, write


@pytest.fixture
def study(tmp_path: Path) -> Path:
    write(tmp_path / "scans/b.mha", b"bbb")
    write(tmp_path / "scans/a.nii.gz", b"aaa")
    write(tmp_path / "scans/p001/1.dcm", b"1")
    write(tmp_path / "scans/p001/2.dcm", b"2")
    write(tmp_path / "meta/p001.json", '{"smoker": true, "age": 61}')
    return manifest(tmp_path, """\
        defaults:
          lung-volume: {value: 42}
        cases:
          - foreach: {glob: "scans/*.*"}
            id: "scan-{stem}"
            inputs:
              ct-image: {file: "{path}"}
          - id: patient-001
            inputs:
              ct-image: {files: "scans/p001/*.dcm"}
              clinical-info: {json: meta/p001.json}
              lung-volume: null
          - foreach: {archive: lung-archive}
            id: "item-{item.pk}"
            inputs:
              ct-image: {archive_item: "{item.pk}"}
              clinical-info: {value: {"title": 1}}
        """)
