"""gcbatch where POSIX's extras are missing (Windows): the lock, a whole sandbox apply and
the upload reader without ``fcntl``/``os.pread``; manifests with Windows paths.

The first test runs a real gcbatch in a child process in which ``import fcntl`` fails
(tests/no_posix.py), in every run of the suite; ``.ci/run`` also runs the whole unit suite
that way (``GCBATCH_TEST_NO_POSIX=1``), where the last test here checks the switch holds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import no_posix
import pytest

from gcbatch.api import uploads
from gcbatch.cli import main
from gcbatch.interrupts import STOP_SIGNALS

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
IMAGES = ROOT / "gcbatch" / "sandbox" / "seeds" / "images"

CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import no_posix
    no_posix.install()
    try:
        import fcntl  # noqa: F401
    except ImportError:
        print("fcntl: blocked", flush=True)
    import os
    assert not hasattr(os, "pread")
    import gcbatch.lockfile  # noqa: F401
    from gcbatch.cli import main
    try:
        main(sys.argv[1:])
    except SystemExit as exc:
        print("fcntl imported:", "fcntl" in sys.modules, flush=True)
        raise
""")


def run_without_posix(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GCBATCH")}
    return subprocess.run([sys.executable, "-c", CHILD.format(tests=str(TESTS)), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_a_whole_sandbox_apply_without_fcntl(tmp_path: Path) -> None:
    shutil.copytree(IMAGES, tmp_path / "scans")
    (tmp_path / "study.yaml").write_text(textwrap.dedent("""\
        version: 1
        algorithm: lung-nodule-detector
        cases:
          - foreach: {glob: 'scans\\*.mha'}   # a Windows path: \\ reads as /
            id: "scan-{stem}"
            inputs:
              ct-image: {file: "{path}"}
        """), encoding="utf-8")
    applied = run_without_posix(["apply", "--sandbox", "study.yaml"], tmp_path)
    assert applied.returncode == 0, applied.stderr
    assert "fcntl: blocked" in applied.stdout and "fcntl imported: False" in applied.stdout
    lock = json.loads((tmp_path / "study.sandbox.lock").read_text(encoding="utf-8"))
    assert sorted(lock["cases"]) == ["scan-p001", "scan-p002", "scan-p003"]
    assert all(entry["job"] for entry in lock["cases"].values())
    assert not (tmp_path / "study.sandbox.lock.lck.holder").exists()  # let go
    again = run_without_posix(["apply", "--sandbox", "study.yaml"], tmp_path)
    assert again.returncode == 0, again.stderr  # the lock is free again after a run
    status = run_without_posix(["status", "--sandbox", "--json", "study.yaml"], tmp_path)
    assert status.returncode in (0, 1), status.stderr
    document = "\n".join(status.stdout.splitlines()[1:-1])  # between the child's two lines
    assert len(json.loads(document)["cases"]) == 3


def test_a_sandbox_apply_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """In the no-POSIX run (.ci/run), this whole apply runs without fcntl and pread."""
    shutil.copytree(IMAGES, tmp_path / "scans")
    (tmp_path / "study.yaml").write_text(textwrap.dedent("""\
        version: 1
        algorithm: lung-nodule-detector
        cases:
          - foreach: {glob: "scans/*.mha"}
            id: "scan-{stem}"
            inputs:
              ct-image: {file: "{path}"}
        """), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["apply", "--sandbox", "--json", "study.yaml"])
    out, err = capsys.readouterr()
    assert info.value.code == 0, err
    assert json.loads(out)["summary"]["submitted"] == 3
    assert no_posix.active() == no_posix.requested()


def test_the_upload_reader_without_pread(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uploads, "_HAS_PREAD", False)
    real_read = os.read

    def slow_read(fd: int, n: int) -> bytes:  # lets another thread seek in between
        time.sleep(0.001)
        return real_read(fd, n)

    monkeypatch.setattr(uploads.os, "read", slow_read)
    data = os.urandom(1 << 20)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    source = uploads._Source(path)
    parts: dict[int, bytes] = {}

    def read(offset: int) -> None:  # many threads on one descriptor, as uploads do
        for _ in range(5):
            parts[offset] = source.read(offset, 4096)

    threads = [threading.Thread(target=read, args=(o,)) for o in range(0, 1 << 20, 1 << 16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    source.close()
    assert parts == {o: data[o:o + 4096] for o in range(0, 1 << 20, 1 << 16)}


def test_backslashes_in_manifest_paths_read_as_slashes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "scans" / "p1").mkdir(parents=True)
    (tmp_path / "scans" / "p1" / "a.mha").write_bytes(b"x")
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "p1.json").write_text("4.5", encoding="utf-8")
    (tmp_path / "study.yaml").write_text(textwrap.dedent("""\
        version: 1
        algorithm: lung-nodule-detector
        cases:
          - id: p1
            inputs:
              ct-image: {files: ['scans\\p1\\*.mha']}
              lung-volume: {json: 'meta\\p1.json'}
        """), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["validate", "study.yaml"])
    assert info.value.code == 0, capsys.readouterr()


def test_stop_signals_are_the_platforms() -> None:
    assert STOP_SIGNALS[:2] == (signal.SIGINT, signal.SIGTERM)
    assert all(isinstance(s, signal.Signals) for s in STOP_SIGNALS)


@pytest.mark.skipif(not no_posix.requested(), reason="only in the no-POSIX run")
def test_the_no_posix_switch_holds() -> None:
    with pytest.raises(ImportError):
        import fcntl  # noqa: F401
    assert not hasattr(os, "pread") and not hasattr(os, "O_NOFOLLOW")
    assert "fcntl" not in sys.modules


def test_outputs_differing_only_in_letter_case_are_refused() -> None:
    from gcbatch.api.models import Job
    from gcbatch.engine.downloads import UnsafePathError, plan_tasks

    def socket(slug: str, path: str) -> dict[str, object]:
        return {"pk": 1, "slug": slug, "kind": "Anything", "super_kind": "Value",
                "relative_path": path}

    job = Job.from_json({"pk": "j1", "api_url": "http://x/api/v1/algorithms/jobs/j1/",
                         "status": "Succeeded", "outputs": [
                             {"interface": socket("a", "Result.json"), "value": 1},
                             {"interface": socket("b", "result.json"), "value": 2}]})
    with pytest.raises(UnsafePathError, match=r"p1/Result\.json and p1/result\.json, one file"):
        plan_tasks({"p1": job})


def test_a_replace_refused_for_a_moment_is_retried(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows refuses to replace a file another process has open; gcbatch retries."""
    from gcbatch import files

    real, refusals = os.replace, [PermissionError("in use"), PermissionError("in use")]

    def flaky(src: str, dst: str) -> None:
        if refusals:
            raise refusals.pop()
        real(src, dst)

    monkeypatch.setattr(files, "REPLACE_RETRIES", (0.0, 0.0, 0.0))
    monkeypatch.setattr(files.os, "replace", flaky)
    files.atomic_write_bytes(tmp_path / "study.lock", b"new\n")
    assert (tmp_path / "study.lock").read_bytes() == b"new\n" and refusals == []
    refusals[:] = [PermissionError("in use")] * 4
    with pytest.raises(PermissionError):
        files.atomic_write_bytes(tmp_path / "study.lock", b"newer\n")
    assert (tmp_path / "study.lock").read_bytes() == b"new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["study.lock"]  # no part file left


@pytest.mark.slow
def test_output_a_console_cannot_encode_is_escaped(tmp_path: Path) -> None:
    """Windows writes cp1252 to a file or pipe: an arrow must not crash the command."""
    (tmp_path / "study.yaml").write_text(
        "version: 1\nalgorithm: risk-calculator\ncases:\n"
        "  - id: p1\n    inputs:\n      age: {value: 3}\n      lung-volume: {value: 1.5}\n",
        encoding="utf-8")
    env = {**os.environ, "PYTHONIOENCODING": "cp1252"}
    done = subprocess.run([sys.executable, "-m", "gcbatch", "plan", "--sandbox", "study.yaml"],
                          cwd=tmp_path, env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode("cp1252")
    assert b"\\u2192 1 wave(s)" in done.stdout


def test_a_notepad_manifest_bom_and_crlf(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Windows editors write a byte-order mark and CRLF line ends: read as any other,
    findings at the same line and column."""
    path = tmp_path / "study.yaml"
    path.write_bytes(b"\xef\xbb\xbfversion: 1\r\nalgorithm: risk-calculator\r\ncases:\r\n"
                     b"  - id: p 1\r\n    inputs:\r\n      age: {value: 3}\r\n")
    with pytest.raises(SystemExit) as info:
        main(["validate", str(path)])
    out, _ = capsys.readouterr()
    assert info.value.code == 2 and f"{path}:4:9: cases[0].id: 'p 1'" in out


def test_named_part_files_are_opened_binary(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows' os.open is text mode unless told O_BINARY (\\n would become \\r\\n in a
    downloaded image); the flag is asked for where the platform has it."""
    from gcbatch import files

    seen: list[int] = []
    real_open = os.open

    def spy(path: str, flags: int, mode: int = 0o777) -> int:
        seen.append(flags)
        return real_open(path, flags, mode)

    monkeypatch.setattr(files, "_O_BINARY", 0x8000)  # Windows' value
    monkeypatch.setattr(files.os, "open", lambda p, f, m=0o777: spy(p, f & ~0x8000, m)
                        if f & 0x8000 else pytest.fail("no O_BINARY"))
    files.atomic_write_bytes(tmp_path / "x.mha", b"a\nb", part=tmp_path / "x.mha.part",
                             durable=False)
    assert (tmp_path / "x.mha").read_bytes() == b"a\nb" and seen
