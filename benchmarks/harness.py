"""Shared machinery for gcbatch's benchmarks: processes, the sandbox, numbers and tables.

Two halves, kept apart on purpose:

* **Pure helpers** (no I/O): medians, ratios, unit formatting, target checks and the text
  table. ``tests/test_benchmarks_smoke.py`` runs these; timings are never asserted
  anywhere, because this machine (and CI's) is noisy.
* **Edges**: running a child process while measuring its wall time, peak memory and CPU,
  starting a sandbox in its own process (``python -m gcbatch sandbox serve``) with a given
  seed, latency, limits and TLS, reading its request log and stats, and creating the
  official client's virtualenv on demand.

Every benchmark runs its client as a *child process* and measures it from the outside, for
both sides alike: wall time from spawn to exit (interpreter start-up and imports included,
as a user lives it), peak RSS from ``wait4`` (the kernel's own high-water mark of that one
child, so no polling can miss a spike), and requests from the sandbox's log (what reached
the server, retries included). The sandbox runs in a separate process so that its work is
not billed to the client and no GIL is shared with it.

At module level this file imports only the standard library, so the smoke test can load
it without a sandbox, httpx or gcapi around; :class:`Sandbox` imports ``gcbatch.sandbox``
when it starts one.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
GCAPI_LOOP = BENCH_DIR / "gcapi_loop" / "loop.py"

#: The anchor: the official client, pinned, in its own virtualenv (it pins httpx 0.23, which
#: would clash with gcbatch's httpx in one environment).
GCAPI_VERSION = "0.16.1"
GCAPI_VENV = Path.home() / ".cache" / "gcbatch-bench" / f"gcapi-{GCAPI_VERSION}-venv"

MIB = 1024 * 1024
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# ---------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    """The median of ``values``; NaN for none (a scenario that produced nothing)."""
    if not values:
        return math.nan
    return float(statistics.median(values))


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is unknown or the division is void."""
    if numerator is None or denominator is None:
        return None
    if math.isnan(numerator) or math.isnan(denominator) or denominator <= 0:
        return None
    return numerator / denominator


def fmt_ratio(value: float | None) -> str:
    """``12.3x`` (three significant figures), ``-`` when unknown."""
    if value is None or math.isnan(value):
        return "-"
    if value >= 100:
        return f"{value:.0f}x"
    if value >= 10:
        return f"{value:.1f}x"
    return f"{value:.2f}x"


def fmt_seconds(value: float | None) -> str:
    """Human seconds: ``850 ms``, ``3.42 s``, ``12.1 s``, ``2,705 s``; ``-`` when unknown."""
    if value is None or math.isnan(value):
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 10:
        return f"{value:.2f} s"
    if value < 1000:
        return f"{value:.1f} s"
    return f"{value:,.0f} s"


def fmt_mib(n_bytes: float | None) -> str:
    """Bytes as MiB (``83.4 MiB``); ``-`` when unknown."""
    if n_bytes is None or math.isnan(n_bytes):
        return "-"
    return f"{n_bytes / MIB:.1f} MiB"


def fmt_count(value: float | None) -> str:
    """An integer count with thousands separators; ``-`` when unknown."""
    if value is None or math.isnan(value):
        return "-"
    return f"{round(value):,}"


@dataclass(frozen=True)
class Target:
    """A goal from the issue, e.g. "scenario 1 at least 15x faster" or "under 5 s".

    ``at_most`` says which side of ``threshold`` is good. ``measured`` None means the
    scenario did not produce the figure (it failed or was skipped): that is a miss too.
    """

    description: str
    threshold: float
    measured: float | None
    unit: str = ""
    at_most: bool = True

    @property
    def met(self) -> bool:
        if self.measured is None or math.isnan(self.measured):
            return False
        if self.at_most:
            return self.measured <= self.threshold
        return self.measured >= self.threshold

    def render(self) -> str:
        op = "<=" if self.at_most else ">="
        shown = "-" if self.measured is None else _fmt_unit(self.measured, self.unit)
        verdict = "met" if self.met else "MISSED"
        return (
            f"{self.description}: {shown} (target {op} "
            f"{_fmt_unit(self.threshold, self.unit)}) - {verdict}"
        )


