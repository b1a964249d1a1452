"""Issue 18's first-hour friction list, each fixed and shown with the real CLI (in
subprocesses; ``--sandbox`` or a sandbox on loopback)."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from gcbatch.manifest import parse_manifest
from gcbatch.sandbox import RunningSandbox
from gcbatch.sandbox.config import SandboxConfig

pytestmark = pytest.mark.slow

TOKEN = "demo-token"
FAST = dict(validating_seconds=0.1, queued_seconds=0.1, provisioned_seconds=0.0,
            executing_seconds=0.1, executed_seconds=0.0)


def gcbatch(args: Sequence[str], cwd: Path, token: str | None = None, **env_extra: str
            ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GRAND_CHALLENGE_AUTHORIZATION", "GCBATCH_SERVER")}
    env["NO_COLOR"] = "1"
    if token is not None:
        env["GRAND_CHALLENGE_AUTHORIZATION"] = token
    env.update(env_extra)
    return subprocess.run([sys.executable, "-m", "gcbatch", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def study(folder: Path, *cases: tuple[str, str]) -> Path:
    lines = ["version: 1", "algorithm: risk-calculator", "defaults:",
             "  lung-volume: {value: 4.2}", "cases:"]
    for n, (case_id, socket) in enumerate(cases):
        lines += [f"  - id: {case_id}", "    inputs:", f"      {socket}: {{value: {n}}}"]
    path = folder / "study.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_plan_with_a_blocked_case_exits_2_and_suggests_the_socket(tmp_path: Path) -> None:
    manifest = study(tmp_path, ("good", "age"), ("typo", "agee"))
    result = gcbatch(["plan", str(manifest), "--sandbox"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "! typo" in result.stdout and "did you mean `age`?" in result.stdout
    assert "1 case(s) blocked (why: above)" in result.stderr and "--keep-going" in result.stderr
    fixed = study(tmp_path, ("good", "age"), ("typo", "age"))
    assert gcbatch(["plan", str(fixed), "--sandbox"], tmp_path).returncode == 0


def test_keep_going_leaves_blocked_cases_out_and_says_so(tmp_path: Path) -> None:
    manifest = study(tmp_path, ("good", "age"), ("typo", "agee"))
    refused = gcbatch(["apply", str(manifest), "--sandbox"], tmp_path)
    assert refused.returncode == 2 and "case typo" in refused.stderr
    result = gcbatch(["apply", str(manifest), "--sandbox", "--keep-going", "--json"], tmp_path)
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    assert data["summary"]["submitted"] == 1 and data["summary"]["blocked"] == 1
    outcomes = {c["case"]: c for c in data["cases"]}
    assert outcomes["typo"]["outcome"] == "blocked"
    assert "did you mean `age`?" in outcomes["typo"]["message"]
    text = gcbatch(["apply", str(manifest), "--sandbox", "--keep-going"], tmp_path)
    assert "1 blocked, skipped (--keep-going)" in text.stdout
    assert "blocked: typo: not sent" in text.stdout


def test_wait_and_download_with_nothing_submitted_exit_1_and_say_why(tmp_path: Path) -> None:
    manifest = study(tmp_path, ("a", "age"))
    waited = gcbatch(["wait", str(manifest), "--sandbox"], tmp_path)
    assert waited.returncode == 1
    assert "have no job yet (run `gcbatch apply`)" in waited.stderr
    downloaded = gcbatch(["download", str(manifest), "--sandbox", "--out", "out"], tmp_path)
    assert downloaded.returncode == 1
    assert "nothing to download: no targeted case has a job yet" in downloaded.stderr


def test_plan_without_a_token_is_offline_however_the_server_is_named(tmp_path: Path) -> None:
    manifest = study(tmp_path, ("a", "age"))
    server = "https://gc.example.org/api/v1/"
    by_flag = gcbatch(["plan", str(manifest), "--server", server], tmp_path)
    by_env = gcbatch(["plan", str(manifest)], tmp_path, GCBATCH_SERVER=server)
    assert by_flag.returncode == by_env.returncode == 0, by_flag.stderr
    assert by_flag.stdout == by_env.stdout
    assert "offline plan: no API token" in by_flag.stderr
    assert "offline plan: no API token" in by_env.stderr


def test_a_top_level_list_is_reported_where_it_starts(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text("# a study\n\n- version: 1\n  algorithm: x\n")
    _, findings = parse_manifest(path)
    assert [(f.line, f.col) for f in findings] == [(3, 1)]
    assert "not a list" in findings[0].message


@pytest.fixture
def failing_sandbox(make_sandbox: Callable[..., RunningSandbox]) -> RunningSandbox:
    return make_sandbox(config=SandboxConfig().replace(failure_rate=1.0, **FAST))


def test_download_of_failed_jobs_says_they_ended_without_results(
        failing_sandbox: RunningSandbox, tmp_path: Path) -> None:
    manifest = study(tmp_path, ("a", "age"))
    server = ["--server", failing_sandbox.api_url]
    assert gcbatch(["apply", str(manifest), *server], tmp_path, TOKEN).returncode == 0
    waited = gcbatch(["wait", str(manifest), *server, "--poll-interval", "1s"], tmp_path,
                     TOKEN)
    assert waited.returncode == 1
    result = gcbatch(["download", str(manifest), *server, "--out", "out"], tmp_path, TOKEN)
    assert result.returncode == 1
    assert ("1 targeted case(s) ended without results and never will have any (1 Failed): "
            "`gcbatch apply --retry-failed` submits them again") in result.stderr
    assert "no results yet" not in result.stderr
    preview = gcbatch(["plan", str(manifest), *server, "--retry-failed"], tmp_path, TOKEN)
    assert preview.returncode == 0, preview.stderr
    assert "a  retry" in preview.stdout or "retry" in preview.stdout.split("\n")[0]
    plain = gcbatch(["plan", str(manifest), *server], tmp_path, TOKEN)
    assert "retry" not in plain.stdout.split("\n")[0]


class _NotASandbox(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_error(404)  # an HTML page, as web servers answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotASandbox)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_sandbox_inspect_of_another_server_says_so(web_server: str, tmp_path: Path) -> None:
    result = gcbatch(["sandbox", "inspect", "--url", web_server, "--admin-token", "x"],
                     tmp_path)
    assert result.returncode == 1
    assert f"{web_server} is not a gcbatch sandbox" in result.stderr
    assert "<" not in result.stderr and "Traceback" not in result.stderr


def test_sandbox_inspects_request_table_is_readable(sandbox_server: RunningSandbox,
                                                    tmp_path: Path) -> None:
    client = sandbox_server.client()
    long_query = {"X-Amz-Signature": "f" * 300}
    client.get(f"{sandbox_server.api_url}algorithms/", params=long_query)
    result = gcbatch(["sandbox", "inspect", "--url", sandbox_server.base_url,
                      "--admin-token", sandbox_server.admin_token], tmp_path)
    assert result.returncode == 0, result.stderr
    widest = max(len(line) for line in result.stdout.splitlines())
    assert widest < 160, result.stdout
    full = gcbatch(["sandbox", "inspect", "--url", sandbox_server.base_url, "--json",
                    "--admin-token", sandbox_server.admin_token], tmp_path)
    assert "f" * 300 in full.stdout  # --json keeps it whole


def test_image_and_file_outputs_are_path_columns_of_the_tables(tmp_path: Path) -> None:
    from gcbatch.sandbox.lifecycle import make_mha

    lines = ["version: 1", "algorithm: lung-nodule-detector", "cases:"]
    for n in (1, 2):
        (tmp_path / f"ct{n}.mha").write_bytes(make_mha(4, 4, bytes([n]) * 16))
        lines += [f"  - id: c{n}", "    inputs:", f"      ct-image: {{file: ct{n}.mha}}"]
    manifest = tmp_path / "study.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    assert gcbatch(["apply", str(manifest), "--sandbox"], tmp_path).returncode == 0
    waited = gcbatch(["wait", str(manifest), "--sandbox", "--poll-interval", "1s"], tmp_path)
    assert waited.returncode == 0, waited.stderr
    first = gcbatch(["download", str(manifest), "--sandbox", "--out", "out"], tmp_path)
    assert first.returncode == 0, first.stderr
    # a second, targeted download: the tables still index every case's files
    again = gcbatch(["download", str(manifest), "--sandbox", "--out", "out", "--case", "c1"],
                    tmp_path)
    assert again.returncode == 0, again.stderr
    out = tmp_path / "out"
    header, *rows = (out / "results.csv").read_text().splitlines()
    assert header.endswith(",file:heatmap,file:report")
    document = json.loads((out / "results.json").read_text())
    assert document["file_sockets"] == ["heatmap", "report"]
    for case in document["cases"]:
        files = case["files"]
        assert files["report"] == [f"{case['case_id']}/report.json"]
        (heatmap,) = files["heatmap"]
        assert heatmap.startswith(f"{case['case_id']}/images/heatmap/")
        for path in (heatmap, *files["report"]):
            assert (out / path).is_file()
        row = next(r for r in rows if r.startswith(case["case_id"] + ","))
        assert row.endswith(f",{heatmap},{case['case_id']}/report.json")


def test_status_under_another_accounts_token_hints_at_the_token(
        sandbox_server: RunningSandbox, tmp_path: Path) -> None:
    manifest = study(tmp_path, ("a", "age"), ("b", "age"))
    server = ["--server", sandbox_server.api_url]
    assert gcbatch(["apply", str(manifest), *server], tmp_path, TOKEN).returncode == 0
    mine = gcbatch(["status", str(manifest), *server], tmp_path, TOKEN)
    assert "the server shows none" not in mine.stderr
    other = gcbatch(["status", str(manifest), *server], tmp_path,
                    sandbox_server.token("other"))
    assert other.returncode == 1
    assert "2 Missing" in other.stdout
    assert "the server shows none of the 2 job(s)" in other.stderr
    assert "is the token" in other.stderr


def test_the_forecast_says_where_its_limit_comes_from(tmp_path: Path,
                                                      sandbox_server: RunningSandbox) -> None:
    manifest = study(tmp_path, ("a", "age"))
    known = gcbatch(["plan", str(manifest), "--sandbox"], tmp_path)
    assert "at most 16 active at a time (the server's limit)" in known.stdout
    flag = gcbatch(["plan", str(manifest), "--sandbox", "--max-active", "3"], tmp_path)
    assert "at most 3 active at a time (--max-active)" in flag.stdout
    unknown = gcbatch(["plan", str(manifest), "--server", sandbox_server.api_url], tmp_path,
                      TOKEN)
    assert "(the platform's usual limit; the API does not tell yours" in unknown.stdout


def test_an_archive_you_cannot_see_exits_2_like_an_algorithm_you_cannot_run(
        tmp_path: Path) -> None:
    manifest = tmp_path / "study.yaml"
    manifest.write_text("version: 1\nalgorithm: lung-nodule-detector\ncases:\n"
                        "  - foreach: {archive: no-such-archive}\n    id: 'i-{item.pk}'\n"
                        "    inputs:\n      ct-image: {archive_item: '{item.pk}', "
                        "socket: ct-image}\n")
    archive = gcbatch(["plan", str(manifest), "--sandbox"], tmp_path)
    assert archive.returncode == 2, archive.stderr
    assert "archive 'no-such-archive' not found" in archive.stderr
    manifest.write_text(manifest.read_text().replace("lung-nodule-detector", "no-such-alg"))
    algorithm = gcbatch(["plan", str(manifest), "--sandbox"], tmp_path)
    assert algorithm.returncode == 2, algorithm.stderr


def test_a_refused_retry_of_image_inputs_says_what_would_allow_one(
        failing_sandbox: RunningSandbox, tmp_path: Path) -> None:
    manifest = tmp_path / "study.yaml"
    manifest.write_text("version: 1\nalgorithm: lung-nodule-detector\ncases:\n"
                        "  - foreach: {archive: lung-archive}\n    id: 'item-{item.pk}'\n"
                        "    inputs:\n      ct-image: {archive_item: '{item.pk}', "
                        "socket: ct-image}\n")
    server = ["--server", failing_sandbox.api_url]
    assert gcbatch(["apply", str(manifest), *server], tmp_path, TOKEN).returncode == 0
    gcbatch(["wait", str(manifest), *server, "--poll-interval", "1s"], tmp_path, TOKEN)
    retried = gcbatch(["apply", str(manifest), *server, "--retry-failed", "--keep-going"],
                      tmp_path, TOKEN)
    assert retried.returncode == 1
    assert "the server refuses to run the same inputs (images) again" in retried.stdout
    assert "value inputs" not in retried.stdout
    assert "A re-run needs a new image (or model) of the algorithm" in retried.stdout
