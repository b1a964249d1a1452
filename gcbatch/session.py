"""Connect: from the CLI's connection options to a ready client, lockfile path and server.

One call for every online command::

    with connect(connection, manifest_path, manifest_server=manifest.server) as session:
        session.client        # GrandChallengeClient (thread-safe)
        session.server        # normalised API base URL (what the lockfile records)
        session.lockfile      # study.lock, study.sandbox.lock, or --lockfile
        session.sandbox       # True when talking to the embedded sandbox

Real servers: the URL and token come from :func:`gcbatch.settings.resolve_settings`
(flags, environment, manifest, default; https except loopback). Everything that can be
wrong with them is a :class:`~gcbatch.errors.ConfigError` raised *before* any request.

``--sandbox``: the embedded emulator runs in this process, behind an httpx transport (no
port, no thread), with its state in ``.gcbatch/sandbox.db`` beside the manifest and the
default seed, so successive commands (apply, then status, then download) see the same
jobs, and jobs progress between runs because the sandbox derives statuses from time.
It answers at the fixed base URL :data:`SANDBOX_URL`, so the URLs recorded in
``<stem>.sandbox.lock`` stay valid from one run to the next. The seed user ``demo``'s
token (test data, not a secret) is used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gcbatch.client import GrandChallengeClient
from gcbatch.errors import ConfigError
from gcbatch.lockfile import lockfile_path_for
from gcbatch.options import ConnectionOptions
from gcbatch.settings import Settings, Token, resolve_settings

__all__ = ["SANDBOX_DB", "SANDBOX_DIR", "SANDBOX_URL", "SANDBOX_USER", "Session", "connect"]

#: Where the sandbox answers in-process. A loopback name (so the https rule holds), never
#: dialled: the transport intercepts every request.
SANDBOX_URL = "http://localhost/api/v1/"
SANDBOX_DIR = ".gcbatch"
SANDBOX_DB = "sandbox.db"
SANDBOX_USER = "demo"


@dataclass
class Session:
    """An open connection. Close it (or use ``with``) to release the client and sandbox."""

    client: GrandChallengeClient
    server: str
    lockfile: Path
    sandbox: bool = False
    #: the sandbox app when ``sandbox`` (tests read its admin API); None otherwise
    sandbox_app: Any = None
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def close(self) -> None:
        while self._closers:
            closer = self._closers.pop()
            with contextlib.suppress(Exception):
                closer()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sandbox_state_dir(manifest: Path) -> Path:
    return manifest.resolve().parent / SANDBOX_DIR


def _open_sandbox(state_dir: Path) -> tuple[Any, httpx.BaseTransport, Token, Callable[[], None]]:
    """The embedded sandbox: (app, in-process transport, demo token, closer)."""
    try:
        from gcbatch.sandbox import SandboxApp
        from gcbatch.sandbox.transport import SandboxTransport
    except ImportError as exc:  # a partial installation
        raise ConfigError(f"the embedded sandbox is not available: {exc}") from None
    state_dir.mkdir(parents=True, exist_ok=True)
    gitignore = state_dir / ".gitignore"
    if not gitignore.exists():
        # the sandbox's database is scratch state, never something to commit
        gitignore.write_text("*\n", encoding="utf-8")
    db = state_dir / SANDBOX_DB
    try:
        app = SandboxApp(db)
    except Exception as exc:  # e.g. a database written by another gcbatch version
        raise ConfigError(
            f"the sandbox's state {db} cannot be opened ({type(exc).__name__}: {exc}); "
            f"delete {state_dir} to start the sandbox afresh"
        ) from None
    transport = SandboxTransport(app)
    token = Token(app.token(SANDBOX_USER))

    def close() -> None:
        closer = getattr(app, "close", None)
        if callable(closer):
            closer()

    return app, transport, token, close


def connect(
    connection: ConnectionOptions,
    manifest: Path,
    *,
    manifest_server: str | None = None,
    token_required: bool = True,
    client_factory: Callable[..., GrandChallengeClient] = GrandChallengeClient,
    on_retry: Callable[[str], None] | None = None,
) -> Session:
    """Resolve settings and open a client (or start the sandbox). No request is sent.

    ``token_required=False`` lets read-only commands run anonymously (the API answers
    lists with what an anonymous user may see).
    """
    if connection.sandbox:
        lockfile = connection.lockfile or lockfile_path_for(manifest, sandbox=True)
        app, transport, token, close_app = _open_sandbox(sandbox_state_dir(manifest))
        try:
            client = client_factory(SANDBOX_URL, token, transport=transport, on_retry=on_retry)
        except BaseException:
            close_app()
            raise
        session = Session(client=client, server=client.base_url, lockfile=lockfile,
                          sandbox=True, sandbox_app=app)
        session._closers += [close_app, client.close]
        return session
    settings: Settings = resolve_settings(
        server_flag=connection.server,
        token_file=connection.token_file,
        manifest_server=manifest_server,
        token_required=token_required,
    )
    lockfile = connection.lockfile or lockfile_path_for(manifest, sandbox=False)
    client = client_factory(settings.server, settings.token, on_retry=on_retry)
    session = Session(client=client, server=client.base_url, lockfile=lockfile)
    session._closers.append(client.close)
    return session


@contextlib.contextmanager
def connected(
    connection: ConnectionOptions, manifest: Path, **kwargs: Any
) -> Iterator[Session]:
    """:func:`connect` as a context manager."""
    session = connect(connection, manifest, **kwargs)
    try:
        yield session
    finally:
        session.close()
