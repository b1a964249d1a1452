"""Nothing goes out before everything local is checked (issue 14, "Build" 2; review F1).

``apply`` used to ask the server for the algorithm before it looked at the manifest's
sources, and then said "nothing was sent". Now a missing file, a broken JSON value or a
bad lockfile stop it with exit 2 while the server has seen no request at all.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile import assert_clean_failure, cli_env, run_cli, value_study, write

from gcbatch.sandbox import RunningSandbox

pytestmark = pytest.mark.slow


def _api_requests(sb: RunningSandbox) -> list[str]:
    log = sb.admin.requests()["requests"]
    return [f"{e['method']} {e['path']}" for e in log if not e["path"].startswith("/_sandbox")]


@pytest.mark.parametrize(("extra_case", "needle"), [
    ("  - id: missing\n    inputs:\n      age: {json: nowhere/age.json}\n",
     "nowhere/age.json: no such file"),
    ("  - id: broken\n    inputs:\n      age: {json: broken.json}\n",
     "broken.json: not valid JSON"),
    ("  - id: scan\n    inputs:\n      age: {value: 3}\n      lab-report: {file: gone.json}\n",
     "gone.json: no such file"),
])
def test_a_bad_source_stops_apply_before_any_request(
    tmp_path: Path, home: Path, sandbox_server: RunningSandbox, extra_case: str, needle: str
) -> None:
    write(tmp_path / "broken.json", "{not json")
    study = value_study(tmp_path, extra_case=extra_case)
    run = run_cli(["apply", str(study), "--server", sandbox_server.api_url], tmp_path,
                  cli_env(token=sandbox_server.token("demo"), home=home))
    assert_clean_failure(run, 2, needle)
    assert _api_requests(sandbox_server) == []


def test_a_corrupt_lockfile_stops_apply_before_any_request(
    tmp_path: Path, home: Path, sandbox_server: RunningSandbox
) -> None:
    study = value_study(tmp_path)
    write(tmp_path / "study.lock", '{"format_version": 2, "server": 1}')
    run = run_cli(["apply", str(study), "--server", sandbox_server.api_url], tmp_path,
                  cli_env(token=sandbox_server.token("demo"), home=home))
    assert_clean_failure(run, 2, "study.lock")
    assert _api_requests(sandbox_server) == []
