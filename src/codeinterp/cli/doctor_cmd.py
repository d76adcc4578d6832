"""`codeinterp doctor`: which protections are active here, and why any is missing."""

from __future__ import annotations

import argparse
from typing import Any

from codeinterp.sandbox.doctor import run_checks
from codeinterp.sandbox.engine import SandboxConfig
from codeinterp.sandbox.policy import SandboxPolicy


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("doctor", help="show which sandbox protections work here")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    checks = run_checks()
    width = max(len(c.name) for c in checks)
    for check in checks:
        mark = "ok     " if check.ok else "MISSING"
        print(f"{mark}  {check.name:<{width}}  {check.detail}")
    print()
    print("Default session policy:")
    # With the seccomp profile sessions get here (CODEINTERP_SECCOMP_PROFILE, else "deny").
    for line in SandboxConfig().effective(SandboxPolicy()).describe():
        print(f"  {line}")
    if all(c.ok for c in checks):
        print("\nAll protections are available: sessions run isolated.")
        return 0
    print(
        "\nSessions cannot be isolated here. Fix the items marked MISSING, or run with "
        "--unsafe-no-sandbox to execute code with no isolation at all."
    )
    return 1
