"""The egress proxy on the sandbox engine, without the server: each process's listener is the
proxy's, even one made while the proxy was down."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codeinterp.egress import EgressProxy, EgressSettings, NetworkPolicy, default_mitmdump
from codeinterp.egress import proxy as egress_proxy
from codeinterp.errors import EgressUnavailable
from codeinterp.sandbox import Sandbox, SandboxConfig, SandboxPolicy
from codeinterp.sandbox.cgroups import CgroupManager
from codeinterp.sandbox.policy import MiB
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


def proxy_to(
    outside: Outside, tmp_path: Path, cgroups: CgroupManager | None = None, **settings: Any
) -> EgressProxy:
    """A proxy that resolves allowed.test to the outside world's servers and trusts its CA."""
    return EgressProxy(
        EgressSettings(
            mitmdump=default_mitmdump(),
            confdir=str(tmp_path / "egress"),
            resolve={"allowed.test": "127.0.0.1"},
            upstream_ca=outside.ca_file,
            **settings,
        ),
        cgroups=cgroups,
    )


async def test_a_process_started_while_the_proxy_is_down_gets_out_once_it_is_back(
    tmp_path: Path, outside: Outside, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(egress_proxy, "RESTART_SECONDS", 1.0)  # a window to start one in
    proxy = proxy_to(outside, tmp_path)
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


async def test_a_command_the_proxy_cannot_carry_out_is_an_error_and_the_channel_goes_on(
    tmp_path: Path,
) -> None:
    proxy = EgressProxy(EgressSettings(mitmdump=default_mitmdump(), confdir=str(tmp_path)))
    policy = NetworkPolicy.from_request({"type": "allowlist", "allowed_domains": ["a.test"]})
    try:
        lease = await proxy.lease(policy)
        read_end, write_end = os.pipe()  # not a socket: nothing to listen on
        try:
            with pytest.raises(EgressUnavailable, match="listen"):
                await proxy._command(
                    {"op": "listen", "client": lease.client, "listener": "x"}, fd=read_end
                )
        finally:
            os.close(read_end)
            os.close(write_end)
        await proxy.sync()  # answered: the proxy reads commands still
        assert proxy.running
        await lease.close()
    finally:
        await proxy.close()


FLOOD = """
import threading, requests
body = b"x" * (15 << 20)  # under the 16 MiB the proxy reads of a plain HTTP body, held whole
def post():
    try:
        requests.post("http://allowed.test:{port}/flood", data=body, timeout=60)
    except requests.RequestException:
        pass
threads = [threading.Thread(target=post) for _ in range(30)]
for t in threads: t.start()
for t in threads: t.join()
"""


async def test_the_proxy_is_capped_as_a_whole_and_filling_it_only_starts_it_again(
    tmp_path: Path, outside: Outside
) -> None:
    """30 plain HTTP bodies of 15 MiB at once from one session (each under the proxy's body
    limit, together past its memory): the kernel kills the proxy in its own group, not the
    server or the host, and the proxy is back for the next request."""
    limit = 256 * MiB
    cgroups = CgroupManager(f"test-egress-{os.getpid()}")
    proxy = proxy_to(outside, tmp_path, cgroups, memory_limit=limit)
    policy = NetworkPolicy.from_request(
        {
            "type": "allowlist",
            "allowed_domains": [
                f"allowed.test:{outside.https_port}",
                f"allowed.test:{outside.http_port}",
            ],
        }
    )
    try:
        lease = await proxy.lease(policy)
        group = proxy._group
        assert group is not None and proxy._process is not None
        assert (
            str(proxy._process.pid)
            in Path(group.join_paths[0]).parent.joinpath("cgroup.procs").read_text().split()
        )
        async with await Sandbox.start(SandboxConfig(pool_size=0)) as sandbox:
            session = await sandbox.create_session(
                SandboxPolicy().with_egress(
                    proxy.ca_bundle, policy.allowed_domains, policy.placeholders()
                ),
                network=lease,
            )
            flood = await session.run(FLOOD.format(port=outside.http_port), timeout=120)
            assert flood.status == "ok", flood
            assert group.oom_kills() >= 1
            assert group.peak_memory() <= limit
            execution = await session.run(
                FETCH.format(ca=outside.ca_pem, port=outside.https_port), timeout=60
            )
            assert execution.stdout.strip() == "200", execution
            await session.close()
        await lease.close()
    finally:
        await proxy.close()
        cgroups.close()
