"""The egress proxy's rules (egress/addon.py), run where they run: in the proxy's own venv
(.venv-egress, which scripts/setup makes), in a Python of that venv."""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from codeinterp.egress import default_mitmdump
from codeinterp.egress.proxy import ADDON

PYTHON = default_mitmdump().replace("/mitmdump", "/python")

CHECKS = """
import importlib.util, json, os, socket
read, write = os.pipe()
os.environ["CODEINTERP_EGRESS_EVENTS_FD"] = str(write)
spec = importlib.util.spec_from_file_location("egress_addon", ADDON)
addon = importlib.util.module_from_spec(spec)
spec.loader.exec_module(addon)
egress = addon.egress
egress.resolve = {"pinned.test": "127.0.0.1"}

def emitted_line():
    # Text that JSON escapes at 6 bytes a character, in every field an attempt has.
    egress._attempt("127.64.0.1", "https", "\u00e9" * 400, 443, "\u00e9" * 400,
                    method="\u00e9" * 400, path="\u00e9" * 400)
    return os.read(read, 1 << 16).decode()

def hello_progress():
    hello = bytes.fromhex("16030100c8010000c4") + bytes(0xc4)  # one record, whole
    step = addon.client_hello_progress
    tiny_record = bytes.fromhex("16030100010a")
    return {
        "whole": step(hello),
        "partial": step(hello[:100]),
        "header_only": step(hello[:9]),
        "not_tls": step(b"GET / HTTP/1.1"),
        "not_a_hello": step(bytes.fromhex("160301000402")),
        "declared_huge": step(bytes.fromhex("1603014000") + bytes.fromhex("01ffffff")),
        "header_cut": step(bytes.fromhex("160301000201c4") + bytes.fromhex("16030100020000")),
        "many_records": step(bytes.fromhex("160301000401000010") + tiny_record * 20),
    }

def outcome(host, port=443):
    try:
        return sorted({entry[4][0] for entry in socket.getaddrinfo(host, port)})
    except OSError as e:
        return "refused: " + str(e)

policy = addon.Policy.parse({"allowed_domains": ["api.example.com", "*.wild.example",
                                                 "ports.example:8443", "Trailing.Example."]})
print(json.dumps({
    "loopback_name": outcome("localhost"),
    "pinned": outcome("pinned.test"),
    "pinned_dot_case": outcome("PINNED.test."),
    "ip_literal": outcome("127.0.0.1"),
    "exact": policy.refusal("api.example.com", 443, "https"),
    "exact_http": policy.refusal("api.example.com", 80, "http"),
    "exact_other_port": policy.refusal("api.example.com", 8443, "https"),
    "sub_of_exact": policy.refusal("x.api.example.com", 443, "https"),
    "wild_sub": policy.refusal("a.b.wild.example", 443, "https"),
    "wild_apex": policy.refusal("wild.example", 443, "https"),
    "wild_lookalike": policy.refusal("evilwild.example", 443, "https"),
    "named_port": policy.refusal("ports.example", 8443, "https"),
    "named_port_default": policy.refusal("ports.example", 443, "https"),
    "trailing": policy.refusal("trailing.example", 443, "https"),
    "ip": policy.refusal("93.184.215.14", 443, "https"),
    "event_line": emitted_line(),
    "hello_progress": hello_progress(),
}))
"""


@pytest.fixture(scope="module")
def checked() -> dict[str, object]:
    code = f"ADDON = {ADDON!r}\n" + textwrap.dedent(CHECKS)
    done = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_names_resolve_to_public_addresses_or_the_servers_override_only(
    checked: dict[str, object],
) -> None:
    refusal = str(checked["loopback_name"])
    assert refusal.startswith("refused") and "localhost resolves only to non-public" in refusal
    assert checked["pinned"] == ["127.0.0.1"]
    assert checked["pinned_dot_case"] == ["127.0.0.1"]
    assert checked["ip_literal"] == ["127.0.0.1"]  # the proxy's own listener is bound by one


def test_allowed_entries_match_names_and_ports_exactly(checked: dict[str, object]) -> None:
    for allowed in ("exact", "exact_http", "wild_sub", "named_port", "trailing"):
        assert checked[allowed] is None, (allowed, checked[allowed])
    assert checked["exact_other_port"] == "port 8443 is not allowed for api.example.com"
    assert checked["named_port_default"] == "port 443 is not allowed for ports.example"
    for refused in ("sub_of_exact", "wild_apex", "wild_lookalike"):
        assert checked[refused] == f"{_host(refused)} is not in the allowed domains"
    assert "IP address" in str(checked["ip"])


def _host(case: str) -> str:
    return {
        "sub_of_exact": "x.api.example.com",
        "wild_apex": "wild.example",
        "wild_lookalike": "evilwild.example",
    }[case]


def test_an_event_is_one_whole_line_whatever_text_it_carries(checked: dict[str, object]) -> None:
    line = str(checked["event_line"])
    assert line.endswith("\n") and line.count("\n") == 1
    assert len(line.encode()) <= 4096  # PIPE_BUF: written at once, never interleaved
    event = json.loads(line)
    assert event["allowed"] is False and event["host"].startswith("\u00e9")


def test_a_client_hello_is_parsed_only_once_it_can_be_whole(checked: dict[str, object]) -> None:
    progress = checked["hello_progress"]
    assert isinstance(progress, dict)
    assert progress["whole"] == [True, None]
    assert progress["partial"] == progress["header_only"] == [False, None]
    assert progress["not_tls"] == progress["not_a_hello"] == [False, "no TLS handshake"]
    assert progress["declared_huge"] == [False, "a TLS handshake past 65536 bytes"]
    assert progress["header_cut"] == [False, "a TLS handshake cut too small"]
    assert progress["many_records"] == [False, "a TLS handshake in too many records"]
