"""Exit 2 with a clear ``file:line`` message for bad input, exit 1 with a clear message for
the environment, never a traceback (issue 14, "Build" 5; review F10).

Bad input: YAML nested 500 levels, a deeply nested JSON input, a lockfile or journal
that is not UTF-8 or nested beyond reason, a journal that is a folder, an input file that
cannot be read, ``SSL_CERT_FILE`` naming a missing file. Each used to end in a Python
traceback (exit 1). The apply runs point at a port where nothing listens: any request
would be exit 1 ("no answer"), so exit 2 also proves nothing was sent.

The environment: a read-only folder and a full disk, made for real in a mount namespace
of the test's own (``unshare``; skipped where the system does not allow one).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hostile import Run, assert_clean_failure, cli_env, run_cli, value_study, write

from gcbatch.sandbox import RunningSandbox

pytestmark = pytest.mark.slow

NOWHERE = "http://127.0.0.1:9/api/v1/"  # the discard port: nothing answers there


def _nest(depth: int) -> str:
    return "[" * depth + "]" * depth


def _study(tmp_path: Path) -> Path:
    return value_study(tmp_path)


@pytest.mark.parametrize(("name", "command", "needle"), [
    ("yaml nested 500 levels", "validate", "study.yaml:12:"),
    ("json input nested 100,000 levels", "validate", "deep.json: nested more than 100"),
    ("lockfile not UTF-8", "apply", "study.lock:2:3: not UTF-8 text"),
    ("lockfile nested 100,000 levels", "apply", "study.lock: nested more than 100"),
    ("journal not UTF-8", "apply", "study.lock.journal:1: corrupt journal line"),
    ("journal nested 5,000 levels", "apply", "study.lock.journal:2: journal line nested"),
    ("journal is a folder", "apply", "study.lock.journal: the journal is a folder"),
])
def test_bad_input_is_exit_2_with_its_place(
    tmp_path: Path, home: Path, name: str, command: str, needle: str
) -> None:
    study = _study(tmp_path)
    if name.startswith("yaml"):
        with study.open("a", encoding="utf-8") as fh:
            fh.write(f"  - id: deep\n    inputs:\n      age: {{value: {_nest(500)}}}\n")
    elif name.startswith("json"):
        write(tmp_path / "deep.json", _nest(100_000))
        with study.open("a", encoding="utf-8") as fh:
            fh.write("  - id: deep\n    inputs:\n      age: {json: deep.json}\n")
    elif name == "lockfile not UTF-8":
        write(tmp_path / "study.lock", b'{\n  \xff"format_version": 2}\n')
    elif name.startswith("lockfile nested"):
        write(tmp_path / "study.lock", _nest(100_000))
    elif name == "journal not UTF-8":
        write(tmp_path / "study.lock.journal", b'{"event": "begin\xff"}\n')
    elif name.startswith("journal nested"):
        begin = {"event": "begin", "server": NOWHERE, "algorithm": {"slug": "risk-calculator"}}
        intent = '{"event":"intent","case":"c","payload":' + _nest(5000) + "}"
        write(tmp_path / "study.lock.journal", json.dumps(begin) + "\n" + intent + "\n")
    else:
        (tmp_path / "study.lock.journal").mkdir()
    args = [command, str(study)] + (["--server", NOWHERE] if command == "apply" else [])
    run = run_cli(args, tmp_path, cli_env(home=home), timeout=60)
    assert run.code == 2, (name, run.err[-1500:])
    assert "Traceback" not in run.err + run.out
    assert needle in run.out + run.err, (needle, run.out[-800:], run.err[-800:])


def test_a_missing_ssl_cert_file_is_exit_2(tmp_path: Path, home: Path) -> None:
    study = _study(tmp_path)
    run = run_cli(["status", str(study), "--server", "https://127.0.0.1:9/api/v1/"],
                  tmp_path, cli_env(home=home, extra={"SSL_CERT_FILE": "/no/such/ca.pem"}))
    assert_clean_failure(run, 2, "SSL_CERT_FILE=/no/such/ca.pem: cannot load CA "
                         "certificates from it (No such file or directory)")


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder another user may enter (the test drops to 'nobody' when run as root,
    for whom no file is unreadable)."""
    folder = Path(tempfile.mkdtemp(prefix="gcbatch-security-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_an_unreadable_input_file_is_exit_2(shared_folder: Path) -> None:
    study = value_study(shared_folder, extra_case=(
        "  - id: locked\n    inputs:\n      age: {value: 3}\n"
        "      lab-report: {file: locked.json}\n"))
    write(shared_folder / "locked.json", "{}").chmod(0)
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: no file is unreadable to root")
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        for path in [shared_folder, *shared_folder.rglob("*")]:
            os.chown(path, 65534, 65534, follow_symlinks=False)
        os.chown(shared_folder / "locked.json", 0, 0)
    run = run_cli(["apply", str(study), "--server", NOWHERE], shared_folder,
                  cli_env(home=shared_folder), prefix=prefix)
    assert_clean_failure(run, 2, "locked.json: cannot read: Permission denied")


# --------------------------------------------------------------------------- environment


def _namespace_ok() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c",
                            "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d && "
                            "umount $d && rmdir $d"], capture_output=True, check=False)
    return probe.returncode == 0


