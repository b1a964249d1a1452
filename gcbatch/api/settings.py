"""Where to connect and with which token.

Server URL, first that is set wins:

1. the ``--server`` flag,
2. the environment variable ``GCBATCH_SERVER``,
3. the manifest's ``server:``,
4. ``https://grand-challenge.org/api/v1/``.

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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from gcbatch.errors import ConfigError

__all__ = [
    "DEFAULT_SERVER",
    "SERVER_ENV",
    "TOKEN_ENV",
    "Settings",
    "Token",
    "is_loopback_host",
    "normalise_server_url",
    "resolve_server",
    "resolve_settings",
    "resolve_token",
]

DEFAULT_SERVER = "https://grand-challenge.org/api/v1/"
SERVER_ENV = "GCBATCH_SERVER"
TOKEN_ENV = "GRAND_CHALLENGE_AUTHORIZATION"


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


def resolve_server(
    flag: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    manifest_server: str | None = None,
) -> str:
    """The API base URL by precedence: flag, ``GCBATCH_SERVER``, manifest, default."""
    environ = os.environ if env is None else env
    if flag:
        return normalise_server_url(flag, source="--server")
    from_env = environ.get(SERVER_ENV, "").strip()
    if from_env:
        return normalise_server_url(from_env, source=SERVER_ENV)
    if manifest_server:
        return normalise_server_url(manifest_server, source="the manifest's server:")
    return DEFAULT_SERVER


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
        try:
            raw = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read --token-file {path}: {exc.strerror or exc}") from None
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
