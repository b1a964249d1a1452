"""``gcbatch sandbox seed`` then ``plan``/``apply``/``wait --sandbox``: a manifest for an
algorithm the built-in world lacks, offline, after the one documented step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from gcbatch.sandbox.lifecycle import make_mha
from gcbatch.sandbox.seed import load_seed


def _gcbatch(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GCBATCH_SERVER", "GRAND_CHALLENGE_AUTHORIZATION")}
    env["NO_COLOR"] = "1"
    return subprocess.run([sys.executable, "-m", "gcbatch", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def _study(folder: Path) -> Path:
    (folder / "scans").mkdir(parents=True)
    for i in range(2):
        voxels = bytes((i + k) % 256 for k in range(32))
        (folder / "scans" / f"s{i}.mha").write_bytes(make_mha(4, 4, voxels, depth=2))
    manifest = folder / "study.yaml"
    manifest.write_text("""\
version: 1
algorithm: my-own-detector
defaults:
  threshold: {value: 0.5}
cases:
  - foreach: {glob: "scans/*.mha"}
    id: "scan-{stem}"
    inputs:
      chest-ct: {file: "{path}"}
  - foreach: {archive: my-archive}
    id: "item-{item.title}"
    inputs:
      chest-ct: {archive_item: "{item.pk}"}
""")
    return manifest


def test_sandbox_seed_then_plan_apply_wait_offline(tmp_path: Path) -> None:
    manifest = _study(tmp_path)
    before = _gcbatch(tmp_path, "plan", "study.yaml", "--sandbox")
    assert before.returncode == 2
    assert "has no algorithm 'my-own-detector'" in before.stderr
    assert "gcbatch sandbox seed study.yaml" in before.stderr

    seeded = _gcbatch(tmp_path, "sandbox", "seed", "study.yaml")
    assert seeded.returncode == 0, seeded.stderr
    assert seeded.stdout.splitlines() == [
        "wrote sandbox-seed.yaml: algorithm my-own-detector (1 interface(s)), "
        "3 socket(s), 1 archive(s)",
        "next: gcbatch plan study.yaml --sandbox",
    ]
    assert "assumed" not in seeded.stderr  # the archive's socket was typed by a file source
    world = load_seed(tmp_path / "sandbox-seed.yaml")
    assert [a.slug for a in world.archives] == ["my-archive"]
    assert len(list((tmp_path / "sandbox-seed-images").iterdir())) == 3

    plan = _gcbatch(tmp_path, "plan", "study.yaml", "--sandbox")
    assert plan.returncode == 0, plan.stderr
    assert "Plan: 5 to submit." in plan.stdout
    applied = _gcbatch(tmp_path, "apply", "study.yaml", "--sandbox", "--json")
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["summary"]["submitted"] == 5
    waited = _gcbatch(tmp_path, "wait", "study.yaml", "--sandbox", "--timeout", "60s",
                      "--poll-interval", "1s")
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.splitlines()[0] == "5 cases: 5 Succeeded"
    assert manifest.with_suffix(".sandbox.lock").is_file()


def test_sandbox_seed_keeps_an_existing_world_unless_forced(tmp_path: Path) -> None:
    _study(tmp_path)
    (tmp_path / "sandbox-seed.yaml").write_text("# mine\n")
    kept = _gcbatch(tmp_path, "sandbox", "seed", "study.yaml")
    assert kept.returncode == 2 and "exists; keep it, or replace it with --force" in kept.stderr
    assert (tmp_path / "sandbox-seed.yaml").read_text() == "# mine\n"
    forced = _gcbatch(tmp_path, "sandbox", "seed", "study.yaml", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "my-own-detector" in (tmp_path / "sandbox-seed.yaml").read_text()


def test_sandbox_seed_help_shows_the_format() -> None:
    shown = _gcbatch(Path.cwd(), "sandbox", "seed", "--help")
    assert shown.returncode == 0
    assert "sandbox-seed.yaml (all keys but the slugs optional):" in shown.stdout
    assert "interfaces: [{inputs: [ct, age], outputs: [report]}]" in shown.stdout


def test_sandbox_seed_never_writes_through_a_link(tmp_path: Path) -> None:
    _study(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep\n")
    (tmp_path / "sandbox-seed.yaml").symlink_to(victim)
    refused = _gcbatch(tmp_path, "sandbox", "seed", "study.yaml", "--force")
    assert refused.returncode == 2, refused.stderr
    assert "link" in refused.stderr and "Traceback" not in refused.stderr
    assert victim.read_text() == "keep\n"
