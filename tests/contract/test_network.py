"""Network policies through the Containers API, with the official SDK: a container with an
`allowlist` reaches its domains through the server's egress proxy and nothing else, a domain
secret reaches only its domain and never the session, and every attempt is reported.

The outside world is two echo servers on 127.0.0.1 (tests/support/outside.py), which the
proxy is told to resolve the test's names to (CODEINTERP_EGRESS_RESOLVE) and whose CA it
trusts; the code in a session gets that CA's PEM to verify the passthrough connections with.
"""

# ruff: noqa: E501  (the code sent to sessions keeps its requests on one line each)
from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from codeinterp import Client
from codeinterp.egress.proxy import MAX_CONNECTIONS_PER_SESSION as CAP
from tests.contract.helpers import assert_envelope, server_env
from tests.contract.test_containers import execute, text_result, unique
from tests.contract.test_trace_store import text_of, viewer
from tests.support.outside import Outside, outside_world
from tests.support.server import ServerProcess
from tests.support.upstream import Request, ScriptedUpstream, Text, ToolCalls, python_call
from tests.support.wheels import make_wheel

pytestmark = pytest.mark.root

NAMES = ["allowed.test", "secret.test", "other.test", "api.wild.test", "index.test"]
SECRET_VALUE = "s3cr3t-value-7f0c2a"
URL = "https://allowed.test:{}/again"  # .format(outside.https_port)


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outside]:
    with outside_world(tmp_path_factory.mktemp("outside"), NAMES) as world:
        yield world


