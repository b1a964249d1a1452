""""Did you mean": socket slugs in pre-flight/plan findings, ``--case`` ids, and the helper
itself (gcbatch.suggest)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gcbatch.api.models import Algorithm, Interface, Socket
from gcbatch.cli import main
from gcbatch.errors import ConfigError
from gcbatch.preflight import check_cases
from gcbatch.sources import Case, Source
from gcbatch.suggest import closest, did_you_mean
from gcbatch.targeting import Targeting

ROOT = Path(__file__).resolve().parents[1]
CT = Socket("ct-image", kind="Image", super_kind="Image")
VOL = Socket("lung-volume", kind="Float", super_kind="Value")
ALG = Algorithm(pk="a", api_url="u", slug="alg",
                interfaces=(Interface((CT,)), Interface((CT, VOL))))


def test_closest_puts_a_letter_case_twin_first() -> None:
    assert closest("Patient-001", ["patient-001", "patient-002", "Patient-001"]) == [
        "patient-001", "patient-002"]
    assert closest("ct-imgae", ["ct-image", "lung-volume"]) == ["ct-image"]
    assert closest("zzz", ["ct-image"]) == []
    assert did_you_mean("ct-imgae", ["ct-image"]) == "; did you mean `ct-image`?"
    assert did_you_mean("zzz", ["ct-image"]) == ""


def test_an_unknown_socket_is_named_with_the_nearest_one() -> None:
    case = Case(id="p1", inputs=(Source(socket="ct-imgae", kind="file", paths=(Path("a"),)),),
                fingerprint="f")
    [problem] = check_cases([case], ALG)
    assert problem.render().startswith(
        "case p1: unknown socket `ct-imgae`; did you mean `ct-image`?; inputs {ct-imgae} "
        "match none of the algorithm's interfaces")


def test_a_known_socket_in_the_wrong_set_gets_no_suggestion() -> None:
    case = Case(id="p1", inputs=(Source(socket="lung-volume", kind="value", value=1.0),),
                fingerprint="f")
    [problem] = check_cases([case], ALG)
    assert "unknown socket" not in problem.message and "missing ct-image" in problem.message


def test_a_mistyped_case_id_gets_the_nearest() -> None:
    targeting = Targeting(case_ids=("patient-01", "zzz"))
    with pytest.raises(ConfigError) as info:
        targeting.check_known(["patient-001", "patient-002", "other"])
    assert str(info.value) == (
        "--case 'patient-01', 'zzz': no such case in the manifest; did you mean "
        "'patient-001' or 'patient-002'? (check the id; `gcbatch plan` lists every case)")


def test_plan_shows_the_suggestion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(ROOT / "gcbatch" / "sandbox" / "seeds" / "images", tmp_path / "scans")
    (tmp_path / "study.yaml").write_text(
        "version: 1\nalgorithm: lung-nodule-detector\ncases:\n"
        "  - id: p1\n    inputs:\n      ct-imgae: {file: scans/p001.mha}\n",
        encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["plan", "--sandbox", "study.yaml"])
    out, _ = capsys.readouterr()
    assert "unknown socket `ct-imgae`; did you mean `ct-image`?" in out
