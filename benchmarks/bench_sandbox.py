"""How many job-creating requests per second the sandbox sustains (issue 3: >= 1,000/s).

The sandbox runs in its own process (``python -m gcbatch sandbox serve``), exactly as the
other benchmarks use it, so its work shares no GIL with the load generator. The load is
``--threads`` client threads, each with one keep-alive connection (``http.client``, which
sends small requests in one write), each POSTing value-only jobs with distinct inputs to
``algorithms/jobs/`` as fast as answers come back. No latency is injected. Every answer
must be 201 and the sandbox's own count of jobs must match, or the run is void.

The sandbox keeps its default job lifecycle (jobs move on and finish while the load runs,
as they would in a real measurement); only the admission limits are lifted, since 16
active jobs per user would stop the run at request 17.

    .venv/bin/python benchmarks/bench_sandbox.py                 # 3000 POSTs, 4 threads
    .venv/bin/python benchmarks/bench_sandbox.py --requests 10000 --threads 8 --tls
    .venv/bin/python benchmarks/bench_sandbox.py --profile       # where the app spends time

Prints the figure and whether the target was met; exit status 0 when measured (met or
not; ``--check`` makes a miss exit 1), 1 when the run was void.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gcbatch.sandbox import start_sandbox_process  # noqa: E402

TARGET_PER_SECOND = 1000.0
UNLIMITED = {"max_active_jobs": 10**9, "credits_per_month": 10**12, "max_live_uploads": 10**9}
ALGORITHM = "risk-calculator"


def _connection(api_url: str, cafile: Path | None) -> http.client.HTTPConnection:
    parts = urlsplit(api_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        return http.client.HTTPSConnection(host, port, context=context, timeout=30)
    return http.client.HTTPConnection(host, port, timeout=30)


def _bodies(algorithm_url: str, start: int, count: int) -> list[bytes]:
    """Distinct value-only job payloads (distinct, so the duplicate check never fires)."""
    return [
        json.dumps(
            {
                "algorithm": algorithm_url,
                "inputs": [
                    {"interface": "age", "value": start + i},
                    {"interface": "lung-volume", "value": 1.5},
                ],
            }
        ).encode()
        for i in range(count)
    ]


def _algorithm_url(api_url: str, cafile: Path | None, token: str) -> str:
    conn = _connection(api_url, cafile)
    try:
        path = urlsplit(api_url).path + f"algorithms/?slug={ALGORITHM}"
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        answer = conn.getresponse()
        data = json.loads(answer.read())
        return str(data["results"][0]["api_url"])
    finally:
        conn.close()


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process has used so far (Linux /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def run_load(
    api_url: str, cafile: Path | None, token: str, bodies: Sequence[bytes], threads: int
) -> dict[str, Any]:
    """POST every body with ``threads`` keep-alive connections; timings and statuses."""
    jobs_path = urlsplit(api_url).path + "algorithms/jobs/"
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    next_index = 0
    lock = threading.Lock()
    latencies: list[list[float]] = [[] for _ in range(threads)]
    statuses: list[dict[int, int]] = [{} for _ in range(threads)]
    errors: list[str] = []
    ready = threading.Barrier(threads + 1)

    def worker(slot: int) -> None:
        nonlocal next_index
        conn = _connection(api_url, cafile)
        conn.connect()
        ready.wait()
        try:
            while True:
                with lock:
                    index = next_index
                    next_index += 1
                if index >= len(bodies):
                    return
                started = time.perf_counter()
                conn.request("POST", jobs_path, body=bodies[index], headers=headers)
                answer = conn.getresponse()
                answer.read()
                latencies[slot].append(time.perf_counter() - started)
                statuses[slot][answer.status] = statuses[slot].get(answer.status, 0) + 1
        except Exception as exc:  # report, do not hide: the run is void then
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in pool:
        thread.start()
    ready.wait()
    started = time.perf_counter()
    for thread in pool:
        thread.join(600)
    elapsed = time.perf_counter() - started
    merged: dict[int, int] = {}
    for part in statuses:
        for status, count in part.items():
            merged[status] = merged.get(status, 0) + count
    flat = sorted(x for part in latencies for x in part)
    return {
        "elapsed_s": elapsed,
        "requests": len(flat),
        "per_second": len(flat) / elapsed if elapsed > 0 else 0.0,
        "statuses": merged,
        "p50_ms": statistics.median(flat) * 1000 if flat else None,
        "p99_ms": flat[int(len(flat) * 0.99) - 1] * 1000 if flat else None,
        "errors": errors,
    }


def profile_app(requests: int) -> None:
    """Profile the app alone (in-process transport, no HTTP) on job POSTs."""
    import cProfile
    import pstats
    import tempfile

    import httpx

    from gcbatch.sandbox import SandboxTransport
    from gcbatch.sandbox.app import SandboxApp
    from gcbatch.sandbox.config import SandboxConfig

    with tempfile.TemporaryDirectory() as tmp:
        app = SandboxApp(Path(tmp) / "p.db", config=SandboxConfig().replace(**UNLIMITED))
        headers = {"Authorization": "Bearer demo-token", "Content-Type": "application/json"}
        with httpx.Client(
            base_url="http://127.0.0.1/api/v1/", transport=SandboxTransport(app), headers=headers
        ) as client:
            found = client.get("algorithms/", params={"slug": ALGORITHM}).json()
            bodies = _bodies(found["results"][0]["api_url"], 0, requests)
            profiler = cProfile.Profile()
            started = time.perf_counter()
            profiler.enable()
            for body in bodies:
                client.post("algorithms/jobs/", content=body)
            profiler.disable()
            elapsed = time.perf_counter() - started
        app.close()
    print(f"in-process (httpx transport + app, profiled): {requests / elapsed:,.0f} job POSTs/s")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="measured POSTs (default 3000)")
    parser.add_argument("--warmup", type=int, default=200, help="POSTs before measuring")
    parser.add_argument("--threads", type=int, default=4, help="client threads (default 4)")
    parser.add_argument("--tls", action="store_true", help="https, as gcapi needs")
    parser.add_argument("--job-duration", type=float, help="seconds per job (default: 5)")
    parser.add_argument("--json", dest="as_json", action="store_true", help="JSON on stdout")
    parser.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    parser.add_argument("--profile", action="store_true", help="profile the app in-process")
    args = parser.parse_args(argv)

    if args.profile:
        profile_app(args.requests)
        return 0

    extra = ["--job-duration", str(args.job_duration)] if args.job_duration is not None else []
    with start_sandbox_process(tls=args.tls, settings=UNLIMITED, extra_args=extra) as proc:
        token = proc.token("demo")
        algorithm_url = _algorithm_url(proc.api_url, proc.cafile, token)
        run_load(
            proc.api_url,
            proc.cafile,
            token,
            _bodies(algorithm_url, 10**6, args.warmup),
            args.threads,
        )
        cpu_before = process_cpu_seconds(proc.pid)
        result = run_load(
            proc.api_url, proc.cafile, token, _bodies(algorithm_url, 0, args.requests), args.threads
        )
        cpu_after = process_cpu_seconds(proc.pid)
        jobs = proc.admin.stats()["users"]["demo"]["jobs"]
    expected_jobs = args.requests + args.warmup
    void = result["errors"] or result["statuses"] != {201: args.requests} or jobs != expected_jobs
    server_cpu_us = None
    if cpu_before is not None and cpu_after is not None and args.requests:
        server_cpu_us = (cpu_after - cpu_before) / args.requests * 1e6
    result.update(
        server_cpu_us_per_request=server_cpu_us,
        threads=args.threads,
        tls=args.tls,
        cpus=os.cpu_count(),
        jobs_in_sandbox=jobs,
        target_per_second=TARGET_PER_SECOND,
        met=not void and result["per_second"] >= TARGET_PER_SECOND,
    )
    if args.as_json:
        print(json.dumps(result, sort_keys=True))
    else:
        scheme = "https" if args.tls else "http"
        print(
            f"sandbox job-creating POSTs: {result['per_second']:,.0f}/s "
            f"({result['requests']} requests in {result['elapsed_s']:.2f} s, "
            f"{args.threads} keep-alive client threads, {scheme}, no injected latency, "
            f"{os.cpu_count()} CPUs)"
        )
        print(f"latency p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms")
        if server_cpu_us is not None:
            # Independent of how busy the machine is: the sandbox process's CPU per POST,
            # and what one core could therefore sustain.
            print(
                f"sandbox CPU {server_cpu_us:.0f} us per POST "
                f"(one core's worth: {1e6 / server_cpu_us:,.0f}/s)"
            )
        verdict = "met" if result["met"] else "MISSED"
        print(f"target >= {TARGET_PER_SECOND:,.0f}/s: {verdict}")
    if void:
        print(
            f"void run: statuses {result['statuses']}, jobs in sandbox {jobs} "
            f"(expected {expected_jobs}), errors {result['errors'][:3]}",
            file=sys.stderr,
        )
        return 1
    return 1 if args.check and not result["met"] else 0


if __name__ == "__main__":
    sys.exit(main())