@pytest.fixture(scope="module")
def server(
    outside: Outside, upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with ServerProcess(network_env(outside, upstream), tmp_path_factory.mktemp("net")) as process:
        yield process


def network_env(outside: Outside, upstream: ScriptedUpstream) -> dict[str, str]:
    return {
        **server_env(upstream, pool_size=1),
        "CODEINTERP_EGRESS_RESOLVE": outside.hosts(*NAMES),
        "CODEINTERP_EGRESS_UPSTREAM_CA": outside.ca_file,
    }


def allowlist(outside: Outside, *extra: str, secret: bool = False) -> dict[str, Any]:
    policy: dict[str, Any] = {
        "type": "allowlist",
        "allowed_domains": [
            f"allowed.test:{outside.https_port}",
            f"allowed.test:{outside.http_port}",
            f"secret.test:{outside.https_port}",
            *extra,
        ],
    }
    if secret:
        policy["domain_secrets"] = [
            {"domain": "secret.test", "name": "API_KEY", "value": SECRET_VALUE}
        ]
    return policy


def preamble(outside: Outside) -> str:
    """Code that every test's session runs first: the test CA, and a helper that says how a
    request ended."""
    return f"""
import os, socket, requests
open("/tmp/ca.pem", "w").write({outside.ca_pem!r})
def fetch(url, **kw):
    try:
        r = requests.request(kw.pop("method", "GET"), url, verify=kw.pop("verify", "/tmp/ca.pem"),
                             timeout=10, **kw)
        return r.status_code, r.text
    except requests.RequestException as e:
        return "refused", type(e).__name__ + ": " + str(e)[:300]
"""


def ready_container(client: openai.OpenAI, outside: Outside, *extra: str, **policy: Any) -> Any:
    """A container with the test's allowlist (`extra` entries, `policy`: allowlist's options),
    the preamble run."""
    container = client.containers.create(
        name=unique("net"),
        network_policy=allowlist(outside, *extra, **policy),  # type: ignore[arg-type]
    )
    run(client, container.id, preamble(outside))
    return container


def run(client: openai.OpenAI, container_id: str, code: str) -> dict[str, Any]:
    body = execute(client, container_id, code)
    assert body["status"] == "ok", body.get("error") or body
    return body


def value(client: openai.OpenAI, container_id: str, code: str) -> Any:
    """The JSON text the code's last expression makes, decoded (it comes back as its repr)."""
    shown = text_result(run(client, container_id, f"import json\n{code}"))
    return json.loads(ast.literal_eval(shown))


def test_an_allowed_domain_is_reached_and_everything_else_is_refused(
    client: openai.OpenAI, outside: Outside
) -> None:
    container = client.containers.create(
        name=unique("net"),
        network_policy=allowlist(outside),  # type: ignore[arg-type]
    )
    assert container.network_policy is not None
    assert container.network_policy.type == "allowlist"
    assert container.network_policy.allowed_domains == allowlist(outside)["allowed_domains"]
    run(client, container.id, preamble(outside))
    https, http = outside.https_port, outside.http_port
    seen = value(
        client,
        container.id,
        f"""json.dumps({{
    "allowed": fetch("https://allowed.test:{https}/hello"),
    "plain": fetch("http://allowed.test:{http}/plain"),
    "other": fetch("https://other.test:{https}/x"),
    "raw_ip": fetch("https://203.0.113.5:{https}/x", verify=False),
    "other_port": fetch("https://allowed.test:{https + 1 if https + 1 != http else https + 2}/x"),
    "plain_other": fetch("http://other.test:{http}/x"),
}})""",
    )
    assert seen["allowed"][0] == 200 and json.loads(seen["allowed"][1])["path"] == "/hello"
    assert seen["plain"][0] == 200 and json.loads(seen["plain"][1])["path"] == "/plain"
    for name in ("other", "raw_ip", "other_port"):
        assert seen[name][0] == "refused" and "403" in seen[name][1], (name, seen[name])
    # The client shows the tunnel's status line only: the reason is in it.
    assert "Forbidden (other.test is not in the allowed domains)" in seen["other"][1], seen
    assert seen["plain_other"][0] == 403, seen["plain_other"]
    assert "other.test is not in the allowed domains" in seen["plain_other"][1]
    paths = [r["path"] for r in outside.received]
    assert "/hello" in paths and "/plain" in paths and "/x" not in paths


def test_no_name_resolution_and_no_route_but_the_proxy(
    client: openai.OpenAI, outside: Outside
) -> None:
    container = ready_container(client, outside)
    seen = value(
        client,
        container.id,
        """
def attempt(f):
    try:
        return "ok: " + repr(f())
    except OSError as e:
        return type(e).__name__ + ": " + str(e)
def udp_dns():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.sendto(b"\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x07example\\x03com\\x00\\x00\\x01\\x00\\x01", ("8.8.8.8", 53))
    return s.recv(512)
def tcp(host, port):
    return socket.create_connection((host, port), timeout=2).getpeername()
json.dumps({
    "resolve": attempt(lambda: socket.getaddrinfo("allowed.test", 443)),
    "udp_dns": attempt(udp_dns),
    "tcp_dns": attempt(lambda: tcp("1.1.1.1", 53)),
    "direct": attempt(lambda: tcp("93.184.215.14", 443)),
})""",
    )
    for name, outcome in seen.items():
        assert not outcome.startswith("ok"), (name, outcome)
    assert "unreachable" in seen["udp_dns"].lower(), seen


def test_smuggling_another_host_through_an_allowed_one_is_refused(
    client: openai.OpenAI, outside: Outside
) -> None:
    container = ready_container(client, outside)
    https, http = outside.https_port, outside.http_port
    seen = value(
        client,
        container.id,
        f"""
import ssl
def raw(request):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=5)
    s.sendall(request.encode())
    return s.recv(4096).decode(errors="replace").split("\\r\\n")[0]
def fronted():
    # CONNECT to the allowed name, then TLS that names another (domain fronting)
    s = socket.create_connection(("127.0.0.1", 3128), timeout=5)
    s.sendall(b"CONNECT allowed.test:{https} HTTP/1.1\\r\\nHost: allowed.test:{https}\\r\\n\\r\\n")
    head = s.recv(4096)
    context = ssl.create_default_context(cafile="/tmp/ca.pem")
    try:
        with context.wrap_socket(s, server_hostname="other.test") as t:
            t.sendall(b"GET /fronted HTTP/1.1\\r\\nHost: other.test\\r\\n\\r\\n")
            return "answered: " + t.recv(4096).decode(errors="replace")[:40]
    except OSError as e:
        return "refused: " + type(e).__name__
json.dumps({{
    "connect_host_mismatch": raw("CONNECT other.test:{https} HTTP/1.1\\r\\nHost: allowed.test:{https}\\r\\n\\r\\n"),
    "absolute_host_mismatch": fetch("http://allowed.test:{http}/smuggled", headers={{"Host": "other.test"}}),
    "ip_in_url": raw("GET http://127.0.0.1:{http}/ip HTTP/1.1\\r\\nHost: allowed.test:{http}\\r\\n\\r\\n"),
    "fronted": fronted(),
    "huge_host": fetch("http://allowed.test:{http}/huge", headers={{"Host": "a" * 700_000}}),
    "after_huge": fetch("https://allowed.test:{https}/after-huge"),
}})""",
    )
    assert "403" in seen["connect_host_mismatch"], seen
    assert seen["absolute_host_mismatch"][0] == 403, seen
    assert "403" in seen["ip_in_url"], seen
    assert seen["fronted"].startswith("refused"), seen
    assert seen["huge_host"][0] in (431, "refused"), seen["huge_host"]  # refused: mid-send
    assert seen["after_huge"][0] == 200, seen  # the proxy still serves

    paths = [r["path"] for r in outside.received]
    assert not {"/smuggled", "/ip", "/fronted", "/huge"} & set(paths), paths


TUNNEL_CODE = """
import json, ssl, time
def tunnel(port, first=b"", host=b"allowed.test", trickled=False):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=5)
    head = b"CONNECT %s:%d HTTP/1.1\\r\\nHost: %s\\r\\n\\r\\n" % (host, port, host)
    for i in range(len(head) if trickled else 0):  # a byte at a time
        s.sendall(head[i:i + 1])
        time.sleep(0.001)
    s.sendall((b"" if trickled else head) + first)
    return s
def answer_then_end(s, data):
    head = b""
    while b"\\r\\n\\r\\n" not in head:
        head += s.recv(4096)
    s.sendall(data)
    try:
        rest = s.recv(4096)
    except OSError as e:
        rest = type(e).__name__.encode()
    return [head.split(b"\\r\\n")[0].decode(), rest.decode(errors="replace")]
def in_records(hello, records):
    # The same ClientHello cut into `records` TLS records (as TLS allows, and clients seldom do).
    body = hello[5:]
    size = -(-len(body) // records)
    parts = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(hello[:3] + len(part).to_bytes(2, "big") + part for part in parts)
def client_hello(records=1):
    context = ssl.create_default_context(cafile="/tmp/ca.pem")
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="allowed.test")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return tls, incoming, outgoing, in_records(outgoing.read(), records)
def by_hand(port, path, pipelined=False, trickled=False, records=1):
    # TLS over memory buffers, so the ClientHello can go with the CONNECT or a byte at a time.
    tls, incoming, outgoing, hello = client_hello(records)
    s = tunnel(port, hello if pipelined else b"", trickled=trickled)
    data = b""
    while b"\\r\\n\\r\\n" not in data:
        data += s.recv(4096)
    status, rest = data.split(b"\\r\\n", 1)[0], data.split(b"\\r\\n\\r\\n", 1)[1]
    if not pipelined:
        for i in range(len(hello) if trickled else 1):
            s.sendall(hello[i:i + 1] if trickled else hello)
            time.sleep(0.001 if trickled else 0)
    incoming.write(rest)
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            s.sendall(outgoing.read())
            chunk = s.recv(65536)
            if not chunk:
                return "closed in the handshake"
            incoming.write(chunk)
    tls.write(b"GET %s HTTP/1.1\\r\\nHost: allowed.test\\r\\n\\r\\n" % path.encode())
    s.sendall(outgoing.read())
    answer = b""
    while b"\\r\\n" not in answer:
        try:
            answer += tls.read(65536)
        except ssl.SSLWantReadError:
            incoming.write(s.recv(65536))
    s.close()
    return status.decode() + " / " + answer.split(b"\\r\\n")[0].decode()
"""


def test_a_tunnel_carries_only_tls_that_names_its_host(
    client: openai.OpenAI, outside: Outside
) -> None:
    """What the proxy checks of a tunnel it passes through, however the session sends it: the
    ClientHello with the CONNECT, a byte at a time; nothing but TLS, and no endless handshake;
    and a connection upstream that cannot be made is reported."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]  # nothing listens there once this is closed
    container = ready_container(client, outside, f"allowed.test:{closed_port}")
    https = outside.https_port
    run(client, container.id, TUNNEL_CODE)
    body = run(
        client,
        container.id,
        f"""print(json.dumps({{
    "pipelined": by_hand({https}, "/pipelined", pipelined=True),
    "trickled": by_hand({https}, "/trickled", trickled=True),
    "plain": answer_then_end(tunnel({https}), b"GET /in-tunnel HTTP/1.1\\r\\nHost: allowed.test\\r\\n\\r\\n"),
    "endless": answer_then_end(tunnel({https}), b"\\x16\\x03\\x01\\xff\\xff\\x01\\xff\\xff\\xff" + bytes(65531) + b"\\x16\\x03\\x01\\x10\\x00" + bytes(4096)),
    "two_records": by_hand({https}, "/two-records", records=2),
    "many_records": answer_then_end(tunnel({https}), client_hello(records=100)[3]),
    "header_cut": answer_then_end(tunnel({https}), client_hello(records=300)[3]),
    "unreachable": fetch("https://allowed.test:{closed_port}/nowhere"),
}}))""",
    )
    seen = json.loads(body["stdout"])
    ok = "HTTP/1.1 200 Connection established / HTTP/1.1 200 OK"
    assert seen["pipelined"] == ok and seen["trickled"] == ok and seen["two_records"] == ok, seen
    for name in ("plain", "endless", "many_records", "header_cut"):
        status, rest = seen[name]
        assert status == "HTTP/1.1 200 Connection established", seen
        assert rest in ("", "ConnectionResetError"), seen  # closed, nothing answered
    assert seen["unreachable"][0] == "refused", seen
    paths = [r["path"] for r in outside.received]
    assert {"/pipelined", "/trickled", "/two-records"} <= set(paths) and "/in-tunnel" not in paths
    reasons = {(a.get("method"), a["port"], a.get("reason")) for a in body["network"]}
    for why in (
        "no TLS handshake",
        "a TLS handshake past 65536 bytes",
        "a TLS handshake in too many records",
        "a TLS handshake cut too small",
    ):
        assert ("TLS", https, f"{why} inside a tunnel to allowed.test") in reasons, reasons
    (unreachable,) = [a for a in body["network"] if a["scheme"] == "connect"]
    assert unreachable["host"] == "allowed.test" and unreachable["port"] == closed_port
    assert not unreachable["allowed"] and "connect call failed" in unreachable["reason"].lower()


def hold_tunnels(client: openai.OpenAI, container_id: str, outside: Outside, count: int) -> None:
    """`count` tunnels to allowed.test opened in the container and left open (in `held`)."""
    run(
        client,
        container_id,
        f"""
held = []
for _ in range({count}):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=5)
    s.sendall(b"CONNECT allowed.test:{outside.https_port} HTTP/1.1\\r\\n\\r\\n")
    assert s.recv(100).startswith(b"HTTP/1.1 200"), "tunnel"
    held.append(s)""",
    )


def test_the_proxy_reads_no_more_of_a_head_or_a_handshake_than_it_needs(
    client: openai.OpenAI, outside: Outside
) -> None:
    """A request head that never ends is answered 431 at 64 KiB, whether the proxy serves it
    or hands it on; a ClientHello to a domain with secrets (which mitmproxy reads) is held to
    the same bounds as one in a passthrough tunnel. Each is refused at once, not waited for."""
    container = ready_container(client, outside, secret=True)
    https, http = outside.https_port, outside.http_port
    run(client, container.id, TUNNEL_CODE)
    body = run(
        client,
        container.id,
        f"""
