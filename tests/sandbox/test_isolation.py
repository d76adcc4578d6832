"""Attempts to break each isolation claim of the jail, through the real sandbox.

Every probe runs inside a session and prints one JSON document; the host side then asserts on
precise values and, where it makes sense, checks that the same probe succeeds on the host so the
test cannot pass because the probe itself is broken.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from codeinterp.errors import CodeInterpError, InvalidRequest, QuotaExceeded
from codeinterp.sandbox import Sandbox, SandboxPolicy, Session
from codeinterp.sandbox.events import STATUSES
from codeinterp.sandbox.policy import SYSTEM_BINDS, MiB

REPO = Path(__file__).resolve().parents[2]


async def probe(session: Session, code: str, timeout: float = 30) -> Any:
    """Run `code` (which prints one JSON document as its last output) and decode it."""
    ex = await session.run(code, timeout=timeout)
    assert ex.status == "ok", (ex.status, ex.error, ex.stderr, ex.message)
    return json.loads(ex.stdout.strip().splitlines()[-1])


def environment_binds(sandbox: Sandbox) -> list[str]:
    binds = sandbox.zygote.hello["environment_binds"]
    assert binds, "the zygote reported no environment binds"
    return list(binds)


def children_towards(directory: str, binds: list[str]) -> set[str]:
    """Names a directory of the jail may hold: the next component of each bind below it."""
    prefix = directory.rstrip("/") + "/"
    return {b[len(prefix) :].split("/")[0] for b in binds if b.startswith(prefix)}


def host_true_seconds() -> float:
    started = time.monotonic()
    subprocess.run(["true"], check=True)
    return time.monotonic() - started


def host_pids_of_uid(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                status = f.read()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:") and int(line.split()[1]) == uid:
                pids.append(int(entry))
    return pids


async def assert_no_process_left(uid: int) -> None:
    deadline = time.monotonic() + 5
    while (left := host_pids_of_uid(uid)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert left == [], f"processes of session uid {uid} survived the session: {left}"


# --- 1. network ------------------------------------------------------------------------------

CONNECT_HOST_PORT = """
import errno, json, socket
port = {port}
out = {{}}
try:
    socket.create_connection(("127.0.0.1", port), timeout=3).close()
    out["host_port"] = "connected"
except OSError as e:
    out["host_port"] = errno.errorcode.get(e.errno, str(e.errno))
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
    try:
        s.connect({abstract!r})
        out["host_abstract_unix"] = "connected"
    except OSError as e:
        out["host_abstract_unix"] = errno.errorcode.get(e.errno, str(e.errno))
# The same port on the sandbox's own loopback works: 127.0.0.1 is a private interface.
with socket.socket() as srv:
    srv.bind(("127.0.0.1", port))
    srv.listen()
    with socket.create_connection(("127.0.0.1", port), timeout=3):
        conn, _ = srv.accept()
        conn.close()
    out["own_loopback"] = "connected"
print(json.dumps(out))
"""


async def test_host_loopback_is_not_reachable(session: Session) -> None:
    """Host listeners on 127.0.0.1 and abstract unix sockets are refused and never see a peer."""
    abstract = f"\0codeinterp-isolation-{os.getpid()}-{time.monotonic_ns()}"
    with (
        socket.socket() as listener,
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix_listener,
    ):
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        unix_listener.bind(abstract)
        unix_listener.listen()
        port = listener.getsockname()[1]
        out = await probe(session, CONNECT_HOST_PORT.format(port=port, abstract=abstract))
        assert out == {
            "host_port": "ECONNREFUSED",
            "host_abstract_unix": "ECONNREFUSED",  # abstract names are per network namespace
            "own_loopback": "connected",
        }
        for sock in (listener, unix_listener):
            sock.settimeout(0.3)
            with pytest.raises(TimeoutError):
                sock.accept()
        # The listeners themselves work: host clients get through.
        with socket.create_connection(("127.0.0.1", port), timeout=3):
            conn, _ = listener.accept()
            conn.close()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(abstract)
            conn, _ = unix_listener.accept()
            conn.close()


NETWORK_OUT = """
import errno, json, socket
out = {}
for name, family, addr in (
    ("ipv4", socket.AF_INET, ("1.1.1.1", 80)),
    ("ipv6", socket.AF_INET6, ("2606:4700:4700::1111", 80)),
):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(3)
        try:
            s.connect(addr)
            out[name] = "connected"
        except OSError as e:
            out[name] = errno.errorcode.get(e.errno, str(e.errno))
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    try:
        s.sendto(b"x", ("8.8.8.8", 53))
        out["udp"] = "sent"
    except OSError as e:
        out["udp"] = errno.errorcode.get(e.errno, str(e.errno))
