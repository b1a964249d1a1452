"""``gcbatch sandbox serve`` as a user runs it, answering a real ``curl``; and ``inspect``."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gcbatch.cli import cli, main
from gcbatch.sandbox import SandboxProcess

pytestmark = pytest.mark.slow

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")


def curl(
    url: str, *args: str, token: str | None = None, cafile: Path | None = None
) -> tuple[int, dict[str, str], Any]:
    """(status, headers, decoded body) of one curl call."""
    assert CURL is not None
    command = [CURL, "-sS", "-i", "--max-time", "20"]
    if cafile is not None:
        command += ["--cacert", str(cafile)]
    if token is not None:
        command += ["-H", f"Authorization: Bearer {token}"]
    done = subprocess.run([*command, *args, url], capture_output=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr.decode()
    raw = done.stdout
    while raw.startswith(b"HTTP/1.1 100"):
        raw = raw.split(b"\r\n\r\n", 1)[1]
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    decoded: Any = body
    if headers.get("content-type") == "application/json":
        decoded = json.loads(body)
    return status, headers, decoded


@needs_curl
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_serve_answers_curl_with_the_documented_shapes(
    sandbox_process: Callable[..., SandboxProcess], tls: bool
) -> None:
    proc = sandbox_process(tls=tls, settings={"validating_seconds": 0.0})
    assert proc.api_url.startswith("https://" if tls else "http://")
    api = proc.api_url
    ca = proc.cafile
    token = proc.token("demo")
    assert token == "demo-token"

    status, headers, body = curl(api + "gcapi/", cafile=ca)
    assert status == 200 and headers["content-type"] == "application/json"
    assert set(body) == {"latest_version", "lowest_supported_version"}

    status, _, body = curl(api + "algorithms/?slug=risk-calculator", token=token, cafile=ca)
    assert status == 200
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 1
    algorithm = body["results"][0]
    assert {"api_url", "url", "pk", "title", "slug", "interfaces"} <= set(algorithm)
    assert algorithm["api_url"] == f"{api}algorithms/{algorithm['pk']}/"
    socket = algorithm["interfaces"][0]["inputs"][0]
    assert {"pk", "title", "slug", "kind", "super_kind", "relative_path"} <= set(socket)

    payload = json.dumps(
        {
            "algorithm": algorithm["api_url"],
            "inputs": [{"interface": "age", "value": 50}, {"interface": "lung-volume", "value": 2}],
        }
    )
    post = ["-X", "POST", "-H", "Content-Type: application/json", "-d", payload]
    status, _, body = curl(api + "algorithms/jobs/", *post, cafile=ca)
    assert status == 401
    assert body == {"detail": "Authentication credentials were not provided."}

    status, _, created = curl(api + "algorithms/jobs/", *post, token=token, cafile=ca)
    assert status == 201, created
    assert set(created) >= {"pk", "inputs", "status"}
    assert created["status"] == "Validating inputs"

    status, _, job = curl(api + f"algorithms/jobs/{created['pk']}/", token=token, cafile=ca)
    assert status == 200
    assert {"pk", "api_url", "algorithm", "status", "inputs", "outputs"} <= set(job)
    value = job["inputs"][0]
    assert {"pk", "interface", "socket", "value", "file", "image"} <= set(value)

    status, _, again = curl(api + "algorithms/jobs/", *post, token=token, cafile=ca)
    assert status == 400
    assert again == {
        "non_field_errors": [
            "A result for these inputs with the current image and model already exists."
        ]
    }

    status, _, body = curl(api + f"algorithms/jobs/{created['pk']}/", "-X", "DELETE",
                           token=token, cafile=ca)  # fmt: skip
    assert status == 403

    stats = proc.admin.stats()
    assert stats["users"]["demo"]["jobs"] == 1


@needs_curl
def test_presigned_put_needs_no_token_and_storage_can_refuse_one(
    sandbox_process: Callable[..., SandboxProcess],
) -> None:
    proc = sandbox_process(settings={"storage_rejects_authorization": True})
    api, token = proc.api_url, proc.token("demo")
    json_post = ["-H", "Content-Type: application/json"]
    status, _, upload = curl(
        api + "uploads/", "-X", "POST", *json_post, "-d", '{"filename": "r.json"}', token=token
    )
    assert status == 201, upload
    urls_path = f"uploads/{upload['pk']}/{upload['s3_upload_id']}/generate-presigned-urls/"
    status, _, signed = curl(
        api + urls_path, "-X", "PATCH", *json_post, "-d", '{"part_numbers": [1]}', token=token
    )
    assert status == 200, signed
    url = signed["presigned_urls"]["1"]

    # With the token, storage refuses (as S3 does: two auth mechanisms) ...
    status, _, refusal = curl(url, "-X", "PUT", "--data-binary", '{"a": 1}', token=token)
    assert status == 400
    assert b"Only one auth mechanism allowed" in refusal
    # ... without it, the signature in the URL is all the permission needed.
    status, headers, _ = curl(url, "-X", "PUT", "--data-binary", '{"a": 1}')
    assert status == 200
    etag = headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')

    log = proc.admin.requests()["requests"]
    puts = [e for e in log if e["method"] == "PUT"]
    assert [e["had_authorization"] for e in puts] == [True, False]
    assert [e["status"] for e in puts] == [400, 200]


def test_serve_stops_cleanly_on_ctrl_c_and_sigterm(
    sandbox_process: Callable[..., SandboxProcess],
) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = sandbox_process()
        assert proc.admin.stats()["totals"]["jobs"] == 0
        proc.popen.send_signal(sig)
        assert proc.popen.wait(15) == 0
        assert "sandbox stopped" in proc.log_path.read_text()


def test_serve_keeps_state_in_its_db_across_restarts(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    db = tmp_path / "state.db"
    first = sandbox_process(db=db)
    with first.client("demo") as client:
        algorithm = client.get("algorithms/", params={"slug": "risk-calculator"}).json()
        payload = {
            "algorithm": algorithm["results"][0]["api_url"],
            "inputs": [{"interface": "age", "value": 9}, {"interface": "lung-volume", "value": 9}],
        }
        assert client.post("algorithms/jobs/", json=payload).status_code == 201
    first.kill()  # even a SIGKILL keeps what was committed
    second = sandbox_process(db=db)
    assert second.admin.stats()["users"]["demo"]["jobs"] == 1


def test_serve_applies_flags_to_the_config_and_faults(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    plan = tmp_path / "faults.json"
    plan.write_text(
        json.dumps({"seed": 3, "latency_ms": 1, "rules": [{"action": 429, "path": "uploads/"}]})
    )
    proc = sandbox_process(
        faults=["GET algorithms/:503:1:times=1"],
        latency_ms=5,
        extra_args=["--active-jobs-limit", "3", "--credits", "500", "--job-duration", "10",
                    "--fault-seed", "11", "--faults-file", str(plan)],
    )  # fmt: skip
    config = proc.admin.config()["config"]
    assert config["max_active_jobs"] == 3
    assert config["credits_per_month"] == 500
    phases = ("validating_seconds", "queued_seconds", "provisioned_seconds",
              "executing_seconds", "executed_seconds")  # fmt: skip
    assert sum(config[p] for p in phases) == pytest.approx(10)
    faults = proc.admin.faults()
    assert faults["seed"] == 11 and faults["latency_ms"] == 6  # the file's + the flag's
    assert [r["spec"] for r in faults["rules"]] == [
        "/api/v1/uploads/:429:1",  # the file's rules first, then --faults
        "GET /api/v1/algorithms/:503:1:times=1",
    ]
    assert proc.info["fault_seed"] == 11
    with proc.client("demo") as client:
        assert client.get("algorithms/").status_code == 503
        assert client.get("algorithms/").status_code == 200
        assert client.get("uploads/").status_code == 429


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``gcbatch ARGS`` in this process, through the CLI's error boundary."""
    with pytest.raises(SystemExit) as exited:
        main(args)
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--faults", "*:bogus"], "no fault action"),
        (["--set", "no_such_setting=1"], "unknown sandbox setting"),
        (["--set", "novalue"], "expected NAME=VALUE"),
    ],
)
def test_serve_refuses_bad_flags_with_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_main(["sandbox", "serve", "--port", "0", "--ephemeral", *args], capsys)
    assert code == 2
    assert message in err


