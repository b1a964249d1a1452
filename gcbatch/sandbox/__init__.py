"""The Grand Challenge emulator: start one, point a client at it, inspect what happened.

In-process, on loopback, in a background thread (tests, ``--sandbox``)::

    from gcbatch.sandbox import start_sandbox
    with start_sandbox(tls=True, faults=["POST algorithms/jobs/:503:0.2"]) as sb:
        sb.api_url          # "https://127.0.0.1:PORT/api/v1/"
        sb.token("demo")    # the seed's token for user demo (sandbox test data)
        sb.cafile           # the local CA to verify TLS against
        sb.admin.stats()    # jobs/uploads per user, ... (GET /_sandbox/stats)
        sb.admin_token      # what the admin API (/_sandbox/) requires over HTTP

Without sockets at all: ``httpx.Client(transport=SandboxTransport(app))``.

In a separate process, for tests that kill things with SIGKILL::

    proc = start_sandbox_process(tls=True)   # runs `python -m gcbatch sandbox serve --json`
    proc.api_url, proc.admin.stats(), proc.stop()
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import httpx

from gcbatch.sandbox.config import SandboxConfig
from gcbatch.sandbox.faults import FaultInjector, FaultPlan, FaultRule
from gcbatch.sandbox.server import (
    ADMIN_HEADER,
    Certificates,
    SandboxHTTPServer,
    make_certificates,
)
from gcbatch.sandbox.transport import SandboxTransport

if TYPE_CHECKING:
    from gcbatch.sandbox.app import SandboxApp

__all__ = [
    "ADMIN_HEADER",
    "ADMIN_TOKEN_ENV",
    "FaultPlan",
    "FaultsArg",
    "RunningSandbox",
    "SandboxAdmin",
    "SandboxApp",
    "SandboxConfig",
    "SandboxProcess",
    "SandboxTransport",
    "start_sandbox",
    "start_sandbox_process",
]

#: a fixed admin token for ``sandbox serve`` (else a random one) and ``sandbox inspect``
ADMIN_TOKEN_ENV = "GCBATCH_SANDBOX_ADMIN_TOKEN"

# What callers may pass as ``faults``: a plan, an injector to share, compact-syntax
# strings, or the JSON form (a plan object or a list of rules).
FaultsArg = FaultPlan | FaultInjector | Sequence[str] | Mapping[str, Any] | None


def __getattr__(name: str) -> Any:
    # SandboxApp is imported lazily so that `import gcbatch.sandbox` stays cheap for
    # commands that only need the admin client or the fault parser.
    if name == "SandboxApp":
        from gcbatch.sandbox.app import SandboxApp

        return SandboxApp
    raise AttributeError(name)


def _as_plan(faults: FaultsArg, latency_ms: float) -> FaultPlan:
    if isinstance(faults, FaultPlan):
        plan = faults
    elif isinstance(faults, FaultInjector):
        plan = faults.plan
    elif faults is None:
        plan = FaultPlan()
    elif isinstance(faults, Mapping):
        plan = FaultPlan.from_json(faults)
    else:
        plan = FaultPlan.parse(list(faults))
    if latency_ms:
        plan = FaultPlan(plan.rules, plan.latency_ms + float(latency_ms), plan.seed)
    return plan


def _plan_payload(
    faults: FaultPlan | Iterable[str | FaultRule | Mapping[str, Any]] | Mapping[str, Any] | None,
    latency_ms: float | None,
    seed: int | None,
) -> dict[str, Any]:
    if isinstance(faults, FaultPlan):
        payload = faults.to_json()
    elif isinstance(faults, Mapping):
        payload = dict(faults)
    else:
        rules: list[Any] = []
        for rule in faults or ():
            rules.append(rule.to_spec() if isinstance(rule, FaultRule) else rule)
        payload = {"rules": rules}
    if latency_ms is not None:
        payload["latency_ms"] = latency_ms
    if seed is not None:
        payload["seed"] = seed
    return payload


class SandboxAdmin:
    """The ``/_sandbox/`` endpoints of a running sandbox, over HTTP, with its admin token
    (the :data:`ADMIN_HEADER` header; a sandbox prints it when it starts)."""

    def __init__(
        self,
        base_url: str,
        *,
        admin_token: str,
        verify: ssl.SSLContext | str | bool = True,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        if isinstance(verify, str):
            verify = ssl.create_default_context(cafile=verify)
        self._client = httpx.Client(verify=verify, timeout=timeout, trust_env=False,
                                    headers={ADMIN_HEADER: admin_token})

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._client.request(method, f"{self.base_url}/_sandbox/{path}", **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(
                f"{method} /_sandbox/{path} -> {response.status_code}: {response.text}"
            )
        return response.json()

    def stats(self) -> Any:
        """``GET /_sandbox/stats``: counts of jobs, uploads, ... per user."""
        return self._call("GET", "stats")

    def requests(self, since: int = 0) -> Any:
        """``GET /_sandbox/requests?since=N``: the requests the app saw after ``since``."""
        return self._call("GET", "requests", params={"since": since})

    def config(self) -> Any:
        """``GET /_sandbox/config``: the settings in force."""
        return self._call("GET", "config")

    def set_config(self, **changes: Any) -> Any:
        """``POST /_sandbox/config``: change settings (e.g. ``max_active_jobs=2``)."""
        return self._call("POST", "config", json=changes)

    def faults(self, since: int = 0) -> Any:
        """``GET /_sandbox/faults``: the plan, per-rule counters, fault events."""
        return self._call("GET", "faults", params={"since": since})

    def set_faults(
        self,
        faults: FaultPlan
        | Iterable[str | FaultRule | Mapping[str, Any]]
        | Mapping[str, Any]
        | None = None,
        *,
        latency_ms: float | None = None,
        seed: int | None = None,
    ) -> Any:
        """``POST /_sandbox/faults``: replace the fault plan (``None``: no faults)."""
        return self._call("POST", "faults", json=_plan_payload(faults, latency_ms, seed))

    def clear_faults(self) -> Any:
        return self.set_faults(None)


class _SandboxHandle:
    """What both an in-thread and an in-subprocess sandbox offer."""

    base_url: str
    cafile: Path | None
    #: what the admin API (``/_sandbox/``) requires in the :data:`ADMIN_HEADER` header
    admin_token: str
    _tokens: Mapping[str, str]
    _admin: SandboxAdmin | None = None

    @property
    def api_url(self) -> str:
        """``scheme://host:port/api/v1/`` (with the trailing slash the API needs)."""
        return self.base_url + "/api/v1/"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What to pass as httpx's ``verify``: a context trusting the CA with TLS, else True."""
        if self.cafile is None:
            return True
        return ssl.create_default_context(cafile=str(self.cafile))

    def token(self, user: str = "demo") -> str:
        """The seed's token for ``user`` (seed tokens are sandbox test data)."""
        try:
            return self._tokens[user]
        except KeyError:
            raise KeyError(f"the sandbox's seed has no user {user!r}") from None

    @property
    def users(self) -> tuple[str, ...]:
        return tuple(self._tokens)

    @property
    def admin(self) -> SandboxAdmin:
        if self._admin is None:
            self._admin = SandboxAdmin(self.base_url, admin_token=self.admin_token,
                                       verify=self.verify)
        return self._admin

    def client(self, user: str | None = "demo", **kwargs: Any) -> httpx.Client:
        """An httpx client on the API for ``user`` (None: anonymous). Caller closes it."""
        headers = dict(kwargs.pop("headers", {}))
        if user is not None:
            headers["Authorization"] = f"Bearer {self.token(user)}"
        kwargs.setdefault("timeout", 30.0)
        return httpx.Client(
            base_url=self.api_url, headers=headers, verify=self.verify, trust_env=False, **kwargs
        )