try:
    out["dns"] = repr(socket.getaddrinfo("example.com", 80))
except socket.gaierror as e:
    out["dns"] = ["gaierror", e.errno]
with open("/proc/net/dev") as f:
    out["interfaces"] = sorted(line.split(":")[0].strip() for line in f.readlines()[2:])
print(json.dumps(out))
"""


async def test_no_route_out_no_dns_only_loopback(session: Session) -> None:
    """External IPv4/IPv6/UDP fail with ENETUNREACH, DNS fails and `lo` is the only interface."""
    out = await probe(session, NETWORK_OUT)
    assert out == {
        "ipv4": "ENETUNREACH",
        "ipv6": "ENETUNREACH",
        "udp": "ENETUNREACH",
        "dns": ["gaierror", socket.EAI_AGAIN],
        "interfaces": ["lo"],
    }


# --- 2. host files ---------------------------------------------------------------------------

EXISTS = """
import json, os
print(json.dumps({{p: os.path.lexists(p) for p in {paths!r}}}))
"""


async def test_host_etc_is_not_visible(session: Session) -> None:
    """/etc holds only the jail's identity files and the policy's binds; /etc/shadow is absent."""
    assert os.path.exists("/etc/shadow")
    out = await probe(
        session,
        "import json, os\nprint(json.dumps({'shadow': os.path.lexists('/etc/shadow'),"
        " 'etc': sorted(os.listdir('/etc')), 'passwd': open('/etc/passwd').read()}))",
    )
    assert out["shadow"] is False
    bound = {p.split("/")[2] for p in SYSTEM_BINDS if p.startswith("/etc/") and os.path.exists(p)}
    assert out["etc"] == sorted(bound | {"group", "hostname", "hosts", "passwd"})
    users = [line.split(":")[0] for line in out["passwd"].splitlines()]
    assert users == ["root", "sandbox"]


async def test_host_temp_dir_is_not_reachable(session: Session, tmp_path: Path) -> None:
    """A directory the host creates (with a marker file) does not exist in the sandbox."""
    marker = tmp_path / "marker.txt"
    marker.write_text("host secret")
    paths = [str(tmp_path), str(marker)]
    assert all(os.path.exists(p) for p in paths)
    out = await probe(session, EXISTS.format(paths=paths))
    assert out == dict.fromkeys(paths, False)


async def test_other_session_workspace_is_not_reachable(sandbox: Sandbox, session: Session) -> None:
    """Another session's file is neither at its host path nor in this session's /mnt/data."""
    async with await sandbox.create_session() as other:
        ex = await other.run("open('/mnt/data/secret.txt', 'w').write('other session secret')")
        assert ex.status == "ok", ex.error
        secret = os.path.join(other.workspace.path, "secret.txt")
        with open(secret) as f:
            assert f.read() == "other session secret"  # it is there, on the host
        paths = [other.workspace.path, secret]
        out = await probe(session, EXISTS.format(paths=paths))
        assert out == dict.fromkeys(paths, False)
        out = await probe(session, "import json, os\nprint(json.dumps(os.listdir('/mnt/data')))")
        assert out == []


PROC_ONE = """
import json
out = {}
with open("/proc/1/cmdline", "rb") as f:
    out["cmdline"] = f.read().decode("utf-8", "replace")
try:
    with open("/proc/1/environ", "rb") as f:
        out["environ"] = f.read().decode("utf-8", "replace")
except OSError as e:
    out["environ"] = "ERR:" + type(e).__name__
print(json.dumps(out))
"""


async def test_proc_1_is_the_sandbox_init(sandbox: Sandbox, session: Session) -> None:
    """/proc/1 is the session's init (a fork of the zygote), and its environment is unreadable."""
    with open("/proc/1/cmdline", "rb") as f:
        host_init = f.read().decode("utf-8", "replace")
    with open(f"/proc/{sandbox.zygote.hello['pid']}/cmdline", "rb") as f:
        zygote = f.read().decode("utf-8", "replace")
    assert host_init != zygote
    out = await probe(session, PROC_ONE)
    assert out["cmdline"] == zygote
    # ... which names nothing of the host: not the server's pid, not its runtime directory.
    words = out["cmdline"].split("\0")
    assert str(os.getpid()) not in words, words
    assert not [w for w in words if "/run/" in w or sandbox.runtime_dir in w], words
    leaked = [name for name in os.environ if f"{name}=" in out["environ"]]
    assert leaked == []
    assert out["environ"] in ("ERR:PermissionError", "")


