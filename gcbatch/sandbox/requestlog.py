"""The in-memory log of requests behind ``GET /_sandbox/requests`` (tests read it to see
what a client really sent: how many job POSTs, whether a token went to storage)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from gcbatch.sandbox.http import Request

REQUEST_LOG_SIZE = 100_000  # newest entries kept (bounded memory)

# (method, path, query, status, user name, had Authorization, started)
_Entry = tuple[str, str, Mapping[str, tuple[str, ...]], int, str | None, bool, float]


class RequestLog:
    """Numbered entries, newest kept; thread-safe."""

    def __init__(self) -> None:
        self._entries: deque[tuple[int, _Entry]] = deque(maxlen=REQUEST_LOG_SIZE)
        self._lock = threading.Lock()
        self.last = 0  # the number of the newest entry (counts every request ever)

    def record(
        self, req: Request, status: int, user: str | None, had_auth: bool, started: float
    ) -> None:
        # A tuple now, a dict (with the query encoded) only when someone asks: this runs
        # on every request.
        entry: _Entry = (req.method, req.path, req.query, status, user, had_auth, started)
        with self._lock:
            self.last += 1
            self._entries.append((self.last, entry))

    def since(self, since: int) -> list[dict[str, Any]]:
        """The entries after number ``since``, oldest first."""
        with self._lock:
            picked = [(seq, e) for seq, e in self._entries if seq > since]
        return [
            {
                "seq": seq,
                "method": method,
                "path": path,
                "query": urlencode([(k, v) for k, vs in query.items() for v in vs]),
                "status": status,
                "user": user,
                "had_authorization": had_auth,
                "time": started,
            }
            for seq, (method, path, query, status, user, had_auth, started) in picked
        ]
