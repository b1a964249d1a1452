"""examples/dicom/make_series.py for the tests (synthetic series with made-up patient
data), loaded by path: the example is no package. A module of its own name, not
``conftest``: under xdist another folder's conftest may hold that name."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dicom"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_series", EXAMPLE / "make_series.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_series = _load()
#: the made-up patient data in every synthetic file
PATIENT: dict[str, str] = make_series.PATIENT