LIST_DIRS = """
import json, os
out = {{}}
for d in {dirs!r}:
    try:
        out[d] = sorted(os.listdir(d))
    except OSError as e:
        out[d] = "ERR:" + type(e).__name__
print(json.dumps(out))
"""


def dirs_towards(top: str, binds: list[str]) -> list[str]:
    """`top` and every directory between it and a bind below it."""
    found = {top}
    for b in binds:
        if b.startswith(top + "/"):
            parts = b[len(top) + 1 :].split("/")
            found.update(top + "/" + "/".join(parts[:i]) for i in range(1, len(parts)))
    return sorted(found)


async def test_root_and_home_hold_nothing_of_the_host(sandbox: Sandbox, session: Session) -> None:
    """/root and /home show only the paths leading to the bound Python environment."""
    binds = environment_binds(sandbox)
    dirs = dirs_towards("/root", binds) + dirs_towards("/home", binds) + ["/home/sandbox"]
    out = await probe(session, LIST_DIRS.format(dirs=dirs))
    expected = {d: sorted(children_towards(d, binds)) for d in dirs}
    expected["/home"] = sorted(children_towards("/home", binds) | {"sandbox"})
    assert out == expected
    # The host does have more there (otherwise the comparison above proves nothing).
    host_root = set(os.listdir("/root"))
    assert host_root - children_towards("/root", binds)


async def test_work_holds_only_the_bound_environment(sandbox: Sandbox, session: Session) -> None:
    """Above the bound environment only the path to it exists: the repo's .git is not visible."""
    binds = environment_binds(sandbox)
    repo = str(REPO)
    assert (REPO / "tests").is_dir() and (REPO / "pyproject.toml").is_file()
    dirs = sorted({*dirs_towards("/" + repo.split("/")[1], binds), repo})
    out = await probe(session, LIST_DIRS.format(dirs=dirs))
    assert out == {d: sorted(children_towards(d, binds)) for d in dirs}
    assert set(os.listdir(repo)) - children_towards(repo, binds)  # the host sees more
    hidden = [str(REPO / ".git"), str(REPO / "tests"), str(REPO / "pyproject.toml")]
    assert all(os.path.exists(p) for p in hidden)
    out = await probe(session, EXISTS.format(paths=hidden))
    assert out == dict.fromkeys(hidden, False)


async def test_runtime_dir_is_not_visible(sandbox: Sandbox, session: Session) -> None:
    """The server's runtime directory (workspaces, the jail's root mount point) is absent."""
    paths = [
        sandbox.runtime_dir,
        os.path.join(sandbox.runtime_dir, "sessions"),
        session.workspace.path,
    ]
    assert all(os.path.exists(p) for p in paths)
    out = await probe(session, EXISTS.format(paths=paths))
    assert out == dict.fromkeys(paths, False)


MOUNTINFO = """
import json
with open("/proc/self/mountinfo") as f:
    print(json.dumps([line.split()[2:5] for line in f]))
"""


def device_of(path: str) -> str:
    st = os.stat(path)
    return f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"


def mount_points(pid: int) -> list[str]:
    with open(f"/proc/{pid}/mountinfo") as f:
        return [line.split()[4] for line in f]


async def test_workspace_mounts_stay_out_of_the_zygote_and_the_jails(
    sandbox: Sandbox, session: Session
) -> None:
    """The zygote and each session's init live in mount namespaces without any workspace; a
    session's namespace holds its own workspace at /mnt/data and no other session's."""
    async with await sandbox.create_session() as other:
        assert await other.run("1") is not None
        own, theirs = device_of(session.workspace.path), device_of(other.workspace.path)
        assert own != theirs
        host_points = mount_points(os.getpid())
        assert session.workspace.path in host_points and other.workspace.path in host_points
        assert session.process is not None
        for pid in (sandbox.zygote.pid, session.process.init_pid):
            seen = [
                p for p in mount_points(pid) if p.startswith(os.path.dirname(sandbox.runtime_dir))
            ]
            assert seen == [], f"process {pid} sees {seen}"
        out = await probe(session, MOUNTINFO)
        devices = {device: point for device, _root, point in out}
        assert devices.get(own) == "/mnt/data"
        assert theirs not in devices
        assert [p for _d, _r, p in out if p.startswith("/mnt")] == ["/mnt/data"]


