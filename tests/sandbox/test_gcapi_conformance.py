"""Issue 3's proof of fidelity: the official client, gcapi 0.16.1, against a TLS sandbox.

gcapi is installed into its own virtualenv (it pins httpx 0.23; gcbatch uses a newer
httpx), cached under ``~/.cache/gcbatch-test/gcapi-<version>-py<X.Y>-venv`` (or
``$GCBATCH_TEST_CACHE``) so only the first run pays for the install. The scenarios run
in ``gcapi_scripts/drive_gcapi.py`` with that virtualenv's Python, trusting the sandbox's
local CA through ``SSL_CERT_FILE`` (httpx 0.23 reads it when ``verify=True``, which is
what gcapi passes); the assertions are here.

This is part of the default run: CI can reach PyPI. Without network the first run fails
with pip's message (nothing is skipped silently).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gcbatch.sandbox import RunningSandbox
from gcbatch.sandbox.config import SandboxConfig

pytestmark = [pytest.mark.gcapi, pytest.mark.slow]

GCAPI_VERSION = "0.16.1"
LIFECYCLE = {"Validating inputs", "Queued", "Provisioned", "Executing", "Executed", "Succeeded"}
SCRIPT = Path(__file__).parent / "gcapi_scripts" / "drive_gcapi.py"
FAST = {  # every status visible, a job ends within ~0.5 s
    "validating_seconds": 0.1,
    "queued_seconds": 0.1,
    "provisioned_seconds": 0.05,
    "executing_seconds": 0.1,
    "executed_seconds": 0.05,
}


def _cache_root() -> Path:
    configured = os.environ.get("GCBATCH_TEST_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "gcbatch-test"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


@pytest.fixture(scope="session")
def gcapi_python() -> Path:
    """The Python of a virtualenv holding gcapi==0.16.1 (built once, then reused)."""
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    root = _cache_root()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / f"gcapi-{GCAPI_VERSION}-{tag}-venv"
    marker = venv / ".gcbatch-complete"
    with (root / f"{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # xdist workers build it once between them
        if not marker.exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            done = subprocess.run(
                [
                    str(_venv_python(venv)),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    f"gcapi=={GCAPI_VERSION}",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                pytest.fail(f"could not install gcapi=={GCAPI_VERSION}:\n{done.stderr[-3000:]}")
            marker.write_text(GCAPI_VERSION + "\n")
    return _venv_python(venv)


@pytest.fixture
def tls_sandbox(make_sandbox: Callable[..., RunningSandbox]) -> Iterator[RunningSandbox]:
    # storage_rejects_authorization stays off: the sandbox's storage shares the API's
    # origin, so a download's 302 is followed WITH the token (on the real site it goes to
    # another host and httpx drops it). Whether uploads carried the token is read from
    # the request log instead.
    config = SandboxConfig().replace(**FAST)
    yield make_sandbox(tls=True, config=config)


def drive(
    python: Path, sb: RunningSandbox, scenario: str, workdir: Path, user: str = "demo"
) -> dict[str, Any]:
    assert sb.cafile is not None
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "GCAPI_BASE_URL": sb.api_url,
        "GRAND_CHALLENGE_AUTHORIZATION": sb.token(user),
        "SSL_CERT_FILE": str(sb.cafile),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    done = subprocess.run(
        [str(python), str(SCRIPT), scenario, str(workdir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, f"gcapi scenario {scenario} failed:\n{done.stderr[-6000:]}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _outputs_by_socket(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["socket"]: o for o in job["outputs"]}


def test_value_file_and_image_jobs_run_to_success_and_download(
    gcapi_python: Path, tls_sandbox: RunningSandbox, tmp_path: Path
) -> None:
    sb = tls_sandbox
    result = drive(gcapi_python, sb, "jobs", tmp_path)
    assert result["httpx_version"].startswith("0.23.")

    for name in ("value", "file", "image"):
        assert result["created"][name]["status"] == "Validating inputs"
        job = result["jobs"][name]
        assert job["status"] == "Succeeded", (name, job)
        # algorithm_jobs.detail polled through known statuses to Succeeded.
        assert job["statuses"][-1] == "Succeeded"
        assert set(job["statuses"]) <= LIFECYCLE

    value_job = result["jobs"]["value"]
    assert {i["socket"]: i["value"] for i in value_job["inputs"]} == {"age": 64, "lung-volume": 3.5}
    file_job = result["jobs"]["file"]
    lab = next(i for i in file_job["inputs"] if i["socket"] == "lab-report")
    assert lab["file"] and lab["file"].startswith(sb.base_url)
    image_job = result["jobs"]["image"]
    ct = next(i for i in image_job["inputs"] if i["socket"] == "ct-image")
    assert ct["image"] and ct["image"].startswith(sb.api_url + "cases/images/")

    # download_socket_value for each output kind: a value, a file and an image.
    kinds_seen: set[str] = set()
    for job in result["jobs"].values():
        for output in job["outputs"]:
            kind = output["super_kind"]
            kinds_seen.add(kind)
            assert output["files"], output  # something landed on disk
            if kind == "Value":
                assert output["files"] == [output["relative_path"]]
                assert output["content"] == output["value"]  # the JSON gcapi wrote
            elif kind == "File":
                assert output["files"] == [output["relative_path"]]
                assert output["sizes"][0] > 0
            else:
                assert all(f.startswith(output["relative_path"]) for f in output["files"])
                assert any(f.endswith((".mha", ".mhd", ".tif", ".tiff")) for f in output["files"])
    assert kinds_seen == {"Value", "File", "Image"}

    # The token never went to a presigned URL: the request log shows every part PUT came
    # without an Authorization header.
    log = sb.admin.requests()["requests"]
    puts = [e for e in log if e["path"].startswith("/_storage/uploads/")]
    assert len(puts) >= 2  # the lab report and the scan
    assert all(e["method"] == "PUT" and e["status"] == 200 for e in puts)
    assert not any(e["had_authorization"] for e in puts)
    stats = sb.admin.stats()
    assert stats["users"]["demo"]["jobs"] == 3


def test_archive_items_and_existing_socket_value_reuse(
    gcapi_python: Path, tls_sandbox: RunningSandbox, tmp_path: Path
) -> None:
    result = drive(gcapi_python, tls_sandbox, "archive", tmp_path)
    assert result["archive"]["title"]
    assert len(result["items"]) >= 1
    for item in result["items"]:
        sockets = {v["socket"] for v in item["values"]}
        assert {"ct-image", "age"} <= sockets
    reused = result["reused_item"]
    image_job, value_job = result["image_job"], result["value_job"]
    assert image_job["status"] == "Succeeded" and value_job["status"] == "Succeeded"
    # The job's input IS the archive item's image (reused, not re-uploaded) ...
    ct = next(i for i in image_job["inputs"] if i["socket"] == "ct-image")
    assert ct["image"] == reused["image"]
    # ... and the item's value was passed on as a value.
    age = next(i for i in value_job["inputs"] if i["socket"] == "age")
    assert age["value"] == reused["age"]
    assert {o["super_kind"] for o in image_job["outputs"]} >= {"Image"}
    assert tls_sandbox.admin.stats()["users"]["demo"]["uploads_total"] == 0


def _assert_rejected(second: dict[str, Any], body: Any) -> None:
    assert second["raised"] == "httpx.HTTPStatusError", second
    assert second["status"] == 400
    assert second["content_type"] == "application/json"
    assert second["body"] == body


def test_too_many_active_jobs_as_gcapi_sees_it(
    gcapi_python: Path, tls_sandbox: RunningSandbox, tmp_path: Path
) -> None:
    tls_sandbox.admin.set_config(max_active_jobs=1, executing_seconds=60.0)
    result = drive(gcapi_python, tls_sandbox, "limit", tmp_path)
    assert result["first"]["status"] == "Validating inputs"
    _assert_rejected(
        result["second"],
        {
            "non_field_errors": [
                "You have too many active jobs, please try again after they have completed"
            ]
        },
    )
    assert tls_sandbox.admin.stats()["users"]["demo"]["jobs"] == 1


def test_out_of_credits_as_gcapi_sees_it(
    gcapi_python: Path, tls_sandbox: RunningSandbox, tmp_path: Path
) -> None:
    tls_sandbox.admin.set_config(credits_per_month=20)  # exactly one job's worth
    result = drive(gcapi_python, tls_sandbox, "limit", tmp_path)
    assert result["first"]["status"] == "Validating inputs"
    _assert_rejected(
        result["second"], {"non_field_errors": ["You have run out of algorithm credits"]}
    )


def test_mismatched_interface_as_gcapi_sees_it(
    gcapi_python: Path, tls_sandbox: RunningSandbox, tmp_path: Path
) -> None:
    # gcapi only checks that SOME interface is covered by the inputs, so a superset
    # reaches the server, which wants an exact match.
    result = drive(gcapi_python, tls_sandbox, "mismatch", tmp_path)
    second = result["second"]
    assert second["raised"] == "httpx.HTTPStatusError", second
    assert second["status"] == 400
    messages = second["body"]["non_field_errors"]
    assert len(messages) == 1
    assert messages[0].startswith(
        "The set of inputs provided does not match any of the algorithm's interfaces. "
        "This algorithm supports the following input combinations: Interface 1: "
    )
    assert tls_sandbox.admin.stats()["users"]["demo"]["jobs"] == 0


def test_duplicate_inputs_as_gcapi_sees_it(
    gcapi_python: Path, tls_sandbox: RunningSandbox, tmp_path: Path
) -> None:
    result = drive(gcapi_python, tls_sandbox, "duplicate", tmp_path)
    assert result["first"]["status"] == "Validating inputs"
    _assert_rejected(
        result["second"],
        {
            "non_field_errors": [
                "A result for these inputs with the current image and model already exists."
            ]
        },
    )
    assert tls_sandbox.admin.stats()["users"]["demo"]["jobs"] == 1
