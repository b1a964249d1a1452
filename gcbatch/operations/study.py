"""A study: one manifest, loaded once, with where its state lives and which server it uses.

Every command that works on a manifest starts by opening its :class:`Study`: the manifest
is parsed here, once per command (a 100,000-case manifest is not free to read), and the
decisions that follow from it are made here, once: the server the lockfile belongs to
(``--server``, ``GCBATCH_SERVER``, the manifest's ``server:``, the default; the sandbox's
fixed URL with ``--sandbox``), the lockfile's path (``--lockfile``, else ``<stem>.lock``
or ``<stem>.sandbox.lock`` beside the manifest) and the folders of local state. Opening a
study sends nothing anywhere; :func:`gcbatch.operations.session.connect` does that part.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gcbatch.api.settings import ServerSource, choose_server
from gcbatch.errors import ConfigError
from gcbatch.hashing import default_cache_path
from gcbatch.lockfile import lockfile_path_for
from gcbatch.manifest import Manifest, load_manifest

__all__ = ["SANDBOX_DIR", "SANDBOX_URL", "ConnectionOptions", "Study", "open_study"]

#: Where the embedded sandbox answers. A loopback name (so the https rule holds), never
#: dialled: an in-process transport intercepts every request, and the URLs recorded in
#: ``<stem>.sandbox.lock`` stay valid from one run to the next.
SANDBOX_URL = "http://localhost/api/v1/"
#: Local state beside the manifest: the sandbox's database, the hash cache, scratch files.
SANDBOX_DIR = ".gcbatch"


@dataclass(frozen=True)
class ConnectionOptions:
    """Where to connect, as the user asked (resolved by :func:`open_study` and
    :func:`~gcbatch.operations.session.connect`).

    ``server``/``token_file`` None mean "not given" (the environment, the manifest or the
    default decide). ``sandbox`` starts the embedded emulator instead; it excludes
    ``server`` and ``token_file``. ``lockfile`` overrides the lockfile path beside the
    manifest (``study.lock`` / ``study.sandbox.lock``).
    """

    server: str | None = None
    token_file: Path | None = None
    sandbox: bool = False
    lockfile: Path | None = None

    def __post_init__(self) -> None:
        if self.sandbox and self.server:
            raise ConfigError("--sandbox and --server exclude each other")
        if self.sandbox and self.token_file is not None:
            raise ConfigError("--sandbox uses the sandbox's own demo token; drop --token-file")


@dataclass(frozen=True)
class Study:
    """A loaded manifest and everything decided from it (a value; nothing is open)."""

    manifest: Manifest
    #: the API base URL the lockfile belongs to (normalised)
    server: str
    sandbox: bool
    lockfile: Path
    #: who named ``server``: a server only the manifest names needs the user's permission
    #: before the token goes there (:func:`gcbatch.api.settings.check_server_allowed`)
    server_source: ServerSource = "default"

    @property
    def path(self) -> Path:
        return self.manifest.path

    @property
    def algorithm(self) -> str:
        """The algorithm's slug, as the manifest names it."""
        return self.manifest.algorithm

    @property
    def state_dir(self) -> Path:
        """``.gcbatch/`` beside the manifest (sandbox database, hash cache, scratch)."""
        return self.path.parent / SANDBOX_DIR

    @property
    def hash_cache(self) -> Path:
        return default_cache_path(self.path)

    @property
    def scratch(self) -> Path:
        """Where files fetched to be re-uploaded (archive items' files) are kept."""
        return self.state_dir / "tmp"

    @property
    def archive_slugs(self) -> tuple[str, ...]:
        """The archives that ``foreach: {archive: ...}`` generators expand, in order."""
        slugs: dict[str, None] = {}
        for spec in self.manifest.cases:
            if spec.foreach is not None and spec.foreach.kind == "archive":
                slugs.setdefault(spec.foreach.pattern, None)
        return tuple(slugs)


def open_study(manifest_path: Path, connection: ConnectionOptions) -> Study:
    """Load the manifest (ManifestError, exit 2, on any finding) and resolve its server
    and lockfile. No request is sent and no token is needed."""
    manifest = load_manifest(manifest_path)
    source: ServerSource = "flag"  # --sandbox: the user's own flag
    if connection.sandbox:
        server = SANDBOX_URL
    else:
        choice = choose_server(connection.server, manifest_server=manifest.server)
        server, source = choice.url, choice.source
    lockfile = connection.lockfile or lockfile_path_for(manifest_path, sandbox=connection.sandbox)
    return Study(manifest=manifest, server=server, sandbox=connection.sandbox, lockfile=lockfile,
                 server_source=source)