async def test_init_has_an_empty_read_only_root_no_privileges_and_the_sessions_cgroups(
    sandbox: Sandbox, session: Session
) -> None:
    """The session's pid 1 (made by the init factory, whose empty root all inits share): one
    mount, an empty read-only tmpfs; no capabilities, no_new_privs, seccomp; and it is in the
    session's own groups, so the session's limits cover it."""
    assert session.process is not None and session.cgroup is not None
    pid = session.process.init_pid
    with open(f"/proc/{pid}/mountinfo") as f:
        mounts = [line.split() for line in f]
    assert len(mounts) == 1
    point, options, fstype = mounts[0][4], mounts[0][5], mounts[0][-3]
    assert (point, fstype) == ("/", "tmpfs")
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(options.split(","))
    assert os.listdir(f"/proc/{pid}/root") == []
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    zero = "0" * 16
    assert (status["CapEff"], status["CapPrm"], status["CapBnd"]) == (zero, zero, zero)
    assert (status["NoNewPrivs"], status["Seccomp"]) == ("1", "2")
    with open(f"/proc/{pid}/cgroup") as f:
        groups = f.read()
    assert groups.count(session.id) >= len(session.cgroup.join_paths)


# --- 3. links planted in the workspace --------------------------------------------------------


def shadow_fingerprint() -> tuple[str, int, int]:
    st = os.stat("/etc/shadow")
    with open("/etc/shadow", "rb") as f:
        return hashlib.sha256(f.read()).hexdigest(), st.st_mtime_ns, st.st_size


PLANT = """
import os
os.symlink("/etc/shadow", "/mnt/data/evil")
os.symlink("/etc", "/mnt/data/d")
os.mkfifo("/mnt/data/fifo")
open("/mnt/data/ok.txt", "w").write("fine")
"""


async def test_planted_links_are_never_followed(session: Session) -> None:
    """Downloads through planted links are refused and uploads never write through them."""
    before = shadow_fingerprint()
    ex = await session.run(PLANT)
    assert ex.status == "ok", ex.error
    ws = session.workspace.path
    assert os.readlink(os.path.join(ws, "evil")) == "/etc/shadow"

    with pytest.raises(InvalidRequest):
        await session.download("evil")
    with pytest.raises(InvalidRequest):
        await session.download("d/shadow")
    with pytest.raises(InvalidRequest):
        await session.upload("evil", b"x")
    with pytest.raises(InvalidRequest):
        await session.upload("d/codeinterp-pwned", b"x")
    assert not os.path.lexists("/etc/codeinterp-pwned")
    assert shadow_fingerprint() == before
    assert os.readlink(os.path.join(ws, "evil")) == "/etc/shadow"  # still the planted link

    # A FIFO must make the download fail, not block the host on open() or read().
    with pytest.raises(InvalidRequest):
        await asyncio.wait_for(session.download("fifo"), 5)

    assert [f.name for f in await session.list_files()] == ["ok.txt"]
    assert await session.download("ok.txt") == b"fine"

    await session.delete_file("evil")
    assert not os.path.lexists(os.path.join(ws, "evil"))
    assert shadow_fingerprint() == before


DEEP_TREE = """
import os
os.chdir("/mnt/data")
open("top.txt", "w").write("top")
for _ in range(3000):
    os.mkdir("a")
    os.chdir("a")
open("deep.txt", "w").write("deep")
os.chdir("/mnt/data")
"""


async def test_deep_directory_tree_does_not_break_listing(session: Session) -> None:
    """A very deep tree built by sandboxed code is listed or refused, never crashes the host."""
    ex = await session.run(DEEP_TREE, timeout=30)
    assert ex.status == "ok", ex.error
    try:
        files = await session.list_files()
    except CodeInterpError:
        return  # refusing with one of our own errors is acceptable
    assert "top.txt" in [f.name for f in files]


# --- 4. syscalls -------------------------------------------------------------------------------

