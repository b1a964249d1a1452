"""TLS for the sandbox: a throw-away local CA and a server certificate for localhost.

:func:`make_certificates` makes them with the ``openssl`` tool, else the ``cryptography``
package. Clients verify against the CA file (``cafile``), e.g. ``SSL_CERT_FILE=<cafile>``
for gcapi or ``verify=<cafile>`` for httpx.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CertificateError", "Certificates", "make_certificates"]


class CertificateError(RuntimeError):
    """No way to make a TLS certificate here (no ``openssl`` and no ``cryptography``)."""


@dataclass(frozen=True)
class Certificates:
    """A local CA (``cafile``, what clients trust) and the server's certificate and key."""

    cafile: Path
    certfile: Path
    keyfile: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.certfile), str(self.keyfile))
        return context


_CA_CONF = """\
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
CN = gcbatch sandbox local CA
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""

_LEAF_CONF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = localhost
"""

_LEAF_EXT = """\
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1,IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def make_certificates(directory: Path, *, days: int = 30) -> Certificates:
    """A fresh local CA and a server certificate for localhost, written to ``directory``.

    Two certificates rather than one self-signed leaf because strict verifiers (Python
    3.13's default ``VERIFY_X509_STRICT``) refuse a CA certificate used as a server's.
    """
    directory.mkdir(parents=True, exist_ok=True)
    certs = Certificates(
        cafile=directory / "sandbox-ca.pem",
        certfile=directory / "sandbox-server.pem",
        keyfile=directory / "sandbox-server.key",
    )
    openssl = shutil.which("openssl")
    if openssl is not None:
        _make_with_openssl(openssl, directory, certs, days)
        return certs
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise CertificateError(
            "--tls needs the 'openssl' command or the Python 'cryptography' package; "
            "install one of them (e.g. apt-get install openssl, or pip install cryptography)"
        ) from None
    _make_with_cryptography(certs, days)
    return certs


def _make_with_openssl(openssl: str, directory: Path, certs: Certificates, days: int) -> None:
    with tempfile.TemporaryDirectory(dir=directory) as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "ca.cnf").write_text(_CA_CONF)
        (tmp / "leaf.cnf").write_text(_LEAF_CONF)
        (tmp / "leaf.ext").write_text(_LEAF_EXT)
        ca_key = tmp / "ca.key"
        csr = tmp / "leaf.csr"
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        env = {**os.environ, "OPENSSL_CONF": str(tmp / "ca.cnf")}
        commands = [
            [
                openssl,
                "req",
                "-x509",
                *ec,
                "-keyout",
                str(ca_key),
                "-out",
                str(certs.cafile),
                "-days",
                str(days),
                "-config",
                str(tmp / "ca.cnf"),
            ],
            [
                openssl,
                "req",
                "-new",
                *ec,
                "-keyout",
                str(certs.keyfile),
                "-out",
                str(csr),
                "-config",
                str(tmp / "leaf.cnf"),
            ],
            [
                openssl,
                "x509",
                "-req",
                "-in",
                str(csr),
                "-CA",
                str(certs.cafile),
                "-CAkey",
                str(ca_key),
                "-set_serial",
                str(int.from_bytes(os.urandom(8), "big")),
                "-days",
                str(days),
                "-out",
                str(certs.certfile),
                "-extfile",
                str(tmp / "leaf.ext"),
            ],
        ]
        for command in commands:
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                raise CertificateError(
                    f"openssl failed ({' '.join(command[1:3])}): {done.stderr.strip()}"
                )
    os.chmod(certs.keyfile, 0o600)


def _make_with_cryptography(certs: Certificates, days: int) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    not_before = now - datetime.timedelta(minutes=5)
    not_after = now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gcbatch sandbox local CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    certs.cafile.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    certs.certfile.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    certs.keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(certs.keyfile, 0o600)
