"""Which CA certificates verify a server (gcbatch.api.trust) and which requests take a
proxy (gcbatch.api.proxies): precedence, messages, no tracebacks."""

from __future__ import annotations

import ssl
import sys
from pathlib import Path

import httpx
import pytest

from gcbatch.api.proxies import ProxyRules, RoutingTransport, resolve_proxies
from gcbatch.api.trust import (
    Trust,
    certificate_advice,
    describe,
    resolve_trust,
    ssl_context,
    tls_failure,
)
from gcbatch.errors import ConfigError
from gcbatch.sandbox.certificates import make_certificates


@pytest.fixture(scope="module")
def cafile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certificates(tmp_path_factory.mktemp("ca")).cafile


ALL = {"GCBATCH_CA_BUNDLE": "/a", "SSL_CERT_FILE": "/b", "REQUESTS_CA_BUNDLE": "/c",
       "SSL_CERT_DIR": "/d"}


@pytest.mark.parametrize(("drop", "expected"), [
    ((), ("/a", "GCBATCH_CA_BUNDLE")),
    (("GCBATCH_CA_BUNDLE",), ("/b", "SSL_CERT_FILE")),
    (("GCBATCH_CA_BUNDLE", "SSL_CERT_FILE"), ("/c", "REQUESTS_CA_BUNDLE")),
    (("GCBATCH_CA_BUNDLE", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"), ("/d", "SSL_CERT_DIR")),
    (tuple(ALL), (None, "")),
])
def test_the_environment_by_precedence(drop: tuple[str, ...],
                                       expected: tuple[str | None, str]) -> None:
    env = {k: v for k, v in ALL.items() if k not in drop}
    trust = resolve_trust(env=env)
    assert (trust.ca, trust.source) == expected
    assert not trust.truststore


def test_the_flag_beats_every_variable() -> None:
    assert resolve_trust("/flag", env=ALL) == Trust("/flag", "--ca-bundle", False)
    assert resolve_trust(None, env={"GCBATCH_TRUSTSTORE": "1"}).truststore
    assert resolve_trust(None, True, env={}).truststore
    assert not resolve_trust(None, env={"GCBATCH_TRUSTSTORE": "0"}).truststore


def test_a_ca_file_that_cannot_be_used_is_a_message(tmp_path: Path, cafile: Path) -> None:
    with pytest.raises(ConfigError, match=r"--ca-bundle .*missing.pem: no such file"):
        ssl_context(Trust(str(tmp_path / "missing.pem"), "--ca-bundle"))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"REQUESTS_CA_BUNDLE=.*junk.pem: cannot load CA"):
        ssl_context(Trust(str(junk), "REQUESTS_CA_BUNDLE"))
    context = ssl_context(Trust(str(cafile), "--ca-bundle"))
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.cert_store_stats()["x509_ca"] == 1
    # a folder is a capath (certificates looked up by hash when needed)
    assert ssl_context(Trust(str(tmp_path), "SSL_CERT_DIR")).verify_mode == ssl.CERT_REQUIRED


def test_the_environment_is_read_when_nothing_is_given(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    for name in ALL:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "gone.pem"))
    with pytest.raises(ConfigError, match=r"REQUESTS_CA_BUNDLE=.*gone.pem"):
        ssl_context()


def test_truststore_adds_the_systems_certificates(cafile: Path) -> None:
    pytest.importorskip("truststore")
    context = ssl_context(Trust(str(cafile), "--ca-bundle", truststore=True))
    assert type(context).__module__.startswith("truststore")
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_truststore_missing_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "truststore", None)  # import fails
    with pytest.raises(ConfigError, match=r"pip install 'gcbatch\[truststore\]'"):
        ssl_context(Trust(None, "", truststore=True))


