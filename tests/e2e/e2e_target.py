"""The server the end-to-end suite runs against: a sandbox process, or a live server.

By default every test gets a fresh sandbox in a child process (``gcbatch sandbox serve``)
holding the world of ``oracle-world.yaml``: the world ``shared/gc-oracle/seed.py`` makes
on the real Grand Challenge application. With ``GCBATCH_E2E_SERVER`` set, the tests run
against that server instead (README: "Testing against the real Grand Challenge")::

    GCBATCH_E2E_SERVER        the API URL, e.g. https://localhost:8000/api/v1/
    GCBATCH_E2E_TOKEN         the token of the user who runs the algorithms ("oracle")
    GCBATCH_E2E_OTHER_TOKEN   a second user's token, without permissions ("oracle2")
    GCBATCH_E2E_CA_BUNDLE     a CA file to verify the server with (a private CA)
    GCBATCH_E2E_MAX_ACTIVE_JOBS   the server's active-jobs limit per user (default 16)

Against a live server the suite uses the public API only (jobs are counted through the
job list), and what only a sandbox can be told (inject a fault into the server, change
its limits, read its request log) is skipped with the reason. Faults that a proxy can
make (lost answers) run on both, through the suite's own proxy (``e2e_proxy.py``).

Every test names its cases and values after a fresh ``run`` id, so it can run many times
against one live server: the platform refuses a job whose inputs all exist already, and
a job is told apart from an earlier run's by its inputs.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_proxy import FaultProxy

from gcbatch.sandbox import SandboxProcess

HERE = Path(__file__).resolve().parent
ORACLE_WORLD = HERE / "oracle-world.yaml"

ENV_SERVER = "GCBATCH_E2E_SERVER"
ENV_TOKEN = "GCBATCH_E2E_TOKEN"
ENV_OTHER_TOKEN = "GCBATCH_E2E_OTHER_TOKEN"
ENV_CA = "GCBATCH_E2E_CA_BUNDLE"
ENV_MAX_ACTIVE = "GCBATCH_E2E_MAX_ACTIVE_JOBS"

#: the sandbox's job phases in the suite: a job lives ~1 s, as on the oracle
SANDBOX_PHASES = {"validating_seconds": 0.3, "queued_seconds": 0.2,
                  "provisioned_seconds": 0.1, "executing_seconds": 0.3,
                  "executed_seconds": 0.1}
#: the sandbox's limits in the suite unless a test changes them: the oracle's job limit
#: (from the seed), credits enough for every test
SANDBOX_SETTINGS = {**SANDBOX_PHASES, "credits_per_month": 10**9}

TOO_MANY_ACTIVE = "You have too many active jobs, please try again after they have completed"


@dataclass(frozen=True)
class World:
    """The slugs both servers hold (``shared/gc-oracle/seed.py``)."""

    algorithm: str = "oracle-algorithm"  # [integer] [json file] [image] [image, float]
    pricey: str = "oracle-pricey-algorithm"  # 1000 credits a job; 3 jobs' worth
    imageless: str = "oracle-imageless-algorithm"  # "Algorithm image is not ready..."
    failing: str = "oracle-failing-algorithm"  # every job ends Failed
    archive: str = "oracle-archive"  # 3 items: integer i, image oracle_i.mha
    integer: str = "oracle-integer"
    float: str = "oracle-float"
    json_file: str = "oracle-json-file"  # Anything, stored as a file
    image: str = "generic-medical-image"
    output: str = "results-json-file"  # the only output of the working algorithms


WORLD = World()


def new_run_id() -> int:
    """A number no earlier run used (with near certainty): names cases and values."""
    return secrets.randbelow(9 * 10**8) + 10**8


@dataclass
class Target:
    """One server the test talks to. ``sandbox`` is None for a live server."""

    kind: str  # "sandbox" | "live"
    api_url: str
    token: str
    other_token: str | None
    cafile: Path | None
    max_active_jobs: int
    sandbox: SandboxProcess | None = None
    world: World = WORLD
    _algorithms: dict[str, dict[str, Any]] = field(default_factory=dict)

    # -------------------------------------------------------------- what it is

    @property
    def is_live(self) -> bool:
        return self.sandbox is None

    def describe(self) -> str:
        if self.sandbox is not None:
            return f"sandbox ({self.api_url}, world {ORACLE_WORLD.name})"
        return f"live server {self.api_url}"

    def needs_sandbox(self, why: str) -> SandboxProcess:
        """The sandbox process; on a live server, skip the test saying ``why``."""
        if self.sandbox is None:
            pytest.skip(f"live server: {why}")
        return self.sandbox

    def configure(self, **settings: Any) -> None:
        """Change the sandbox's settings (limits, timings): a live server cannot be told."""
        self.needs_sandbox(f"its settings cannot be changed by a client ({sorted(settings)})")
        assert self.sandbox is not None
        self.sandbox.admin.set_config(**settings)

    def tune(self, **settings: Any) -> None:
        """Settings that only make a sandbox run look like a live one (shorter jobs, a
        smaller limit to reach sooner); a live server keeps its own."""
        if self.sandbox is not None:
            self.sandbox.admin.set_config(**settings)

    # -------------------------------------------------------------- the public API

    @property
    def verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=str(self.cafile)) if self.cafile else True

    def api(self, token: str | None = None) -> httpx.Client:
        """A plain client on the public API (caller closes it)."""
        return httpx.Client(base_url=self.api_url, verify=self.verify, trust_env=False,
                            timeout=60,
                            headers={"Authorization": f"Bearer {token or self.token}"})

    def algorithm(self, slug: str) -> dict[str, Any]:
        if slug not in self._algorithms:
            with self.api() as api:
                found = api.get("algorithms/", params={"slug": slug}).json()["results"]
            assert len(found) == 1, f"the server has no algorithm {slug!r} for this user"
            self._algorithms[slug] = found[0]
        return self._algorithms[slug]

    def fresh_algorithm(self, slug: str) -> dict[str, Any]:
        """The algorithm as the server shows it now (``average_duration`` changes)."""
        self._algorithms.pop(slug, None)
        return self.algorithm(slug)

    def job_count(self, slug: str) -> int:
        """How many of this user's jobs the algorithm has, from the job list."""
        with self.api() as api:
            page = api.get("algorithms/jobs/", params={
                "algorithm_image__algorithm": self.algorithm(slug)["pk"], "limit": 1}).json()
        return int(page["count"])

    def jobs(self, slug: str) -> list[dict[str, Any]]:
        """Every job of this user on the algorithm, through the paginated job list."""
        out: list[dict[str, Any]] = []
        with self.api() as api:
            offset = 0
            while True:
                page = api.get("algorithms/jobs/", params={
                    "algorithm_image__algorithm": self.algorithm(slug)["pk"],
                    "limit": 1000, "offset": offset}).json()
                out += page["results"]
                if not page["next"]:
                    return out
                offset += 1000

    def image_names(self, urls: set[str]) -> dict[str, str]:
        """image api_url → name, for the given images (one GET each)."""
        names: dict[str, str] = {}
        with self.api() as api:
            for url in sorted(urls):
                names[url] = api.get(url).json()["name"]
        return names

    # -------------------------------------------------------------- a CLI's environment

    def cli_env(self, *, token: str | None = None, proxy: FaultProxy | None = None,
                server: str | None = None) -> dict[str, str]:
        """The environment of a gcbatch process that talks to this server (or to it
        through ``proxy``): server, token, and the CA to trust."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("GRAND_CHALLENGE_AUTHORIZATION", "GCBATCH_SERVER", "SSL_CERT_FILE")
               and not k.startswith("GCBATCH_E2E_")}
        env["NO_COLOR"] = "1"
        env["GRAND_CHALLENGE_AUTHORIZATION"] = token if token is not None else self.token
        env["GCBATCH_SERVER"] = server or (proxy.api_url if proxy else self.api_url)
        bundle = proxy.trust_bundle if proxy is not None else self.cafile
        if bundle is not None:
            env["SSL_CERT_FILE"] = str(bundle)
        return env

    @contextmanager
    def proxy(self, workdir: Path) -> Iterator[FaultProxy]:
        """The suite's proxy in front of this server (see e2e_proxy.py)."""
        with FaultProxy(self.api_url, upstream_cafile=self.cafile, workdir=workdir) as p:
            yield p

    # -------------------------------------------------------------- waiting

    def wait_until(self, what: str, check: Callable[[], bool], timeout: float | None = None,
                   interval: float = 0.5) -> None:
        limit = timeout if timeout is not None else (900.0 if self.is_live else 60.0)
        deadline = time.monotonic() + limit
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {limit:.0f}s waiting for {what}")
            time.sleep(interval)

    def jobs_settled(self, slug: str, pks: set[str]) -> list[dict[str, Any]]:
        """The jobs ``pks``, once none is "Validating inputs" any more (their upload
        inputs attach then; a job's inputs are empty before)."""
        found: list[dict[str, Any]] = []

        def settled() -> bool:
            nonlocal found
            found = [j for j in self.jobs(slug) if j["pk"] in pks]
            return len(found) == len(pks) and all(
                j["status"] != "Validating inputs" for j in found)

        self.wait_until(f"{len(pks)} jobs to leave 'Validating inputs'", settled)
        return found


