"""Where to connect and with which token.

Server URL, first that is set wins:

1. the ``--server`` flag,
2. the environment variable ``GCBATCH_SERVER``,
3. the manifest's ``server:``,
4. ``https://grand-challenge.org/api/v1/``.

**The token goes only to servers the user chose** (:func:`check_server_allowed`): the
default platform, or one named by the user's own flag or environment. A manifest is not
the user: it arrives with a cloned study, and its ``server:`` alone would otherwise get
the token and the upload of any file it names. So a server named only by a manifest is
refused (before any request) unless its host is the platform's or one the user allowed:
listed in ``GCBATCH_ALLOWED_SERVERS`` (comma- or space-separated) or, one per line, in
``$XDG_CONFIG_HOME/gcbatch/allowed-servers`` (``~/.config/gcbatch/allowed-servers``).
An entry is ``host`` (any port) or ``host:port``; a full URL is read for its host and port.

The URL is normalised (scheme and host lower-cased, a bare host gets ``/api/v1/``, the path
always ends in ``/``) and must be ``https``, except for loopback hosts (127.0.0.0/8, ::1,
``localhost``), which may use ``http`` (the sandbox). Anything else is a
:class:`~gcbatch.errors.ConfigError`, raised before any request is made.

Token: the ``--token-file`` flag if given (an explicit flag beats the environment), else
the environment variable ``GRAND_CHALLENGE_AUTHORIZATION`` (the one gcapi reads). Both
accept ``Bearer xyz`` or just ``xyz``. The token is wrapped in :class:`Token`, whose
``repr``/``str`` never show it; only :meth:`Token.header_value` (used by the client's auth
hook) reveals it.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from gcbatch.errors import ConfigError

__all__ = [
    "ALLOWED_SERVERS_ENV",
    "DEFAULT_SERVER",
    "SERVER_ENV",
    "TOKEN_ENV",
    "ServerChoice",
    "ServerSource",
    "Settings",
    "Token",
    "allowed_servers_file",
    "check_server_allowed",
    "choose_server",
    "is_loopback_host",
    "normalise_server_url",
    "resolve_server",
    "resolve_settings",
    "resolve_token",
    "ssl_context",
]

DEFAULT_SERVER = "https://grand-challenge.org/api/v1/"
SERVER_ENV = "GCBATCH_SERVER"
TOKEN_ENV = "GRAND_CHALLENGE_AUTHORIZATION"
ALLOWED_SERVERS_ENV = "GCBATCH_ALLOWED_SERVERS"
#: the most of a token file that is read (a token is ~40 characters)
TOKEN_FILE_MAX = 64 * 1024

#: where a server came from (only "manifest" needs the user's permission)
ServerSource = Literal["flag", "env", "manifest", "default"]


class Token:
    """An API token that does not show itself: ``repr``/``str``/f-strings print ``Token(***)``.

    Not a dataclass on purpose (a dataclass repr would print the field). Compare tokens with
    ``==``; never put :meth:`reveal` into a message, log line or file.
    """

    __slots__ = ("_secret",)

    def __init__(self, raw: str) -> None:
        value = raw.strip()
        keyword, _, rest = value.partition(" ")
        if keyword.lower() == "bearer" and rest.strip():
            value = rest.strip()
        if not value or value.lower() == "bearer" or any(c.isspace() for c in value):
            raise ConfigError(
                "the API token is empty or malformed (expected 'Bearer <token>' or '<token>')"
            )
        object.__setattr__(self, "_secret", value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Token is immutable")

    def reveal(self) -> str:
        """The bare token. Only the client's auth hook should call this."""
        secret: str = object.__getattribute__(self, "_secret")
        return secret

    def header_value(self) -> str:
        """The ``Authorization`` header value: ``Bearer <token>``."""
        return f"Bearer {self.reveal()}"

    def __repr__(self) -> str:
        return "Token(***)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Token) and other.reveal() == self.reveal()

    def __hash__(self) -> int:
        return hash(("gcbatch.Token", self.reveal()))

    def __reduce__(self) -> tuple[object, ...]:
        # pickling would write the secret somewhere; nothing in gcbatch needs it
        raise TypeError("Token objects cannot be pickled")


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 and ``localhost`` (plain http is allowed only for these)."""
    name = host.strip("[]").lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def normalise_server_url(url: str, *, source: str = "server URL") -> str:
    """Validate and normalise an API base URL; ``source`` names where it came from."""
    text = url.strip()
    if not text:
        raise ConfigError(f"{source} is empty")
    if "://" not in text:
        raise ConfigError(
            f"{source} {text!r} has no scheme; use e.g. https://grand-challenge.org/api/v1/"
        )
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ConfigError(f"{source} {text!r}: only https (or http to loopback) is supported")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{source}: credentials in the URL are not supported; use a token")
    try:
        host = parts.hostname
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{source} {text!r} is not a valid URL: {exc}") from exc
    if not host:
        raise ConfigError(f"{source} {text!r} has no host")
    if parts.query or parts.fragment:
        raise ConfigError(f"{source} {text!r} must not have a query or fragment")
    if scheme == "http" and not is_loopback_host(host):
        raise ConfigError(
            f"{source} {text!r} uses plain http to a non-loopback host; the token would "
            "travel unencrypted. Use https (http is allowed only for 127.0.0.1, ::1, localhost)"
        )
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    path = parts.path or "/"
    if path == "/":
        path = "/api/v1/"
    if not path.endswith("/"):
        path += "/"
    return urlunsplit((scheme, netloc, path, "", ""))


@dataclass(frozen=True)
class ServerChoice:
    """The API base URL (normalised) and who named it."""

    url: str
    source: ServerSource


def choose_server(
    flag: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    manifest_server: str | None = None,
) -> ServerChoice:
    """The API base URL by precedence (flag, ``GCBATCH_SERVER``, manifest, default), and
    where it came from."""
    environ = os.environ if env is None else env
    if flag:
        return ServerChoice(normalise_server_url(flag, source="--server"), "flag")
    from_env = environ.get(SERVER_ENV, "").strip()
    if from_env:
        return ServerChoice(normalise_server_url(from_env, source=SERVER_ENV), "env")
    if manifest_server:
        return ServerChoice(
            normalise_server_url(manifest_server, source="the manifest's server:"), "manifest")
    return ServerChoice(DEFAULT_SERVER, "default")


def resolve_server(
    flag: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    manifest_server: str | None = None,
) -> str:
    """The API base URL by precedence: flag, ``GCBATCH_SERVER``, manifest, default."""
    return choose_server(flag, env=env, manifest_server=manifest_server).url


def allowed_servers_file(env: Mapping[str, str] | None = None) -> Path:
    """The per-user list of allowed server hosts (one per line, ``#`` comments)."""
    environ = os.environ if env is None else env
    config = environ.get("XDG_CONFIG_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".config")
    return Path(config) / "gcbatch" / "allowed-servers"


def _host_port(text: str) -> tuple[str, int | None] | None:
    """``host[:port]`` or a URL → (host, port or None); None when it names no host."""
    entry = text.strip()
    if not entry:
        return None
    parts = urlsplit(entry if "://" in entry else "//" + entry)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    if port is None and "://" in entry:
        port = {"https": 443, "http": 80}.get(parts.scheme.lower())
    return host.lower().rstrip("."), port


def _allowed_entries(env: Mapping[str, str], config_file: Path) -> list[tuple[str, int | None]]:
    texts = env.get(ALLOWED_SERVERS_ENV, "").replace(",", " ").split()
    try:
        # a small file of host names; not worth more than 64 KiB, and never a FIFO
        if stat.S_ISREG(config_file.stat().st_mode):
            with config_file.open("r", encoding="utf-8", errors="replace") as fh:
                lines = fh.read(TOKEN_FILE_MAX).splitlines()
            texts += [line.split("#", 1)[0] for line in lines]
    except OSError:
        pass
    return [hp for hp in (_host_port(t) for t in texts) if hp is not None]


def check_server_allowed(
    choice: ServerChoice,
    *,
    manifest: str = "the manifest",
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> None:
    """Refuse (ConfigError, exit 2, before any request) a server named only by a manifest
    whose host is neither the platform's nor one the user allowed (module docstring)."""
    if choice.source != "manifest":
        return
    environ = os.environ if env is None else env
    target = _host_port(choice.url)
    assert target is not None  # a normalised URL has a host
    host, port = target
    if host == urlsplit(DEFAULT_SERVER).hostname:
        return
    listing = config_file if config_file is not None else allowed_servers_file(environ)
    for allowed_host, allowed_port in _allowed_entries(environ, listing):
        if allowed_host == host and allowed_port in (None, port):
            return
    where = f"{host}:{port}" if port not in (None, 80, 443) else host
    raise ConfigError(
        f"{manifest}: server: {choice.url} is a server you have not allowed. gcbatch sends "
        f"your token, and the files a manifest names, only to grand-challenge.org, to a "
        f"server you name yourself, or to a host you allow; a manifest (which may come "
        f"from anyone, e.g. a cloned repository) cannot choose one on its own. Nothing was "
        f"sent. To use this server: pass --server {choice.url} (or set {SERVER_ENV}), or "
        f"allow the host for every study: {ALLOWED_SERVERS_ENV}={where}, or a line "
        f"'{where}' in {listing}"
    )


def resolve_token(
    token_file: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    required: bool = True,
) -> Token | None:
    """The token from ``--token-file`` or ``GRAND_CHALLENGE_AUTHORIZATION``.

    Missing and ``required`` → ConfigError saying how to provide one; missing and not
    required (read-only commands may run anonymously) → None.
    """
    environ = os.environ if env is None else env
    if token_file is not None:
        path = Path(token_file)
        raw = _read_token_file(path)
        if not raw.strip():
            raise ConfigError(f"--token-file {path} is empty")
        return Token(raw)
    raw_env = environ.get(TOKEN_ENV, "")
    if raw_env.strip():
        return Token(raw_env)
    if required:
        raise ConfigError(
            f"no API token: set the environment variable {TOKEN_ENV} "
            "(create a token at https://grand-challenge.org/settings/api-tokens/) "
            "or pass --token-file PATH"
        )
    return None


def _read_token_file(path: Path) -> str:
    """A token file's text: a regular file (never a FIFO or a device, which could hang or
    never end), at most :data:`TOKEN_FILE_MAX` bytes, UTF-8."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ConfigError(f"cannot read --token-file {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"--token-file {path} is not a regular file; give the path of "
                              "a file holding the token")
        data = fh.read(TOKEN_FILE_MAX + 1)
    if len(data) > TOKEN_FILE_MAX:
        raise ConfigError(f"--token-file {path} is larger than {TOKEN_FILE_MAX // 1024} KiB; "
                          "it should hold only the token")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"--token-file {path} is not UTF-8 text") from None


@dataclass(frozen=True)
class Settings:
    """Resolved connection settings. ``repr`` is safe: the token prints as ``Token(***)``."""

    server: str
    token: Token | None


def resolve_settings(
    *,
    server_flag: str | None = None,
    token_file: str | Path | None = None,
    manifest_server: str | None = None,
    env: Mapping[str, str] | None = None,
    token_required: bool = True,
) -> Settings:
    """Server and token together (server first, so a bad URL is reported even without token)."""
    server = resolve_server(server_flag, env=env, manifest_server=manifest_server)
    token = resolve_token(token_file, env=env, required=token_required)
    return Settings(server=server, token=token)


def ssl_context(verify: bool | str | ssl.SSLContext = True) -> ssl.SSLContext:
    """The TLS context to verify servers with: ``verify`` as given (a context, a CA file,
    False for none), else ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when set (as httpx honours
    them), else certifi's bundle. A CA file that cannot be loaded is a ConfigError
    naming where it came from, before any request."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is False:
        import httpx  # (lazily: resolving settings must not cost the import of httpx)

        return httpx.create_ssl_context(verify=False, trust_env=False)
    cafile: str | None
    if isinstance(verify, str):
        cafile, capath, source = verify, None, f"the CA file {verify}"
    else:
        cafile = os.environ.get("SSL_CERT_FILE") or None
        capath = None if cafile else os.environ.get("SSL_CERT_DIR") or None
        source = f"SSL_CERT_FILE={cafile}" if cafile else f"SSL_CERT_DIR={capath}"
    try:
        if cafile is None and capath is None:
            import httpx

            return httpx.create_ssl_context(verify=True, trust_env=False)
        return ssl.create_default_context(cafile=cafile, capath=capath)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise ConfigError(
            f"{source}: cannot load CA certificates from it ({reason}); point it at a "
            "PEM file of trusted certificates, or unset it"
        ) from None
