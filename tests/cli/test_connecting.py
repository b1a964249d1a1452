"""Issue 18's "Connecting" must-shows: the real CLI against a TLS sandbox whose certificate
is signed by its own CA.

- ``--ca-bundle`` works, and so do ``GCBATCH_CA_BUNDLE``, ``SSL_CERT_FILE`` and
  ``REQUESTS_CA_BUNDLE``; ``sandbox inspect`` reads the same settings (``--cafile`` is
  an alias).
- Without them a command fails at once: ONE connection attempt (counted by a TCP relay in
  front of the sandbox: a retried handshake would open another), a message naming the
  certificate problem and the flag, exit 2, no traceback. The time it took is printed
  (``-s`` shows it), not asserted.
- ``HTTPS_PROXY``: every request, the storage's uploads included, goes through the proxy
  as a CONNECT tunnel; the proxy never sees the token or a path in clear (``NO_PROXY``:
  ``tests/api/test_trust.py``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from gcbatch.sandbox import RunningSandbox
from gcbatch.sandbox.lifecycle import make_mha

pytestmark = pytest.mark.slow

TOKEN = "demo-token"
_TLS_VARS = ("GCBATCH_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
             "GCBATCH_TRUSTSTORE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy",
             "NO_PROXY", "no_proxy", "GRAND_CHALLENGE_AUTHORIZATION", "GCBATCH_SERVER")


def run_cli(args: Sequence[str], cwd: Path, **env_extra: str
            ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in _TLS_VARS}
    env.update(NO_COLOR="1", GRAND_CHALLENGE_AUTHORIZATION=TOKEN, **env_extra)
    return subprocess.run([sys.executable, "-m", "gcbatch", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


class Relay:
    """A TCP relay to 127.0.0.1: counts the connections made to it and keeps every byte
    it carried. ``connect=True``: an HTTP CONNECT proxy instead (any host it is asked for
    is 127.0.0.1), which also keeps the CONNECT requests it read in clear."""

    def __init__(self, target_port: int = 0, *, connect: bool = False,
                 refuse: bool = False) -> None:
        self.target_port = target_port
        self.connect = connect
        self.refuse = refuse
        self.connections = 0
        self.heads: list[bytes] = []
        self.carried = bytearray()
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        port = self.target_port
        try:
            if self.connect:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    head += chunk
                with self._lock:
                    self.heads.append(head)
                if self.refuse:
                    conn.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                                 b"Content-Length: 0\r\n\r\n")
                    conn.close()
                    return
                target = head.split(b"\r\n", 1)[0].split()[1].decode()
                port = int(target.rsplit(":", 1)[1])
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            upstream = socket.create_connection(("127.0.0.1", port))
        except OSError:
            conn.close()
            return
        for src, dst in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    self.carried += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def relay() -> Callable[..., Relay]:
    made: list[Relay] = []

    def factory(*args: int, **kwargs: bool) -> Relay:
        made.append(Relay(*args, **kwargs))
        return made[-1]

    yield factory  # type: ignore[misc]
    for r in made:
        r.close()


def manifest(folder: Path, *, image: bool = False) -> Path:
    lines = ["version: 1", "algorithm: risk-calculator" if not image else
             "algorithm: lung-nodule-detector", "cases:", "  - id: c1", "    inputs:"]
    if image:
        (folder / "ct.mha").write_bytes(make_mha(4, 4, bytes(16)))
        lines.append("      ct-image: {file: ct.mha}")
    else:
        lines += ["      age: {value: 3}", "      lung-volume: {value: 4.2}"]
    path = folder / "study.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def tls_sandbox(make_sandbox: Callable[..., RunningSandbox]) -> RunningSandbox:
    return make_sandbox(tls=True)


def test_ca_bundle_flag_and_every_variable_work(tls_sandbox: RunningSandbox,
                                                tmp_path: Path) -> None:
    study = manifest(tmp_path)
    ca = str(tls_sandbox.cafile)
    server = ["--server", tls_sandbox.api_url]
    ok = run_cli(["plan", str(study), *server, "--ca-bundle", ca], tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "1 to submit" in ok.stdout
    for variable in ("GCBATCH_CA_BUNDLE", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        result = run_cli(["plan", str(study), *server], tmp_path, **{variable: ca})
        assert result.returncode == 0, (variable, result.stderr)
    # a folder of hashed certificates, as SSL_CERT_DIR names
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(ca, certs / "ca.pem")
    rehash = shutil.which("openssl")
    if rehash is not None:
        subprocess.run([rehash, "rehash", str(certs)], check=True, capture_output=True)
        result = run_cli(["plan", str(study), *server], tmp_path, SSL_CERT_DIR=str(certs))
        assert result.returncode == 0, result.stderr
    # the flag wins over a variable naming a CA that does not sign this server
    wrong = run_cli(["plan", str(study), *server, "--ca-bundle", ca], tmp_path,
                    GCBATCH_CA_BUNDLE=str(tmp_path / "missing.pem"))
    assert wrong.returncode == 0, wrong.stderr


def test_without_the_ca_a_command_fails_at_once_and_says_what_to_do(
        tls_sandbox: RunningSandbox, tmp_path: Path, relay: Callable[..., Relay]) -> None:
    study = manifest(tmp_path)
    counter = relay(int(tls_sandbox.api_url.split(":")[2].split("/")[0]))
    server = f"https://127.0.0.1:{counter.port}/api/v1/"
    started = time.monotonic()
    result = run_cli(["plan", str(study), "--server", server], tmp_path)
    took = time.monotonic() - started
    print(f"\nwithout the CA: exit {result.returncode} after {took:.2f} s (process start "
          f"included), {counter.connections} connection(s)")
    assert result.returncode == 2, result.stderr
    assert counter.connections == 1  # not retried
    message = result.stderr
    assert "Traceback" not in message
    assert "could not be verified (unable to get local issuer certificate)" in message
    assert "--ca-bundle PATH" in message and "--truststore" in message
    assert "Not retried" in message
    # the same request with the CA: through the same relay, it works
    ok = run_cli(["plan", str(study), "--server", server, "--ca-bundle",
                  str(tls_sandbox.cafile)], tmp_path)
    assert ok.returncode == 0, ok.stderr


def test_a_missing_or_unreadable_ca_file_is_a_message(tls_sandbox: RunningSandbox,
                                                      tmp_path: Path) -> None:
    study = manifest(tmp_path)
    server = ["--server", tls_sandbox.api_url]
    missing = run_cli(["plan", str(study), *server], tmp_path,
                      SSL_CERT_FILE=str(tmp_path / "nope.pem"))
    assert missing.returncode == 2
    assert re.search(r"SSL_CERT_FILE=.*nope.pem: no such file", missing.stderr)
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    bad = run_cli(["status", str(study), *server, "--ca-bundle", str(junk)], tmp_path)
    assert bad.returncode == 2
    assert "--ca-bundle" in bad.stderr and "cannot load CA certificates" in bad.stderr
    assert "Traceback" not in bad.stderr + missing.stderr


def test_sandbox_inspect_reads_the_same_trust_settings(tls_sandbox: RunningSandbox,
                                                       tmp_path: Path) -> None:
    base = ["sandbox", "inspect", "--url", tls_sandbox.base_url,
            "--admin-token", tls_sandbox.admin_token]
    for extra, env in (([], {"SSL_CERT_FILE": str(tls_sandbox.cafile)}),
                       (["--cafile", str(tls_sandbox.cafile)], {}),
                       (["--ca-bundle", str(tls_sandbox.cafile)], {})):
        result = run_cli([*base, *extra], tmp_path, **env)
        assert result.returncode == 0, (extra, env, result.stderr)
        assert result.stdout.startswith("sandbox https://")
    refused = run_cli(base, tmp_path)
    assert refused.returncode == 2
    assert "could not be verified" in refused.stderr and "--ca-bundle" in refused.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the certificate for a "
                    "non-loopback name is made with openssl")
def test_https_proxy_tunnels_everything_and_sees_no_secret(
        make_sandbox: Callable[..., RunningSandbox], tmp_path: Path,
        relay: Callable[..., Relay], monkeypatch: pytest.MonkeyPatch) -> None:
    # a name that is not loopback (loopback never goes through a proxy); only the proxy
    # resolves it, to 127.0.0.1
    from gcbatch.sandbox import certificates

    monkeypatch.setattr(certificates, "_LEAF_EXT", certificates._LEAF_EXT.replace(
        "DNS:localhost", "DNS:localhost,DNS:gc.test"))
    sandbox = make_sandbox(tls=True)
    port = sandbox.api_url.split(":")[2].split("/")[0]
    proxy = relay(connect=True)
    study = manifest(tmp_path, image=True)
    server = ["--server", f"https://gc.test:{port}/api/v1/", "--ca-bundle",
              str(sandbox.cafile)]
    result = run_cli(["apply", str(study), *server], tmp_path,
                     HTTPS_PROXY=f"http://user:s3cret@127.0.0.1:{proxy.port}")
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout + result.stderr
    heads = b"".join(proxy.heads)
    # the proxy's credentials go to the proxy (base64 of user:s3cret), in each CONNECT
    assert all(b"Proxy-Authorization: Basic dXNlcjpzM2NyZXQ=" in h for h in proxy.heads)
    assert proxy.connections >= 1
    assert all(h.startswith(f"CONNECT gc.test:{port} ".encode()) for h in proxy.heads)
    uploads = [r for r in sandbox.admin.requests(0)["requests"] if r["method"] == "PUT"]
    assert uploads, "the image went to storage (a presigned PUT)"
    seen = heads + bytes(proxy.carried)
    assert TOKEN.encode() not in seen
    assert b"/api/v1/" not in seen and b"X-Amz-Signature" not in seen


@pytest.mark.parametrize("command", [["plan"], ["apply"], ["status"], ["wait"], ["download"],
                                     ["adopt"], ["init"], ["schema"], ["sandbox", "inspect"]])
def test_every_command_that_connects_takes_the_tls_flags(command: list[str]) -> None:
    from click.testing import CliRunner

    from gcbatch.cli import cli

    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "--ca-bundle" in result.output and "--truststore" in result.output


def test_schema_and_init_reach_a_private_ca_server(tls_sandbox: RunningSandbox,
                                                   tmp_path: Path) -> None:
    server = ["--server", tls_sandbox.api_url, "--algorithm", "risk-calculator"]
    refused = run_cli(["schema", *server, "--out", "-"], tmp_path)
    assert refused.returncode == 2 and "--ca-bundle" in refused.stderr
    schema = run_cli(["schema", *server, "--out", "-", "--ca-bundle",
                      str(tls_sandbox.cafile)], tmp_path)
    assert schema.returncode == 0, schema.stderr
    assert '"age"' in schema.stdout
    init = run_cli(["init", "study.yaml", *server], tmp_path,
                   GCBATCH_CA_BUNDLE=str(tls_sandbox.cafile))
    assert init.returncode == 0, init.stderr
    assert (tmp_path / "study.yaml").is_file()


def test_a_proxy_that_refuses_is_named_and_not_retried(tmp_path: Path,
                                                       relay: Callable[..., Relay]) -> None:
    proxy = relay(connect=True, refuse=True)
    study = manifest(tmp_path)
    result = run_cli(["plan", str(study), "--server", "https://gc.test/api/v1/"], tmp_path,
                     HTTPS_PROXY=f"http://user:s3cret@127.0.0.1:{proxy.port}")
    assert result.returncode == 1, result.stderr
    assert "407" in result.stderr
    assert f"through the proxy http://127.0.0.1:{proxy.port} of HTTPS_PROXY" in result.stderr
    assert "s3cret" not in result.stderr and "Traceback" not in result.stderr
    assert proxy.connections == 1
