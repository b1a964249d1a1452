"""What a handler is given: the sandbox's parts (:class:`World`) and the request (:class:`Ctx`).

Handlers are plain functions ``(ctx, **path parameters) -> Response``; everything they
may touch is named here, so a handler's needs are visible in what it reads from ``ctx``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gcbatch.sandbox.config import SandboxConfig
from gcbatch.sandbox.http import Request
from gcbatch.sandbox.ids import PrimaryKeys
from gcbatch.sandbox.jobrunner import JobRunner
from gcbatch.sandbox.outputs import Outputs
from gcbatch.sandbox.render import Renderer
from gcbatch.sandbox.requestlog import RequestLog
from gcbatch.sandbox.seed import Seed, User
from gcbatch.sandbox.signing import Signer
from gcbatch.sandbox.store import Store
from gcbatch.sandbox.visibility import Visibility


class Settings:
    """The settings in force; ``POST /_sandbox/config`` and ``set_config`` replace them.
    A request reads them once, at its start (:attr:`Ctx.config`)."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config


@dataclass(frozen=True)
class World:
    """The parts of one sandbox, made once by :class:`~gcbatch.sandbox.app.SandboxApp`."""

    seed: Seed
    store: Store
    clock: Callable[[], float]
    settings: Settings
    ids: PrimaryKeys
    jobs: JobRunner
    outputs: Outputs
    visibility: Visibility
    render: Renderer
    signer: Signer
    log: RequestLog


@dataclass(slots=True)
class Ctx:
    """One request as a handler sees it. Read-only by convention: not a frozen dataclass,
    whose field-by-field ``object.__setattr__`` would cost microseconds per request."""

    world: World
    req: Request
    user: User | None  # None: anonymous
    config: SandboxConfig
    allow: str | None  # the matched route's ``Allow`` header (for errors and OPTIONS)
    #: when the request reached the app (the sandbox clock), before it waited for the
    #: store's lock: what an unlocked check can see (``SandboxConfig.unlocked_checks``)
    arrived: float = 0.0

    @property
    def base_url(self) -> str:
        return self.req.base_url

    @property
    def seed(self) -> Seed:
        return self.world.seed

    @property
    def store(self) -> Store:
        return self.world.store

    @property
    def render(self) -> Renderer:
        return self.world.render

    @property
    def visibility(self) -> Visibility:
        return self.world.visibility

    @property
    def outputs(self) -> Outputs:
        return self.world.outputs

    @property
    def signer(self) -> Signer:
        return self.world.signer

    def now(self) -> float:
        return self.world.clock()
