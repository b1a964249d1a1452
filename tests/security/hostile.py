"""The attacker's kit of the security suite: hostile servers and a CLI runner that measures.

- :class:`OtherHost`: a second server on another loopback address (127.0.0.2) that logs
  every request it gets (with its ``Authorization`` header): where a stolen token would
  arrive.
- :class:`RewritingProxy`: a proxy in front of a real sandbox that changes answers on
  the way back (a server on a bad day, or a man in the middle).
- :class:`ScriptedServer`: raw TCP on loopback; each connection is handed to a script
  that writes whatever bytes it likes, as slowly as it likes (drips, huge bodies).
- :func:`run_cli`: ``gcbatch ...`` in a child process, with its exit code, its output and
  its peak memory (the ``VmHWM`` of its own process image, read by the child as it exits:
  ``wait4``'s ``ru_maxrss`` would count the parent's memory at the fork, a test worker's
  hundreds of MB).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gcbatch.sandbox.http import Request, Response
from gcbatch.sandbox.server import SandboxHTTPServer

#: a token that looks like one (long enough for every scrubber), for runs where the
#: token must be seen to go nowhere
SECRET = "s3cr3t-t0ken-0123456789abcdef"


# --------------------------------------------------------------------------- servers


class _Recorder:
    """An app that logs each request and answers it with ``answer`` (a JSON 200 default)."""

    def __init__(self, answer: Callable[[Request], Response] | None = None) -> None:
        self.seen: list[Request] = []
        self._lock = threading.Lock()
        self._answer = answer

    def handle(self, request: Request) -> Response:
        with self._lock:
            self.seen.append(request)
        if self._answer is not None:
            return self._answer(request)
        return Response(200, (("Content-Type", "application/json"),), b'{"results": []}')


class _Served:
    """A SandboxHTTPServer around an app, in a thread; stop() ends it."""

    def __init__(self, app: Any, host: str) -> None:
        self.server = SandboxHTTPServer(app, host=host)
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def api_url(self) -> str:
        return self.server.base_url + "/api/v1/"

    def stop(self) -> None:
        self.server.stop()
        self._thread.join(5)


class OtherHost(_Served):
    """A server on 127.0.0.2 that records every request (the attacker's)."""

    def __init__(self, answer: Callable[[Request], Response] | None = None) -> None:
        self.app = _Recorder(answer)
        super().__init__(self.app, "127.0.0.2")

    @property
    def seen(self) -> list[Request]:
        return list(self.app.seen)


class ScriptedApp(_Served):
    """A fake API on 127.0.0.1: ``answer(request)`` decides every answer."""

    def __init__(self, answer: Callable[[Request], Response]) -> None:
        self.app = _Recorder(answer)
        super().__init__(self.app, "127.0.0.1")

    @property
    def seen(self) -> list[Request]:
        return list(self.app.seen)


class RewritingProxy(_Served):
    """Forwards every request to ``upstream`` (a sandbox's base URL) and hands each
    answer to ``rewrite(request, response)`` before the client gets it."""

    def __init__(self, upstream: str,
                 rewrite: Callable[[Request, Response], Response]) -> None:
        self._upstream = upstream.rstrip("/")
        self._rewrite = rewrite
        self._client = httpx.Client(trust_env=False, timeout=30)
        self.seen: list[Request] = []
        super().__init__(self, "127.0.0.1")

    def handle(self, request: Request) -> Response:
        self.seen.append(request)
        query = [(k, v) for k, values in request.query.items() for v in values]
        # the Host header goes along, so the sandbox builds its URLs on the proxy's host
        headers = {k: v for k, v in request.headers.items()
                   if k not in ("content-length", "transfer-encoding", "connection")}
        upstream = self._client.request(request.method, self._upstream + request.path,
                                        params=query, headers=headers,
                                        content=request.body or None)
        passed = tuple((k, v) for k, v in upstream.headers.items()
                       if k.lower() not in ("content-length", "content-encoding",
                                            "transfer-encoding", "connection"))
        return self._rewrite(request, Response(upstream.status_code, passed,
                                               upstream.content))

    def stop(self) -> None:
        super().stop()
        self._client.close()


def json_answer(status: int, data: Any) -> Response:
    return Response(status, (("Content-Type", "application/json"),),
                    json.dumps(data).encode())


class ScriptedServer:
    """Raw TCP on 127.0.0.1: each connection's request head is read and recorded, then
    ``script(conn)`` writes the answer (or not) however it likes."""

    def __init__(self, script: Callable[[socket.socket], None]) -> None:
        self._script = script
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.heads: list[bytes] = []
        self.sent: list[int] = []  # bytes each script managed to write
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._loop, daemon=True)
        self._accept.start()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1/"

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            with contextlib.suppress(OSError):
                conn.settimeout(10)
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    head += chunk
            self.heads.append(head)
            with contextlib.suppress(OSError):
                self._script(conn)

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(5)


