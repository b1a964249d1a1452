"""Synthetic DICOM for the DICOM tests: examples/dicom/make_series.py (pydicom)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

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


@pytest.fixture
def write_series() -> Callable[..., list[Path]]:
    pytest.importorskip("pydicom")

    def write(folder: Path, **kwargs: Any) -> list[Path]:
        result: list[Path] = make_series.write_series(folder, **kwargs)
        return result

    return write
