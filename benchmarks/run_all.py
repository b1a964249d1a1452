"""Run gcbatch's benchmarks side by side with the official client, and print one table.

    .venv/bin/python benchmarks/run_all.py --quick            # < 5 minutes on 2 cores
    .venv/bin/python benchmarks/run_all.py --json out.json    # the issue's full sizes
    .venv/bin/python benchmarks/run_all.py --only 1,3         # some scenarios

Progress goes to stderr; the table (Markdown, readable as text) to stdout. The official
client's virtualenv is made on first use under ~/.cache/gcbatch-bench/. Every figure is a
median over ``--repeats`` runs; ratios are gcapi/gcbatch (above 1: gcbatch is faster).
Exit code 0 even when a target is missed (the table says so); 1 if a scenario failed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from harness import (
    BenchmarkError,
    ScenarioResult,
    ensure_gcapi_venv,
    load_average,
    machine_info,
    render_results,
    results_json,
)
from scenarios import SCENARIOS, TITLES, Bench


def parse_only(text: str) -> list[int]:
    chosen = sorted({int(part) for part in text.split(",") if part.strip()})
    unknown = [n for n in chosen if n not in SCENARIOS]
    if unknown:
        raise argparse.ArgumentTypeError(f"no scenario {unknown}; choose from 1-6")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="gcbatch vs the official client (gcapi 0.16.1) on the sandbox"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller gcapi loops, 1 repeat: under 5 minutes on 2 cores",
    )
    parser.add_argument(
        "--json",
        dest="json_out",
        type=Path,
        default=None,
        help="also write every figure as JSON here",
    )
    parser.add_argument(
        "--only",
        type=parse_only,
        default=sorted(SCENARIOS),
        help="comma-separated scenario numbers (default: all)",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="runs per side (default: 1 with --quick, else 3)"
    )
    parser.add_argument(
        "--docs-wait-cap",
        type=float,
        default=None,
        help="seconds after which the docs' 300 s-retry gcapi loop of scenario "
        "3 is stopped and projected (default 20 quick / 600 full; "
        "0 = run it to the end, about 45 minutes)",
    )
    parser.add_argument(
        "--size",
        action="append",
        default=[],
        metavar="NAME=N",
        help="override one size, e.g. s1_cases=100 (names: s1_cases, s2_cases, s3_cases, "
        "s4_jobs, s4_gcapi_jobs, s5_cases, s6_mib)",
    )
    parser.add_argument("--no-gcapi", action="store_true", help="measure gcbatch only")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where to put sandboxes and data (default: a temp dir)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir afterwards")
    args = parser.parse_args(argv)

    try:
        import gcbatch  # (the side under test, and the sandbox, come from here)
    except ImportError:
        parser.error("run this with the project's interpreter, e.g. .venv/bin/python")

    # gcbatch's bytecode compiled once, as pip does for an installed package: a checkout
    # run with PYTHONDONTWRITEBYTECODE would otherwise compile every module on every run
    # and the start-up of each child would measure the compiler
    import compileall

    compileall.compile_dir(str(Path(gcbatch.__file__).parent), quiet=1)

    repeats = args.repeats or (1 if args.quick else 3)
    cap = args.docs_wait_cap if args.docs_wait_cap is not None else (20.0 if args.quick else 600.0)
    log = sys.stderr
    started = time.monotonic()

    gcapi_python = None
    if not args.no_gcapi:
        try:
            gcapi_python = ensure_gcapi_venv(log=log)
        except (OSError, subprocess.CalledProcessError) as exc:
            # No package index here, say: measure gcbatch alone rather than nothing, and
            # make the missing side visible in every scenario's notes and the exit code.
            print(f"could not make gcapi's virtualenv ({exc}); gcapi side skipped", file=log)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gcbatch-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    bench = Bench(
        workdir=workdir,
        quick=args.quick,
        repeats=repeats,
        gcapi_python=gcapi_python,
        log=log,
        docs_wait_cap_s=cap,
    )
    for item in args.size:
        name, _, value = item.partition("=")
        bench.sizes[name.strip()] = int(value)
    machine = machine_info()
    machine["mode"] = "quick" if args.quick else "full"
    machine["repeats"] = str(repeats)
    print(f"machine: {json.dumps(machine)}", file=log)

    results: list[ScenarioResult] = []
    failed = False
    try:
        for number in args.only:
            t0 = time.monotonic()
            try:
                res = SCENARIOS[number](bench)
            except (BenchmarkError, OSError, ValueError, KeyError) as exc:
                failed = True
                bench.say(f"scenario {number} failed: {exc}")
                traceback.print_exc(file=log)
                res = ScenarioResult(number, TITLES[number], "", error=str(exc).splitlines()[0])
            if any(
                n.endswith("could not be measured") or "could not be measured:" in n
                for n in res.notes
            ):
                failed = True
            results.append(res)
            bench.say(f"scenario {number} done in {time.monotonic() - t0:.0f} s")
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        elif args.keep:
            print(f"work dir kept: {workdir}", file=log)

    total = time.monotonic() - started
    machine["total_runtime_s"] = f"{total:.0f}"
    machine["load_average_end"] = load_average()
    header = (
        f"gcbatch vs gcapi {('(quick mode) ' if args.quick else '')}- {machine['date']}; "
        f"{machine['nproc']} x {machine['cpu']}, {machine['memory']} RAM, "
        f"{machine['os']}, Python {machine['python']}; "
        f"median of {repeats} run(s) per side; whole run {total:.0f} s; "
        f"load average {machine['load_average']} at start, {machine['load_average_end']} at end"
    )
    print(header)
    print()
    print(render_results(results))
    if args.json_out:
        args.json_out.write_text(json.dumps(results_json(results, machine), indent=2) + "\n")
        print(f"wrote {args.json_out}", file=log)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
