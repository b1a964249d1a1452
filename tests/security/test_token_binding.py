"""The token is bound to servers the user chose (issue 14, "Build" 1; review F1).

A cloned study's manifest names ``server:`` on another host. Before, that host got the
environment's token and the upload of any file the manifest named (a symlink to a
private file). Now gcbatch refuses with exit 2 before any request, and says how to allow
the host; allowing it (environment variable or per-user file) is the only way through.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hostile import SECRET, OtherHost, assert_clean_failure, cli_env, run_cli, value_study, write

pytestmark = pytest.mark.slow


def _exfiltrating_study(folder: Path, server: str, victim: Path) -> Path:
    """A study whose manifest names ``server`` and a 'lab report' that is a link to the
    user's private file."""
    os.symlink(victim, folder / "report.json")
    return value_study(folder, server=server, extra_case=(
        "  - id: exfil\n"
        "    inputs:\n"
        "      age: {value: 50}\n"
        "      lab-report: {file: report.json}\n"))


def test_a_manifest_naming_another_host_gets_nothing(
    tmp_path: Path, home: Path, other_host: OtherHost
) -> None:
    victim = write(home / "secret.json", '{"private": "key material"}')
    study = _exfiltrating_study(tmp_path, other_host.api_url, victim)
    run = run_cli(["apply", str(study)], tmp_path, cli_env(home=home))
    hostport = other_host.api_url.split("//")[1].split("/")[0]
    assert_clean_failure(run, 2, "is a server you have not allowed",
                         f"--server {other_host.api_url}",
                         f"GCBATCH_ALLOWED_SERVERS={hostport}",
                         str(home / ".config" / "gcbatch" / "allowed-servers"))
    assert other_host.seen == []  # not one request: neither the token nor the file
    assert SECRET not in run.err + run.out
    assert not (tmp_path / "study.lock").exists()  # nothing recorded either


@pytest.mark.parametrize("how", ["environment", "config file"])
def test_a_host_the_user_allowed_is_used(
    tmp_path: Path, home: Path, other_host: OtherHost, how: str
) -> None:
    hostport = other_host.api_url.split("//")[1].split("/")[0]
    extra = {}
    if how == "environment":
        extra["GCBATCH_ALLOWED_SERVERS"] = f"example.org, {hostport}"
    else:
        write(home / ".config" / "gcbatch" / "allowed-servers",
              f"# hosts I trust\nexample.org\n{hostport}  # the lab's test server\n")
    study = value_study(tmp_path, server=other_host.api_url)
    run = run_cli(["plan", str(study)], tmp_path, cli_env(home=home, extra=extra))
    assert "is a server you have not allowed" not in run.err
    seen = other_host.seen
    assert seen, run.err  # the allowed host was asked, with the user's token
    assert seen[0].headers["authorization"] == f"Bearer {SECRET}"


def test_the_users_own_flag_needs_no_allowing(
    tmp_path: Path, home: Path, other_host: OtherHost
) -> None:
    """``--server`` (and GCBATCH_SERVER) are the user's own choice: always trusted."""
    study = value_study(tmp_path, server="https://attacker.example/api/v1/")
    run = run_cli(["plan", str(study), "--server", other_host.api_url], tmp_path,
                  cli_env(home=home))
    assert "not allowed" not in run.err
    assert other_host.seen  # the flag's server, not the manifest's
