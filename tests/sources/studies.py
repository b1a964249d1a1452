"""Studies on disk for the expansion tests: a manifest next to the files it names."""

from __future__ import annotations

import os
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

HEAD = "version: 1\nalgorithm: lung-nodule-detector\n"


@dataclass(frozen=True)
class Item:
    pk: str
    title: str = ""


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    past = time.time() - 3600
    os.utime(path, (past, past))
    return path


def manifest(tmp_path: Path, body: str, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(HEAD + textwrap.dedent(body))
    return path
