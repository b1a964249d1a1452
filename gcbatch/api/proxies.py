"""Which requests go through an HTTP proxy, decided per variable (never by httpx's
``trust_env``, which would also pick up ``.netrc`` credentials and ``HTTP_PROXY``).

- ``HTTPS_PROXY`` (or ``https_proxy``; else ``ALL_PROXY``/``all_proxy``) is honoured for
  ``https`` URLs, the API's and the storage's alike. The proxy is asked to ``CONNECT`` to
  ``host:port`` and the TLS session runs through that tunnel, end to end with the server:
  the proxy sees the host name, never the token, a path or a presigned URL's signature
  (its query string). Corporate networks often allow no other way out, and uploads to
  storage must take it too, so presigned URLs go through the proxy as well.
- ``HTTP_PROXY`` is **not** honoured: gcbatch speaks plain ``http`` only to loopback (the
  sandbox), and a proxy for ``http`` URLs would read everything in clear, the token and
  presigned URLs included.
- ``NO_PROXY`` (or ``no_proxy``): comma- or space-separated host names (``example.org``
  also covers its subdomains; a leading ``.`` or ``*.`` is the same), ``host:port``, IP
  addresses or networks (``10.0.0.0/8``), or ``*`` for every host. Loopback hosts never
  go through a proxy.

A proxy URL is ``http://host:port`` (or ``https://``; a bare ``host:port`` means
``http://``), with ``user:password@`` if the proxy asks for it. SOCKS proxies would need
another package and are refused with a message. Credentials are never shown: messages
name a proxy by :func:`display_proxy`.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from gcbatch.errors import ConfigError

__all__ = ["ProxyRules", "RoutingTransport", "display_proxy", "resolve_proxies"]

_HTTPS_VARS = ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
_NO_PROXY_VARS = ("no_proxy", "NO_PROXY")


def _is_loopback(host: str) -> bool:
    name = host.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def display_proxy(url: str) -> str:
    """``scheme://host:port`` of a proxy URL: what a message may show (no credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    netloc = f"[{host}]" if ":" in host else host
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{netloc}" + (f":{port}" if port else "")


@dataclass(frozen=True)
class ProxyRules:
    """The proxy for ``https`` requests (None: none) and the hosts exempt from it."""

    https_proxy: str | None = None
    #: the variable that named it (for messages)
    source: str = ""
    no_proxy: tuple[str, ...] = ()

    def proxy_for(self, scheme: str, host: str, port: int | None = None) -> str | None:
        """The proxy URL a request to ``scheme://host:port`` goes through, or None."""
        if self.https_proxy is None or scheme.lower() != "https" or _is_loopback(host):
            return None
        name = host.strip("[]").lower().rstrip(".")
        for entry in self.no_proxy:
            if _exempts(entry, name, port if port is not None else 443):
                return None
        return self.https_proxy


def _exempts(entry: str, host: str, port: int) -> bool:
    if entry == "*":
        return True
    rule_host, rule_port = entry, None
    if entry.count(":") == 1:  # host:port (an IPv6 address has more colons)
        rule_host, _, port_text = entry.partition(":")
        if port_text.isdigit():
            rule_port = int(port_text)
    if rule_port is not None and rule_port != port:
        return False
    rule_host = rule_host.strip("[]").lower().rstrip(".")
    try:
        network = ipaddress.ip_network(rule_host, strict=False)
    except ValueError:
        network = None
    if network is not None:
        try:
            return ipaddress.ip_address(host) in network
        except ValueError:
            return False
    rule_host = rule_host.removeprefix("*").removeprefix(".")
    return bool(rule_host) and (host == rule_host or host.endswith("." + rule_host))


def _check_proxy_url(value: str, name: str) -> str:
    text = value.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme.startswith("socks"):
        raise ConfigError(f"{name}: SOCKS proxies are not supported; use an HTTP proxy "
                          "(http://host:port) or unset it")
    if scheme not in ("http", "https"):
        raise ConfigError(f"{name}: a proxy URL is http://host:port (or https://), not "
                          f"{display_proxy(text)}")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise ConfigError(f"{name}: the proxy URL's port is not a number") from None
    if not parts.hostname:
        raise ConfigError(f"{name}: the proxy URL names no host")
    return text


def resolve_proxies(env: Mapping[str, str] | None = None) -> ProxyRules:
    """The proxy rules of the environment (module docstring); a malformed proxy URL is a
    ConfigError naming the variable (not its value: it may hold a password)."""
    environ = os.environ if env is None else env
    for name in _HTTPS_VARS:
        value = environ.get(name, "").strip()
        if value:
            proxy = _check_proxy_url(value, name)
            break
    else:
        return ProxyRules()
    entries: list[str] = []
    for name in _NO_PROXY_VARS:
        value = environ.get(name, "")
        if value.strip():
            entries = value.replace(",", " ").split()
            break
    return ProxyRules(proxy, _name_of(environ), tuple(entries))


def _name_of(environ: Mapping[str, str]) -> str:
    """The variable the https proxy came from."""
    return next(n for n in _HTTPS_VARS if environ.get(n, "").strip())


class RoutingTransport(httpx.BaseTransport):
    """Each request to the direct transport or, when :class:`ProxyRules` say so, to the
    proxy's (one per proxy URL: there is at most one, the https proxy)."""

    def __init__(self, rules: ProxyRules, make: Callable[[str | None], httpx.BaseTransport]
                 ) -> None:
        self._rules = rules
        self._direct = make(None)
        self._proxied = make(rules.https_proxy) if rules.https_proxy else None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if self._proxied is not None and self._rules.proxy_for(url.scheme, url.host, url.port):
            return self._proxied.handle_request(request)
        return self._direct.handle_request(request)

    def close(self) -> None:
        self._direct.close()
        if self._proxied is not None:
            self._proxied.close()
