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
port, no thread), with its state in ``.gcbatch/sandbox.db`` beside the manifest, so
successive commands (apply, then status, then download) see the same jobs, and jobs
progress between runs because the sandbox derives statuses from time.

Its world (users, sockets, algorithms, archives) is ``sandbox-seed.yaml`` beside the
manifest when there is one (``gcbatch sandbox seed MANIFEST`` derives it from the
manifest's sockets; the format is in :mod:`gcbatch.sandbox.seed`), else the built-in
default. A database belongs to the world it was made with: ``.gcbatch/sandbox.seed``
records which (the seed file's sha256), and opening it with another world is refused
with what to delete, rather than mixing jobs of two worlds. The seed user ``demo``'s
token is used (else the seed's first user's; seed tokens are test data, not secrets).
"""

from __future__ import annotations

import contextlib
import hashlib
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

__all__ = ["SANDBOX_DB", "SANDBOX_SEED", "SANDBOX_USER", "Session", "connect", "open_session"]

SANDBOX_DB = "sandbox.db"
SANDBOX_USER = "demo"
#: the world ``--sandbox`` uses when this file is beside the manifest
SANDBOX_SEED = "sandbox-seed.yaml"
#: beside the database: which world it was made with
_SEED_MARK = "sandbox.seed"
_DEFAULT_MARK = "built-in default"



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


def _open_sandbox(state_dir: Path, study: Study | None
                  ) -> tuple[Any, httpx.BaseTransport, Token]:
    """The embedded sandbox with its state in ``state_dir``: (app, in-process transport,
    the seed user's token). Its world is ``sandbox-seed.yaml`` beside ``state_dir`` (beside
    the manifest), else the built-in one; ``study``: the manifest whose algorithm that
    world must hold (None for ``init``/``schema``, which ask for an algorithm themselves)."""
    try:
        from gcbatch.sandbox import SandboxApp
        from gcbatch.sandbox.seed import SeedError, load_seed
        from gcbatch.sandbox.transport import SandboxTransport
    except ImportError as exc:  # a partial installation
        raise ConfigError(f"the embedded sandbox is not available: {exc}") from None
    seed_path = state_dir.parent / SANDBOX_SEED
    seed_file = seed_path if seed_path.is_file() else None
    try:
        seed = load_seed(seed_file)
    except SeedError as exc:
        raise ConfigError(f"--sandbox: {exc}") from None
    where = str(seed_file) if seed_file else "the built-in default world"
    if study is not None and seed.algorithm_by_slug(study.algorithm) is None:
        raise ConfigError(
            f"--sandbox: {where} has no algorithm {study.algorithm!r}. Derive a world "
            f"from the manifest's sockets with `gcbatch sandbox seed {study.manifest.display}` "
            f"(it writes {SANDBOX_SEED} beside the manifest), or write that file yourself "
            "(its format: `gcbatch sandbox seed --help`)"
        )
    users = [u.name for u in seed.users]
    if not users:  # said before anything is made
        raise ConfigError(f"--sandbox: {where} has no users (the sandbox needs one)")
    user = SANDBOX_USER if SANDBOX_USER in users else users[0]
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
    _check_world(state_dir, db, seed_file, study.lockfile if study is not None else None)
    try:
        app = SandboxApp(db, seed=seed)
    except Exception as exc:  # e.g. a database written by another gcbatch version
        raise ConfigError(
            f"the sandbox's state {db} cannot be opened ({type(exc).__name__}: {exc}); "
            f"delete {state_dir} to start the sandbox afresh"
        ) from None
    return app, SandboxTransport(app), Token(app.token(user))


def _check_world(state_dir: Path, db: Path, seed_file: Path | None,
                 lockfile: Path | None) -> None:
    """Refuse a database made with another world; record the world of a new one."""
    mark = state_dir / _SEED_MARK
    world = (
        _DEFAULT_MARK if seed_file is None
        else "sha256:" + hashlib.sha256(seed_file.read_bytes()).hexdigest()
    )
    refuse_link(mark, "record of the sandbox's world")
    if not db.exists():
        mark.write_text(world + "\n", encoding="utf-8")
        return
    # a database from before worlds were recorded was made with the default world
    made_with = mark.read_text(encoding="utf-8").strip() if mark.exists() else _DEFAULT_MARK
    if made_with != world:
        now = str(seed_file) if seed_file else "the built-in default world"
        stale = [str(db), str(mark)] + ([str(lockfile)] if lockfile is not None else [])
        raise ConfigError(
            f"--sandbox: the sandbox's state in {state_dir} was made with another world "
            f"than {now} (its jobs would not fit); to start afresh in this one, delete "
            + ", ".join(stale[:-1]) + " and " + stale[-1]
        )


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
                        on_event=on_event, _study=study)


def open_session(
    server: str,
    connection: ConnectionOptions,
    *,
    sandbox_dir: Path | None = None,
    token_required: bool = True,
    client_factory: Callable[..., GrandChallengeClient] = GrandChallengeClient,
    on_event: Hook = ignore,
    _study: Study | None = None,
) -> Session:
    """:func:`connect` without a study (``init``, ``schema``): ``server`` already resolved;
    ``sandbox_dir`` set → the embedded sandbox with its state there."""
    if sandbox_dir is not None:
        app, transport, token = _open_sandbox(sandbox_dir, _study)
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
