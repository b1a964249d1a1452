"""File-name helpers: the placeholders of a glob match, compressed extensions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gcbatch.sources import glob_placeholders, split_name


def test_placeholders_of_a_glob_match() -> None:
    assert glob_placeholders("scans/p001/ct.nii.gz") == {
        "path": "scans/p001/ct.nii.gz", "name": "ct.nii.gz", "stem": "ct", "ext": ".nii.gz",
        "parent": "p001", "dir": "scans/p001"}
    assert glob_placeholders("p2/")["name"] == "p2"
    assert split_name("README") == ("README", "") and split_name(".gz") == (".gz", "")
    assert split_name("a.b.mha") == ("a.b", ".mha")


@given(st.text(alphabet="ab.gzGZ/ -", max_size=12))
def test_split_name_is_splitext_unless_compressed(name: str) -> None:
    import os.path

    stem, ext = split_name(name)
    assert stem + ext == name
    if not name.lower().endswith((".gz", ".bz2", ".xz", ".zst")):
        assert (stem, ext) == os.path.splitext(name)
