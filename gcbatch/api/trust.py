"""Which certificates a server's TLS certificate is verified against.

Self-hosted Grand Challenge instances and hospital or corporate networks often present
a certificate signed by a private CA. Where the trusted certificates come from, first
that is set wins:

1. ``--ca-bundle PATH`` (a PEM file, or a folder of hashed certificates as
   ``openssl rehash`` makes),
2. ``GCBATCH_CA_BUNDLE``,
3. ``SSL_CERT_FILE`` (OpenSSL's variable, which httpx, curl and gcapi also read),
4. ``REQUESTS_CA_BUNDLE`` (the requests library's, often set for pip and Python tools on
   managed machines),
5. ``SSL_CERT_DIR`` (OpenSSL's folder of certificates; last of the variables because
   systems often set it to their own folder, which must not hide a file the user named),
6. otherwise the certifi bundle shipped with httpx's dependencies (the public CAs).

Separately, ``--truststore`` (or ``GCBATCH_TRUSTSTORE=1``) verifies against the operating
system's trust store (Windows' certificate store, macOS' keychain, the system's CA
folder on Linux), where IT departments install their CAs; it needs the optional
``truststore`` package (``pip install 'gcbatch[truststore]'``). With a CA file as well,
both are trusted.

A CA file that is missing, unreadable or holds no certificate is a
:class:`~gcbatch.errors.ConfigError` (exit 2) naming where it came from, before any
request. :func:`describe` names the source in the words of a certificate failure's hint.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

from gcbatch.errors import ConfigError

__all__ = [
    "CA_BUNDLE_ENV",
    "CA_ENV_ORDER",
    "TRUSTSTORE_ENV",
    "Trust",
    "as_trust",
    "certificate_advice",
    "describe",
    "resolve_trust",
    "ssl_context",
    "tls_failure",
]

CA_BUNDLE_ENV = "GCBATCH_CA_BUNDLE"
TRUSTSTORE_ENV = "GCBATCH_TRUSTSTORE"
#: the environment's CA variables, by precedence (after the flag)
CA_ENV_ORDER = (CA_BUNDLE_ENV, "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "SSL_CERT_DIR")
_TRUE = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True)
class Trust:
    """What to verify servers against: a CA file or folder (and who named it), and/or
    the operating system's trust store. Neither: certifi's public CAs."""

    ca: str | None = None
    #: where ``ca`` came from: ``--ca-bundle`` or the variable's name
    source: str = ""
    truststore: bool = False


def resolve_trust(ca_bundle: str | os.PathLike[str] | None = None, truststore: bool = False,
                  *, env: Mapping[str, str] | None = None) -> Trust:
    """The trust settings by precedence (module docstring). Pure: reads no file."""
    environ = os.environ if env is None else env
    use_store = truststore or environ.get(TRUSTSTORE_ENV, "").strip().lower() in _TRUE
    if ca_bundle is not None and str(ca_bundle).strip():
        return Trust(os.fspath(ca_bundle), "--ca-bundle", use_store)
    for name in CA_ENV_ORDER:
        value = environ.get(name, "").strip()
        if value:
            return Trust(value, name, use_store)
    return Trust(None, "", use_store)


def describe(trust: Trust) -> str:
    """The trust in force, in words (for a certificate failure's message)."""
    parts = []
    if trust.ca is not None:
        parts.append(f"the CA certificates of {trust.source}={trust.ca}"
                     if trust.source != "--ca-bundle" else f"--ca-bundle {trust.ca}")
    if trust.truststore:
        parts.append("the operating system's trust store")
    return " and ".join(parts) if parts else "the public CAs of the certifi bundle"


def _where(trust: Trust) -> str:
    return (f"--ca-bundle {trust.ca}" if trust.source == "--ca-bundle"
            else f"{trust.source}={trust.ca}")


def _system_context() -> ssl.SSLContext:
    try:
        import truststore
    except ImportError:
        raise ConfigError(
            f"--truststore ({TRUSTSTORE_ENV}) needs the truststore package, which is not "
            "installed: pip install 'gcbatch[truststore]' (or pip install truststore); or "
            "name the CA instead with --ca-bundle PATH") from None
    context: ssl.SSLContext = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return context


def as_trust(verify: bool | str | ssl.SSLContext | Trust) -> Trust:
    """The :class:`Trust` a ``verify`` argument stands for (a context: the environment's
    words, for messages)."""
    if isinstance(verify, Trust):
        return verify
    if isinstance(verify, str):
        return Trust(verify, "--ca-bundle")
    return resolve_trust()


def ssl_context(verify: bool | str | ssl.SSLContext | Trust = True) -> ssl.SSLContext:
    """The TLS context to verify servers with: ``verify`` as given (a context, a CA file,
    a :class:`Trust`, False for none), True → :func:`resolve_trust` of the environment.
    A CA that cannot be loaded is a ConfigError naming where it came from."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    import httpx  # (lazily: resolving settings must not cost the import of httpx)

    if verify is False:
        return httpx.create_ssl_context(verify=False, trust_env=False)
    trust = as_trust(verify)
    if trust.ca is None:
        if trust.truststore:
            return _system_context()
        return httpx.create_ssl_context(verify=True, trust_env=False)
    where = _where(trust)
    if not os.path.exists(trust.ca):
        raise ConfigError(f"{where}: no such file or folder; point it at a PEM file of the "
                          "CA certificates to trust, or unset it")
    is_dir = os.path.isdir(trust.ca)
    try:
        if trust.truststore:
            context = _system_context()
            context.load_verify_locations(cafile=None if is_dir else trust.ca,
                                          capath=trust.ca if is_dir else None)
            return context
        return ssl.create_default_context(cafile=None if is_dir else trust.ca,
                                          capath=trust.ca if is_dir else None)
    except (OSError, ssl.SSLError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise ConfigError(
            f"{where}: cannot load CA certificates from it ({reason}); point it at a "
            "PEM file of trusted certificates, or unset it"
        ) from None


def tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error under a transport error (httpx wraps httpcore's, which wraps
    ``ssl``'s), or None when it is no TLS failure."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def certificate_advice(failure: ssl.SSLError, host: str, trust: Trust) -> str:
    """What failed and what to do, for a TLS failure talking to ``host``."""
    if isinstance(failure, ssl.SSLCertVerificationError):
        what = failure.verify_message or failure.reason or str(failure)
        return (
            f"the TLS certificate of {host} could not be verified ({what}) against "
            f"{describe(trust)}. Not retried: trying again cannot change that. If the "
            "server uses a private or corporate CA, pass --ca-bundle PATH (a PEM file of "
            f"that CA; or set {CA_BUNDLE_ENV}, SSL_CERT_FILE or REQUESTS_CA_BUNDLE), or "
            f"--truststore ({TRUSTSTORE_ENV}=1) to trust the operating system's "
            "certificates; if the name does not match, use the URL the certificate is for")
    reason = failure.reason or str(failure)
    return (f"the TLS handshake with {host} failed ({reason}); not retried. Is it an https "
            "server on that port? (A proxy or firewall that intercepts TLS needs its CA: "
            "--ca-bundle PATH or --truststore)")