SYSCALLS = """
import ctypes, errno, json, platform, socket
libc = ctypes.CDLL(None, use_errno=True)
NR = {"x86_64": {"init_module": 175, "finit_module": 313},
      "aarch64": {"init_module": 105, "finit_module": 273}}[platform.machine()]

def call(fn, *args):
    ctypes.set_errno(0)
    rc = fn(*args)
    return "ok" if rc == 0 else errno.errorcode.get(ctypes.get_errno(), "?")

def sock(*args):
    try:
        socket.socket(*args).close()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))

out = {
    "ptrace_traceme": call(libc.ptrace, 0, 0, None, None),
    "mount": call(libc.mount, b"tmpfs", b"/tmp", b"tmpfs", 0, None),
    "unshare_newuser": call(libc.unshare, 0x10000000),
    "init_module": call(libc.syscall, NR["init_module"], None, 0, b""),
    "finit_module": call(libc.syscall, NR["finit_module"], 0, b"", 0),
    "af_packet": sock(socket.AF_PACKET, socket.SOCK_RAW, 0),
    "af_netlink": sock(socket.AF_NETLINK, socket.SOCK_RAW, 0),
    "raw_icmp": sock(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
}
print(json.dumps(out))
"""


async def test_dangerous_syscalls_fail(session: Session) -> None:
    """ptrace, mount, user namespaces, packet/netlink/raw sockets and module loading all fail."""
    out = await probe(session, SYSCALLS)
    assert out == {
        "ptrace_traceme": "EPERM",  # seccomp
        "mount": "EPERM",  # seccomp
        "unshare_newuser": "EPERM",  # seccomp
        "init_module": "EPERM",  # seccomp
        "finit_module": "EPERM",  # seccomp
        "af_packet": "EAFNOSUPPORT",  # seccomp's socket family allow-list
        "af_netlink": "EAFNOSUPPORT",
        "raw_icmp": "EPERM",  # no CAP_NET_RAW
    }


# --- 5. privileges ----------------------------------------------------------------------------

PRIVILEGES = """
import errno, json, os
out = {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups()}
with open("/proc/self/status") as f:
    status = dict(line.split(":", 1) for line in f.read().splitlines())
for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"):
    out[key] = status[key].strip()
try:
    os.setuid(0)
    out["setuid0"] = "ok"
except OSError as e:
    out["setuid0"] = type(e).__name__
for path in ("/usr/bin/x", "/etc/x", "/x"):
    try:
        open(path, "w").close()
        out[path] = "ok"
    except OSError as e:
        out[path] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(out))
"""


async def test_session_is_unprivileged(session: Session) -> None:
    """A non-root uid, no capabilities, no_new_privs, a seccomp filter and a read-only root."""
    out = await probe(session, PRIVILEGES)
    zero = "0000000000000000"
    assert out == {
        "uid": session.uid,
        "euid": session.uid,
        "gid": session.uid,
        "groups": [],
        "CapInh": zero,
        "CapPrm": zero,
        "CapEff": zero,
        "CapBnd": zero,
        "CapAmb": zero,
        "NoNewPrivs": "1",
        "Seccomp": "2",
        "setuid0": "PermissionError",
        "/usr/bin/x": "EROFS",
        "/etc/x": "EROFS",
        "/x": "EROFS",
    }
    assert session.uid != 0


# --- 6. process view --------------------------------------------------------------------------

PROCESS_VIEW = """
import json, os, socket, subprocess
child = subprocess.Popen(["sleep", "30"])
try:
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
finally:
    child.kill()
    child.wait()
print(json.dumps({"pids": pids, "child": child.pid, "me": os.getpid(),
                  "hostname": socket.gethostname(), "nodename": os.uname().nodename}))
"""


async def test_only_the_sessions_own_processes_are_visible(session: Session) -> None:
    """/proc lists init (1), the REPL (2) and the REPL's child; the hostname is 'sandbox'."""
    assert socket.gethostname() != "sandbox"
    out = await probe(session, PROCESS_VIEW)
    assert out["me"] == 2
    assert out["pids"] == [1, 2, out["child"]]
    assert out["hostname"] == out["nodename"] == "sandbox"


# --- 7. fork bombs ----------------------------------------------------------------------------

FORK_LOOP = """
import json, os, time
kids, stopped_by = [], None
while len(kids) < 1000:
    try:
        pid = os.fork()
    except OSError as e:
        stopped_by = type(e).__name__
        break
    if pid == 0:
        try:
            time.sleep(30)
        finally:
            os._exit(0)
    kids.append(pid)
procs = [p for p in os.listdir("/proc") if p.isdigit()]
print(json.dumps({"kids": len(kids), "procs": len(procs), "stopped_by": stopped_by}))
"""