# --------------------------------------------------------------------------- the CLI


#: the child: gcbatch's CLI, writing its peak RSS (VmHWM, kB) to $GCBATCH_TEST_PEAK at exit
_LAUNCH = """
import atexit, os, sys

def _peak():
    try:
        with open("/proc/self/status") as fh:
            kb = next(line.split()[1] for line in fh if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        kb = "0"
    with open(os.environ["GCBATCH_TEST_PEAK"], "w") as out:
        out.write(kb)

atexit.register(_peak)
sys.argv[0] = "gcbatch"
from gcbatch.cli import main
main()
"""


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str
    #: the child's peak resident memory, in bytes
    max_rss: int


def cli_env(*, token: str | None = SECRET, home: Path | None = None,
            extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a user running gcbatch: their token; no server chosen in the
    environment; a home (and config folder) of their own when ``home`` is given."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("GRAND_CHALLENGE_AUTHORIZATION", "GCBATCH_SERVER",
                        "GCBATCH_ALLOWED_SERVERS", "SSL_CERT_FILE", "SSL_CERT_DIR",
                        "XDG_CONFIG_HOME")}
    env["NO_COLOR"] = "1"
    if token is not None:
        env["GRAND_CHALLENGE_AUTHORIZATION"] = token
    if home is not None:
        env["HOME"] = str(home)
        env["XDG_CONFIG_HOME"] = str(home / ".config")
    env.update(extra or {})
    return env


def run_cli(args: Sequence[str], cwd: Path, env: Mapping[str, str], *,
            timeout: float = 120, prefix: Sequence[str] = ()) -> Run:
    """``[prefix...] gcbatch ARGS``; its exit code, output and peak RSS."""
    peak = cwd / ".run-peak"
    with (cwd / ".run-out").open("w+b") as out, (cwd / ".run-err").open("w+b") as err:
        done = subprocess.run([*prefix, sys.executable, "-c", _LAUNCH, *args], cwd=cwd,
                              env={**env, "GCBATCH_TEST_PEAK": str(peak)}, stdout=out,
                              stderr=err, stdin=subprocess.DEVNULL, timeout=timeout,
                              check=False)
        out.seek(0)
        err.seek(0)
        text_out = out.read().decode("utf-8", errors="replace")
        text_err = err.read().decode("utf-8", errors="replace")
    kb = int(peak.read_text() or 0) if peak.exists() else 0
    for name in (".run-out", ".run-err", ".run-peak"):
        (cwd / name).unlink(missing_ok=True)
    return Run(done.returncode, text_out, text_err, kb * 1024)


def assert_clean_failure(run: Run, code: int, *needles: str) -> None:
    """Exit ``code``, one clear message holding each of ``needles``, no traceback."""
    assert run.code == code, (run.code, run.err[-2000:])
    assert "Traceback" not in run.err, run.err[-3000:]
    for needle in needles:
        assert needle in run.err, (needle, run.err[-2000:])


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def value_study(folder: Path, *, ages: Sequence[int] = (61, 47), server: str | None = None,
                extra_case: str = "") -> Path:
    """A small study of the seed's ``risk-calculator`` (value inputs from JSON files)."""
    for age in ages:
        write(folder / "ages" / f"{age}.json", json.dumps(age))
    head = f"server: {server}\n" if server else ""
    return write(folder / "study.yaml",
                 f"version: 1\nalgorithm: risk-calculator\n{head}"
                 "defaults:\n  lung-volume: {value: 4.2}\n"
                 "cases:\n"
                 "  - foreach: {glob: \"ages/*.json\"}\n"
                 "    id: \"case-{stem}\"\n"
                 "    inputs:\n"
                 "      age: {json: \"{path}\"}\n" + extra_case)
