"""An opt-in log of every answer the sandbox app gives, for schema-conformance checks.

Issue 7 asks that every JSON response the sandbox gives during the whole test suite
validate against Grand Challenge's OpenAPI schema. Those responses come from many
places: in-process transports, loopback servers on threads, and ``gcbatch --sandbox``
runs in subprocesses. The one point they all pass is ``SandboxApp.handle``, and the one
channel that reaches a subprocess without every test having to pass something along is
the environment. So: when ``GCBATCH_SANDBOX_RECORD_DIR`` names a directory, each app
appends one JSON line per answer to ``<dir>/responses-<pid>.jsonl``; the test suite's
plugin (``tests/openapi_plugin.py``) sets the variable at start and validates the lines
at the end. Unset (always, outside the test suite), nothing is recorded and the cost is
one ``None`` check per request.

A line is ``{"method", "path", "query", "status", "content_type", "body"}`` where
``body`` is the response text when the content type is JSON and ``null`` otherwise
(downloads and presigned PUTs carry bytes the schema does not describe; a HEAD answer
has no body). Request bodies
and headers are never written: a request may carry the token.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from urllib.parse import urlencode

from gcbatch.sandbox.http import Request, Response

ENV_VAR = "GCBATCH_SANDBOX_RECORD_DIR"


class ResponseRecorder:
    """Appends the app's answers to a per-process JSON-lines file; safe across threads."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        """This process's file (the pid is read at write time, so a fork gets its own)."""
        return self._directory / f"responses-{os.getpid()}.jsonl"

    def record(self, request: Request, response: Response) -> None:
        """Append one line describing ``response`` to ``request``."""
        content_type = response.header("Content-Type")
        body: str | None = None
        if "json" in content_type.lower() and request.method != "HEAD":  # HEAD: no body
            body = response.body.decode("utf-8", errors="replace")
        line = json.dumps(
            {
                "method": request.method,
                "path": request.path,
                "query": urlencode([(k, v) for k, vs in request.query.items() for v in vs]),
                "status": response.status,
                "content_type": content_type,
                "body": body,
            },
            ensure_ascii=False,
        )
        data = (line + "\n").encode("utf-8")
        with self._lock:
            # One os.write per line on an O_APPEND descriptor: a process killed by the
            # tests (SIGKILL) leaves whole lines, not half of a long one.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)


def recorder_from_env() -> ResponseRecorder | None:
    """A recorder when ``GCBATCH_SANDBOX_RECORD_DIR`` names an existing directory."""
    value = os.environ.get(ENV_VAR)
    if not value:
        return None
    directory = Path(value)
    if not directory.is_dir():
        return None
    return ResponseRecorder(directory)
