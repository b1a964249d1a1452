"""Fixtures of the security suite: the other host, scripted servers, a user's home."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hostile import OtherHost, RewritingProxy, ScriptedApp, ScriptedServer


@pytest.fixture
def other_host() -> Iterator[OtherHost]:
    """The attacker's server on 127.0.0.2, logging every request."""
    host = OtherHost()
    yield host
    host.stop()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A user's home of their own (no allowed-servers file unless a test writes one)."""
    folder = tmp_path / "home"
    folder.mkdir()
    return folder


@pytest.fixture
def start() -> Iterator[Callable[..., Any]]:
    """``start(Kind, ...)`` for ScriptedServer / ScriptedApp / RewritingProxy; all are
    stopped at the end."""
    started: list[Any] = []

    def factory(kind: type[Any], *args: Any) -> Any:
        assert kind in (ScriptedServer, ScriptedApp, RewritingProxy, OtherHost)
        server = kind(*args)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