@pytest.mark.slow
async def test_python_fork_bomb_is_contained(sandbox: Sandbox) -> None:
    """A fork loop stops at the 64-process limit; the session and the host keep answering."""
    policy = SandboxPolicy().with_limits(processes=64)
    async with await sandbox.create_session(policy) as s:
        uid = s.uid
        out = await probe(s, FORK_LOOP)
        assert out["stopped_by"] == "BlockingIOError"
        assert out["procs"] == out["kids"] + 2  # init, the REPL and the children
        assert 48 <= out["procs"] <= 64
        assert s.stats().processes <= 64
        assert await asyncio.to_thread(host_true_seconds) < 1.0
        ex = await s.run("1 + 1")
        assert (ex.status, ex.text) == ("ok", "2")
    await assert_no_process_left(uid)


@pytest.mark.slow
async def test_shell_fork_bomb_is_contained(sandbox: Sandbox) -> None:
    """`:(){ :|:& };:` ends, stays under the process limit and never slows the host down."""
    policy = SandboxPolicy().with_limits(processes=64)
    async with await sandbox.create_session(policy) as s:
        uid = s.uid
        ex = await s.run("!bash -c ':(){ :|:& };:'", timeout=3)
        # bash backgrounds the first pipeline and exits: the cell ends; the bomb runs on.
        assert ex.status == "ok", (ex.status, ex.message)
        counts = []
        deadline = time.monotonic() + 3.0
        # Watch the bomb grow to the limit. Its count swings as children die and are replaced,
        # so sample often, and on a loaded machine give it time to reach the top.
        while time.monotonic() < deadline and (not counts or max(counts) < 60):
            counts.append(s.stats().processes)
            await asyncio.sleep(0.01)
        assert max(counts) <= 64, counts
        assert max(counts) >= 60, counts  # it really ran into the limit
        assert await asyncio.to_thread(host_true_seconds) < 1.0  # while it keeps trying
        ex = await s.run("1 + 1", timeout=10)
        assert (ex.status, ex.text) == ("ok", "2")
        assert s.stats().processes <= 64
    await assert_no_process_left(uid)


# --- 8. disk ---------------------------------------------------------------------------------

FILL = """
with open("/mnt/data/fill", "wb") as f:
    for _ in range(64):
        f.write(b"x" * 2**20)
"""


async def test_disk_filler_hits_the_workspace_quota(sandbox: Sandbox) -> None:
    """Writing 64 MiB into a 32 MiB workspace fails with ENOSPC; uploads too; old files survive."""
    policy = SandboxPolicy().with_limits(workspace=32 * MiB)
    async with await sandbox.create_session(policy) as s:
        await s.upload("keep.txt", b"kept")
        ex = await s.run(FILL, timeout=30)
        assert ex.status == "error"
        assert ex.error is not None
        assert ex.error.name == "OSError"
        assert ex.error.value.startswith(f"[Errno {errno.ENOSPC}]"), ex.error.value
        with pytest.raises(QuotaExceeded):
            await s.upload("big", b"x" * 64 * MiB)
        files = {f.name: f.size for f in await s.list_files()}
        assert set(files) == {"fill", "keep.txt"}
        assert files["fill"] <= 32 * MiB
        assert await s.download("keep.txt") == b"kept"
        out = await probe(s, "import json\nprint(json.dumps(open('/mnt/data/keep.txt').read()))")
        assert out == "kept"


# --- 9. output ---------------------------------------------------------------------------------


async def test_output_flood_is_truncated(session: Session) -> None:
    """About 5 MB of prints come back as 1 MiB plus a marker; the rest is counted as dropped."""
    cap = session.policy.limits.output
    ex = await session.run("for _ in range(5000):\n    print('x' * 1000)", timeout=30)
    assert ex.status == "ok", ex.error
    marker = f"\n[stdout truncated: over the {cap} byte limit]\n"
    assert ex.stdout.endswith(marker)
    kept = ex.stdout[: -len(marker)].encode()
    assert len(kept) <= cap
    assert set(kept) <= set(b"x\n")
    assert ex.truncated["stdout"] > 0
    assert len(kept) + ex.truncated["stdout"] == 5000 * 1001  # every byte kept or counted
    after = await session.run("print('after')")
    assert (after.status, after.stdout, after.truncated) == ("ok", "after\n", {})