def test_a_certificate_failure_is_found_under_the_wrappers_and_explained() -> None:
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cause.verify_message = "self-signed certificate in certificate chain"
    inner = httpx.ConnectError("wrapped")
    inner.__cause__ = cause
    outer = httpx.ConnectError("outer")
    outer.__cause__ = inner
    found = tls_failure(outer)
    assert found is cause
    assert tls_failure(httpx.ConnectError("refused")) is None
    advice = certificate_advice(cause, "gc.example", Trust("/x.pem", "SSL_CERT_FILE"))
    assert "self-signed certificate in certificate chain" in advice
    assert "SSL_CERT_FILE=/x.pem" in advice
    assert "--ca-bundle" in advice and "--truststore" in advice
    assert describe(Trust()) == "the public CAs of the certifi bundle"


# -- proxies ---------------------------------------------------------------------------


def test_https_proxy_is_used_for_https_only_never_for_loopback() -> None:
    rules = resolve_proxies({"HTTPS_PROXY": "proxy.corp:3128", "HTTP_PROXY": "http://p:1"})
    assert rules.https_proxy == "http://proxy.corp:3128"
    assert rules.source == "HTTPS_PROXY"
    assert rules.proxy_for("https", "grand-challenge.org") == "http://proxy.corp:3128"
    assert rules.proxy_for("http", "grand-challenge.org") is None  # HTTP_PROXY ignored
    assert rules.proxy_for("https", "127.0.0.1") is None
    assert rules.proxy_for("https", "localhost") is None
    assert resolve_proxies({"HTTP_PROXY": "http://p:1"}) == ProxyRules()
    lower = resolve_proxies({"https_proxy": "http://a:1", "HTTPS_PROXY": "http://b:2"})
    assert lower.https_proxy == "http://a:1"
    assert resolve_proxies({"ALL_PROXY": "http://c:3"}).https_proxy == "http://c:3"


@pytest.mark.parametrize(("no_proxy", "host", "port", "proxied"), [
    ("example.org", "example.org", 443, False),
    ("example.org", "api.example.org", 443, False),
    (".example.org", "api.example.org", 443, False),
    ("*.example.org", "api.example.org", 443, False),
    ("example.org", "badexample.org", 443, True),
    ("example.org:8443", "example.org", 443, True),
    ("example.org:8443", "example.org", 8443, False),
    ("10.0.0.0/8", "10.1.2.3", 443, False),
    ("10.0.0.0/8", "11.1.2.3", 443, True),
    ("*", "anything.org", 443, False),
    ("a.org, b.org", "b.org", 443, False),
])
def test_no_proxy(no_proxy: str, host: str, port: int, proxied: bool) -> None:
    rules = resolve_proxies({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": no_proxy})
    assert (rules.proxy_for("https", host, port) is not None) is proxied


def test_a_bad_proxy_url_names_the_variable_never_its_password() -> None:
    with pytest.raises(ConfigError, match="SOCKS proxies are not supported") as info:
        resolve_proxies({"HTTPS_PROXY": "socks5://user:s3cret@p:1080"})
    assert "s3cret" not in str(info.value)
    with pytest.raises(ConfigError, match="HTTPS_PROXY: the proxy URL's port") as info:
        resolve_proxies({"HTTPS_PROXY": "http://user:s3cret@p:port"})
    assert "s3cret" not in str(info.value)


def test_the_routing_transport_sends_each_request_its_way() -> None:
    seen: list[tuple[str | None, str]] = []

    def make(proxy: str | None) -> httpx.BaseTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            seen.append((proxy, request.url.host))
            return httpx.Response(200)
        return httpx.MockTransport(handler)

    rules = resolve_proxies({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "direct.org"})
    with httpx.Client(transport=RoutingTransport(rules, make)) as client:
        for url in ("https://gc.org/", "https://direct.org/", "http://localhost/",
                    "https://s3.storage.org/bucket?X-Amz-Signature=x"):
            client.get(url)
    assert seen == [("http://p:3128", "gc.org"), (None, "direct.org"), (None, "localhost"),
                    ("http://p:3128", "s3.storage.org")]