def endless_head(request):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=5)
    s.sendall(request)
    try:
        for _ in range(64):  # 4 MiB, a little at a time, never a head's end
            s.sendall(b"a" * 65536)
    except OSError:
        pass  # closed by the proxy: what it answered is waiting
    try:
        return s.recv(4096).decode(errors="replace").split("\\r\\n")[0]
    except OSError as e:
        return type(e).__name__
print(json.dumps({{
    "plain": endless_head(b"GET http://allowed.test:{http}/endless HTTP/1.1\\r\\nX-Long: "),
    "tunnel": endless_head(b"CONNECT allowed.test:{https} HTTP/1.1\\r\\nX-Long: "),
    "secret_huge": answer_then_end(tunnel({https}, host=b"secret.test"), b"\\x16\\x03\\x01\\x40\\x00\\x01\\xff\\xff\\xff" + bytes(1000)),
    "secret_records": answer_then_end(tunnel({https}, host=b"secret.test"), client_hello(records=100)[3]),
    "after": fetch("https://secret.test:{https}/after", verify=True),
}}))""",
    )
    seen = json.loads(body["stdout"])
    assert seen["plain"].startswith("HTTP/1.1 431"), seen
    assert seen["tunnel"].startswith("HTTP/1.1 431"), seen
    for name in ("secret_huge", "secret_records"):
        status, rest = seen[name]
        assert status == "HTTP/1.1 200 Connection established", seen
        assert rest in ("", "ConnectionResetError"), seen  # closed at once, not waited for
    assert seen["after"][0] == 200, seen
    assert "/endless" not in [r["path"] for r in outside.received]
    reasons = [a.get("reason") for a in body["network"]]
    assert reasons.count("a request head past 65536 bytes") == 2, body["network"]


def upstream_connections(proxy: int, outside: Outside) -> int:
    """How many connections the proxy holds open to the outside HTTPS server."""
    return sum(
        1
        for _, _, _, port, state in tcp_sockets(proxy)
        if port == outside.https_port and state == "established"
    )


def wait_for(condition: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_a_session_s_tunnels_end_with_it(
    client: openai.OpenAI, server: ServerProcess, outside: Outside
) -> None:
    container = ready_container(client, outside)
    hold_tunnels(client, container.id, outside, 4)
    proxy = proxy_pid(server)
    assert wait_for(lambda: upstream_connections(proxy, outside) >= 4)
    before = upstream_connections(proxy, outside)
    client.containers.delete(container.id)
    assert wait_for(lambda: upstream_connections(proxy, outside) <= before - 4)


def test_a_tunnel_cut_off_before_its_handshake_leaves_nothing_open_upstream(
    client: openai.OpenAI, server: ServerProcess, outside: Outside
) -> None:
    """The proxy connects upstream as soon as a CONNECT is allowed; a session that then resets
    its connection (no end, no ClientHello) must not leave that connection behind."""
    container = ready_container(client, outside)
    proxy = proxy_pid(server)
    before = upstream_connections(proxy, outside)
    hold_tunnels(client, container.id, outside, 6)
    assert wait_for(lambda: upstream_connections(proxy, outside) >= before + 6)
    run(
        client,
        container.id,
        """