def test_serve_help_teaches_the_fault_syntax() -> None:
    result = CliRunner().invoke(cli, ["sandbox", "serve", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for needle in ("[TARGET:]ACTION[:RATE]", "drop_after_commit", "retry_after", "--tls",
                   "--job-duration", "Ctrl-C", "SSL_CERT_FILE"):  # fmt: skip
        assert needle in text, needle


def test_inspect_prints_tables_and_json(
    sandbox_process: Callable[..., SandboxProcess], capsys: pytest.CaptureFixture[str]
) -> None:
    proc = sandbox_process(tls=True, faults=["GET algorithms/:503:1:times=1"])
    with proc.client("demo") as client:
        client.get("algorithms/")
        client.get("algorithms/")
    base = ["sandbox", "inspect", "--url", proc.api_url, "--cafile", str(proc.cafile),
            "--admin-token", proc.admin_token]
    code, out, err = run_main(base, capsys)
    assert code == 0, err
    assert "demo" in out and "jobs" in out
    assert "/api/v1/algorithms/" in out
    assert "/api/v1/algorithms/:503" in out  # the fault rule with its counters
    code, out, err = run_main([*base, "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert set(data) == {"stats", "requests", "faults"}
    assert data["faults"]["rules"][0]["fired"] == 1
    paths = [e["path"] for e in data["requests"]["requests"]]
    assert paths.count("/api/v1/algorithms/") == 1  # the faulted one never reached the app
    code, _, err = run_main(["sandbox", "inspect", "--url", "http://127.0.0.1:9",
                             "--admin-token", "x"], capsys)
    assert code == 1
    assert "cannot read the sandbox" in err
    # without the admin token the admin API refuses (and says where the token is)
    code, _, err = run_main([*base[:-2], "--admin-token", "wrong"], capsys)
    assert code == 1
    assert "403" in err and "admin token" in err


def test_process_fixture_reports_the_ready_line(
    sandbox_process: Callable[..., SandboxProcess],
) -> None:
    start = time.perf_counter()
    proc = sandbox_process()
    assert time.perf_counter() - start < 20
    assert set(proc.info) >= {"base_url", "api_url", "cafile", "pid", "port", "users", "db"}
    assert proc.info["pid"] == proc.pid
    assert proc.users == ("demo", "other")
