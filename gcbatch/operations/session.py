"""Connect a study to its server: a ready client and a read-only view, or the sandbox.

One call for every command that talks to a server::

    study = open_study(manifest_path, connection)
    with connect(study, connection) as session:
        session.client        # GrandChallengeClient (thread-safe)
        session.view          # ServerView: the GET-only questions

Real servers: the token comes from :func:`gcbatch.api.settings.resolve_token` (flag, then
environment); everything that can be wrong with it is a
:class:`~gcbatch.errors.ConfigError` raised *before* any request. So is a server that only
the manifest names and the user has not allowed
(:func:`gcbatch.api.settings.check_server_allowed`): the token is bound to servers the
user chose.

``--sandbox``: the embedded emulator runs in this process, behind an httpx transport (no
port, no thread), with its state in ``.gcbatch/sandbox.db`` beside the manifest and the
default seed, so successive commands (apply, then status, then download) see the same
jobs, and jobs progress between runs because the sandbox derives statuses from time.
The seed user ``demo``'s token (test data, not a secret) is used.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gcbatch.api.client import GrandChallengeClient
from gcbatch.api.server_view import ServerView
from gcbatch.api.settings import ServerChoice, Token, check_server_allowed, resolve_token
from gcbatch.errors import ConfigError
from gcbatch.events import Hook, ignore
from gcbatch.files import refuse_link
from gcbatch.operations.study import ConnectionOptions, Study

__all__ = ["SANDBOX_DB", "SANDBOX_USER", "Session", "connect", "open_session"]

SANDBOX_DB = "sandbox.db"
SANDBOX_USER = "demo"


@dataclass
class Session:
    """An open connection. Close it (or use ``with``) to release the client and sandbox."""

    client: GrandChallengeClient
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)
    #: the server's active-jobs limit when it is known (the embedded sandbox's setting;
    #: the platform's API does not tell it)
    active_jobs_limit: int | None = None

    @property
    def view(self) -> ServerView:
        return ServerView(self.client)

    def close(self) -> None:
        while self._closers:
            closer = self._closers.pop()
            with contextlib.suppress(Exception):
                closer()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_sandbox(state_dir: Path) -> tuple[Any, httpx.BaseTransport, Token]:
    """The embedded sandbox: (app, in-process transport, demo token)."""
    try:
        from gcbatch.sandbox import SandboxApp
        from gcbatch.sandbox.transport import SandboxTransport
    except ImportError as exc:  # a partial installation
        raise ConfigError(f"the embedded sandbox is not available: {exc}") from None
    try:
        refuse_link(state_dir, "folder of gcbatch's local state")
        state_dir.mkdir(parents=True, exist_ok=True)
        # the sandbox's database is scratch state, never something to commit; created only if
        # absent, never through a link planted at its name
        with contextlib.suppress(FileExistsError):
            fd = os.open(state_dir / ".gitignore",
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write("*\n")
    except OSError as exc:
        raise ConfigError(f"the sandbox's state folder {state_dir} cannot be made: "
                          f"{exc.strerror or exc}") from None
    db = state_dir / SANDBOX_DB
    try:
        app = SandboxApp(db)
    except Exception as exc:  # e.g. a database written by another gcbatch version
        raise ConfigError(
            f"the sandbox's state {db} cannot be opened ({type(exc).__name__}: {exc}); "
            f"delete {state_dir} to start the sandbox afresh"
        ) from None
    return app, SandboxTransport(app), Token(app.token(SANDBOX_USER))


def connect(
    study: Study,
    connection: ConnectionOptions,
    *,
    token_required: bool = True,
    client_factory: Callable[..., GrandChallengeClient] = GrandChallengeClient,
    on_event: Hook = ignore,
) -> Session:
    """Open a client for ``study``'s server (or start the sandbox). No request is sent.

    ``token_required=False`` lets read-only commands run anonymously (the API answers
    lists with what an anonymous user may see).
    """
    if not study.sandbox:
        check_server_allowed(ServerChoice(study.server, study.server_source),
                             manifest=study.manifest.display)
    return open_session(study.server, connection,
                        sandbox_dir=study.state_dir if study.sandbox else None,
                        token_required=token_required, client_factory=client_factory,
                        on_event=on_event)


def open_session(
    server: str,
    connection: ConnectionOptions,
    *,
    sandbox_dir: Path | None = None,
    token_required: bool = True,
    client_factory: Callable[..., GrandChallengeClient] = GrandChallengeClient,
    on_event: Hook = ignore,
) -> Session:
    """:func:`connect` without a study (``init``, ``schema``): ``server`` already resolved;
    ``sandbox_dir`` set → the embedded sandbox with its state there."""
    if sandbox_dir is not None:
        app, transport, token = _open_sandbox(sandbox_dir)
        try:
            client = client_factory(server, token, transport=transport, on_event=on_event)
        except BaseException:
            app.close()
            raise
        session = Session(client=client, active_jobs_limit=app.config.max_active_jobs)
        session._closers += [app.close, client.close]
        return session
    client = client_factory(server,
                            resolve_token(connection.token_file, required=token_required),
                            verify=connection.trust, on_event=on_event)
    session = Session(client=client)
    session._closers.append(client.close)
    return session