import struct
for s in held:  # a reset, not an end: linger on, for no time
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()""",
    )
    assert wait_for(lambda: upstream_connections(proxy, outside) <= before)
    assert (
        value(client, container.id, f"json.dumps(fetch('{URL}'))".format(outside.https_port))[0]
        == 200
    )


def test_a_domain_secret_reaches_its_domain_only_and_never_the_session(
    client: openai.OpenAI, outside: Outside
) -> None:
    container = client.containers.create(
        name=unique("net"),
        network_policy=allowlist(outside, secret=True),  # type: ignore[arg-type]
    )
    shown = client.containers.retrieve(container.id).model_dump()
    assert SECRET_VALUE not in json.dumps(shown)
    assert SECRET_VALUE not in json.dumps(client.containers.list().model_dump())
    run(client, container.id, preamble(outside))
    https = outside.https_port
    seen = value(
        client,
        container.id,
        f"""
key = os.environ["API_KEY"]
import ssl
def tunnel_request(text):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
    s.sendall(b"CONNECT secret.test:{https} HTTP/1.1\\r\\nHost: secret.test:{https}\\r\\n\\r\\n")
    s.recv(4096)
    with ssl.create_default_context().wrap_socket(s, server_hostname="secret.test") as t:
        t.sendall(text.encode())
        return t.recv(4096).decode(errors="replace").split("\\r\\n")[0]
