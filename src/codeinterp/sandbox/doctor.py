"""Which protections work on this machine, and what to do about the ones that do not."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

from . import linux
from .cgroups import CgroupManager


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _root() -> Check:
    if os.geteuid() == 0:
        return Check("privileges", True, "running as root")
    return Check(
        "privileges",
        False,
        "not root: run the server as root (or in a container with CAP_SYS_ADMIN and a "
        "delegated cgroup subtree)",
    )


def _namespaces() -> Check:
    flags = (
        linux.CLONE_NEWNS
        | linux.CLONE_NEWNET
        | linux.CLONE_NEWIPC
        | linux.CLONE_NEWUTS
        | linux.CLONE_NEWPID
        | linux.CLONE_NEWCGROUP
    )
    pid = os.fork()
    if pid == 0:
        try:
            linux.unshare(flags)
            os._exit(0)
        except OSError as exc:
            os._exit(min(exc.errno or 1, 255))
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return Check("namespaces", True, "mount, pid, network, ipc, uts and cgroup namespaces")
    return Check(
        "namespaces",
        False,
        f"unshare failed ({os.strerror(code)}): run as root, outside a container that blocks "
        "unshare (Docker: --privileged or a seccomp profile that allows it)",
    )


def _cgroups() -> Check:
    ok, detail = CgroupManager.probe()
    return Check("cgroups", ok, detail)


def _seccomp() -> Check:
    from . import seccomp

    ok, detail = seccomp.supported()
    if not ok:
        return Check("seccomp", ok, detail)
    # Both profiles must build for this machine: a session may ask for either.
    from .seccomp_allowlist import ALLOWED

    try:
        sizes = {
            name: len(seccomp.build_program(seccomp.profile(name))) // 8
            for name in seccomp.PROFILES
        }
    except (OSError, ValueError) as exc:
        return Check("seccomp", False, f"cannot build the seccomp filters: {exc}")
    locks_ok, locks_detail = seccomp.lock_supervision_supported()
    locks = locks_detail if locks_ok else f"record locks NOT counted per session: {locks_detail}"
    return Check(
        "seccomp",
        True,
        f"{detail}; profiles: deny ({sizes['deny']} BPF instructions), "
        f"allow ({len(ALLOWED)} syscalls listed, {sizes['allow']} instructions); {locks}",
    )


def _architecture() -> Check:
    machine = platform.machine()
    ok = machine in ("x86_64", "aarch64")
    return Check("architecture", ok, machine if ok else f"{machine} is not supported")


def run_checks() -> list[Check]:
    if platform.system() != "Linux":
        return [Check("platform", False, f"{platform.system()}: the sandbox needs Linux")]
    checks = [_architecture(), _root()]
    if checks[-1].ok:
        checks += [_namespaces(), _cgroups()]
    checks.append(_seccomp())
    return checks


def isolation_problems() -> list[str]:
    """One sentence per missing protection, each naming the fix; empty when all are present."""
    return [f"{c.name}: {c.detail}" for c in run_checks() if not c.ok]
