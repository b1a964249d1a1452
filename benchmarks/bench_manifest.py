"""Validate and expand a manifest that globs 100,000 files; show the hash cache works.

    python benchmarks/bench_manifest.py [--files 100000] [--dir DIR] [--keep]

Makes DIR (default: a temporary folder) with N files of 2 KiB in 100 folders, a
JSON value per folder, and a manifest with one ``foreach`` glob over them. Then, each in
its own child process so that its peak memory (``ru_maxrss``) is its own:

1. ``validate``: load + expand without hashing (what ``gcbatch validate`` does);
2. ``expand, cold cache``: load + expand + fingerprint every file (the first ``plan``);
3. ``expand, warm cache``: the same again (every later ``plan``).

For the warm run it shows three independent counts of file-content reads: the hasher's own
statistics, an audit hook counting ``open()`` calls on the data files
(``sys.addaudithook``), and the bytes the process read (``rchar`` in ``/proc/self/io``),
which stays far below the data size. It fails (exit 1) if the warm run opened any data file.

Files are given an mtime one hour in the past: the hasher does not cache files modified in
the last two seconds ("racily clean", see ``gcbatch.hashing``), and a benchmark that makes
100,000 files and hashes them at once would otherwise measure that guard, not the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MANIFEST = """\
# yaml-language-server: $schema=../schemas/manifest.schema.json
version: 1
algorithm: lung-nodule-detector
defaults:
  lung-volume: {value: 3.5}
cases:
  - foreach: {glob: "scans/*/*.mha"}
    id: "{parent}-{stem}"
    inputs:
      ct-image: {file: "{path}"}
      clinical-info: {json: "meta/{parent}.json"}
"""


def make_study(root: Path, n_files: int, size: int) -> Path:
    folders = 100
    per = -(-n_files // folders)
    past = time.time() - 3600
    made = 0
    (root / "meta").mkdir(parents=True, exist_ok=True)
    for f in range(folders):
        if made >= n_files:
            break
        folder = root / "scans" / f"site{f:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (root / "meta" / f"site{f:03d}.json").write_text(json.dumps({"site": f}))
        for i in range(min(per, n_files - made)):
            path = folder / f"p{i:05d}.mha"
            head = f"ObjectType = Image\nsite {f} patient {i}\n".encode()
            path.write_bytes(head + b"\0" * max(0, size - len(head)))
            os.utime(path, (past, past))
            made += 1
    manifest = root / "study.yaml"
    manifest.write_text(MANIFEST)
    return manifest


def _rchar() -> int | None:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def child(phase: str, manifest: Path) -> dict[str, Any]:
    """One measured run, in a fresh process."""
    data_dir = str(manifest.parent / "scans")
    opened = [0]

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if (event == "open" and isinstance(args[0], (str, bytes, os.PathLike))
                and os.fsdecode(args[0]).startswith(data_dir)):
            opened[0] += 1

    from gcbatch.hashing import FileHasher, default_cache_path
    from gcbatch.manifest import load_manifest
    from gcbatch.sources import expand

    sys.addaudithook(hook)
    rchar0 = _rchar()
    t0 = time.perf_counter()
    m = load_manifest(manifest)
    hasher = FileHasher(default_cache_path(manifest)) if phase != "validate" else None
    exp = expand(m, hasher=hasher)
    if hasher is not None:
        hasher.save()
    elapsed = time.perf_counter() - t0
    rchar1 = _rchar()
    return {
        "phase": phase,
        "cases": len(exp.cases),
        "seconds": round(elapsed, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "hash_stats": hasher.stats.as_json() if hasher is not None else None,
        "data_files_opened": opened[0],
        "bytes_read_by_process": (rchar1 - rchar0) if rchar0 is not None and rchar1 else None,
    }


def run_child(phase: str, manifest: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", phase, "--dir", str(manifest.parent)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"child {phase} failed")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=2048, help="bytes per file")
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the generated folder")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(child(args.child, args.dir / "study.yaml")))
        return 0

    root = args.dir or Path(tempfile.mkdtemp(prefix="gcbatch-bench-"))
    try:
        t0 = time.perf_counter()
        manifest = make_study(root, args.files, args.size)
        data_bytes = sum(p.stat().st_size for p in (root / "scans").rglob("*.mha"))
        print(f"made {args.files} files ({data_bytes / 1e6:.1f} MB) in "
              f"{time.perf_counter() - t0:.1f} s under {root}")
        cache = root / ".gcbatch" / "hash-cache.json"
        if cache.exists():
            cache.unlink()
        results = [run_child(p, manifest) for p in ("validate", "cold", "warm")]
        print(f"{'phase':<22}{'cases':>8}{'time s':>9}{'peak RSS MiB':>14}"
              f"{'files hashed':>14}{'data files opened':>19}{'bytes read':>14}")
        labels = {"validate": "validate", "cold": "expand, cold cache",
                  "warm": "expand, warm cache"}
        for r in results:
            stats = r["hash_stats"] or {}
            print(f"{labels[r['phase']]:<22}{r['cases']:>8}{r['seconds']:>9}"
                  f"{r['peak_rss_mib']:>14}{stats.get('files_read', '-'):>14}"
                  f"{r['data_files_opened']:>19}{r['bytes_read_by_process'] or '-':>14}")
        warm = results[2]
        print(f"warm run hash statistics: {json.dumps(warm['hash_stats'])}")
        print(f"hash cache: {cache.stat().st_size / 1e6:.1f} MB; data: {data_bytes / 1e6:.1f} MB")
        ok = (warm["data_files_opened"] == 0 and warm["hash_stats"]["files_read"] == 0
              and warm["hash_stats"]["hits"] == args.files and warm["cases"] == args.files)
        print("warm cache read no file contents: " + ("yes" if ok else "NO"))
        return 0 if ok else 1
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
