"""A big manifest end to end: validate, expand (cold/warm hash cache), plan, locked re-apply.

    python benchmarks/bench_manifest.py [--cases 100000] [--shape glob|json|values|all]
                                        [--repeat 3] [--dir DIR] [--keep]

Shapes (each a study folder with ``study.yaml``):

``glob``    one ``foreach`` glob over N files of 2 KiB in 100 folders (``file:`` input,
            hashed), a JSON value per folder and a default value (issue 2's benchmark);
``json``    one ``foreach`` glob over N small JSON value files (``json:`` input), the shape
            of issue 6's scenario 5;
``values``  N explicit cases, each with two literal values (a 100,000-case YAML file).

Phases, each in its own child process so that its wall time is end to end (interpreter
start included) and its peak memory (``ru_maxrss``) is its own:

1. ``validate``: ``gcbatch validate`` (no hashing);
2. ``expand cold``: load + expand + fingerprint every file with an empty hash cache
   (file shapes only; run once, it fills the cache);
3. ``expand warm``: the same again; it must not open any data file (audit hook);
4. ``plan``: ``gcbatch plan --offline --sandbox`` against a fully locked lockfile;
5. ``apply``: ``gcbatch apply --sandbox`` on the fully locked manifest (embedded sandbox):
   every case ``=``; the child counts the requests the sandbox saw by method and the run
   fails if any is mutating (POST/PUT/PATCH/DELETE).

The lockfile is made directly with the lockfile API (every case locked to a Succeeded job
with the manifest's fingerprints), not by submitting N jobs, which would take far longer
than what is measured. Timed phases run ``--repeat`` times; the table shows the median.
With ``--dir`` an existing study folder (made with ``--keep``) is reused: making 100,000
files takes minutes.

Files get an mtime one hour in the past: the hasher does not cache files modified in the
last two seconds ("racily clean", see ``gcbatch.hashing``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SHAPES = ("glob", "json", "values")
HEADER = f"{'shape':<7}{'phase':<14}{'wall s':>9}{'CPU s':>8}{'RSS MiB':>10}  [wall of each run]"
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

GLOB_MANIFEST = """\
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

JSON_MANIFEST = """\
# yaml-language-server: $schema=../schemas/manifest.schema.json
version: 1
algorithm: risk-calculator
defaults:
  age: {value: 64}
cases:
  - foreach: {glob: "values/*.json"}
    id: "case-{stem}"
    inputs:
      lung-volume: {json: "{path}"}
"""

VALUES_HEAD = """\
# yaml-language-server: $schema=../schemas/manifest.schema.json
version: 1
algorithm: risk-calculator
cases:
"""


