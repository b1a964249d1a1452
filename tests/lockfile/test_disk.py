"""The lockfile on disk: atomic save, load with the journal folded in
(gcbatch.lockfile.disk)."""

from __future__ import annotations

import json
from pathlib import Path

from gcbatch import lockfile as lf

from .samples import ALG, SERVER, job


def test_roundtrip_and_deterministic_bytes(tmp_path: Path) -> None:
    entries = {"b": lf.CaseEntry("sha256:1", {"x": "1"}, job("j1")),
               "a": lf.CaseEntry("sha256:2", {}, None, (job("j0"),),
                                 lf.Intent("sha256:2", "t", {"x": "2"}, ("a.mha",), {"k": 1}))}
    one = lf.Lockfile(SERVER, ALG, entries)
    two = lf.Lockfile(SERVER, ALG, dict(reversed(list(entries.items()))))
    assert lf.dumps(one) == lf.dumps(two)
    path = tmp_path / "s.lock"
    lf.save(path, one)
    text = path.read_text()
    assert text.endswith("}\n") and text.index('"a"') < text.index('"b"')
    assert json.loads(text)["format_version"] == 2
    loaded = lf.load(path)
    assert loaded is not None and lf.dumps(loaded) == text
    assert loaded.cases["a"].pending is not None
    assert loaded.cases["a"].pending.uploads == ("a.mha",)
    assert loaded.in_doubt == ("a",)
    assert not list(tmp_path.glob(".s.lock.*"))  # no temp file left behind


def test_missing_lockfile_is_none(tmp_path: Path) -> None:
    assert lf.load(tmp_path / "nope.lock") is None
