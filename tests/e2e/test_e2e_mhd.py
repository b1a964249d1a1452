"""A MetaImage pair (an ``.mhd`` header and the data file it names) against either server:
the platform imports the pair only when the data file's upload keeps the name its header
gives, so gcbatch keeps it (the header's upload carries the case's handle), and a pair
whose data file was renamed ends Cancelled, on the sandbox as on the platform.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_cli import run_cli, upload_bytes
from e2e_target import WORLD, Target, new_run_id

pytestmark = pytest.mark.slow


def _mhd_pair(folder: Path, run: int) -> None:
    """A MetaImage header and the data file it names (``ElementDataFile = vol.raw``)."""
    vol = folder / "vol"
    vol.mkdir(parents=True)
    (vol / "vol.raw").write_bytes(bytes((run + k) % 256 for k in range(4 * 4 * 2)))
    (vol / "vol.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        "CompressedData = False\nTransformMatrix = 1 0 0 0 1 0 0 0 1\nOffset = 0 0 0\n"
        "CenterOfRotation = 0 0 0\nElementSpacing = 1 1 1\nDimSize = 4 4 2\n"
        "ElementType = MET_UCHAR\nElementDataFile = vol.raw\n")


def test_an_mhd_and_raw_pair_makes_a_job_that_succeeds(target: Target, tmp_path: Path) -> None:
    run = new_run_id()
    _mhd_pair(tmp_path, run)
    manifest = tmp_path / "study.yaml"
    manifest.write_text(f"version: 1\nalgorithm: {WORLD.algorithm}\ncases:\n"
                        f"  - id: pair-{run}\n    inputs:\n"
                        f"      {WORLD.image}: {{files: 'vol/vol.*'}}\n"
                        f"      {WORLD.float}: {{value: {run}.5}}\n")
    applied = run_cli(target, ["apply", str(manifest)], tmp_path)
    assert applied.returncode == 0, applied.stderr[-3000:]
    waited = run_cli(target, ["wait", str(manifest), "--timeout", "20m", "--poll-interval",
                              "2s"], tmp_path)
    assert waited.stdout.splitlines()[0] == "1 case: 1 Succeeded", waited.stdout




def test_a_pair_whose_data_file_was_renamed_ends_cancelled(target: Target, tmp_path: Path) -> None:
    """The platform's rule, through the public API on either server: the header names
    ``vol.raw``, the data file is uploaded as another name, the job is Cancelled."""
    run = new_run_id()
    _mhd_pair(tmp_path, run)
    algorithm = target.algorithm(WORLD.algorithm)
    with target.api() as api:
        uploads = [upload_bytes(target, api, f"pair-{run}.mhd",
                                (tmp_path / "vol" / "vol.mhd").read_bytes()),
                   upload_bytes(target, api, f"renamed-{run}.raw",
                                (tmp_path / "vol" / "vol.raw").read_bytes())]
        made = api.post("algorithms/jobs/", json={
            "algorithm": algorithm["api_url"],
            "inputs": [{"interface": WORLD.image, "user_uploads": uploads}]})
    assert made.status_code == 201, made.text
    pk = made.json()["pk"]
    status = ""

    def ended() -> bool:
        nonlocal status
        status = next(j for j in target.jobs(WORLD.algorithm) if j["pk"] == pk)["status"]
        return status in ("Cancelled", "Failed", "Succeeded")

    target.wait_until("the job to end", ended)
    assert status == "Cancelled"