def live_target_from_env(environ: Mapping[str, str] = os.environ) -> Target | None:
    """The live target the environment names, or None (then: the sandbox)."""
    url = environ.get(ENV_SERVER, "").strip()
    if not url:
        return None
    token = environ.get(ENV_TOKEN, "").strip()
    if not token:
        raise pytest.UsageError(f"{ENV_SERVER} is set but {ENV_TOKEN} is not: the suite "
                                "needs the token of the user who runs the algorithms")
    if not url.endswith("/"):
        url += "/"
    ca = environ.get(ENV_CA, "").strip()
    if ca and not Path(ca).is_file():
        raise pytest.UsageError(f"{ENV_CA}={ca}: no such file")
    return Target(kind="live", api_url=url, token=token,
                  other_token=environ.get(ENV_OTHER_TOKEN, "").strip() or None,
                  cafile=Path(ca) if ca else None,
                  max_active_jobs=int(environ.get(ENV_MAX_ACTIVE, "16")))


def probe(target: Target, timeout: float = 10.0) -> str | None:
    """Why the live server cannot be used, or None: one GET with the token, answered
    200, holding the world's algorithm."""
    try:
        with httpx.Client(verify=target.verify, trust_env=False, timeout=timeout) as client:
            answer = client.get(target.api_url + "algorithms/",
                                params={"slug": target.world.algorithm},
                                headers={"Authorization": f"Bearer {target.token}"})
    except httpx.HTTPError as exc:
        return f"cannot reach {target.api_url}: {type(exc).__name__}: {exc}"
    if answer.status_code != 200:
        return (f"{target.api_url}algorithms/ answered {answer.status_code}: "
                f"{answer.text[:200]}")
    try:
        count = answer.json()["count"]
    except (ValueError, KeyError, TypeError):
        return f"{target.api_url} does not answer like the Grand Challenge API"
    if count != 1:
        return (f"{target.api_url} has no algorithm {target.world.algorithm!r} for this "
                "token: the suite needs the world of shared/gc-oracle/seed.py")
    return None


def sandbox_target(proc: SandboxProcess) -> Target:
    return Target(kind="sandbox", api_url=proc.api_url, token=proc.token("oracle"),
                  other_token=proc.token("oracle2"), cafile=proc.cafile,
                  max_active_jobs=16, sandbox=proc)


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out