class RunningSandbox(_SandboxHandle):
    """A sandbox served by a thread of this process; a context manager.

    ``app`` is the :class:`SandboxApp`, ``server`` the HTTP server, ``faults`` the
    injector both the server and :meth:`transport` use.
    """

    def __init__(
        self,
        app: SandboxApp,
        server: SandboxHTTPServer,
        *,
        tokens: Mapping[str, str],
        certificates: Certificates | None,
        cleanup: Callable[[], None],
    ) -> None:
        self.app = app
        self.server = server
        self.faults = server.faults
        self.certificates = certificates
        self.cafile = certificates.cafile if certificates is not None else None
        self.base_url = server.base_url
        self.admin_token = server.admin_token
        self._tokens = dict(tokens)
        self._cleanup = cleanup
        self._stopped = False
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"gcbatch-sandbox-{server.port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return self.server.port

    def transport(self) -> SandboxTransport:
        """An in-process httpx transport on the same app and the same fault plan."""
        return SandboxTransport(self.app, self.faults, sleep=self.server.sleep)

    def stop(self) -> None:
        """Stop serving, close the app and remove temporary files (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self.server.stop()
            self._thread.join(timeout=10)
        finally:
            if self._admin is not None:
                self._admin.close()
            try:
                self.app.close()
            finally:
                self._cleanup()

    def __enter__(self) -> RunningSandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _seed_tokens(app: Any, seed: Path | str | None) -> dict[str, str]:
    seed_obj = getattr(app, "seed", None)
    if seed_obj is None or not hasattr(seed_obj, "users"):
        from gcbatch.sandbox.seed import load_seed

        seed_obj = load_seed(seed)
    return {user.name: user.token for user in seed_obj.users}


def start_sandbox(
    db: Path | str | None = None,
    seed: Path | str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: bool = False,
    config: SandboxConfig | None = None,
    faults: FaultsArg = None,
    latency_ms: float = 0,
    *,
    access_log: IO[str] | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    cert_dir: Path | str | None = None,
    admin_token: str | None = None,
) -> RunningSandbox:
    """Start a sandbox on ``host:port`` (0: a free port) in a background thread.

    ``db``: the SQLite file (None: a fresh one in a temporary directory, removed on
    stop). ``seed``: a seed YAML (None: the default world). ``tls``: serve https with a
    certificate made now (``.cafile`` is what clients must trust). ``faults`` and
    ``latency_ms``: see :mod:`gcbatch.sandbox.faults`. ``clock`` drives the job
    lifecycle (tests can pass a fake); ``sleep`` is what latency faults call.
    ``admin_token``: what ``/_sandbox/`` requires over HTTP (None: a random one; read it
    from ``.admin_token``; ``.admin`` uses it).
    """
    from gcbatch.sandbox.app import SandboxApp

    plan = _as_plan(faults, latency_ms)
    injector = faults if isinstance(faults, FaultInjector) else FaultInjector(plan)
    if isinstance(faults, FaultInjector) and latency_ms:
        injector.set_plan(plan)
    tmp = Path(tempfile.mkdtemp(prefix="gcbatch-sandbox-"))

    def cleanup() -> None:
        shutil.rmtree(tmp, ignore_errors=True)

    try:
        db_path = Path(db) if db is not None else tmp / "sandbox.db"
        certificates = make_certificates(Path(cert_dir) if cert_dir else tmp) if tls else None
        app = SandboxApp(db_path, seed=seed, config=config, clock=clock)
        try:
            server = SandboxHTTPServer(
                app,
                host,
                port,
                ssl_context=certificates.server_context() if certificates else None,
                faults=injector,
                sleep=sleep,
                access_log=access_log,
                admin_token=admin_token,
            )
            tokens = _seed_tokens(app, seed)
        except BaseException:
            app.close()
            raise
    except BaseException:
        cleanup()
        raise
    return RunningSandbox(app, server, tokens=tokens, certificates=certificates, cleanup=cleanup)


class SandboxProcess(_SandboxHandle):
    """A sandbox in a child process (``python -m gcbatch sandbox serve --json``).

    ``info`` is the JSON line the child printed when it was ready. :meth:`stop` asks it
    to end (SIGINT, like Ctrl-C); :meth:`kill` ends it with SIGKILL.
    """

    def __init__(self, popen: subprocess.Popen[str], info: Mapping[str, Any], log: Path):
        self.popen = popen
        self.info = dict(info)
        self.base_url = str(info["base_url"])
        self.cafile = Path(info["cafile"]) if info.get("cafile") else None
        self.db = Path(info["db"]) if info.get("db") else None
        self.admin_token = str(info.get("admin_token", ""))
        self._tokens = dict(info.get("users", {}))
        self.log_path = log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, timeout: float = 10.0) -> int:
        """Ctrl-C the child and wait; SIGKILL if it does not end in ``timeout``."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        return self.popen.returncode

    def kill(self) -> int:
        """SIGKILL the child (no clean-up at all) and reap it."""
        if self.popen.poll() is None:
            self.popen.kill()
        return self.popen.wait(10)

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_sandbox_process(
    db: Path | str | None = None,
    seed: Path | str | None = None,
    *,
    tls: bool = False,
    faults: Sequence[str] = (),
    latency_ms: float = 0,
    settings: Mapping[str, Any] | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    log: Path | str | None = None,
    timeout: float = 30.0,
) -> SandboxProcess:
    """Start ``python -m gcbatch sandbox serve --port 0 --json`` and wait until it serves.

    ``settings``: SandboxConfig fields (``--set NAME=JSON`` each). The child's stderr
    goes to ``log`` (a temporary file when None), so a failing test can show it.
    """
    args = [sys.executable, "-m", "gcbatch", "sandbox", "serve", "--port", "0", "--json"]
    if db is not None:
        args += ["--db", str(db)]
    else:
        args += ["--ephemeral"]
    if seed is not None:
        args += ["--seed", str(seed)]
    if tls:
        args.append("--tls")
    for spec in faults:
        args += ["--faults", spec]
    if latency_ms:
        args += ["--latency-ms", str(latency_ms)]
    for name, value in (settings or {}).items():
        args += ["--set", f"{name}={json.dumps(value)}"]
    args += list(extra_args)
    if log is None:
        fd, log_name = tempfile.mkstemp(prefix="gcbatch-sandbox-", suffix=".log")
        os.close(fd)
        log = log_name
    log_path = Path(log)
    child_env = dict(os.environ if env is None else env)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    with log_path.open("w") as log_file:
        popen = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
            env=child_env,
        )
    assert popen.stdout is not None
    first: list[str] = []
    reader = threading.Thread(target=lambda: first.append(popen.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if not first or not first[0].strip():
        with contextlib.suppress(OSError):
            popen.kill()
        popen.wait(10)
        raise RuntimeError(
            f"the sandbox process did not start within {timeout:.0f}s "
            f"(exit {popen.returncode}); its log:\n{log_path.read_text()[-4000:]}"
        )
    info = json.loads(first[0])

    def drain(stream: IO[str]) -> None:
        with contextlib.suppress(OSError, ValueError):
            for _ in stream:
                pass

    threading.Thread(target=drain, args=(popen.stdout,), daemon=True).start()
    return SandboxProcess(popen, info, log_path)