json.dumps({{
    "placeholder": key,
    "secret": fetch("https://secret.test:{https}/api?key=" + key, method="POST",
                    headers={{"Authorization": "Bearer " + key}}, data="token=" + key,
                    verify=True),
    "elsewhere": fetch("https://allowed.test:{https}/leak", headers={{"Authorization": "Bearer " + key}}),
    "kept_alive": [s.get("https://secret.test:{https}/again", timeout=10).status_code
                   for s in [requests.Session()] for _ in range(20)],
    "gzip": fetch("https://secret.test:{https}/gzip", headers={{"X-Key": key, "Accept-Encoding": "gzip"}}, verify=True),
    "other_host_in_tunnel": tunnel_request("GET https://other.test:{https}/tunnelled HTTP/1.1\\r\\nHost: secret.test:{https}\\r\\nX-Key: " + key + "\\r\\n\\r\\n"),
}})""",
    )
    assert seen["kept_alive"] == [200] * 20  # one connection, one upstream connection
    assert seen["gzip"][0] == 200 and SECRET_VALUE not in seen["gzip"][1], seen["gzip"]
    assert "403" in seen["other_host_in_tunnel"], seen
    placeholder = seen["placeholder"]
    assert placeholder and placeholder != SECRET_VALUE
    assert seen["secret"][0] == 200, seen
    # What the domain answered comes back with the value turned into the placeholder again.
    assert SECRET_VALUE not in seen["secret"][1]
    by_path = {r["path"].split("?")[0]: r for r in outside.received}
    sent = by_path["/api"]
    assert sent["path"] == f"/api?key={SECRET_VALUE}"
    assert {k.lower(): v for k, v in sent["headers"].items()}["authorization"] == (
        f"Bearer {SECRET_VALUE}"
    )
    # Not in a body: that is what a domain keeps and shows again.
    assert sent["body"] == f"token={placeholder}"
    assert "/tunnelled" not in by_path
    leak = by_path["/leak"]
    assert leak["headers"]["Authorization"] == f"Bearer {placeholder}"
    # Nowhere in the session: its environment, its files, its memory.
    found = value(
        client,
        container.id,
        f"""
# The value is looked for as two halves side by side: whole, it would be in memory as the
# needle itself (and in this code's text).
head, tail = {SECRET_VALUE[:8].encode()!r}, {SECRET_VALUE[8:].encode()!r}
def count(data):
    hits, at = 0, data.find(head)
    while at != -1:
        hits += data[at + len(head):at + len(head) + len(tail)] == tail
        at = data.find(head, at + 1)
    return hits
def in_memory():
    hits = 0
    with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("r"):
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(start)
                hits += count(mem.read(end - start))
            except (OSError, ValueError, OverflowError):
                pass
    return hits
def in_files():
    hits = []
    for root in ("/mnt/data", "/tmp", "/home", "/etc"):
        for folder, _, names in os.walk(root):
            for name in names:
                try:
                    with open(os.path.join(folder, name), "rb") as f:
                        if count(f.read()):
                            hits.append(os.path.join(folder, name))
                except OSError:
                    pass
    return hits
