"""settings.py: server URL precedence and safety rule, token sources and secrecy."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from gcbatch.api.settings import (
    DEFAULT_SERVER,
    ServerChoice,
    Settings,
    Token,
    allowed_servers_file,
    check_server_allowed,
    choose_server,
    is_loopback_host,
    normalise_server_url,
    resolve_server,
    resolve_settings,
    resolve_token,
    ssl_context,
)
from gcbatch.errors import ConfigError


def test_precedence_flag_env_manifest_default() -> None:
    env = {"GCBATCH_SERVER": "https://env.example/api/v1/"}
    assert (
        resolve_server(
            "https://flag.example/api/v1/", env=env, manifest_server="https://m.example/api/v1/"
        )
        == "https://flag.example/api/v1/"
    )
    assert (
        resolve_server(None, env=env, manifest_server="https://m.example/api/v1/")
        == "https://env.example/api/v1/"
    )
    assert (
        resolve_server(None, env={}, manifest_server="https://m.example/api/v1/")
        == "https://m.example/api/v1/"
    )
    assert resolve_server(None, env={}) == DEFAULT_SERVER
    assert resolve_server(None, env={"GCBATCH_SERVER": "  "}) == DEFAULT_SERVER


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://grand-challenge.org/api/v1", "https://grand-challenge.org/api/v1/"),
        ("https://grand-challenge.org/api/v1/", "https://grand-challenge.org/api/v1/"),
        ("https://grand-challenge.org", "https://grand-challenge.org/api/v1/"),
        ("HTTPS://Grand-Challenge.ORG/", "https://grand-challenge.org/api/v1/"),
        ("http://127.0.0.1:8000/api/v1", "http://127.0.0.1:8000/api/v1/"),
        ("http://127.5.6.7/api/v1/", "http://127.5.6.7/api/v1/"),
        ("http://localhost:9/api/v1/", "http://localhost:9/api/v1/"),
        ("http://[::1]:8000/api/v1/", "http://[::1]:8000/api/v1/"),
        ("https://example.org:8443/gc/api/v1", "https://example.org:8443/gc/api/v1/"),
    ],
)
def test_normalise(raw: str, expected: str) -> None:
    assert normalise_server_url(raw) == expected


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("http://grand-challenge.org/api/v1/", "plain http"),
        ("http://10.0.0.1/api/v1/", "plain http"),
        ("http://128.0.0.1/api/v1/", "plain http"),
        ("http://localhost.evil.com/api/v1/", "plain http"),
        ("ftp://grand-challenge.org/", "only https"),
        ("grand-challenge.org/api/v1/", "no scheme"),
        ("https://user:pw@grand-challenge.org/api/v1/", "credentials"),
        ("https:///api/v1/", "no host"),
        ("https://grand-challenge.org/api/v1/?x=1", "query"),
        ("", "empty"),
    ],
)
def test_unsafe_or_invalid_urls_are_config_errors(raw: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        normalise_server_url(raw, source="--server")
    assert needle in str(info.value)


def test_bad_url_message_names_its_source() -> None:
    with pytest.raises(ConfigError, match="GCBATCH_SERVER"):
        resolve_server(None, env={"GCBATCH_SERVER": "http://example.org/"})


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("10.0.0.1", False),
        ("0.0.0.0", False),
        ("example.org", False),
        ("::ffff:8.8.8.8", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


SECRET = "s3cr3t-T0KEN-value"


@pytest.mark.parametrize(
    "raw", [SECRET, f"Bearer {SECRET}", f"bearer  {SECRET}\n", f"  {SECRET}  "]
)
def test_token_forms(raw: str) -> None:
    token = Token(raw)
    assert token.reveal() == SECRET
    assert token.header_value() == f"Bearer {SECRET}"


def test_token_never_shows_itself() -> None:
    token = Token(SECRET)
    settings = Settings(server=DEFAULT_SERVER, token=token)
    for text in (
        repr(token),
        str(token),
        f"{token}",
        f"{token!r}",
        repr(settings),
        str(settings),
        "%s" % token,  # noqa: UP031
    ):
        assert SECRET not in text
    assert "***" in repr(token)
    with pytest.raises(TypeError):
        pickle.dumps(token)
    with pytest.raises(AttributeError):
        token._secret = "x"  # type: ignore[misc]
    assert Token(SECRET) == Token(f"Bearer {SECRET}")
    assert Token(SECRET) != Token("other")


@pytest.mark.parametrize("raw", ["", "   ", "Bearer", "two words"])
def test_malformed_tokens(raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        Token(raw)
    if raw.strip():
        assert raw not in str(info.value).replace("'Bearer <token>'", "")


def test_token_from_env_and_file(tmp_path: Path) -> None:
    env = {"GRAND_CHALLENGE_AUTHORIZATION": f"Bearer {SECRET}"}
    assert resolve_token(env=env) == Token(SECRET)
    path = tmp_path / "token"
    path.write_text("file-token\n")
    # an explicit flag beats the environment
    assert resolve_token(path, env=env) == Token("file-token")


def test_missing_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GRAND_CHALLENGE_AUTHORIZATION"):
        resolve_token(env={})
    assert resolve_token(env={}, required=False) is None
    with pytest.raises(ConfigError, match="cannot read"):
        resolve_token(tmp_path / "missing", env={})
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        resolve_token(empty, env={})


def test_resolve_settings_checks_server_before_token() -> None:
    with pytest.raises(ConfigError, match="plain http"):
        resolve_settings(server_flag="http://example.org/api/v1/", env={})
    s = resolve_settings(env={"GRAND_CHALLENGE_AUTHORIZATION": SECRET})
    assert s.server == DEFAULT_SERVER and s.token == Token(SECRET)


# --- the servers the token may go to (issue 14) ------------------------------------------


def _manifest_choice(url: str) -> ServerChoice:
    return choose_server(None, env={}, manifest_server=url)


def test_only_a_server_named_by_the_manifest_alone_needs_allowing(tmp_path: Path) -> None:
    assert choose_server("https://a.example/", env={}).source == "flag"
    assert choose_server(None, env={"GCBATCH_SERVER": "https://a.example/"}).source == "env"
    assert choose_server(None, env={}).source == "default"
    nowhere = tmp_path / "none"
    for choice in (choose_server("https://a.example/", env={}),
                   _manifest_choice("https://grand-challenge.org/api/v1/"),
                   _manifest_choice("https://GRAND-CHALLENGE.org:443/api/v1/")):
        check_server_allowed(choice, env={}, config_file=nowhere)
    with pytest.raises(ConfigError) as refused:
        check_server_allowed(_manifest_choice("http://127.0.0.2:8000/api/v1/"),
                             manifest="study.yaml", env={}, config_file=nowhere)
    message = str(refused.value)
    assert message.startswith("study.yaml: server: http://127.0.0.2:8000/api/v1/ is a server")
    assert "--server http://127.0.0.2:8000/api/v1/" in message
    assert "GCBATCH_ALLOWED_SERVERS=127.0.0.2:8000" in message and str(nowhere) in message


@pytest.mark.parametrize(("entries", "allowed"), [
    ("lab.example", True),  # a host: any port
    ("lab.example:8443", True),
    ("lab.example:9999", False),
    ("https://lab.example:8443/api/v1/", True),  # a URL: its host and port
    ("other.example, lab.example:8443", True),
    ("lab.example.evil", False),
    ("evil-lab.example", False),
])
def test_allowed_hosts_from_the_environment(entries: str, allowed: bool, tmp_path: Path
                                            ) -> None:
    choice = _manifest_choice("https://lab.example:8443/api/v1/")
    env = {"GCBATCH_ALLOWED_SERVERS": entries}
    if allowed:
        check_server_allowed(choice, env=env, config_file=tmp_path / "none")
    else:
        with pytest.raises(ConfigError):
            check_server_allowed(choice, env=env, config_file=tmp_path / "none")


def test_allowed_hosts_from_the_users_config_file(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    listing = allowed_servers_file(env)
    assert listing == tmp_path / "gcbatch" / "allowed-servers"
    listing.parent.mkdir()
    listing.write_text("# mine\nlab.example  # the lab's\n", encoding="utf-8")
    check_server_allowed(_manifest_choice("https://lab.example/api/v1/"), env=env)
    with pytest.raises(ConfigError):
        check_server_allowed(_manifest_choice("https://other.example/api/v1/"), env=env)


def test_a_token_file_is_a_small_regular_file(tmp_path: Path) -> None:
    good = tmp_path / "token"
    good.write_text(f"Bearer {SECRET}\n")
    token = resolve_token(good, env={})
    assert token is not None and token.reveal() == SECRET
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="is not a regular file"):
        resolve_token(fifo, env={})
    big = tmp_path / "big"
    big.write_bytes(b"x" * (64 * 1024 + 1))
    with pytest.raises(ConfigError, match="larger than 64 KiB"):
        resolve_token(big, env={})
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        resolve_token(binary, env={})


def test_a_ca_file_that_cannot_be_loaded_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match=r"SSL_CERT_FILE=.*missing.pem: cannot load"):
        ssl_context()
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match="the CA file"):
        ssl_context(str(bad))
    monkeypatch.delenv("SSL_CERT_FILE")
    assert ssl_context().verify_mode.name == "CERT_REQUIRED"