def _fmt_unit(value: float, unit: str) -> str:
    if unit == "s":
        return fmt_seconds(value)
    if unit == "x":
        return fmt_ratio(value)
    if unit == "MiB":
        return f"{value:.1f} MiB"
    return f"{value:g}{unit}"


@dataclass(frozen=True)
class SideResult:
    """One client's figures in one scenario: medians over ``repeats`` runs.

    ``completed`` is False when the run was stopped at a time cap (its wall time is then a
    lower bound, and the table says so). ``extra`` holds scenario-specific figures
    (makespan, throughput, ...), already medians.
    """

    side: str
    wall_s: float
    requests: int | None = None
    mutating_requests: int | None = None
    peak_rss_bytes: int | None = None
    cpu_s: float | None = None
    repeats: int = 1
    completed: bool = True
    extra: Mapping[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class ScenarioResult:
    """One scenario: both sides' figures, the speed ratio, targets and honest notes."""

    number: int
    title: str
    params: str
    sides: tuple[SideResult, ...] = ()
    targets: tuple[Target, ...] = ()
    notes: tuple[str, ...] = ()
    error: str | None = None

    def side(self, name: str) -> SideResult | None:
        for candidate in self.sides:
            if candidate.side == name:
                return candidate
        return None

    def speed_ratio(self, baseline: str = "gcapi", subject: str = "gcbatch") -> float | None:
        """Wall-time ratio baseline/subject (>1 means the subject is faster)."""
        base, sub = self.side(baseline), self.side(subject)
        if base is None or sub is None:
            return None
        return ratio(base.wall_s, sub.wall_s)


def summarize_runs(
    side: str,
    walls: Sequence[float],
    *,
    requests: Sequence[int] = (),
    mutating: Sequence[int] = (),
    peaks: Sequence[int] = (),
    cpus: Sequence[float] = (),
    completed: bool = True,
    extra: Mapping[str, Sequence[float]] | None = None,
    note: str = "",
) -> SideResult:
    """Fold repeated runs of one side into medians (requests: median, rounded)."""

    def med_int(values: Sequence[int]) -> int | None:
        return round(median([float(v) for v in values])) if values else None

    return SideResult(
        side=side,
        wall_s=median(list(walls)),
        requests=med_int(requests),
        mutating_requests=med_int(mutating),
        peak_rss_bytes=med_int(peaks),
        cpu_s=median(list(cpus)) if cpus else None,
        repeats=len(walls),
        completed=completed,
        extra={key: median(list(vals)) for key, vals in (extra or {}).items()},
        note=note,
    )


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown pipe table padded to column width: readable as plain text, too.

    Columns after the first two are right-aligned (they hold numbers).
    """
    width = len(headers)
    for row in rows:
        if len(row) != width:
            raise ValueError(f"row has {len(row)} cells, expected {width}: {row!r}")
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 2)) if i < 2 else ("-" * (w + 1) + ":") for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


RESULT_HEADERS = (
    "scenario",
    "client",
    "wall time",
    "requests",
    "mutating",
    "peak memory",
    "client CPU",
    "gcapi/gcbatch",
)


def result_rows(results: Sequence[ScenarioResult]) -> list[list[str]]:
    """One row per side per scenario; the ratio sits on the gcbatch row."""
    rows: list[list[str]] = []
    for res in results:
        label = f"{res.number}. {res.title}"
        if res.error and not res.sides:
            rows.append([label, "(failed)", "-", "-", "-", "-", "-", "-"])
            continue
        for i, side in enumerate(res.sides):
            wall = fmt_seconds(side.wall_s)
            if not side.completed:
                wall = f"> {wall} (capped)"
            speed = "-"
            if side.side.startswith("gcbatch"):
                baselines = [s for s in res.sides if s.side.startswith("gcapi") and s.completed]
                if baselines:
                    speed = fmt_ratio(ratio(baselines[0].wall_s, side.wall_s))
            rows.append(
                [
                    label if i == 0 else "",
                    side.side,
                    wall,
                    fmt_count(side.requests),
                    fmt_count(side.mutating_requests),
                    fmt_mib(side.peak_rss_bytes),
                    fmt_seconds(side.cpu_s),
                    speed,
                ]
            )
    return rows


def render_results(results: Sequence[ScenarioResult]) -> str:
    """The whole report: the main table, then per scenario its extras, targets and notes."""
    parts = [render_table(RESULT_HEADERS, result_rows(results)), ""]
    for res in results:
        lines: list[str] = []
        for side in res.sides:
            for key, value in sorted(side.extra.items()):
                lines.append(f"- {side.side}: {key} = {_fmt_extra(key, value)}")
            if side.note:
                lines.append(f"- {side.side}: {side.note}")
        lines.extend(f"- target: {t.render()}" for t in res.targets)
        lines.extend(f"- {note}" for note in res.notes)
        if res.error:
            lines.append(f"- ERROR: {res.error}")
        if lines:
            params = f" ({res.params})" if res.params else ""
            parts.append(f"**{res.number}. {res.title}**{params}")
            parts.extend(lines)
            parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def _fmt_extra(key: str, value: float) -> str:
    if key.endswith("_mib_s"):
        return f"{value:.1f} MiB/s"
    if key.endswith("_ms"):
        return f"{value:.1f} ms"
    if key.endswith("_s"):
        return fmt_seconds(value)
    if key.endswith("_ratio"):
        return fmt_ratio(value)
    if key.endswith("_bytes"):
        return fmt_mib(value)
    if float(value).is_integer():
        return fmt_count(value)
    return f"{value:.3g}"


def results_json(results: Sequence[ScenarioResult], machine: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-ready dump of everything measured (NaN becomes null)."""

    def clean(obj: Any) -> Any:
        if isinstance(obj, float) and math.isnan(obj):
            return None
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [clean(v) for v in obj]
        return obj

    scenarios = []
    for res in results:
        entry = asdict(res)
        entry["targets"] = [{**asdict(t), "met": t.met} for t in res.targets]
        entry["speed_ratio_gcapi_over_gcbatch"] = res.speed_ratio()
        scenarios.append(entry)
    cleaned: dict[str, Any] = clean({"machine": dict(machine), "scenarios": scenarios})
    return cleaned


def ideal_makespan(n_jobs: int, limit: int, duration_s: float) -> float:
    """The best any client can do under an active-jobs limit: ceil(N/limit) x duration."""
    if n_jobs <= 0:
        return 0.0
    if limit <= 0:
        raise ValueError("limit must be positive")
    return math.ceil(n_jobs / limit) * duration_s


def count_requests(
    entries: Sequence[Mapping[str, Any]], *, exclude_prefix: str = "/_sandbox/"
) -> tuple[int, int]:
    """(all, mutating) requests in a sandbox request-log slice, admin calls left out."""
    total = mutating = 0
    for entry in entries:
        path = str(entry.get("path", ""))
        if exclude_prefix and path.startswith(exclude_prefix):
            continue
        total += 1
        if str(entry.get("method", "")).upper() in MUTATING_METHODS:
            mutating += 1
    return total, mutating


def load_average() -> str:
    """The 1/5/15-minute load averages: a busy machine explains slow figures."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def machine_info() -> dict[str, str]:
    """Date, nproc, CPU model, OS and Python version: the context every figure needs."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": load_average(),
        "nproc": str(os.cpu_count() or "?"),
        "cpu": cpu,
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


# ---------------------------------------------------------------------------------------
# Edges: child processes
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChildRun:
    """What one child process did: exit code, wall time, peak RSS and its output."""

    argv: tuple[str, ...]
    returncode: int
    wall_s: float
    peak_rss_bytes: int
    stdout: str
    stderr: str
    timed_out: bool = False
    cpu_s: float = 0.0  # user + system CPU of the child: steadier than wall on a busy box

    def check(self) -> ChildRun:
        """Raise with the tail of stderr when the child failed (a benchmark must not lie)."""
        if self.returncode != 0 or self.timed_out:
            tail = "\n".join(self.stderr.strip().splitlines()[-25:])
            what = "timed out" if self.timed_out else f"exited {self.returncode}"
            raise BenchmarkError(f"{' '.join(self.argv[:4])} … {what}:\n{tail}")
        return self

    def json_stdout(self) -> Any:
        """The last line of stdout parsed as JSON (our scripts print one result line)."""
        lines = [ln for ln in self.stdout.strip().splitlines() if ln.strip()]
        if not lines:
            raise BenchmarkError(f"no output from {' '.join(self.argv[:4])}")
        return json.loads(lines[-1])


class BenchmarkError(RuntimeError):
    """A benchmark could not measure what it set out to (reported, never hidden)."""


def run_child(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float = 900.0,
) -> ChildRun:
    """Run ``argv``, measuring wall time and the child's own peak RSS (``wait4``).

    Output goes to temporary files (not pipes), so a chatty child can never block on a full
    pipe and distort the timing. On timeout the child (only this one, by pid) is killed and
    the run is marked ``timed_out``; its wall time is then the cap.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=str(cwd) if cwd else None,
        )
        outcome: dict[str, Any] = {}

        def reap() -> None:
            _, status, usage = os.wait4(proc.pid, 0)
            outcome["end"] = time.perf_counter()
            outcome["status"] = status
            outcome["maxrss"] = usage.ru_maxrss
            outcome["cpu"] = usage.ru_utime + usage.ru_stime

        waiter = threading.Thread(target=reap, daemon=True)
        waiter.start()
        waiter.join(timeout_s)
        timed_out = waiter.is_alive()
        if timed_out:
            with suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            waiter.join(30)
        status = outcome.get("status", 0)
        returncode = os.waitstatus_to_exitcode(status) if "status" in outcome else -9
        # We reaped the child ourselves; tell Popen so it never waits on a reused pid.
        proc.returncode = returncode
        end = outcome.get("end", time.perf_counter())
        out.seek(0)
        err.seek(0)
        return ChildRun(
            argv=tuple(argv),
            returncode=returncode,
            wall_s=end - start,
            # ru_maxrss is in KiB on Linux.
            peak_rss_bytes=int(outcome.get("maxrss", 0)) * 1024,
            stdout=out.read().decode("utf-8", "replace"),
            stderr=err.read().decode("utf-8", "replace"),
            timed_out=timed_out,
            cpu_s=float(outcome.get("cpu", 0.0)),
        )


def gcbatch_argv(*args: str) -> list[str]:
    """The gcbatch CLI as a user runs it, from this checkout's interpreter."""
    return [sys.executable, "-m", "gcbatch", *args]


# ---------------------------------------------------------------------------------------
# Edges: the official client's virtualenv
# ---------------------------------------------------------------------------------------


def ensure_gcapi_venv(venv: Path = GCAPI_VENV, *, log: IO[str] | None = None) -> Path:
    """The python of a virtualenv with gcapi==0.16.1, made (and cached) on first use.

    A marker file is written only after a successful install, so an interrupted install is
    redone instead of half-used.
    """
    python = venv / "bin" / "python"
    marker = venv / ".gcbatch-bench-ok"
    if marker.exists() and python.exists():
        return python
    if log:
        print(f"creating {venv} with gcapi=={GCAPI_VERSION} (once) …", file=log, flush=True)
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    base = shutil.which("python3") or sys.executable
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", f"gcapi=={GCAPI_VERSION}"],
        check=True,
    )
    subprocess.run(
        [str(python), "-c", "import gcapi, httpx; print(httpx.__version__)"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    marker.write_text(GCAPI_VERSION + "\n")
    return python


def gcapi_argv(python: Path, *args: str) -> list[str]:
    """Our gcapi loop script, run by the official client's own interpreter."""
    return [str(python), str(GCAPI_LOOP), *args]


# ---------------------------------------------------------------------------------------
# Edges: the sandbox, in its own process
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxSpec:
    """How to start one sandbox: seed, latency, TLS and settings (what both sides share).

    ``config`` holds :class:`gcbatch.sandbox.SandboxConfig` fields (limits, job phase
    durations, ...), passed to ``gcbatch sandbox serve`` as ``--set NAME=JSON``.
    """

    seed: Path | None = None
    latency_ms: float = 0.0
    tls: bool = False
    config: Mapping[str, Any] = field(default_factory=dict)


class Sandbox:
    """A sandbox server in its own process (``python -m gcbatch sandbox serve``), with its
    own fresh database under ``workdir``. A context manager; :meth:`stop` ends only the
    process this object started.

    Started through :func:`gcbatch.sandbox.start_sandbox_process` (imported lazily, so the
    pure helpers above import without gcbatch).
    """

    def __init__(self, spec: SandboxSpec, workdir: Path, *, startup_timeout_s: float = 60) -> None:
        self.spec = spec
        self.workdir = workdir
        self.startup_timeout_s = startup_timeout_s
        self.proc: Any = None
        self.api_url = ""
        self.ca_file: Path | None = None

    def start(self) -> Sandbox:
        from gcbatch.sandbox import start_sandbox_process

        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.proc = start_sandbox_process(
                db=self.workdir / "sandbox.db",
                seed=self.spec.seed,
                tls=self.spec.tls,
                latency_ms=self.spec.latency_ms,
                settings=dict(self.spec.config),
                log=self.workdir / "sandbox.log",
                timeout=self.startup_timeout_s,
            )
        except RuntimeError as exc:
            raise BenchmarkError(f"the sandbox did not start: {exc}") from exc
        self.api_url = str(self.proc.api_url)
        self.ca_file = self.proc.cafile
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- talking to it ---------------------------------------------------------------------

    @property
    def admin(self) -> Any:
        if self.proc is None:
            raise BenchmarkError("the sandbox is not running")
        return self.proc.admin

    def stats(self) -> Any:
        return self.admin.stats()

    def set_latency(self, latency_ms: float) -> None:
        """Change the injected latency of every API request from now on."""
        self.admin.set_faults(None, latency_ms=latency_ms)

    def set_config(self, **changes: Any) -> None:
        self.admin.set_config(**changes)

    def request_log(self, since: int = 0) -> list[dict[str, Any]]:
        """The request log from entry ``since`` on (following its pages)."""
        entries: list[dict[str, Any]] = []
        cursor = since
        for _ in range(100_000):
            page = self.admin.requests(since=cursor)
            items = page.get("requests", []) if isinstance(page, dict) else page
            if not items:
                break
            entries.extend(items)
            nxt = page.get("next") if isinstance(page, dict) else None
            if nxt is None or int(nxt) <= cursor:
                break
            cursor = int(nxt)
        return entries

    def request_marker(self) -> int:
        """A position in the request log; count what came after with :meth:`requests_since`."""
        page = self.admin.requests(since=1 << 62)
        if isinstance(page, dict):
            for key in ("total", "count", "next", "last"):
                value = page.get(key)
                if isinstance(value, int):
                    return value
        return len(self.request_log(0))

    def requests_since(self, marker: int) -> tuple[int, int]:
        """(all, mutating) API requests made since ``marker``."""
        return count_requests(self.request_log(marker))

    def env_for_clients(self, token: str) -> dict[str, str]:
        """Environment for a client child: the token, and the CA so TLS verifies."""
        env = dict(os.environ)
        env["GRAND_CHALLENGE_AUTHORIZATION"] = token
        if self.ca_file is not None:
            env["SSL_CERT_FILE"] = str(self.ca_file)
        env.pop("GCBATCH_SERVER", None)
        env["NO_COLOR"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        return env
