"""Tests for codeinterp.sandbox.seccomp.

Pure tests run the generated program through a small classic-BPF interpreter.  Tests
marked ``root`` fork a child, install the filter there and report syscall results back
through a pipe as JSON; the child always leaves with ``os._exit``.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import re
import resource
import signal
import socket
import struct
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from codeinterp.sandbox import seccomp
from codeinterp.sandbox.seccomp import SeccompProfile, build_program, install, supported

IS_X86_64 = platform.machine() == "x86_64"

# x86_64 numbers written out independently of the module's table.
NR = {
    "ioctl": 16,
    "socket": 41,
    "socketpair": 53,
    "clone": 56,
    "getpid": 39,
    "ptrace": 101,
    "personality": 135,
    "chroot": 161,
    "mount": 165,
    "init_module": 175,
    "keyctl": 250,
    "unshare": 272,
    "setns": 308,
    "bpf": 321,
    "io_uring_setup": 425,
    "clone3": 435,
}
X32_BIT = 0x40000000
AF_PACKET, AF_NETLINK, AF_ALG, AF_VSOCK = 17, 16, 38, 40
READ_IMPLIES_EXEC = 0x0400000
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000


# --- a classic BPF interpreter for the opcodes the builder emits ---------------------------


def run_bpf(program: bytes, nr: int, arch: int, args: tuple[int, ...] = ()) -> int:
    full = (*args, *([0] * (6 - len(args))))
    data = struct.pack("<iIQ6Q", nr, arch, 0, *full)
    insns: list[tuple[int, int, int, int]] = [
        struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)
    ]
    pc, acc = 0, 0
    for _ in range(len(insns) + 1):
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == 0x20:  # ld [k]
            assert k % 4 == 0 and k < len(data)
            (acc,) = struct.unpack_from("<I", data, k)
        elif code == 0x06:  # ret k
            return k
        elif code == 0x05:  # ja
            pc += k
        elif code == 0x15:
            pc += jt if acc == k else jf
        elif code == 0x25:
            pc += jt if acc > k else jf
        elif code == 0x45:
            pc += jt if acc & k else jf
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
    raise AssertionError("program did not return")


ALLOW = seccomp.SECCOMP_RET_ALLOW
KILL = seccomp.SECCOMP_RET_KILL_PROCESS


def err(e: int) -> int:
    return seccomp.SECCOMP_RET_ERRNO | e


@pytest.fixture(scope="module")
def x86_program() -> bytes:
    return build_program(SeccompProfile(), arch="x86_64")


def test_program_shape() -> None:
    for arch in ("x86_64", "aarch64"):
        program = build_program(SeccompProfile(), arch=arch)
        assert len(program) % 8 == 0
        assert 0 < len(program) // 8 < 4096
        assert program == build_program(SeccompProfile(), arch=arch)  # deterministic


def test_unknown_name_and_bad_arch_rejected() -> None:
    with pytest.raises(ValueError, match="no_such_syscall"):
        build_program(SeccompProfile(denied_syscalls=("no_such_syscall",)))
    with pytest.raises(ValueError, match="architecture"):
        build_program(SeccompProfile(), arch="mips")


def test_long_deny_list_still_assembles() -> None:
    names = tuple(seccomp._ARCHES["x86_64"].syscalls)  # every syscall: chunked jumps
    program = build_program(SeccompProfile(denied_syscalls=names), arch="x86_64")
    assert run_bpf(program, 0, seccomp.AUDIT_ARCH_X86_64) == err(errno.EPERM)
    assert run_bpf(program, 470, seccomp.AUDIT_ARCH_X86_64) == err(errno.EPERM)


def test_table_matches_system_header() -> None:
    header = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
    if not header.exists():
        pytest.skip("no x86_64 kernel headers")
    table = seccomp._ARCHES["x86_64"].syscalls
    found = re.findall(r"#define __NR_(\w+) (\d+)", header.read_text())
    assert found
    for name, number in found:
        assert table[name] == int(number), name


def test_bpf_x86_64(x86_program: bytes) -> None:
    a = seccomp.AUDIT_ARCH_X86_64

    def run(nr: int, *args: int) -> int:
        return run_bpf(x86_program, nr, a, args)

    assert run_bpf(x86_program, 39, 0x40000003) == KILL  # i386 getpid
    assert run(X32_BIT | 39) == KILL
    assert run(-1) == err(errno.ENOSYS)
    assert run(471) == err(errno.ENOSYS) and run(1000) == err(errno.ENOSYS)
    assert run(NR["getpid"]) == ALLOW and run(462) == ALLOW  # mseal
    for name in ("ptrace", "mount", "unshare", "init_module", "bpf", "keyctl", "setns"):
        assert run(NR[name]) == err(errno.EPERM), name
    assert run(NR["clone3"]) == err(errno.ENOSYS)
    assert run(NR["clone"], 0x11 | 0x01000000 | 0x00200000) == ALLOW  # fork()'s flags
    assert run(NR["clone"], 0x003D0F00) == ALLOW  # pthread_create()'s flags
    assert run(NR["clone"], CLONE_NEWUSER | 0x11) == err(errno.EPERM)
    assert run(NR["clone"], 0x80) == err(errno.EPERM)  # CLONE_NEWTIME
    assert run(NR["personality"], 0xFFFFFFFF) == ALLOW
    assert run(NR["personality"], 0xFFFFFFFFFFFFFFFF) == ALLOW  # kernel reads u32: a query
    assert run(NR["personality"], 0x20008) == ALLOW
    assert run(NR["personality"], READ_IMPLIES_EXEC) == err(errno.EPERM)
    assert run(NR["personality"], (1 << 32) | READ_IMPLIES_EXEC) == err(errno.EPERM)
    assert run(NR["ioctl"], 1, 0x5412) == err(errno.EPERM)
    assert run(NR["ioctl"], 1, (1 << 32) | 0x5412) == err(errno.EPERM)  # CVE-2019-10063
    assert run(NR["ioctl"], 1, 0x541C) == err(errno.EPERM)
    assert run(NR["ioctl"], 1, 0x5401) == ALLOW  # TCGETS
    for call in ("socket", "socketpair"):
        for good in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6):
            assert run(NR[call], good) == ALLOW
        for family in (AF_PACKET, AF_NETLINK, AF_VSOCK, AF_ALG, 0xFFFFFFFF):
            assert run(NR[call], family) == err(errno.EAFNOSUPPORT)
        assert run(NR[call], (1 << 32) | AF_NETLINK) == err(errno.EAFNOSUPPORT)


def test_bpf_aarch64() -> None:
    program = build_program(SeccompProfile(), arch="aarch64")
    a = seccomp.AUDIT_ARCH_AARCH64
    assert run_bpf(program, 172, seccomp.AUDIT_ARCH_X86_64) == KILL
    assert run_bpf(program, 172, a) == ALLOW  # getpid
    assert run_bpf(program, 97, a) == err(errno.EPERM)  # unshare
    assert run_bpf(program, 435, a) == err(errno.ENOSYS)  # clone3
    assert run_bpf(program, 471, a) == err(errno.ENOSYS)
    assert run_bpf(program, 220, a, (CLONE_NEWNET,)) == err(errno.EPERM)  # clone
    assert run_bpf(program, 198, a, (AF_NETLINK,)) == err(errno.EAFNOSUPPORT)  # socket
    assert run_bpf(program, 29, a, (0, 0x5412)) == err(errno.EPERM)  # ioctl TIOCSTI


MAP_HUGETLB, MFD_HUGETLB, SHM_HUGETLB = 0x40000, 0x4, 0o4000
MAP_PRIVATE_ANONYMOUS = 0x22


def test_bpf_host_resources_x86_64(x86_program: bytes) -> None:
    """AIO and inotify answer ENOSYS, modify_ldt EPERM, and only the huge page flavours of
    mmap, memfd_create and shmget are refused."""

    def run(nr: int, *args: int) -> int:
        return run_bpf(x86_program, nr, seccomp.AUDIT_ARCH_X86_64, args)

    for nr in (206, 207, 208, 209, 210, 333, 253, 294, 254, 255):  # io_*, inotify_*
        assert run(nr) == err(errno.ENOSYS), nr
    assert run(154) == err(errno.EPERM)  # modify_ldt
    assert run(300) == err(errno.EPERM)  # fanotify_init
    assert run(9, 0, 4096, 3, MAP_PRIVATE_ANONYMOUS) == ALLOW
    assert run(9, 0, 4096, 3, MAP_PRIVATE_ANONYMOUS | MAP_HUGETLB) == err(errno.EPERM)
    assert run(9, 0, 4096, 3, (1 << 32) | MAP_PRIVATE_ANONYMOUS) == ALLOW  # high word ignored
    assert run(319, 0, 1) == ALLOW  # memfd_create(MFD_CLOEXEC)
    assert run(319, 0, MFD_HUGETLB | 1) == err(errno.EPERM)
    assert run(29, 0, 4096, 0o1600) == ALLOW  # shmget(IPC_CREAT | 0600)
    assert run(29, 0, 4096, 0o1600 | SHM_HUGETLB) == err(errno.EPERM)


def test_bpf_host_resources_aarch64() -> None:
    program = build_program(SeccompProfile(), arch="aarch64")

    def run(nr: int, *args: int) -> int:
        return run_bpf(program, nr, seccomp.AUDIT_ARCH_AARCH64, args)

    for nr in (0, 1, 2, 3, 4, 292, 26, 27, 28):  # io_*, inotify_init1/add_watch/rm_watch
        assert run(nr) == err(errno.ENOSYS), nr
    assert run(222, 0, 4096, 3, MAP_PRIVATE_ANONYMOUS) == ALLOW  # mmap
    assert run(222, 0, 4096, 3, MAP_PRIVATE_ANONYMOUS | MAP_HUGETLB) == err(errno.EPERM)
    assert run(279, 0, MFD_HUGETLB) == err(errno.EPERM)  # memfd_create
    assert run(194, 0, 4096, SHM_HUGETLB) == err(errno.EPERM)  # shmget


def test_unavailable_list_is_a_profile_field() -> None:
    """An empty unavailable list lets AIO through; a denied name wins over an unavailable one."""
    a = seccomp.AUDIT_ARCH_X86_64
    program = build_program(SeccompProfile(unavailable_syscalls=()), arch="x86_64")
    assert run_bpf(program, 206, a) == ALLOW
    both = SeccompProfile(denied_syscalls=("io_setup",), unavailable_syscalls=("io_setup",))
    assert run_bpf(build_program(both, arch="x86_64"), 206, a) == err(errno.EPERM)
    with pytest.raises(ValueError, match="no_such_call"):
        build_program(SeccompProfile(unavailable_syscalls=("no_such_call",)))


def test_profile_fields() -> None:
    a = seccomp.AUDIT_ARCH_X86_64
    profile = SeccompProfile(denied_syscalls=("socket",), allowed_socket_families=())
    program = build_program(profile, arch="x86_64")
    assert run_bpf(program, NR["socket"], a, (socket.AF_INET,)) == err(errno.EPERM)
    assert run_bpf(program, NR["socketpair"], a, (1,)) == err(errno.EAFNOSUPPORT)
    assert run_bpf(program, NR["ptrace"], a) == ALLOW


@pytest.mark.skipif(platform.machine() not in ("x86_64", "aarch64"), reason="no host table")
def test_install_rejects_foreign_or_malformed_program() -> None:
    with pytest.raises(ValueError):
        install(b"\x00" * 7)
    other = "aarch64" if IS_X86_64 else "x86_64"
    with pytest.raises(ValueError, match="arch"):
        install(build_program(SeccompProfile(), arch=other))


def test_supported_reports_reason() -> None:
    ok, reason = supported()
    assert isinstance(ok, bool) and reason


# --- real filters in forked children ----------------------------------------------------


def _skip_reason() -> str:
    ok, why = supported()
    if os.geteuid() != 0:
        return "needs root"
    if not ok:
        return f"seccomp unsupported: {why}"
    if not IS_X86_64:
        return "probes use x86_64 syscall numbers"
    return ""


_SKIP = _skip_reason()
needs_seccomp = pytest.mark.skipif(bool(_SKIP), reason=_SKIP or "supported")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def raw_syscall(nr: int, *args: int | bytes) -> tuple[int, int]:
    """Raw syscall returning (result, errno).  Integers are passed as unsigned long."""
    conv = [a if isinstance(a, bytes) else ctypes.c_ulong(a) for a in args]
    ctypes.set_errno(0)
    rc: int = _libc.syscall(ctypes.c_long(nr), *conv)
    return rc, ctypes.get_errno() if rc == -1 else 0


def sys_errno(nr: int, *args: int | bytes) -> int:
    """Raw syscall; 0 on success, else errno."""
    return raw_syscall(nr, *args)[1]


def clone_errno(flags: int) -> int:
    """Fork-like raw clone(); a child that should not exist leaves at once."""
    rc, err = raw_syscall(NR["clone"], flags | signal.SIGCHLD, 0, 0, 0, 0)
    if rc == 0:
        os._exit(0)
    if rc > 0:
        os.waitpid(rc, 0)
    return err


def socket_errno(family: int, kind: int = socket.SOCK_STREAM) -> int:
    try:
        socket.socket(family, kind).close()
    except OSError as exc:
        return exc.errno or -1
    return 0


def run_child(probe: Callable[[], Any], *, filtered: bool = True) -> tuple[Any, int]:
    """Fork; in the child set no_new_privs, install the filter, run ``probe`` and send its
    JSON-encoded result back.  Returns (result or None, raw wait status)."""
    program = build_program(SeccompProfile())
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        status = 1
        try:
            os.close(read_fd)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            _libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: no core from SIGSYS
            if filtered:
                if _libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
                    raise OSError(ctypes.get_errno(), "prctl")
                install(program)
            payload: dict[str, Any] = {"result": probe()}
            status = 0
        except BaseException as exc:
            payload = {"error": f"{type(exc).__name__}: {exc}"}
        try:
            data = json.dumps(payload).encode()
            while data:
                data = data[os.write(write_fd, data) :]
        finally:
            os._exit(status)
    os.close(write_fd)
    chunks = []
    with os.fdopen(read_fd, "rb") as reader:
        chunks.append(reader.read())
    _, wait_status = os.waitpid(pid, 0)
    raw = b"".join(chunks)
    if not raw:
        return None, wait_status
    payload = json.loads(raw)
    assert "error" not in payload, payload["error"]
    return payload["result"], wait_status


@pytest.mark.root
@needs_seccomp
def test_denied_syscalls_get_eperm() -> None:
    def probe() -> dict[str, int]:
        return {
            "unshare_newuser": sys_errno(NR["unshare"], CLONE_NEWUSER),
            # Target does not exist: unfiltered the kernel would say ENOENT.
            "mount": sys_errno(NR["mount"], b"none", b"/nonexistent-seccomp", b"tmpfs", 0, 0),
            "ptrace_traceme": sys_errno(NR["ptrace"], 0, 0, 0, 0),
            "chroot": sys_errno(NR["chroot"], b"/"),
            "setns": sys_errno(NR["setns"], 2**32 - 1, 0),
            "init_module": sys_errno(NR["init_module"], 0, 0, b""),
            "bpf": sys_errno(NR["bpf"], 0xFFFF, 0, 0),
            "keyctl": sys_errno(NR["keyctl"], 0xFFFF, 0, 0),
            "io_uring_setup": sys_errno(NR["io_uring_setup"], 1, 0),
            "clone_newnet": clone_errno(CLONE_NEWNET),
            "clone_newuser": clone_errno(CLONE_NEWUSER),
            "personality_rie": sys_errno(NR["personality"], READ_IMPLIES_EXEC),
            "tiocsti": sys_errno(NR["ioctl"], 2**32 - 1, 0x5412, 0),
            "tiocsti_high": sys_errno(NR["ioctl"], 2**32 - 1, (1 << 32) | 0x5412, 0),
        }

    result, status = run_child(probe)
    assert os.waitstatus_to_exitcode(status) == 0
    assert result == dict.fromkeys(result, errno.EPERM)


@pytest.mark.root
@needs_seccomp
def test_enosys_and_eafnosupport() -> None:
    def probe() -> dict[str, int]:
        return {
            "clone3": sys_errno(NR["clone3"], 0, 0),
            "nr_1000": sys_errno(1000),
            "nr_471": sys_errno(471),
            "nr_minus_1": sys_errno(2**64 - 1),
            "af_packet": socket_errno(AF_PACKET, socket.SOCK_RAW),
            "af_netlink": socket_errno(AF_NETLINK, socket.SOCK_RAW),
            "af_vsock": socket_errno(AF_VSOCK),
            "af_alg": socket_errno(AF_ALG, socket.SOCK_SEQPACKET),
            "socketpair_netlink": sys_errno(NR["socketpair"], AF_NETLINK, 3, 0, 0),
        }

    result, status = run_child(probe)
    assert os.waitstatus_to_exitcode(status) == 0
    nosys = ("clone3", "nr_1000", "nr_471", "nr_minus_1")
    assert {k: result[k] for k in nosys} == dict.fromkeys(nosys, errno.ENOSYS)
    rest = {k: v for k, v in result.items() if k not in nosys}
    assert rest == dict.fromkeys(rest, errno.EAFNOSUPPORT)


@pytest.mark.root
@needs_seccomp
def test_ordinary_things_still_work() -> None:
    def probe() -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["af_inet"] = socket_errno(socket.AF_INET)
        left, right = socket.socketpair()
        left.sendall(b"x")
        out["af_unix_pair"] = right.recv(1) == b"x"
        left.close()
        right.close()
        out["plain_clone"] = clone_errno(0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
        out["personality_query"] = sys_errno(NR["personality"], 0xFFFFFFFF)
        out["personality_linux"] = sys_errno(NR["personality"], 0)
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        out["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        out["subprocess"] = subprocess.run(["true"], check=False).returncode
        out["echo"] = subprocess.run(["echo", "hi"], capture_output=True, text=True).stdout
        box: list[int] = []
        worker = threading.Thread(target=lambda: box.append(os.getpid()))
        worker.start()
        worker.join()
        out["thread"] = box == [os.getpid()]
        with open("/proc/self/status", encoding="ascii") as fh:
            out["seccomp_mode"] = next(ln.split()[1] for ln in fh if ln.startswith("Seccomp:"))
        return out

    result, status = run_child(probe)
    assert os.waitstatus_to_exitcode(status) == 0
    assert result == {
        "af_inet": 0,
        "af_unix_pair": True,
        "plain_clone": 0,
        "personality_query": 0,
        "personality_linux": 0,
        "fork": 7,
        "subprocess": 0,
        "echo": "hi\n",
        "thread": True,
        "seccomp_mode": "2",
    }


@pytest.mark.root
@needs_seccomp
def test_x32_syscall_kills_process() -> None:
    def probe() -> int:
        return sys_errno(X32_BIT | NR["getpid"])

    result, status = run_child(probe)
    assert result is None
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


@pytest.mark.root
@needs_seccomp
def test_tsync_filters_existing_threads() -> None:
    results: dict[str, int] = {}

    # The thread must exist before install(): start it in the child, then install.
    def child() -> dict[str, int]:
        started, go = threading.Event(), threading.Event()

        def body() -> None:
            started.set()
            go.wait(10)
            results["unshare"] = sys_errno(NR["unshare"], CLONE_NEWUSER)

        worker = threading.Thread(target=body)
        worker.start()
        started.wait(10)
        if _libc.prctl(38, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl")
        install(build_program(SeccompProfile()))
        go.set()
        worker.join()
        return results

    result, status = run_child(child, filtered=False)
    assert os.waitstatus_to_exitcode(status) == 0
    assert result == {"unshare": errno.EPERM}


@pytest.mark.root
@needs_seccomp
def test_install_requires_no_new_privs() -> None:
    def probe() -> int:
        try:
            install(build_program(SeccompProfile()))
        except OSError as exc:
            return exc.errno or -1
        return 0

    result, status = run_child(probe, filtered=False)
    assert os.waitstatus_to_exitcode(status) == 0
    assert result == errno.EACCES


@pytest.mark.root
@needs_seccomp
def test_control_without_filter() -> None:
    """The same probes succeed or fail differently without the filter, so the other tests
    are not passing vacuously."""

    def probe() -> dict[str, int]:
        return {
            "unshare_newuser": sys_errno(NR["unshare"], CLONE_NEWUSER),
            "mount": sys_errno(NR["mount"], b"none", b"/nonexistent-seccomp", b"tmpfs", 0, 0),
            "clone3": sys_errno(NR["clone3"], 0, 0),
            "personality_query": sys_errno(NR["personality"], 0xFFFFFFFF),
            "socketpair_netlink": sys_errno(NR["socketpair"], AF_NETLINK, 3, 0, 0),
        }

    result, status = run_child(probe, filtered=False)
    assert os.waitstatus_to_exitcode(status) == 0
    assert result["unshare_newuser"] != errno.EPERM
    assert result["mount"] == errno.ENOENT
    assert result["clone3"] not in (0, errno.ENOSYS)
    assert result["personality_query"] == 0
    assert result["socketpair_netlink"] != errno.EAFNOSUPPORT


@pytest.mark.root
@needs_seccomp
def test_host_resource_calls_in_a_filtered_process() -> None:
    """With the filter loaded, AIO and inotify report ENOSYS, modify_ldt and huge page
    mappings EPERM, while an ordinary anonymous mapping still works; unfiltered, io_setup and
    inotify_init1 succeed, so the probes themselves are sound."""

    def probe() -> dict[str, int]:
        ctx = ctypes.c_ulong(0)
        out = {
            "io_setup": sys_errno(206, 1, ctypes.addressof(ctx)),
            "io_submit": sys_errno(209, 0, 0, 0),
            "inotify_init1": sys_errno(294, os.O_CLOEXEC),
            "modify_ldt": sys_errno(154, 0, 0, 0),
            "mmap_hugetlb": raw_syscall(
                9, 0, 2 << 20, 3, MAP_PRIVATE_ANONYMOUS | MAP_HUGETLB, 2**64 - 1, 0
            )[1],
            "memfd_hugetlb": sys_errno(319, b"x", MFD_HUGETLB),
            "mmap_plain": raw_syscall(9, 0, 4096, 3, MAP_PRIVATE_ANONYMOUS, 2**64 - 1, 0)[1],
        }
        if ctx.value:
            sys_errno(207, ctx.value)  # io_destroy: give the host its AIO slots back
        return out

    filtered, status = run_child(probe)
    assert os.waitstatus_to_exitcode(status) == 0
    assert filtered == {
        "io_setup": errno.ENOSYS,
        "io_submit": errno.ENOSYS,
        "inotify_init1": errno.ENOSYS,
        "modify_ldt": errno.EPERM,
        "mmap_hugetlb": errno.EPERM,
        "memfd_hugetlb": errno.EPERM,
        "mmap_plain": 0,
    }
    plain, status = run_child(probe, filtered=False)
    assert os.waitstatus_to_exitcode(status) == 0
    assert plain["io_setup"] == 0 and plain["inotify_init1"] == 0 and plain["modify_ldt"] == 0
    assert plain["mmap_hugetlb"] != errno.EPERM and plain["memfd_hugetlb"] == 0
