"""Issue 13's figures: admission without waste, measured against a sandbox process.

    .venv/bin/python benchmarks/bench_admission.py            # every scenario (~4 min)
    .venv/bin/python benchmarks/bench_admission.py --repeats 3  # medians of three
    .venv/bin/python benchmarks/bench_admission.py --only limit16,quotas
    .venv/bin/python benchmarks/bench_admission.py --json out.json

Each scenario starts a fresh sandbox in its own process (``gcbatch sandbox serve``, with
added latency) and runs the real CLI (``python -m gcbatch apply``) as child processes,
then reads what happened from the *server*: its request log, its upload counts, and each
job's creation and end time from its database (the sandbox's clock is the wall clock).

- **waste**: credits for 5 of 20 image cases, applied three times; an algorithm whose
  image is not ready, applied three times: the live unused uploads after each run.
- **quotas**: 20 image cases with low upload-count and upload-size quotas, against the
  same without: apply's wall time and the makespan (spawn → last job ended), ratio.
- **limit16**: 250 value cases at the default limit of 16: refused job POSTs per job,
  and the makespan over ``ceil(250/16) x job time`` — measured from the first job the
  server made (the schedule gcbatch keeps) and from the spawn (with start-up).
- **overadmit**: limit 2, the server's check unlocked (POSTs sent together all pass it),
  20 cases: the most of our jobs active at once after the first refusal, and for
  contrast the same with ``--max-active 16`` (POSTs in a burst, as before issue 13).
- **studies**: two studies of 20 cases applied at once at a limit of 4, against one
  study of their 40: the makespan ratio.

Figures are printed (and written as JSON with ``--json``); no target is asserted — the
tests assert only what follows from the design, never a timing.
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # benchmarks/ is a folder of scripts
    MIB,
    ChildRun,
    Sandbox,
    SandboxSpec,
    gcbatch_argv,
    machine_info,
    render_table,
    run_child,
)

TOKEN = "demo-token"  # the sandbox seed's test token
LATENCY_MS = 10.0


def jobs_of(total_s: float, validating_share: float = 0.25) -> dict[str, float]:
    """Phase durations summing to ``total_s`` (uploads are consumed when validation ends)."""
    return {"validating_seconds": validating_share * total_s,
            "queued_seconds": 0.1 * total_s, "provisioned_seconds": 0.0,
            "executing_seconds": (0.9 - validating_share) * total_s,
            "executed_seconds": 0.0}


# --------------------------------------------------------------------------- studies


def value_study(folder: Path, n: int, *, first: int = 0, name: str = "study") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["version: 1", "algorithm: risk-calculator", "defaults:",
             "  lung-volume: {value: 4.2}", "cases:"]
    lines += [f"  - {{id: c{i:05d}, inputs: {{age: {{value: {first + i}}}}}}}"
              for i in range(n)]
    path = folder / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def image_study(folder: Path, n: int, size: int) -> Path:
    """``n`` MetaImages of ``size`` bytes of voxels each, all different."""
    from gcbatch.sandbox.lifecycle import make_mha

    scans = folder / "scans"
    scans.mkdir(parents=True, exist_ok=True)
    side = 64
    depth = max(1, size // (side * side))
    for i in range(n):
        block = bytes((i * 31 + k) % 251 for k in range(side * side))
        (scans / f"s{i:03d}.mha").write_bytes(make_mha(side, side, block * depth, depth=depth))
    path = folder / "study.yaml"
    path.write_text("version: 1\nalgorithm: lung-nodule-detector\ncases:\n"
                    "  - foreach: {glob: 'scans/*.mha'}\n    id: 'scan-{stem}'\n"
                    "    inputs:\n      ct-image: {file: '{path}'}\n")
    return path


# --------------------------------------------------------------------------- one run


@dataclass
class Run:
    """A scenario's sandbox and what its apply runs did."""

    sandbox: Sandbox
    runs: list[ChildRun] = field(default_factory=list)
    spawned: list[float] = field(default_factory=list)

    def apply(self, manifest: Path, *extra: str, check: bool = True) -> ChildRun:
        self.spawned.append(time.time())
        done = run_child(gcbatch_argv("apply", str(manifest), "--server", self.sandbox.api_url,
                                      "--json", *extra),
                         env=self.sandbox.env_for_clients(TOKEN), cwd=manifest.parent,
                         timeout_s=1800)
        self.runs.append(done)
        if check and done.returncode not in (0, 4):
            done.check()
        return done

    def jobs(self) -> list[tuple[float, float]]:
        """(created, ended) of every job, from the sandbox's database."""
        from gcbatch.sandbox.lifecycle import boundaries

        db = sqlite3.connect(f"file:{self.sandbox.workdir / 'sandbox.db'}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT created, schedule FROM jobs ORDER BY seq").fetchall()
        finally:
            db.close()
        return [(float(c), boundaries(float(c), s)[-1]) for c, s in rows]

    def job_posts(self) -> list[dict[str, Any]]:
        return [r for r in self.sandbox.request_log()
                if r["method"] == "POST" and r["path"] == "/api/v1/algorithms/jobs/"]

    def keep_log(self) -> None:
        """The request log beside the sandbox, for a closer look (``--workdir``)."""
        (self.sandbox.workdir / "requests.json").write_text(
            json.dumps(self.sandbox.request_log()))

    def uploads(self) -> tuple[int, int]:
        """(live, ever made) uploads of the demo user, once every job has validated."""
        for _ in range(200):
            statuses = self.sandbox.stats().get("statuses", {})
            if not statuses.get("Validating inputs"):
                break
            time.sleep(0.05)
        user = self.sandbox.stats()["users"]["demo"]
        return int(user["uploads_live"]), int(user["uploads_total"])