json.dumps({{
    "environ": sum(count(v.encode()) for v in os.environ.values()),
    "files": in_files(),
    "memory": in_memory(),
}})""",
    )
    assert found == {"environ": 0, "files": [], "memory": 0}, found


def test_every_attempt_is_reported_with_the_execution_and_its_trace(
    client: openai.OpenAI, server: ServerProcess, outside: Outside
) -> None:
    container = ready_container(client, outside)
    body = run(
        client,
        container.id,
        f"fetch('https://allowed.test:{outside.https_port}/a'); "
        f"fetch('https://other.test:{outside.https_port}/b')",
    )
    attempts = body["network"]
    assert [(a["host"], a["allowed"]) for a in attempts] == [
        ("allowed.test", True),
        ("other.test", False),
    ], attempts
    assert attempts[1]["reason"] == "other.test is not in the allowed domains"
    assert run(client, container.id, "1 + 1")["network"] == []
    # The trace viewer shows them on the execution's step.
    with viewer(server, key="local") as ui:
        page = ""
        deadline = time.monotonic() + 10  # traces are stored a moment after the answer
        while "other.test" not in page and time.monotonic() < deadline:
            listed = ui.get("/ui", params={"item_id": container.id}).text
            pages = [
                " ".join(text_of(ui.get(f"/ui/traces/{trace_id}").text).split())
                for trace_id in re.findall(r'data-trace="([0-9a-f]{16})"', listed)
            ]
            page = next((p for p in pages if "other.test" in p), "")
            time.sleep(0.2)
    assert f"GET https://allowed.test:{outside.https_port}" not in page  # passthrough: no path
    assert f"CONNECT https://allowed.test:{outside.https_port}" in page
    assert "refused" in page and "other.test is not in the allowed domains" in page
    # A container without a policy says nothing of a network it does not have.
    plain = client.containers.create(name=unique("plain"))
    assert "network" not in run(client, plain.id, "1 + 1")


def test_two_containers_with_different_policies_on_one_server(
    client: openai.OpenAI, outside: Outside
) -> None:
    https = outside.https_port
    wild = client.containers.create(
        name=unique("wild"),
        network_policy={"type": "allowlist", "allowed_domains": [f"*.wild.test:{https}"]},
    )
    narrow = client.containers.create(
        name=unique("narrow"),
        network_policy=allowlist(outside),  # type: ignore[arg-type]
    )
    closed = client.containers.create(name=unique("closed"), network_policy={"type": "disabled"})
    for container in (wild, narrow, closed):
        run(client, container.id, preamble(outside))
    for container, wanted in ((wild, (200, "refused")), (narrow, ("refused", 200))):
        seen = value(
            client,
            container.id,
            f"json.dumps([fetch('https://api.wild.test:{https}/w')[0], "
            f"fetch('https://allowed.test:{https}/n')[0]])",
        )
        assert tuple(seen) == wanted, (container.name, seen)
    seen = value(
        client,
        closed.id,
        f"json.dumps([fetch('https://allowed.test:{https}/c'), "
        "fetch('https://allowed.test/c', proxies={'https': 'http://127.0.0.1:3128'})])",
    )
    assert seen[0][0] == "refused" and "resolve" in seen[0][1], seen  # no names, no proxy
    assert seen[1][0] == "refused" and "Connection refused" in seen[1][1], seen
    assert client.containers.retrieve(closed.id).network_policy.type == "disabled"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("policy", "words"),
    [
        ({"type": "allowlist", "allowed_domains": []}, "at least one"),
        ({"type": "allowlist", "allowed_domains": ["10.0.0.1"]}, "IP address"),
        ({"type": "allowlist", "allowed_domains": ["not a domain"]}, "not a domain name"),
        ({"type": "allowlist", "allowed_domains": ["a.test:99999"]}, "port"),
        (
            {
                "type": "allowlist",
                "allowed_domains": ["a.test"],
                "domain_secrets": [{"domain": "b.test", "name": "K", "value": "v"}],
            },
            "not allowed",
        ),
        (
            {
                "type": "allowlist",
                "allowed_domains": ["a.test"],
                "domain_secrets": [{"domain": "a.test", "name": "PATH", "value": "v"}],
            },
            "variable the sandbox sets",
        ),
        ({"type": "open"}, "type"),
    ],
)
def test_a_bad_policy_is_a_400_naming_it(
    client: openai.OpenAI, policy: dict[str, Any], words: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.containers.create(name=unique("bad"), network_policy=policy)  # type: ignore[arg-type]
    error = assert_envelope(caught.value.response, 400)
    assert error["param"] in ("network_policy", "network_policy.type"), error
    assert words in caught.value.message, caught.value.message


def test_a_server_without_the_proxy_says_so(tmp_path: Path) -> None:
    env = {"CODEINTERP_POOL_SIZE": "0", "CODEINTERP_EGRESS_MITMDUMP": str(tmp_path / "none")}
    with ServerProcess(env, tmp_path) as server, server.client(max_retries=0) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            client.containers.create(
                name="x",
                network_policy={"type": "allowlist", "allowed_domains": ["a.test"]},
            )
        assert caught.value.status_code == 503
        assert "egress proxy" in caught.value.message
        assert client.containers.list().data == []  # nothing half-made is left


def test_the_responses_tool_container_takes_a_policy_and_the_model_is_told(
    client: openai.OpenAI, upstream: ScriptedUpstream, outside: Outside
) -> None:
    url = f"https://allowed.test:{outside.https_port}/from-responses"
    code = (
        f"import requests\nopen('/tmp/ca.pem', 'w').write({outside.ca_pem!r})\n"
        f"print(requests.get({url!r}, verify='/tmp/ca.pem').json()['path'])"
    )

    def script(request: Request) -> Text | ToolCalls:
        if not any(m.get("role") == "tool" for m in request["messages"]):
            return python_call(code)
        return Text("fetched")

    upstream.script = script
    tool = {
        "type": "code_interpreter",
        "container": {"type": "auto", "network_policy": allowlist(outside)},
    }
    response = client.responses.create(
        model="gpt-4o", input="fetch it", tools=[tool], include=["code_interpreter_call.outputs"]
    )
    assert response.status == "completed", response.error
    call = next(item for item in response.output if item.type == "code_interpreter_call")
    assert call.outputs is not None
    assert [o.model_dump() for o in call.outputs] == [{"type": "logs", "logs": "/from-responses\n"}]
    system = upstream.requests[0]["messages"][0]["content"]
    assert f"allowed.test:{outside.https_port}" in system and "no internet" not in system
    container = client.containers.retrieve(call.container_id)
    assert container.network_policy is not None and container.network_policy.type == "allowlist"


def test_the_python_client_makes_a_container_with_a_policy(
    server: ServerProcess, outside: Outside
) -> None:
    with Client(server.base_url) as ci, ci.container(network_policy=allowlist(outside)) as box:
        box.run(preamble(outside))
        result = box.run(f"print(fetch('https://allowed.test:{outside.https_port}/client')[0])")
        assert result.stdout == "200\n", result


def test_a_secret_survives_a_restart_and_never_shows(
    outside: Outside, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    """The policy (its secret too) is kept with the container, not with its saved state: after a
    restart, the woken container reaches its domain with the secret; no read shows it."""
    env = {**network_env(outside, upstream), "CODEINTERP_CHECKPOINT_SECONDS": "0"}
    with ServerProcess(env, tmp_path) as server:
        with server.client() as client:
            container = client.containers.create(
                name=unique("kept"),
                network_policy=allowlist(outside, secret=True),  # type: ignore[arg-type]
            )
            run(client, container.id, preamble(outside))
        server.restart()  # a graceful stop saves the session; the next call wakes it
        with server.client() as client:
            asleep = client.containers.retrieve(container.id).model_dump()
            assert asleep["status"] == "running" and SECRET_VALUE not in json.dumps(asleep)
            listed = client.containers.list().model_dump()
            assert SECRET_VALUE not in json.dumps(listed)
            seen = value(
                client,
                container.id,
                f"json.dumps(fetch('https://secret.test:{outside.https_port}/woken', "
                "headers={'X-Key': os.environ['API_KEY']}, verify=True))",
            )
    assert seen[0] == 200, seen
    sent = next(r for r in outside.received if r["path"] == "/woken")
    assert {k.lower(): v for k, v in sent["headers"].items()}["x-key"] == SECRET_VALUE
    # The database keeps it; the saved state and the log do not.
    assert SECRET_VALUE not in (tmp_path / "server.log").read_text()


def test_an_expired_container_s_secrets_are_not_kept(
    outside: Outside, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    """A container that can never wake again (here: idle past its time, persistence off) is
    stored without its secrets; the rest of it stays."""
    env = {
        **network_env(outside, upstream),
        "CODEINTERP_SESSION_PERSISTENCE": "false",
        "CODEINTERP_SESSION_IDLE_MINUTES": str(1.5 / 60),
        "CODEINTERP_CONTAINER_IDLE_CAP_MINUTES": str(1.5 / 60),
    }
    with ServerProcess(env, tmp_path) as server, server.client() as client:
        container = client.containers.create(
            name=unique("gone"),
            network_policy=allowlist(outside, secret=True),  # type: ignore[arg-type]
        )
        run(client, container.id, "1")
        time.sleep(1.5 + 1.5)  # past its idle time, untouched (a retrieve is activity)
        assert client.containers.retrieve(container.id).status == "expired"
        with sqlite3.connect(tmp_path / "codeinterp.db") as db:
            (body,) = db.execute(
                "SELECT body FROM containers WHERE id = ?", (container.id,)
            ).fetchone()
    stored = json.loads(body)
    assert stored["status"] == "expired" and stored["name"] == container.name
    assert "domain_secrets" not in stored and SECRET_VALUE not in body


def test_an_assistant_s_policy_is_its_threads_sessions_and_never_shows_its_secret(
    client: openai.OpenAI, upstream: ScriptedUpstream, outside: Outside
) -> None:
    https = outside.https_port
    code = (
        f"import os, requests\nopen('/tmp/ca.pem', 'w').write({outside.ca_pem!r})\n"
        f"print(requests.get('https://allowed.test:{https}/assistant', verify='/tmp/ca.pem')"
        ".json()['path'])\n"
        f"print(requests.get('https://secret.test:{https}/assistant-secret', "
        "headers={'X-Key': os.environ['API_KEY']}).status_code)"
    )

    def script(request: Request) -> Text | ToolCalls:
        if not any(m.get("role") == "tool" for m in request["messages"]):
            return python_call(code)
        return Text("done")

    upstream.script = script
    assistant = client.beta.assistants.create(
        model="gpt-4o",
        tools=[{"type": "code_interpreter"}],
        extra_body={"network_policy": allowlist(outside, secret=True)},
    )
    shown = client.beta.assistants.retrieve(assistant.id).model_dump()
    assert shown["network_policy"]["type"] == "allowlist", shown
    assert SECRET_VALUE not in json.dumps(shown)
    assert SECRET_VALUE not in json.dumps(client.beta.assistants.list().model_dump())
    renamed = client.beta.assistants.update(assistant.id, name="renamed").model_dump()
    assert renamed["network_policy"] == shown["network_policy"]  # kept, secret too (below)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "fetch"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed", run.last_error
    assert upstream.tool_results(-1) == ["/assistant\n200"]
    sent = next(r for r in outside.received if r["path"] == "/assistant-secret")
    assert {k.lower(): v for k, v in sent["headers"].items()}["x-key"] == SECRET_VALUE
    assert f"allowed.test:{https}" in upstream.requests[0]["messages"][0]["content"]
    # Without a policy, an assistant's threads have no network, and it shows no such field.
    plain = client.beta.assistants.create(model="gpt-4o", tools=[{"type": "code_interpreter"}])
    assert "network_policy" not in plain.model_dump(exclude_unset=True)


# The test's index passes through the proxy untouched, with the test CA's certificate: pip
# (which verifies with REQUESTS_CA_BUNDLE, the session's bundle) is told to trust that CA.
TRUST_TEST_CA = "\nos.environ['REQUESTS_CA_BUNDLE'] = '/tmp/ca.pem'\n"


def test_pip_installs_from_an_allowed_index_into_the_session_and_fails_at_once_otherwise(
    client: openai.OpenAI, outside: Outside, tmp_path: Path
) -> None:
    wheel = make_wheel(tmp_path, "ci_netpkg", "1.0", {"ci_netpkg/__init__.py": "VALUE = 7\n"})
    outside.files["/simple/ci-netpkg/"] = (
        f'<html><body><a href="/files/{wheel.name}">{wheel.name}</a></body></html>'.encode()
    )
    outside.files[f"/files/{wheel.name}"] = wheel.read_bytes()
    https = outside.https_port
    index = f"https://index.test:{https}/simple"
    container = client.containers.create(
        name=unique("pip"),
        network_policy=allowlist(outside, f"index.test:{https}"),  # type: ignore[arg-type]
    )
    run(client, container.id, preamble(outside) + TRUST_TEST_CA)
    installed = execute(client, container.id, f"%pip install --index-url {index} ci_netpkg")
    assert installed["status"] == "ok", installed["stdout"]
    assert "Successfully installed ci_netpkg-1.0" in installed["stdout"], installed["stdout"]
    assert text_result(execute(client, container.id, "import ci_netpkg\nci_netpkg.VALUE")) == "7"
    child = execute(
        client,
        container.id,
        "import subprocess, sys\n"
        "subprocess.run([sys.executable, '-c', 'import ci_netpkg; print(ci_netpkg.VALUE)'])",
    )
    assert child["stdout"].strip() == "7", child
    # Where the index is not allowed, pip says why at once.
    closed = client.containers.create(
        name=unique("pip"),
        network_policy=allowlist(outside),  # type: ignore[arg-type]
    )
    run(client, closed.id, preamble(outside) + TRUST_TEST_CA)
    started = time.monotonic()
    refused = execute(client, closed.id, f"%pip install --index-url {index} ci_netpkg")
    assert time.monotonic() - started < 20
    assert refused["status"] == "error", refused
    assert "index.test is not in the allowed domains" in refused["error"]["value"], refused


def test_a_session_cannot_make_the_server_hold_more_than_its_connections(
    client: openai.OpenAI, outside: Outside
) -> None:
    """Connections past the cap are closed as they come, and reported; the session can go on
    once it lets some go; and the cap is the session's, not the server's."""
    container = ready_container(client, outside)
    neighbour = ready_container(client, outside)
    body = run(
        client,
        container.id,
        f"""