CHANNEL_SOCKETS = """
import json, os
fds = []
for fd in os.listdir("/proc/self/fd"):
    try:
        if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
            fds.append(int(fd))
    except OSError:
        pass  # the descriptor listdir itself used
print(json.dumps(fds))
"""

FORGE_FRAME = """
import json, os, struct
from codeinterp.sandbox.kernel import Kernel
frame = dict({frame!r}, id=Kernel.current._execution_id)  # as the real kernel would send it
body = json.dumps(frame).encode()
for _ in range({repeat}):
    os.write({fd}, struct.pack(">I", len(body)) + body)
"""


@pytest.mark.parametrize(
    "frame",
    [
        {"ev": "done", "status": "ok", "files": [{"bogus": 1}]},
        {"ev": "error"},
        {"ev": "done", "status": "pwned"},
        {"ev": "result", "data": ["not", "a", "dict"]},
    ],
    ids=["done-bad-files", "error-without-fields", "done-unknown-status", "result-bad-data"],
)
async def test_forged_channel_frames_do_not_break_the_host(
    session: Session, frame: dict[str, Any]
) -> None:
    """Malformed frames with the current execution id, written by sandboxed code, never raise
    in the host API, never give a status outside the documented set, and never leak into the
    next execution."""
    fds = await probe(session, CHANNEL_SOCKETS)
    assert len(fds) == 1, fds  # the channel: the only socket the REPL holds
    ex = await session.run(FORGE_FRAME.format(frame=frame, fd=fds[0], repeat=1), timeout=10)
    assert ex.status in STATUSES, ex.status
    after = await session.run("1 + 1", timeout=10)
    assert (after.status, after.text) == ("ok", "2")
    assert [r.data for r in after.results] == [{"text/plain": "2"}]


async def test_forged_result_flood_is_capped(session: Session) -> None:
    """Forty 10 MB result frames forged on the channel keep at most the results cap on the host."""
    fds = await probe(session, CHANNEL_SOCKETS)
    frame = {"ev": "result", "type": "display_data", "data": {"text/plain": "x" * 10_000_000}}
    ex = await session.run(FORGE_FRAME.format(frame=frame, fd=fds[0], repeat=40), timeout=60)
    assert ex.status == "ok", ex.error
    kept = sum(len(r.data.get("text/plain", "")) for r in ex.results)
    cap = session.policy.limits.results
    assert kept <= cap
    assert ex.truncated["results"] >= 40 * 10_000_000 - cap
    assert "results truncated" in ex.results[-1].data["text/plain"]
    assert (await session.run("1 + 1")).text == "2"


# --- 10. randomness ----------------------------------------------------------------------------

RANDOM = "import json, random, numpy\nprint(json.dumps([random.random(), numpy.random.rand()]))"


async def test_random_streams_differ_between_sessions(sandbox: Sandbox, session: Session) -> None:
    """Two sessions forked from one zygote draw different random and numpy.random numbers."""
    async with await sandbox.create_session() as other:
        first = await probe(session, RANDOM)
        second = await probe(other, RANDOM)
    assert all(0 <= v < 1 for v in first + second)
    assert first[0] != second[0]  # random
    assert first[1] != second[1]  # numpy.random


# --- 11. memory --------------------------------------------------------------------------------

ALLOCATE = """
x = []
for _ in range(40):
    x.append(b"a" * 10**7)  # 10 MB, every page written
print("survived")
"""


@pytest.mark.slow
async def test_memory_limit_kills_and_restarts_the_session(sandbox: Sandbox) -> None:
    """400 MB in a 256 MiB session ends as 'oom' with state lost; the next execution works."""
    policy = SandboxPolicy().with_limits(memory=256 * MiB)
    async with await sandbox.create_session(policy) as s:
        ex = await s.run("marker = 'before'")
        assert ex.status == "ok"
        ex = await s.run(ALLOCATE, timeout=30)
        assert ex.status == "oom", (ex.status, ex.message, ex.error)
        assert ex.state_lost is True
        assert "survived" not in ex.stdout
        ex = await s.run("marker")
        assert ex.status == "error"
        assert ex.error is not None and ex.error.name == "NameError"
        ex = await s.run("1 + 1")
        assert (ex.status, ex.text) == ("ok", "2")
        assert s.stats().restarts == 1
