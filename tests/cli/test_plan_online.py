"""``gcbatch plan`` online (--sandbox): server statuses, archives, blocked cases, forecast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def gcbatch(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GRAND_CHALLENGE_AUTHORIZATION", "GCBATCH_SERVER")}
    env["NO_COLOR"] = "1"
    return subprocess.run([sys.executable, "-m", "gcbatch", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


MANIFEST = """\
version: 1
algorithm: lung-nodule-detector
defaults:
  lung-volume: {value: 3.9}
cases:
  - foreach: {archive: lung-archive}
    id: "item-{item.pk}"
    inputs:
      ct-image: {archive_item: "{item.pk}", socket: ct-image}
  - id: wrong-kind
    inputs:
      ct-image: {value: 3}
  - id: wrong-set
    inputs:
      ct-image: {image: "http://localhost/api/v1/cases/images/00000000-0000-4000-8000-000000000000/"}
      age: {value: 3}
"""


def test_online_plan_with_the_sandbox(tmp_path: Path) -> None:
    manifest = tmp_path / "study.yaml"
    manifest.write_text(MANIFEST)
    first = gcbatch("plan", str(manifest), "--sandbox", "--json", cwd=tmp_path)
    assert first.returncode == 2, first.stderr  # blocked cases: apply would refuse
    data = json.loads(first.stdout)
    assert data["online"] is True
    actions = {a["case"]: a for a in data["actions"]}
    items = [c for c in actions if c.startswith("item-")]
    assert len(items) == 3 and all(actions[c]["action"] == "submit" for c in items)
    assert actions["wrong-kind"]["action"] == "blocked"
    assert "ct-image" in actions["wrong-kind"]["reason"]
    assert actions["wrong-set"]["action"] == "blocked"
    assert "match none" in actions["wrong-set"]["reason"]
    assert data["forecast"]["jobs"] == 3 and data["forecast"]["waves"] == 1
    text = gcbatch("plan", str(manifest), "--sandbox", cwd=tmp_path)
    assert "! " in text.stdout and "quota: 3 job(s)" in text.stdout
    offline = gcbatch("plan", str(manifest), "--offline", "--json", cwd=tmp_path)
    assert offline.returncode == 0, offline.stderr
    off = json.loads(offline.stdout)
    assert off["online"] is False
    assert any(a["action"] == "needs_server" for a in off["actions"])


def test_plan_shows_server_statuses_after_apply(tmp_path: Path) -> None:
    manifest = tmp_path / "study.yaml"
    manifest.write_text("version: 1\nalgorithm: risk-calculator\ncases:\n"
                        "  - id: a\n    inputs:\n      age: {value: 1}\n"
                        "      lung-volume: {value: 2}\n")
    applied = gcbatch("apply", str(manifest), "--sandbox", "--json", cwd=tmp_path)
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["summary"]["submitted"] == 1
    assert (tmp_path / "study.sandbox.lock").exists() and not (tmp_path / "study.lock").exists()
    assert (tmp_path / ".gcbatch" / "sandbox.db").exists()
    planned = gcbatch("plan", str(manifest), "--sandbox", "--json", "--detailed-exitcode",
                      cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    action = json.loads(planned.stdout)["actions"][0]
    assert action["action"] == "unchanged" and action["status"]
