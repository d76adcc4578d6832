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