def most_active(spans: Sequence[tuple[float, float]], since: float) -> int:
    moments = [since] + [c for c, _ in spans if c >= since]
    return max((sum(1 for c, e in spans if c <= t < e) for t in moments), default=0)


def scenario(workdir: Path, label: str, config: dict[str, Any],
             body: Callable[[Run, Path], dict[str, Any]]) -> dict[str, Any]:
    folder = workdir / label
    spec = SandboxSpec(latency_ms=LATENCY_MS, config={"credits_per_month": 10**7, **config})
    with Sandbox(spec, folder / "sandbox") as sb:
        run = Run(sb)
        try:
            return body(run, folder)
        finally:
            run.keep_log()


# --------------------------------------------------------------------------- scenarios


def waste(workdir: Path, quick: bool) -> dict[str, Any]:
    size = 256 * 1024

    def credits(run: Run, folder: Path) -> dict[str, Any]:
        manifest = image_study(folder / "credits", 20, size)
        live = []
        for _ in range(3):
            done = run.apply(manifest)
            assert done.returncode == 4, done.stderr[-2000:]
            live.append(run.uploads())
        return {"credits: live unused uploads after each run": [u for u, _ in live],
                "credits: uploads ever made after each run": [m for _, m in live],
                "credits: concurrency": 16}

    def not_ready(run: Run, folder: Path) -> dict[str, Any]:
        manifest = image_study(folder / "unready", 20, size)
        live = []
        for _ in range(3):
            done = run.apply(manifest, check=False)
            assert done.returncode == 1, done.stderr[-2000:]
            live.append(run.uploads())
        return {"not ready: live unused uploads after each run": [u for u, _ in live],
                "not ready: uploads ever made": live[-1][1]}

    jobs = jobs_of(1.0)
    out = scenario(workdir, "waste-credits",
                   {**jobs, "credits_per_month": 100, "job_cost": 20}, credits)
    out |= scenario(workdir, "waste-unready",
                    {**jobs, "not_ready_algorithms": "lung-nodule-detector"}, not_ready)
    return out


def quotas(workdir: Path, quick: bool) -> dict[str, Any]:
    n, size = 20, (1 if quick else 4) * MIB
    jobs = jobs_of(2.0)
    results: dict[str, Any] = {}
    for label, limits in (("free", {}),
                          ("quota", {"max_live_uploads": 4, "max_upload_bytes": 3 * size})):

        def body(run: Run, folder: Path, label: str = label) -> dict[str, Any]:
            manifest = image_study(folder, n, size)
            done = run.apply(manifest)
            out = json.loads(done.stdout)
            spans = run.jobs()
            return {f"{label}: apply s": done.wall_s,
                    f"{label}: makespan s": max(e for _, e in spans) - run.spawned[0],
                    f"{label}: submitted": out["summary"]["submitted"],
                    f"{label}: failed": out["summary"]["failed"],
                    f"{label}: uploads made": run.uploads()[1]}

        results |= scenario(workdir, f"quotas-{label}", {**jobs, **limits}, body)
    results["apply ratio (quota / free)"] = (results["quota: apply s"]
                                             / results["free: apply s"])
    results["makespan ratio (quota / free)"] = (results["quota: makespan s"]
                                                / results["free: makespan s"])
    return results


#: job time of the limit16 scenario (--job-seconds)
LIMIT16_JOB_S = [2.0]