import select, time
held = [socket.create_connection(("127.0.0.1", 3128), timeout=5) for _ in range({CAP + 8})]
closed, started = set(), time.monotonic()
while time.monotonic() - started < 3:  # past the cap, each is closed as it is accepted
    readable, _, _ = select.select([s for s in held if s not in closed], [], [], 0.2)
    closed.update(s for s in readable if s.recv(1) == b"")
print(len(closed))
for s in held:
    s.close()
for _ in range(50):  # the relays of the closed connections end a moment later
    if fetch("https://allowed.test:{outside.https_port}/after-cap")[0] == 200:
        print("fetched")
        break
    time.sleep(0.1)""",
    )
    assert body["stdout"].split() == ["8", "fetched"], body["stdout"]
    over = [a for a in body["network"] if "connections open at once" in (a.get("reason") or "")]
    assert len(over) >= 8, body["network"]  # and any retry that came before a slot was free
    assert (
        value(
            client,
            neighbour.id,
            f"json.dumps(fetch('https://allowed.test:{outside.https_port}/n'))",
        )[0]
        == 200
    )


def test_the_proxy_starts_again_if_it_dies_and_sessions_go_on(
    client: openai.OpenAI, server: ServerProcess, outside: Outside
) -> None:
    container = ready_container(client, outside)
    assert (
        value(client, container.id, f"json.dumps(fetch('{URL}'))".format(outside.https_port))[0]
        == 200
    )
    proxy = proxy_pid(server)
    os.kill(proxy, signal.SIGKILL)
    seen = value(
        client,
        container.id,
        f"""
