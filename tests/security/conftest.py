"""The hostile suite of issue 14: one test file per promise, the attacker's kit in
``hostile.py``, fixtures here (the other host, scripted servers, a user's home).

=================================================  ==========================================
the token is bound to servers the user chose       ``test_token_binding.py``
nothing goes out before everything local is checked ``test_local_first.py``
state files never through links; records checked   ``test_state_files.py``
every read is bounded (servers and local files)    ``test_bounded_reads.py``
exit 2 with file:line / exit 1, never a traceback  ``test_clear_errors.py``
reserved names, letter-case clashes                ``test_reserved_names.py``
missing outputs are reported                       ``test_missing_outputs.py``
the sandbox on a workstation                       ``test_sandbox_exposure.py``,
                                                   ``test_sandbox_memory.py``
=================================================  ==========================================
"""

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
