"""The sandbox in-process: an httpx transport that calls a ``SandboxApp`` directly.

No sockets, no threads, no ports: a test builds ``httpx.Client(transport=
SandboxTransport(app))`` and talks to the emulator at function-call speed. The same
:class:`~gcbatch.sandbox.faults.FaultInjector` as the socket server decides faults, and
each one surfaces as the exception httpx raises for the real thing:

- latency: the transport sleeps (``sleep`` is injectable, so a test can count instead);
- a status (429, 502, ...): an ``httpx.Response`` with the proxy-style body and headers;
- ``reset`` (``close=rst``, the default): ``httpx.ReadError`` ("Connection reset by
  peer"), what httpx raises when the server's RST arrives while it waits for an answer;
  with ``close=fin``: ``httpx.RemoteProtocolError`` ("Server disconnected without
  sending a response."); the app never sees the request;
- ``drop_after_commit``: the app handles the request (a job POST creates the job), then
  the same exception as ``reset`` is raised, so the caller cannot know it took effect.

``/_sandbox/faults`` is answered here (GET reads, POST replaces the plan), as the server
does; every other ``/_sandbox/`` path goes to the app and is never faulted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import parse_qs

import httpx

from gcbatch.sandbox.faults import (
    DROP_AFTER_COMMIT,
    GARBLE,
    LATE_COMMIT,
    RESET,
    STATUS,
    FaultInjector,
    FaultPlan,
    garble_response,
    late_commit_answer,
    schedule_late,
)
from gcbatch.sandbox.faults import fault_response as _fault_response
from gcbatch.sandbox.http import Request, Response
from gcbatch.sandbox.server import SupportsHandle

__all__ = ["SandboxTransport", "to_sandbox_request"]


def to_sandbox_request(request: httpx.Request) -> Request:
    """The app's view of an httpx request (the body is read into memory)."""
    url = request.url
    raw_path, _, raw_query = url.raw_path.partition(b"?")
    query_string = raw_query.decode("ascii", errors="replace")
    query = {k: tuple(v) for k, v in parse_qs(query_string, keep_blank_values=True).items()}
    headers = {k.lower(): v for k, v in request.headers.items()}
    return Request(
        method=request.method.upper(),
        path=raw_path.decode("ascii", errors="replace") or "/",
        query=query,
        headers=headers,
        body=request.read(),
        base_url=f"{url.scheme}://{url.netloc.decode('ascii')}",
    )


class SandboxTransport(httpx.BaseTransport):
    """An ``httpx.BaseTransport`` that answers from a sandbox app in the same process.

    ``faults`` may be an injector (shared, e.g. with a server), a plan, or None (no
    faults, but ``POST /_sandbox/faults`` can still install some at runtime).
    """

    def __init__(
        self,
        app: SupportsHandle,
        faults: FaultInjector | FaultPlan | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.app = app
        if isinstance(faults, FaultInjector):
            self.faults = faults
        else:
            self.faults = FaultInjector(faults)
        self.sleep = sleep

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        sandbox_request = to_sandbox_request(request)
        admin = self.faults.handle_admin(sandbox_request)
        if admin is not None:
            return self._to_httpx(admin, request)
        decision = self.faults.decide(sandbox_request.method, sandbox_request.path)
        if decision.delay_s > 0:
            self.sleep(decision.delay_s)
        rule = decision.rule
        if rule is not None:
            if rule.action == STATUS:
                return self._to_httpx(_fault_response(rule), request)
            if rule.action == DROP_AFTER_COMMIT:
                self.app.handle(sandbox_request)
            if rule.action == GARBLE:
                return self._to_httpx(
                    garble_response(rule, self.app.handle(sandbox_request)), request)
            if rule.action == LATE_COMMIT:
                schedule_late(decision.commit_after_s,
                              lambda: self.app.handle(sandbox_request))
                answer = late_commit_answer(rule)
                if answer is not None:
                    return self._to_httpx(answer, request)
            if rule.action in (RESET, DROP_AFTER_COMMIT, LATE_COMMIT):
                if rule.close == "fin":
                    raise httpx.RemoteProtocolError(
                        "Server disconnected without sending a response.", request=request
                    )
                raise httpx.ReadError("[Errno 104] Connection reset by peer", request=request)
        return self._to_httpx(self.app.handle(sandbox_request), request)

    @staticmethod
    def _to_httpx(response: Response, request: httpx.Request) -> httpx.Response:
        body = b"" if request.method == "HEAD" else response.body
        headers = [
            (k, v)
            for k, v in response.headers
            if k.lower() not in ("content-length", "transfer-encoding", "connection")
        ]
        headers.append(("Content-Length", str(len(response.body))))
        return httpx.Response(response.status, headers=headers, content=body, request=request)
