"""Environments and network policies, measured on the sandbox engine (`bench/sandbox.py
--network`). Not a test: it measures this machine. Every time is wall-clock, in milliseconds.

env_create_cold_p50, default_create_cold_p50, env_over_default_cold
    `create_session()` on a Sandbox with `pool_size=0`, alternating a session of an environment
    (a read-only package set built here, offline, from a wheel) and a default one, until the
    kernel is ready; each closed after its sample (not timed). The ratio is of the p50s.
env_create_warm_p50, default_create_warm_p50, env_over_default_warm
    The same, alternating, from full warm pools (what a server hands out): the environment's
    zygote (its modules imported) and pool are made by its first session, before the samples.
https_direct_*, https_proxied_*, proxy_added_ms_*
    Inside one session with an allowlist: GET requests (about 220 bytes back) from `requests` to an
    HTTPS server on the host, through the egress proxy (a passthrough tunnel: the TLS is
    end-to-end), against the same requests to the same kind of server run inside the session
    on its own loopback (no proxy). `keepalive`: one `requests.Session`, the connection kept;
    `new_connection`: a fresh connection (TCP, CONNECT, TLS handshake) per request. Each
    figure is the mean per request over a timed batch, the median of several; direct and
    proxied batches take turns, and the added cost is the median of the paired differences.
    `intercepted_keepalive`: kept-connection requests to a domain with a secret, which the proxy
    intercepts (its own TLS to the session, another to the server, the placeholder in a header
    replaced), against the same direct ones. (Not with a new connection each: `requests` would
    load the session's CA bundle, the system's, for each, some 20 ms that any HTTPS client pays
    without a proxy too.)
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from codeinterp.egress import EgressProxy, EgressSettings, NetworkPolicy, default_mitmdump
from codeinterp.sandbox import Sandbox, SandboxConfig, SandboxPolicy, environments

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.support.outside import outside_world  # noqa: E402
from tests.support.wheels import make_demo_wheels  # noqa: E402

NAMES = ["plain.bench", "secret.bench"]
ENV_POOL = 2  # ready sessions in each pool for the warm figures


def _p50(samples: list[float]) -> float:
    return statistics.median(samples)


def _build_environment(base: Path) -> str:
    wheels = make_demo_wheels(base / "wheels")
    (base / "requirements.txt").write_text("ci_demo==1.0\n")
    data = base / "data"
    subprocess.run(
        [sys.executable, "-m", "codeinterp.cli.main", "env", "--data-dir", str(data), "build",
         "bench", "-r", str(base / "requirements.txt"), "--no-index", "--find-links",
         str(wheels)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return environments.for_session(str(data), "bench").site_packages


async def measure_environments(base: Path, samples: int) -> dict[str, Any]:
    packages = _build_environment(base)
    env_policy = SandboxPolicy().with_packages(packages)
    env_times: list[float] = []
    default_times: list[float] = []
    async with await Sandbox.start(SandboxConfig(pool_size=0, env_pool_size=0)) as sandbox:
        for policy in (env_policy, SandboxPolicy()):  # the first fork of each is slower
            await (await sandbox.create_session(policy)).close()
        for _ in range(samples):
            for policy, sink in ((env_policy, env_times), (SandboxPolicy(), default_times)):
                started = time.perf_counter()
                session = await sandbox.create_session(policy)
                sink.append((time.perf_counter() - started) * 1000)
                await session.close()
    warm: list[float] = []
    env_warm: list[float] = []
    config = SandboxConfig(pool_size=ENV_POOL, env_pool_size=ENV_POOL)
    async with await Sandbox.start(config) as sandbox:
        await (await sandbox.create_session(env_policy)).close()  # its zygote, then its pool
        for _ in range(samples):
            for policy, sink in ((env_policy, env_warm), (SandboxPolicy(), warm)):
                await _pools_full(sandbox)
                started = time.perf_counter()
                session = await sandbox.create_session(policy)
                sink.append((time.perf_counter() - started) * 1000)
                await session.close()
    return {
        "env_create_cold_p50": _p50(env_times),
        "default_create_cold_p50": _p50(default_times),
        "env_over_default_cold": _p50(env_times) / _p50(default_times),
        "env_create_warm_p50": _p50(env_warm),
        "default_create_warm_p50": _p50(warm),
        "env_over_default_warm": _p50(env_warm) / _p50(warm),
    }


async def _pools_full(sandbox: Sandbox) -> None:
    """Both pools (the default one and the environment's) are full: what a server has between
    requests."""
    while sandbox.warm_sessions < 2 * ENV_POOL:
        await asyncio.sleep(0.005)


LOOP = """
import requests, ssl, threading, time, http.server, statistics
open("/tmp/ca.pem", "w").write({ca!r})
open("/tmp/cert.pem", "w").write({cert!r})
open("/tmp/key.pem", "w").write({key!r})

class Answer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def do_GET(self):
        self.send_response(200)
        body = b"x" * 220  # about what the host's echo server answers
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

local = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain("/tmp/cert.pem", "/tmp/key.pem")
local.socket = context.wrap_socket(local.socket, server_side=True)
threading.Thread(target=local.serve_forever, daemon=True).start()

def batch(url, n, keep, proxied, verify, headers):  # mean ms per request over n GETs, warm
    kept = requests.Session()
    def get():
        session = kept if keep else requests.Session()
        session.trust_env = proxied  # the proxy variables, or none: straight to the server
        try:
            return session.get(url, verify=verify, headers=headers).status_code
        finally:
            if not keep:
                session.close()
    for _ in range(3):
        get()
    started = time.perf_counter()
    for _ in range(n):
        assert get() == 200
    return (time.perf_counter() - started) / n * 1000

# Direct and proxied batches in turn (which goes first alternates), so what the machine does
# meanwhile weighs on both: the medians, and the median of the paired differences.
def side_by_side(kind, n, keep, url={proxied!r}, verify="/tmp/ca.pem", headers=None):
    direct_ms, proxied_ms, added = [], [], []
    for loop in range({loops}):
        pair = {{}}
        for proxied in ((False, True) if loop % 2 else (True, False)):
            if proxied:
                pair[True] = batch(url, n, keep, True, verify, headers)
            else:
                pair[False] = batch(direct, n, keep, False, "/tmp/ca.pem", None)
        direct_ms.append(pair[False])
        proxied_ms.append(pair[True])
        added.append(pair[True] - pair[False])
    return {{
        "https_direct_" + kind: statistics.median(direct_ms),
        "https_proxied_" + kind: statistics.median(proxied_ms),
        "proxy_added_ms_" + kind: statistics.median(added),
    }}

direct = "https://plain.bench:%d/" % local.server_address[1]
import socket
_resolve = socket.getaddrinfo
def _local(host, *args, **kwargs):  # the name of the direct server is this loopback
    return _resolve("127.0.0.1" if host == "plain.bench" else host, *args, **kwargs)
socket.getaddrinfo = _local
figures = side_by_side("keepalive", {n}, True)
figures.update(side_by_side("new_connection", {n_new}, False))
# To the domain with a secret: intercepted (TLS to the proxy, which puts the value in), and
# verified with the session's bundle, which holds the proxy's CA.
import os
figures.update(side_by_side(
    "intercepted_keepalive", {n}, True, {secret!r}, os.environ["SSL_CERT_FILE"],
    {{"Authorization": "Bearer " + os.environ["KEY"]}},
))
print(repr(figures))
"""


async def measure_proxy(base: Path, quick: bool) -> dict[str, Any]:
    (base / "outside").mkdir()
    with outside_world(base / "outside", NAMES) as outside:
        proxy = EgressProxy(
            EgressSettings(
                mitmdump=default_mitmdump(),
                confdir=str(base / "egress"),
                resolve={name: "127.0.0.1" for name in NAMES},
                upstream_ca=outside.ca_file,
            )
        )
        port = outside.https_port
        policy = NetworkPolicy.from_request(
            {
                "type": "allowlist",
                "allowed_domains": [f"plain.bench:{port}", f"secret.bench:{port}"],
                "domain_secrets": [{"domain": "secret.bench", "name": "KEY", "value": "v"}],
            }
        )
        code = LOOP.format(
            ca=outside.ca_pem,
            cert=(base / "outside" / "cert.pem").read_text(),
            key=(base / "outside" / "key.pem").read_text(),
            proxied=f"https://plain.bench:{port}/",
            secret=f"https://secret.bench:{port}/",
            n=50 if quick else 200,
            n_new=10 if quick else 40,
            loops=5 if quick else 15,
        )
        try:
            lease = await proxy.lease(policy)
            async with await Sandbox.start(SandboxConfig(pool_size=0)) as sandbox:
                session = await sandbox.create_session(
                    SandboxPolicy().with_egress(
                        proxy.ca_bundle, policy.allowed_domains, policy.placeholders()
                    ),
                    network=lease,
                )
                execution = await session.run(code, timeout=600)
                await session.close()
        finally:
            await proxy.close()
    if execution.status != "ok":
        raise RuntimeError(f"the measuring code failed: {execution.error or execution.message}")
    figures: dict[str, float] = eval(execution.stdout)  # a dict literal printed by our own code
    return figures


async def measure(quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-network-") as temporary:
        base = Path(temporary)
        report: dict[str, Any] = {"quick": quick}
        report.update(await measure_environments(base, 10 if quick else 40))
        report.update(await measure_proxy(base, quick))
        return report


def print_table(report: dict[str, Any]) -> None:
    for name, value in report.items():
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"{name:36} {shown}")
