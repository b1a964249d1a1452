"""The value types that cross the border between the sandbox's transport and its app.

The transport layer (``server.py``: a stdlib HTTP server; ``transport.py``: an in-process
httpx transport) turns whatever arrived on the wire into a :class:`Request`, hands it to
``SandboxApp.handle`` and writes the returned :class:`Response` back. Keeping both sides
to these two frozen values means the app never sees sockets and the transports never see
business rules, so each can be tested on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Request:
    """One HTTP request as the app sees it.

    ``path`` has no query string and is not percent-decoded beyond what the transport
    did (the sandbox's paths are plain ASCII). ``query`` maps each parameter name to all
    its values in order (``input_image`` is repeatable). ``headers`` has lower-cased
    names. ``base_url`` is ``scheme://host:port`` with no trailing slash; the app uses
    it to build absolute URLs in bodies, exactly as the real API does.
    """

    method: str
    path: str
    query: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    base_url: str = "http://testserver"

    def header(self, name: str, default: str = "") -> str:
        """The value of header ``name`` (any case), or ``default``."""
        return self.headers.get(name.lower(), default)

    def first(self, name: str) -> str | None:
        """The first value of query parameter ``name``, or None when absent."""
        values = self.query.get(name)
        return values[0] if values else None


@dataclass(frozen=True)
class Response:
    """One HTTP response: status, headers in order (names as sent), and the whole body.

    The transport adds nothing but ``Content-Length`` (and ``Connection`` handling);
    everything else the client sees, such as ``Content-Type``, ``Location`` or ``ETag``,
    is decided by the app.
    """

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def header(self, name: str, default: str = "") -> str:
        """The value of the first header called ``name`` (any case), or ``default``."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return default