import time
for _ in range(50):
    answer = fetch('{URL}')
    if answer[0] == 200:
        break
    time.sleep(0.1)
json.dumps(answer)""".format(outside.https_port),
    )
    assert seen[0] == 200, seen


def proxy_pid(server: ServerProcess) -> int:
    """The pid of the server's egress proxy (mitmdump, its child)."""
    (pid,) = [
        int(pid)
        for pid in os.listdir("/proc")
        if pid.isdigit()
        and "mitmdump" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        and Path(f"/proc/{pid}/stat").read_text().split()[3] == str(server.pid)
    ]
    return pid


def tcp_sockets(pid: int) -> list[tuple[str, int, str, int, str]]:
    """(local address, port, remote address, port, state) of the host's IPv4 TCP sockets that
    process `pid` holds."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])

    def address(field: str) -> tuple[str, int]:
        host, port = field.split(":")
        return socket.inet_ntoa(bytes.fromhex(host)[::-1]), int(port, 16)

    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[9] in inodes:
            state = {"01": "established", "0A": "listen"}.get(fields[3], fields[3])
            found.append((*address(fields[1]), *address(fields[2]), state))
    return found


def test_the_server_carries_no_session_traffic_and_the_proxy_serves_sessions_only(
    client: openai.OpenAI, server: ServerProcess, outside: Outside
) -> None:
    """Each session's listener is handed to the proxy, which accepts there itself: while a
    session holds connections open through it, the server holds none to the proxy. And the
    proxy's own listener on the host's loopback serves no one, whatever address one comes from
    (a session's address is only a name the proxy gives the connections it accepts for it)."""
    container = ready_container(client, outside)
    assert (
        value(client, container.id, f"json.dumps(fetch('{URL}'))".format(outside.https_port))[0]
        == 200
    )
    hold_tunnels(client, container.id, outside, 3)
    proxy = proxy_pid(server)
    (port,) = {p for _, p, _, _, state in tcp_sockets(proxy) if state == "listen"}
    assert [s for s in tcp_sockets(server.pid) if port in (s[1], s[3])] == []
    # From the host, under every address a session of this server may have had: nothing.
    for last in range(1, 256):
        with socket.create_connection(
            ("127.0.0.1", port), timeout=5, source_address=(f"127.64.0.{last}", 0)
        ) as intruder:
            intruder.sendall(f"CONNECT allowed.test:{outside.https_port} HTTP/1.1\r\n\r\n".encode())
            try:
                answer = intruder.recv(100)
            except ConnectionResetError:
                answer = b""
            assert answer == b"", (last, answer)
    run(client, container.id, "for s in held: s.close()")
