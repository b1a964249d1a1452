"""Issue 17's scale figures: cost against a long history, and shards sharing one limit.

    python benchmarks/bench_scale.py [--history 100000] [--cases 20]
                                     [--shards 4] [--shard-cases 160] [--limit 16]
                                     [--max-active M] [--only history,shards] [--json OUT]

``history``: a sandbox (its own process, TLS, 20 ms latency) holding ``--history`` older
jobs of the same user and algorithm (``POST /_sandbox/history``), then a ``--cases``
study applied after them; ``gcbatch status`` and ``gcbatch plan`` of that study are
timed, with the requests each sent (the sandbox's request log). Target: at most 3 each.

``shards``: ``--shard-cases`` value cases applied as ``--shards`` shards in as many
concurrent processes (``apply --shard I/N``, each with ``--max-active M`` if given),
against an active-jobs limit of ``--limit`` and 2 s jobs; then ``lock merge`` and ``wait``. Reported: the makespan (the
first spawn to every job seen ended) against the ideal ``ceil(N/limit) x 2 s``, the job
POSTs the server refused for the limit (what thrashing would show), duplicates (jobs
beyond one per case), and the most jobs active at once as the sandbox counted them.

Each figure is one run; the machine's load average is printed with them (a shared
2-core VM: compare wall time with CPU time).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    Sandbox,
    SandboxSpec,
    gcbatch_argv,
    ideal_makespan,
    load_average,
    run_child,
)
from scenarios import INSTANT_JOBS, TOKEN, UNLIMITED, two_second_jobs

ALG = "risk-calculator"


def value_study(root: Path, n: int) -> Path:
    folder = root / "ages"
    folder.mkdir(parents=True, exist_ok=True)
    past = time.time() - 3600
    for i in range(n):
        path = folder / f"{i:06d}.json"
        path.write_text(json.dumps(i))
        os.utime(path, (past, past))
    manifest = root / "study.yaml"
    manifest.write_text(
        f"version: 1\nalgorithm: {ALG}\ndefaults:\n  lung-volume: {{value: 4.2}}\n"
        "cases:\n  - foreach: {glob: \"ages/*.json\"}\n    id: \"case-{stem}\"\n"
        "    inputs:\n      age: {json: \"{path}\"}\n")
    return manifest


def timed(sb: Sandbox, *args: str, cwd: Path) -> dict[str, Any]:
    marker = sb.request_marker()
    child = run_child(gcbatch_argv(*args, "--server", sb.api_url),
                      env=sb.env_for_clients(TOKEN), cwd=cwd, timeout_s=3600)
    child.check()
    total, mutating = sb.requests_since(marker)
    return {"wall_s": round(child.wall_s, 3), "cpu_s": round(child.cpu_s, 3),
            "requests": total, "mutating": mutating}


def bench_history(work: Path, history: int, cases: int) -> dict[str, Any]:
    spec = SandboxSpec(tls=True, latency_ms=20, config={**UNLIMITED, **INSTANT_JOBS})
    with Sandbox(spec, work / "sb-history") as sb:
        started = time.monotonic()
        sb.admin.add_history(ALG, history)
        made = time.monotonic() - started
        manifest = value_study(work / "history-study", cases)
        apply = timed(sb, "apply", str(manifest), cwd=manifest.parent)
        status = timed(sb, "status", str(manifest), "--json", cwd=manifest.parent)
        plan = timed(sb, "plan", str(manifest), "--json", cwd=manifest.parent)
    return {"history_jobs": history, "cases": cases, "history_made_s": round(made, 2),
            "apply": apply, "status": status, "plan": plan,
            "targets": {"status_requests<=3": status["requests"] <= 3,
                        "plan_requests<=3": plan["requests"] <= 3}}


def _watch_active(sb: Sandbox, stop: threading.Event, peak: list[int]) -> None:
    while not stop.is_set():
        try:
            active = int(sb.stats()["totals"]["active_jobs"])
            peak[0] = max(peak[0], active)
        except Exception:  # a busy moment: the next look counts
            pass
        stop.wait(0.1)


def bench_shards(work: Path, shards: int, n: int, limit: int,
                 max_active: int | None = None) -> dict[str, Any]:
    job_s = 2.0
    spec = SandboxSpec(tls=True, latency_ms=20,
                       config={**UNLIMITED, **two_second_jobs(job_s), "max_active_jobs": limit})
    with Sandbox(spec, work / "sb-shards") as sb:
        manifest = value_study(work / "shard-study", n)
        env = sb.env_for_clients(TOKEN)
        marker = sb.request_marker()
        stop, peak = threading.Event(), [0]
        watcher = threading.Thread(target=_watch_active, args=(sb, stop, peak), daemon=True)
        watcher.start()
        started = time.monotonic()
        cap = ("--max-active", str(max_active)) if max_active else ()
        procs = [subprocess.Popen(gcbatch_argv("apply", str(manifest), "--shard",
                                               f"{i}/{shards}", "--server", sb.api_url, *cap),
                                  env=env, cwd=manifest.parent, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for i in range(shards)]
        codes = [p.wait(timeout=3600) for p in procs]
        applied = time.monotonic() - started
        merge = run_child(gcbatch_argv("lock", "merge", str(manifest)), env=env,
                          cwd=manifest.parent, timeout_s=600)
        merge.check()
        wait = run_child(gcbatch_argv("wait", str(manifest), "--server", sb.api_url),
                         env=env, cwd=manifest.parent, timeout_s=3600)
        makespan = time.monotonic() - started
        stop.set()
        watcher.join(5)
        log = sb.request_log(marker)
        posts = [e for e in log if e["method"] == "POST" and e["path"].endswith("/jobs/")]
        refused = [e for e in posts if e["status"] == 400]
        jobs = int(sb.stats()["totals"]["jobs"])
    ideal = ideal_makespan(n, limit, job_s)
    return {"shards": shards, "cases": n, "limit": limit, "job_seconds": job_s,
            "max_active_per_shard": max_active or "auto",
            "apply_exit_codes": codes, "apply_s": round(applied, 2),
            "makespan_s": round(makespan, 2), "ideal_s": ideal,
            "makespan_over_ideal": round(makespan / ideal, 3), "job_posts": len(posts),
            "refused_for_the_limit": len(refused), "jobs": jobs, "duplicates": jobs - n,
            "peak_active_seen": peak[0], "wait_exit": wait.returncode}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history", type=int, default=100_000)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--shard-cases", type=int, default=160)
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--max-active", type=int, default=None,
                        help="each shard's --max-active (default: auto, gcbatch's default)")
    parser.add_argument("--only", default="history,shards")
    parser.add_argument("--json", dest="json_out", type=Path, default=None)
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    results: dict[str, Any] = {"load_average_start": load_average()}
    with TemporaryDirectory(prefix="gcbatch-bench-scale-") as tmp:
        work = Path(tmp)
        if "history" in only:
            print(f"history: {args.history} older jobs, a {args.cases}-case study",
                  file=sys.stderr)
            results["history"] = bench_history(work, args.history, args.cases)
            print(json.dumps(results["history"], indent=2))
        if "shards" in only:
            print(f"shards: {args.shard_cases} cases as {args.shards} shards, limit "
                  f"{args.limit}", file=sys.stderr)
            results["shards"] = bench_shards(work, args.shards, args.shard_cases, args.limit,
                                             args.max_active)
            print(json.dumps(results["shards"], indent=2))
    results["load_average_end"] = load_average()
    print(f"load average: {results['load_average_start']} at start, "
          f"{results['load_average_end']} at end")
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
