"""The egress proxy on the sandbox engine, without the server: each process's listener is the
proxy's, even one made while the proxy was down."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from codeinterp.egress import EgressProxy, EgressSettings, NetworkPolicy, default_mitmdump
from codeinterp.egress import proxy as egress_proxy
from codeinterp.sandbox import Sandbox, SandboxConfig, SandboxPolicy
from tests.support.outside import Outside, outside_world

FETCH = """
import time, requests
open("/tmp/ca.pem", "w").write({ca!r})
for _ in range(100):
    try:
        print(requests.get("https://allowed.test:{port}/x", verify="/tmp/ca.pem", timeout=10).status_code)
        break
    except requests.RequestException as e:
        last = e
        time.sleep(0.1)
else:
    print("never:", last)
"""  # noqa: E501


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Outside]:
    (tmp_path / "outside").mkdir()
    with outside_world(tmp_path / "outside", ["allowed.test"]) as world:
        yield world


async def test_a_process_started_while_the_proxy_is_down_gets_out_once_it_is_back(
    tmp_path: Path, outside: Outside, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(egress_proxy, "RESTART_SECONDS", 1.0)  # a window to start one in
    proxy = EgressProxy(
        EgressSettings(
            mitmdump=default_mitmdump(),
            confdir=str(tmp_path / "egress"),
            resolve={"allowed.test": "127.0.0.1"},
            upstream_ca=outside.ca_file,
        )
    )
    policy = NetworkPolicy.from_request(
        {"type": "allowlist", "allowed_domains": [f"allowed.test:{outside.https_port}"]}
    )
    sandbox_policy = SandboxPolicy().with_egress(
        proxy.ca_bundle, policy.allowed_domains, policy.placeholders()
    )
    try:
        lease = await proxy.lease(policy)
        async with await Sandbox.start(SandboxConfig(pool_size=0)) as sandbox:
            await (await sandbox.create_session()).close()  # the zygote, up before the kill
            process = proxy._process
            assert process is not None
            os.kill(process.pid, signal.SIGKILL)
            await process.wait()
            session = await sandbox.create_session(sandbox_policy, network=lease)
            assert not proxy.running  # the listener was made while the proxy was down
            execution = await session.run(
                FETCH.format(ca=outside.ca_pem, port=outside.https_port), timeout=60
            )
            assert execution.stdout.strip() == "200", execution
            assert proxy.running
            await session.close()
        await lease.close()
    finally:
        await proxy.close()