def make_study(root: Path, shape: str, n: int, size: int = 2048) -> Path:
    """Write the study of ``shape`` with ``n`` cases under ``root``; return the manifest."""
    root.mkdir(parents=True, exist_ok=True)
    past = time.time() - 3600
    manifest = root / "study.yaml"
    if shape == "glob":
        folders = 100
        per = -(-n // folders)
        made = 0
        (root / "meta").mkdir(parents=True, exist_ok=True)
        for f in range(folders):
            if made >= n:
                break
            folder = root / "scans" / f"site{f:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            (root / "meta" / f"site{f:03d}.json").write_text(json.dumps({"site": f}))
            for i in range(min(per, n - made)):
                path = folder / f"p{i:05d}.mha"
                head = f"ObjectType = Image\nsite {f} patient {i}\n".encode()
                path.write_bytes(head + b"\0" * max(0, size - len(head)))
                os.utime(path, (past, past))
                made += 1
        manifest.write_text(GLOB_MANIFEST)
    elif shape == "json":
        values = root / "values"
        values.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            path = values / f"v{i:06d}.json"
            path.write_text(json.dumps(1000.0 + i / 4))
            os.utime(path, (past, past))
        manifest.write_text(JSON_MANIFEST)
    elif shape == "values":
        lines = [VALUES_HEAD]
        for i in range(n):
            lines.append(f"  - id: case-{i:06d}\n    inputs:\n      age: {{value: {20 + i % 70}}}\n"
                         f"      lung-volume: {{value: {1000.0 + i / 4}}}\n")
        manifest.write_text("".join(lines))
    else:
        raise ValueError(shape)
    (root / "shape.json").write_text(json.dumps({"shape": shape, "cases": n}))
    return manifest


# --------------------------------------------------------------------------- children


def _rchar() -> int | None:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def child_expand(manifest: Path, warm: bool) -> dict[str, Any]:
    """load + expand with the hasher (cold: the cache is removed first)."""
    from gcbatch.hashing import FileHasher, default_cache_path

    cache = default_cache_path(manifest)
    if not warm and cache.exists():
        cache.unlink()
    data_dirs = tuple(str(manifest.parent / d) + os.sep for d in ("scans", "values"))
    opened = [0]

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if (event == "open" and isinstance(args[0], (str, bytes, os.PathLike))
                and os.fsdecode(args[0]).startswith(data_dirs)
                and os.fsdecode(args[0]).endswith(".mha")):
            opened[0] += 1

    from gcbatch.manifest import load_manifest
    from gcbatch.sources import expand

    sys.addaudithook(hook)
    rchar0 = _rchar()
    m = load_manifest(manifest)
    hasher = FileHasher(cache)
    exp = expand(m, hasher=hasher)
    hasher.save()
    rchar1 = _rchar()
    return {
        "cases": len(exp.cases),
        "hash_stats": hasher.stats.as_json(),
        "data_files_opened": opened[0],
        "bytes_read_by_process": (rchar1 - rchar0) if rchar0 is not None and rchar1 else None,
    }


def child_cli(argv: list[str]) -> dict[str, Any]:
    """Run the gcbatch CLI in this process, counting the embedded sandbox's requests."""
    import contextlib
    import io

    from gcbatch.sandbox import app as sandbox_app

    methods: dict[str, int] = {}
    original = sandbox_app.SandboxApp._record

    def counting(self: Any, req: Any, *args: Any, **kwargs: Any) -> None:
        methods[req.method] = methods.get(req.method, 0) + 1
        original(self, req, *args, **kwargs)

    sandbox_app.SandboxApp._record = counting  # type: ignore[method-assign]
    from gcbatch.cli import main

    out = io.StringIO()
    code: Any = 0
    with contextlib.redirect_stdout(out):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code
    text = out.getvalue()
    return {"exit": code, "requests": methods, "stdout_tail": text[-300:]}


def run_child(args: list[str]) -> dict[str, Any]:
    """A child process: its JSON result plus wall time and peak RSS (from wait4)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    # communicate() reaped the child; its rusage is in RUSAGE_CHILDREN only cumulatively,
    # so each child reports its own peak RSS from inside too
    if proc.returncode != 0:
        sys.stderr.write(err.decode(errors="replace")[-3000:])
        raise SystemExit(f"child {args} failed with exit {proc.returncode}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    result["wall_s"] = wall
    return result


def _child_main(kind: str, manifest: Path, extra: list[str]) -> int:
    import resource

    t0 = time.perf_counter()
    if kind == "cold":
        result = child_expand(manifest, warm=False)
    elif kind == "warm":
        result = child_expand(manifest, warm=True)
    else:
        result = child_cli(extra)
    result["inner_s"] = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["peak_rss_mib"] = round(usage.ru_maxrss / 1024, 1)
    # CPU seconds (user + system) of the whole process, interpreter start included: on a
    # loaded machine the wall time mostly measures the other processes
    result["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 2)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


# --------------------------------------------------------------------------- lockfile


def lock_study(manifest: Path) -> int:
    """Lock every case of ``manifest`` to a Succeeded job in ``study.sandbox.lock``."""
    from gcbatch import lockfile as lf
    from gcbatch.hashing import FileHasher
    from gcbatch.operations.session import connect
    from gcbatch.operations.study import ConnectionOptions, open_study
    from gcbatch.sources import expand

    connection = ConnectionOptions(sandbox=True)
    study = open_study(manifest, connection)
    hasher = FileHasher(study.hash_cache)
    exp = expand(study.manifest, hasher=hasher)
    hasher.save()
    with connect(study, connection) as session:
        algorithm = session.client.get_algorithm(study.algorithm)
    server, path = study.server, study.lockfile
    base = server + "algorithms/jobs/"
    cases = {}
    for i, case in enumerate(exp.cases):
        pk = f"00000000-0000-4000-8000-{i:012d}"
        digests = case.digests()
        job = lf.JobRecord(pk=pk, api_url=f"{base}{pk}/", status="Succeeded",
                           submitted_at="2026-11-27T14:00:00Z", fingerprint=case.fingerprint,
                           inputs=digests)
        cases[case.id] = lf.CaseEntry(fingerprint=case.fingerprint, inputs=digests, job=job)
    lock = lf.Lockfile(server=server, algorithm=lf.AlgorithmRef(
        algorithm.slug, algorithm.pk, algorithm.api_url), cases=cases)
    lf.save(path, lock)
    return len(cases)


# --------------------------------------------------------------------------- driver


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(r[key]) for r in runs)


def bench_shape(root: Path, shape: str, n: int, repeat: int, phases: set[str]) -> list[str]:
    marker = root / "shape.json"
    manifest = root / "study.yaml"
    reuse = marker.exists() and json.loads(marker.read_text()) == {"shape": shape, "cases": n}
    if not reuse:
        if root.exists():
            shutil.rmtree(root)
        t0 = time.perf_counter()
        manifest = make_study(root, shape, n)
        print(f"[{shape}] made a study of {n} cases in {time.perf_counter() - t0:.1f} s "
              f"under {root}", flush=True)
    rows: list[str] = []
    problems: list[str] = []

    def row(label: str, runs: list[dict[str, Any]], note: str = "") -> None:
        wall = _median(runs, "wall_s")
        cpu = _median(runs, "cpu_s")
        rss = _median(runs, "peak_rss_mib")
        every = " ".join(f"{r['wall_s']:.2f}" for r in runs)
        rows.append(f"{shape:<7}{label:<14}{wall:>9.2f}{cpu:>8.2f}{rss:>10.1f}  [{every}] "
                    f"{note}")
        print(rows[-1], flush=True)

    m = str(manifest)
    if "validate" in phases:
        runs = [run_child(["--child", "cli", "--dir", str(root), "--",
                           "validate", m]) for _ in range(repeat)]
        if any(r["exit"] not in (0, None) for r in runs):
            problems.append(f"{shape}: validate exited {runs[0]['exit']}")
        row("validate", runs)
    if shape != "values" and "expand" in phases:
        cold = run_child(["--child", "cold", "--dir", str(root)])
        row("expand cold", [cold], f"hashed {cold['hash_stats']['files_read']} files")
        runs = [run_child(["--child", "warm", "--dir", str(root)]) for _ in range(repeat)]
        opened = max(r["data_files_opened"] for r in runs)
        read = max(r["hash_stats"]["files_read"] for r in runs)
        row("expand warm", runs, f"files hashed {read}, data files opened {opened}")
        if opened or read:
            problems.append(f"{shape}: the warm run read {read} / opened {opened} data files")
    if phases & {"plan", "apply"}:
        t0 = time.perf_counter()
        locked = lock_study(manifest)
        print(f"[{shape}] locked {locked} cases in {time.perf_counter() - t0:.1f} s "
              "(setup, not timed)", flush=True)
        lock = manifest.with_name("study.sandbox.lock")
        print(f"[{shape}] lockfile: {lock.stat().st_size / 1e6:.1f} MB", flush=True)
    if "plan" in phases:
        runs = [run_child(["--child", "cli", "--dir", str(root), "--", "plan", "--offline",
                           "--sandbox", "--detailed-exitcode", m]) for _ in range(repeat)]
        if any(r["exit"] not in (0, None) for r in runs):
            problems.append(f"{shape}: plan --detailed-exitcode exited {runs[0]['exit']} "
                            "(expected 0: everything locked)")
        row("plan", runs)
    if "apply" in phases:
        runs = [run_child(["--child", "cli", "--dir", str(root), "--", "apply", "--sandbox",
                           m]) for _ in range(repeat)]
        mutating = sum(c for r in runs for meth, c in r["requests"].items() if meth in MUTATING)
        total = max(sum(r["requests"].values()) for r in runs)
        if any(r["exit"] not in (0, None) for r in runs):
            problems.append(f"{shape}: apply exited {runs[0]['exit']}: {runs[0]['stdout_tail']}")
        if mutating:
            problems.append(f"{shape}: apply sent {mutating} mutating requests")
        row("apply", runs, f"requests {total}, mutating {mutating}")
    for p in problems:
        print("PROBLEM: " + p, flush=True)
    return rows if not problems else [*rows, *("PROBLEM: " + p for p in problems)]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--cases", "--files", dest="cases", type=int, default=100_000,
                        help="cases (files for the glob shapes) per study")
    parser.add_argument("--shape", choices=(*SHAPES, "all"), default="all")
    parser.add_argument("--repeat", type=int, default=3, help="runs per timed phase")
    parser.add_argument("--phases", default="validate,expand,plan,apply",
                        help="comma-separated subset of validate,expand,plan,apply")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the studies live (DIR/<shape>); reused when they match")
    parser.add_argument("--keep", action="store_true", help="keep the generated folders")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        return _child_main(args.child, args.dir / "study.yaml", args.rest)

    shapes = SHAPES if args.shape == "all" else (args.shape,)
    phases = set(args.phases.split(","))
    base = args.dir or Path(tempfile.mkdtemp(prefix="gcbatch-bench-"))
    rows: list[str] = []
    try:
        print(HEADER, flush=True)
        for shape in shapes:
            rows += bench_shape(base / shape, shape, args.cases, args.repeat, phases)
        print(f"\n{args.cases} cases, medians of {args.repeat}; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(HEADER)
        print("\n".join(rows))
        if args.json:
            args.json.write_text(json.dumps({"cases": args.cases, "rows": rows}, indent=2))
        return 1 if any(r.startswith("PROBLEM") for r in rows) else 0
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