needs_namespace = pytest.mark.skipif(not _namespace_ok(),
                                     reason="no mount namespace (unshare -rm) here")


def _in_namespace(script: str, folder: Path, env: dict[str, str], timeout: float = 180
                  ) -> Run:
    """``script`` (sh) in a mount namespace of its own: mounts there are the test's alone.
    ``$D`` is ``folder``, ``$GCBATCH`` runs gcbatch."""
    env = {**env, "D": str(folder), "GCBATCH": f"{os.sys.executable} -m gcbatch"}
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=env, cwd=folder.parent,
                          capture_output=True, text=True, timeout=timeout, check=False)
    return Run(done.returncode, done.stdout, done.stderr, 0)


def _api_requests(sb: RunningSandbox) -> list[str]:
    return [e["path"] for e in sb.admin.requests()["requests"]
            if not e["path"].startswith("/_sandbox")]


@needs_namespace
def test_a_read_only_folder_is_exit_1_and_loses_nothing(
    tmp_path: Path, home: Path, sandbox_server: RunningSandbox
) -> None:
    sb = sandbox_server
    study = value_study(tmp_path / "study")
    env = cli_env(token=sb.token("demo"), home=home)
    first = run_cli(["apply", str(study), "--server", sb.api_url], study.parent, env)
    assert first.code == 0, first.err
    with (study.parent / "ages" / "70.json").open("w") as fh:
        fh.write("70")  # one more case, for the read-only run to want to submit
    lockfile = (study.parent / "study.lock").read_bytes()
    before = len(_api_requests(sb))
    run = _in_namespace(
        'mount --bind "$D" "$D" && mount -o remount,ro,bind "$D" && '
        f'exec $GCBATCH apply "$D/study.yaml" --server {sb.api_url}', study.parent, env)
    assert_clean_failure(run, 1, "Read-only file system",
                         "the folder is on a read-only file system",
                         "running the command again carries on from there")
    assert (study.parent / "study.lock").read_bytes() == lockfile
    assert len(_api_requests(sb)) == before  # it stopped before sending anything


@needs_namespace
def test_a_full_disk_is_exit_1_and_a_rerun_loses_nothing(
    tmp_path: Path, home: Path, make_sandbox: Any
) -> None:
    from gcbatch.sandbox import SandboxConfig

    sb = make_sandbox(config=SandboxConfig(max_active_jobs=1000, credits_per_month=10**9))
    source = value_study(tmp_path / "source", ages=range(20, 80))
    results = tmp_path / "results"
    results.mkdir()
    env = {**cli_env(token=sb.token("demo"), home=home), "SRC": str(source.parent),
           "RES": str(results)}
    # 60 cases on a small file system filled to its last 40 KiB: the journal fills it in
    # the middle of the run (some jobs made, some not); then space is freed and the same
    # command runs again. A case whose intent was written but whose POST never went (the
    # run was stopping) is rightly waited for, a whole answer window (180 s by default):
    # the second run is given a short one
    run = _in_namespace(
        'mkdir -p "$D" && mount -t tmpfs -o size=2m tmpfs "$D" && cp -r "$SRC"/. "$D"/ && '
        'dd if=/dev/zero of="$D/filler" bs=1k '
        'count=$(( $(df -k "$D" | awk "NR==2 {print \\$4}") - 40 )) 2>/dev/null; '
        f'$GCBATCH apply "$D/study.yaml" --server {sb.api_url} >"$RES/out1" 2>"$RES/err1"; '
        'echo $? >"$RES/rc1"; cp "$D/study.lock.journal" "$RES/journal1"; rm "$D/filler"; '
        f'$GCBATCH apply "$D/study.yaml" --server {sb.api_url} --json --answer-window 5 '
        '>"$RES/out2" '
        '2>"$RES/err2"; echo $? >"$RES/rc2"; cp "$D/study.lock" "$RES/"',
        tmp_path / "study", env)
    assert run.code == 0, run.err
    first = Run(int((results / "rc1").read_text()), (results / "out1").read_text(),
                (results / "err1").read_text(), 0)
    assert_clean_failure(first, 1, "No space left on device",
                         "running the command again carries on from there")
    journal = (results / "journal1").read_text().split("\n")[:-1]  # (a torn tail dropped)
    assert any(json.loads(line)["event"] == "submitted" for line in journal)  # mid-run
    second = (results / "err2").read_text()
    assert (results / "rc2").read_text().strip() == "0", second[-2000:]
    locked = json.loads((results / "study.lock").read_text())["cases"]
    assert len(locked) == 60
    jobs = {entry["job"]["pk"] for entry in locked.values()}
    assert len(jobs) == 60
    assert sb.admin.stats()["users"]["demo"]["jobs"] == 60  # none lost, none twice
