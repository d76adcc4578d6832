"""One scripted upstream model and one server subprocess for the contract tests.

The server is started once per module (each start preloads the sandbox's libraries); each test
gives the upstream its own script and uses the official `openai` SDK with max_retries=0.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.contract.helpers import server_env
from tests.support.server import ServerProcess
from tests.support.upstream import ScriptedUpstream

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as scripted:
        yield scripted


@pytest.fixture(scope="module")
def server(
    upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("server")
    # a short heartbeat, so the tests of SSE heartbeats need not wait 15 s for one
    env = server_env(upstream, pool_size=2, sse_heartbeat_seconds=0.3)
    with ServerProcess(env, data_dir=data_dir) as process:
        yield process


@pytest.fixture
def client(server: ServerProcess, upstream: ScriptedUpstream) -> Iterator[openai.OpenAI]:
    upstream.reset()
    with server.client() as sdk:
        yield sdk
    upstream.check()