def limit16(workdir: Path, quick: bool) -> dict[str, Any]:
    n, job_s, limit = (96 if quick else 250), LIMIT16_JOB_S[0], 16

    def body(run: Run, folder: Path) -> dict[str, Any]:
        done = run.apply(value_study(folder, n))
        out = json.loads(done.stdout)
        spans = run.jobs()
        posts = run.job_posts()
        refused = sum(1 for p in posts if p["status"] == 400)
        ideal = math.ceil(n / limit) * job_s
        first = min(c for c, _ in spans)
        last = max(e for _, e in spans)
        return {"jobs": out["summary"]["submitted"], "job POSTs": len(posts),
                "refused job POSTs": refused, "refused per job": refused / n,
                "ideal s": ideal, "makespan from the first job s": last - first,
                "makespan from spawn s": last - run.spawned[0],
                "ratio from the first job": (last - first) / ideal,
                "ratio from spawn": (last - run.spawned[0]) / ideal,
                "most active at once": most_active(spans, 0.0)}

    return scenario(workdir, "limit16", {**jobs_of(job_s), "max_active_jobs": limit}, body)


def overadmit(workdir: Path, quick: bool) -> dict[str, Any]:
    n, limit = 20, 2
    config = {**jobs_of(1.0), "max_active_jobs": limit, "unlocked_checks": True,
              "commit_seconds": 0.05}
    results: dict[str, Any] = {}
    for label, extra in (("auto", ()), ("burst (--max-active 16)", ("--max-active", "16"))):

        def body(run: Run, folder: Path, extra: Sequence[str] = extra) -> dict[str, Any]:
            out = json.loads(run.apply(value_study(folder, n), *extra).stdout)
            spans = run.jobs()
            refusals = [p["time"] for p in run.job_posts() if p["status"] == 400]
            first = min(refusals) if refusals else max(e for _, e in spans)
            return {"submitted": out["summary"]["submitted"],
                    "refused job POSTs": len(refusals),
                    "most active at once, all along": most_active(spans, 0.0),
                    "most active after the first refusal": most_active(spans, first)}

        results |= {f"{label}: {k}": v for k, v in
                    scenario(workdir, f"overadmit-{'burst' if extra else 'auto'}",
                             config, body).items()}
    return results


def studies(workdir: Path, quick: bool) -> dict[str, Any]:
    n, job_s, limit = (12 if quick else 20), 2.0, 4
    config = {**jobs_of(job_s), "max_active_jobs": limit, "unlocked_checks": True,
              "commit_seconds": 0.05}

    def together(run: Run, folder: Path) -> dict[str, Any]:
        import threading

        a = value_study(folder / "a", n, first=0)
        b = value_study(folder / "b", n, first=1000)
        threads = [threading.Thread(target=run.apply, args=(m,)) for m in (a, b)]
        start = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        spans = run.jobs()
        outs = [json.loads(r.stdout)["summary"]["submitted"] for r in run.runs]
        return {"two studies: submitted": outs,
                "two studies: makespan s": max(e for _, e in spans) - start,
                "two studies: refused job POSTs":
                    sum(1 for p in run.job_posts() if p["status"] == 400),
                "two studies: most active at once": most_active(spans, 0.0)}

    def alone(run: Run, folder: Path) -> dict[str, Any]:
        run.apply(value_study(folder, 2 * n))
        spans = run.jobs()
        return {"one study: makespan s": max(e for _, e in spans) - run.spawned[0]}

    results = scenario(workdir, "studies-together", config, together)
    results |= scenario(workdir, "studies-alone", config, alone)
    results["ideal s"] = math.ceil(2 * n / limit) * job_s
    results["ratio (two at once / one of both)"] = (results["two studies: makespan s"]
                                                    / results["one study: makespan s"])
    return results


SCENARIOS: dict[str, Callable[[Path, bool], dict[str, Any]]] = {
    "waste": waste, "quotas": quotas, "limit16": limit16, "overadmit": overadmit,
    "studies": studies,
}


def merge(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One figure per key: the median of numbers (a ratio also lists every run's)."""
    if len(runs) == 1:
        return dict(runs[0])
    out: dict[str, Any] = {}
    for key in runs[0]:
        values = [r[key] for r in runs]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = statistics.median(values)
            if "ratio" in key or "per job" in key:
                out[key + " (each run)"] = [round(float(v), 3) for v in values]
        else:
            out[key] = values
    return out


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return str(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help="comma-separated: " + ", ".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--job-seconds", type=float, default=2.0,
                        help="job time in the limit16 scenario (default 2)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per scenario; numbers are medians (ratios: every run)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--workdir", type=Path, help="keep sandboxes and studies here")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gcbatch-bench-admission-"))
    LIMIT16_JOB_S[0] = args.job_seconds
    figures: dict[str, dict[str, Any]] = {}
    for name in chosen:
        print(f"[{time.strftime('%H:%M:%S')}] {name} …", file=sys.stderr, flush=True)
        runs = [SCENARIOS[name](workdir / f"run{r}", args.quick)
                for r in range(max(1, args.repeats))]
        figures[name] = merge(runs)
        rows = [[key, fmt(value)] for key, value in figures[name].items()]
        print(f"\n## {name}\n\n" + render_table(["figure", "value"], rows), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_info(), "latency_ms": LATENCY_MS,
                                         "figures": figures}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
