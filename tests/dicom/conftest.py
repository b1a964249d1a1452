"""Synthetic DICOM for the DICOM tests: examples/dicom/make_series.py (pydicom)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dicom_series import make_series


@pytest.fixture
def write_series() -> Callable[..., list[Path]]:
    pytest.importorskip("pydicom")

    def write(folder: Path, **kwargs: Any) -> list[Path]:
        result: list[Path] = make_series.write_series(folder, **kwargs)
        return result

    return write
