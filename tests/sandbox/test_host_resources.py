"""Host-wide kernel resources a session can reach: each test performs the attack through the real
jail and checks that the session is refused, capped per session, or charged to its own cgroup.
docs/isolation.md has the table these tests prove.

Probes run inside a session and print one JSON document; counters that only the host can read
(the session's memory cgroup, /proc/net/sockstat, fs.aio-nr) are read by the test itself.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import json
import os
import platform
import re
import secrets
from typing import Any

import pytest

from codeinterp.sandbox import Sandbox, SandboxPolicy, Session, seccomp
from codeinterp.sandbox.engine import default_cache_dir
from codeinterp.sandbox.policy import SYSTEM_BINDS, MiB

pytestmark = pytest.mark.root

IS_X86_64 = platform.machine() == "x86_64"
PAGE = os.sysconf("SC_PAGE_SIZE")


async def probe(session: Session, code: str, timeout: float = 30) -> Any:
    """Run `code` (which prints one JSON document as its last output) and decode it."""
    ex = await session.run(code, timeout=timeout)
    assert ex.status == "ok", (ex.status, ex.error, ex.stderr, ex.message)
    return json.loads(ex.stdout.strip().splitlines()[-1])


def read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read().split()[0])


def sockstat_bytes(protocol: str) -> int:
    """Host-wide socket buffer memory of `protocol` ("TCP" or "UDP"), all network namespaces."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name == protocol:
                fields = rest.split()
                return int(fields[fields.index("mem") + 1]) * PAGE
    raise AssertionError(f"no {protocol} line in /proc/net/sockstat")


def memory_file(session: Session, v1: str, v2: str) -> str:
    group = session.cgroup
    assert group is not None
    if group.version == 2:
        return os.path.join(group.dirs["unified"], v2)
    return os.path.join(group.dirs["memory"], v1)


def memory_usage(session: Session) -> int:
    return read_int(memory_file(session, "memory.usage_in_bytes", "memory.current"))


LIBC = """
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def result(rc):
    return "ok" if rc >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))

def sys_call(nr, *args):
    ctypes.set_errno(0)
    return result(libc.syscall(nr, *args))
"""


# --- AIO: fs.aio-max-nr is one counter for the whole host -----------------------------------

AIO = """
import platform
NR = {"x86_64": dict(io_setup=206, io_destroy=207, io_getevents=208, io_submit=209,
                     io_cancel=210, io_pgetevents=333),
      "aarch64": dict(io_setup=0, io_destroy=1, io_submit=2, io_cancel=3, io_getevents=4,
                      io_pgetevents=292)}[platform.machine()]
ctx = ctypes.c_ulong(0)
out = {"io_setup": sys_call(NR["io_setup"], ctypes.c_long(32768), ctypes.byref(ctx))}
held = ctx  # a context, if one was made, lives as long as the session
for name in ("io_submit", "io_getevents", "io_cancel", "io_pgetevents", "io_destroy"):
    out[name] = sys_call(NR[name], ctypes.c_ulong(0), ctypes.c_long(0), None, None, None)
print(json.dumps(out))
"""


async def test_aio_is_unavailable_and_the_host_counter_untouched(session: Session) -> None:
    """io_setup(32768) would take half of this host's fs.aio-max-nr for as long as the session
    lives; every AIO call answers ENOSYS instead and fs.aio-nr does not grow."""
    before = read_int("/proc/sys/fs/aio-nr")
    out = await probe(session, LIBC + AIO)
    after = read_int("/proc/sys/fs/aio-nr")
    assert out == dict.fromkeys(out, "ENOSYS"), out
    assert len(out) == 6
    assert after < before + 32768


# --- socket buffers: net.ipv4.tcp_mem and udp_mem are shared by every process --------------

TCP_FILL = """
import errno, json, socket
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(128)
held, sent, stops, refused = [], 0, {}, None
chunk = b"x" * (1 << 20)
for _ in range(@CONNECTIONS@):
    try:
        client = socket.create_connection(srv.getsockname(), timeout=5)
        server_side, _ = srv.accept()
    except OSError as e:
        refused = errno.errorcode.get(e.errno, str(e.errno))
        break
    held += [client, server_side]  # nobody ever reads: every byte stays in kernel buffers
    client.setblocking(False)
    while True:
        try:
            sent += client.send(chunk)
        except OSError as e:
            name = errno.errorcode.get(e.errno, str(e.errno))
            stops[name] = stops.get(name, 0) + 1
            break
print(json.dumps({"sent": sent, "stops": stops, "refused": refused, "held": len(held)}))
"""


async def test_tcp_buffers_are_capped_per_session(sandbox: Sandbox) -> None:
    """Loopback connections whose reader never reads hold at most the session's socket buffer
    limit: the sender gets EAGAIN, the host-wide TCP memory barely moves, the session lives.
    Without the cap these 24 connections hold about 90 MiB of the host's tcp_mem."""
    limit, connections = 16 * MiB, 24
    policy = SandboxPolicy().with_limits(socket_buffers=limit)
    async with await sandbox.create_session(policy) as s:
        assert s.cgroup is not None
        before = sockstat_bytes("TCP")
        out = await probe(s, TCP_FILL.replace("@CONNECTIONS@", str(connections)))
        held = sockstat_bytes("TCP") - before  # the sockets are still open
        # Over the cap the kernel still lets each connection queue one segment at each end
        # (about 70 KiB measured), so that every connection can make progress.
        bound = limit if s.cgroup.version == 1 else policy.limits.memory
        bound += connections * 128 * 1024
        assert out["held"] == 2 * connections and out["refused"] is None, out
        assert out["stops"] == {"EAGAIN": connections}, out  # refused, not queued without end
        assert out["sent"] <= bound, out
        assert held <= bound + 2 * MiB, (held, out)  # + whatever the rest of the host does
        if s.cgroup.version == 1:
            peak = read_int(memory_file(s, "memory.kmem.tcp.max_usage_in_bytes", ""))
            assert limit // 2 < peak <= bound, peak  # charged to the session, and capped
        assert (await s.run("1 + 1")).text == "2"


UDP_FILL = """
import json, socket
receivers = []
for _ in range(@SOCKETS@):
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)  # as much as the host allows
    r.bind(("127.0.0.1", 0))
    receivers.append(r)
sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sender.setblocking(False)
payload = b"x" * 60000
sent = 0
for r in receivers:  # nobody reads: datagrams queue until the receive buffers are full
    for _ in range(160):
        try:
            sent += sender.sendto(payload, r.getsockname())
        except BlockingIOError:
            pass
def has_data(r):
    try:
        return len(r.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT)) > 0
    except BlockingIOError:
        return False
queued = sum(map(has_data, receivers))
print(json.dumps({"sent": sent, "receivers_with_data": queued}))
"""


async def test_udp_buffers_are_capped_per_session(sandbox: Sandbox) -> None:
    """Unread UDP receive queues count against the same per-session socket buffer limit as TCP;
    without it 12 sockets with 8 MiB buffers hold about 96 MiB of the host's udp_mem."""
    limit = 16 * MiB
    policy = SandboxPolicy().with_limits(socket_buffers=limit)
    async with await sandbox.create_session(policy) as s:
        assert s.cgroup is not None
        before = sockstat_bytes("UDP")
        out = await probe(s, UDP_FILL.replace("@SOCKETS@", "12"))
        held = sockstat_bytes("UDP") - before
        bound = limit if s.cgroup.version == 1 else policy.limits.memory
        assert out["sent"] > 2 * bound, out  # the attack really tried to queue more
        assert out["receivers_with_data"] >= 1, out
        assert held <= bound + 4 * MiB, (held, out)
        assert (await s.run("1 + 1")).text == "2"


# --- inotify: the read-only binds share their inodes with every other session --------------

INOTIFY_WATCH = """
import importlib.util
spec = importlib.util.find_spec("wave")  # a module no session has imported yet
watched = sorted({os.path.dirname(spec.origin), os.path.dirname(spec.cached)})
ctypes.set_errno(0)
watcher = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
out = {"inotify_init1": result(watcher), "watched": watched}
ctypes.set_errno(0)
out["inotify_init"] = result(libc.inotify_init())
ctypes.set_errno(0)
out["fanotify_init"] = result(libc.fanotify_init(0x200, os.O_RDONLY))  # FAN_REPORT_FID
for d in watched:
    if watcher >= 0:
        ctypes.set_errno(0)
        out["add_watch " + d] = result(libc.inotify_add_watch(watcher, d.encode(), 0x21))
print(json.dumps(out))
"""

INOTIFY_READ = """
import json, os, struct
names = []
if watcher >= 0:
    try:
        data = os.read(watcher, 65536)
    except BlockingIOError:
        data = b""
    while data:
        wd, mask, cookie, length = struct.unpack_from("iIII", data)
        names.append(data[16 : 16 + length].rstrip(b"\\0").decode())
        data = data[16 + length :]
print(json.dumps(names))
"""


async def test_inotify_cannot_watch_another_sessions_imports(sandbox: Sandbox) -> None:
    """Session A asks to be told about opens in the library directories; session B imports a
    module from there. A gets no inotify (or fanotify) instance, so it learns nothing."""
    async with await sandbox.create_session() as a, await sandbox.create_session() as b:
        setup = await probe(a, LIBC + INOTIFY_WATCH)
        ex = await b.run("import wave\nprint(wave.__name__)")
        assert (ex.status, ex.stdout) == ("ok", "wave\n"), (ex.status, ex.error)
        seen = await probe(a, INOTIFY_READ)
        assert seen == [], seen
        assert setup["inotify_init1"] == "ENOSYS", setup
        assert setup["inotify_init"] == "ENOSYS", setup
        assert setup["fanotify_init"] == "EPERM", setup


LIBRARIES = """
import json, subprocess, sys
code = ("import IPython, matplotlib, matplotlib.pyplot as plt, pandas, numpy, scipy.linalg;"
        "plt.plot([1, 2]); plt.savefig('/tmp/x.png');"
        "print(pandas.DataFrame({'a': [1, 2]}).a.sum())")
run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
print(json.dumps([run.returncode, run.stdout, run.stderr[-2000:]]))
"""


async def test_libraries_import_without_aio_or_inotify(session: Session) -> None:
    """A fresh interpreter in the session (nothing preloaded) imports IPython, matplotlib,
    pandas and scipy and draws a figure with AIO and inotify refused."""
    code, stdout, stderr = await probe(session, LIBRARIES, timeout=90)
    assert (code, stdout) == (0, "3\n"), stderr


# --- modify_ldt -------------------------------------------------------------------------------

MODIFY_LDT = """
import struct
buf = ctypes.create_string_buffer(64)
# struct user_desc: entry 0, base 0, limit 0xfffff, seg_32bit | limit_in_pages | useable
desc = ctypes.create_string_buffer(struct.pack("IIII", 0, 0, 0xFFFFF, 0x51), 16)
print(json.dumps({"read": sys_call(154, 0, buf, 64), "write": sys_call(154, 0x11, desc, 16)}))
"""


@pytest.mark.skipif(not IS_X86_64, reason="modify_ldt exists on x86 only")
async def test_modify_ldt_is_refused(session: Session) -> None:
    """Reading or installing a local descriptor table entry fails with EPERM."""
    out = await probe(session, LIBC + MODIFY_LDT)
    assert out == {"read": "EPERM", "write": "EPERM"}


# --- /proc: the host's boot arguments, kernel symbols and devices ---------------------------

PROC_FILES = (
    "cmdline",
    "kallsyms",
    "config.gz",
    "modules",
    "kcore",
    "keys",
    "key-users",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "latency_stats",
    "sysrq-trigger",
    "interrupts",
    "bootconfig",
)
PROC_DIRS = ("acpi", "asound", "scsi", "driver", "dynamic_debug")

READ_PROC = """
import errno, json, os
out = {"files": {}, "dirs": {}}
for name in @FILES@:
    path = "/proc/" + name
    try:
        with open(path, "rb") as f:
            out["files"][name] = len(f.read(4096))
    except OSError as e:
        out["files"][name] = errno.errorcode.get(e.errno, str(e.errno))
for name in @DIRS@:
    try:
        out["dirs"][name] = os.listdir("/proc/" + name)
    except OSError as e:
        out["dirs"][name] = errno.errorcode.get(e.errno, str(e.errno))
for path in ("/proc/driver/x", "/proc/sys/kernel/hostname"):
    try:
        with open(path, "w") as f:
            f.write("x")
        out[path] = "written"
    except OSError as e:
        out[path] = errno.errorcode.get(e.errno, str(e.errno))
out["sys"] = os.path.lexists("/sys")
print(json.dumps(out))
"""


async def test_host_kernel_files_in_proc_are_masked(session: Session) -> None:
    """/proc/cmdline, kallsyms, config.gz, the interrupt counters and the rest of that class read
    as empty (or do not exist), the device directories are empty and read-only, and /sys is not
    there at all. The host reads real content from the same files."""
    code = READ_PROC.replace("@FILES@", repr(PROC_FILES)).replace("@DIRS@", repr(PROC_DIRS))
    out = await probe(session, code)
    for name, found in out["files"].items():
        assert found in (0, "ENOENT"), (name, found)
    for name, found in out["dirs"].items():
        assert found in ([], "ENOENT"), (name, found)
    assert out["/proc/driver/x"] in ("EROFS", "ENOENT", "EACCES")
    assert out["/proc/sys/kernel/hostname"] == "EROFS"
    assert out["sys"] is False
    # Not vacuous: the host has content in the same places.
    with open("/proc/cmdline", "rb") as f:
        assert f.read()
    with open("/proc/kallsyms", "rb") as f:
        assert f.read(4096)
    assert out["files"]["cmdline"] == 0 and out["files"]["kallsyms"] == 0
    if os.path.exists("/proc/config.gz"):
        assert out["files"]["config.gz"] == 0


MOUNTINFO = """
import json
print(json.dumps(open("/proc/self/mountinfo").read()))
"""

JAIL_PATHS = ("/", "/tmp", "/home/sandbox", "/mnt/data", "/dev", "/dev/shm", "/proc")
# Roots of the jail's own binds: device nodes (also what masks /proc files) and /proc subtrees.
MASK_SOURCES = ("/null", "/zero", "/full", "/random", "/urandom", "/sys", "/bus", "/fs", "/irq")


def root_within_its_filesystem(path: str) -> str:
    """What mountinfo's root field shows for a bind of host `path`: the path inside the
    filesystem that holds it (a checkout on a mount of its own shows as /clone/src, say)."""
    mounts = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split(" - ")[0].split()
            mounts.append((fields[4], fields[3]))
    point, root = max(
        ((p, r) for p, r in mounts if path == p or path.startswith(p.rstrip("/") + "/")),
        key=lambda mount: len(mount[0]),
    )
    return os.path.normpath(root + "/" + path[len(point) :])


async def test_mountinfo_shows_only_the_environment_and_system_binds(
    sandbox: Sandbox, session: Session
) -> None:
    """Host paths in /proc/self/mountinfo are those of the bound Python environment and the
    system binds, nothing else: no runtime directory, session id, workspace or cache path."""
    text = await probe(session, MOUNTINFO)
    binds = [*SYSTEM_BINDS, *sandbox.zygote.hello["environment_binds"]]
    hosts = {*binds, *(os.path.realpath(p) for p in binds)}
    hosts |= {"/" + name for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32")}
    roots = hosts | {root_within_its_filesystem(p) for p in hosts if os.path.exists(p)}
    for line in text.splitlines():
        fields = line.split(" - ")[0].split()
        root, mountpoint = fields[3], fields[4]
        assert (
            mountpoint in JAIL_PATHS
            or mountpoint in hosts
            or re.fullmatch(r"/(dev|proc)/[\w.-]+", mountpoint)
        ), line
        assert root == "/" or root in roots or root in MASK_SOURCES, line
    hidden = [
        sandbox.runtime_dir,
        os.path.dirname(sandbox.runtime_dir),
        sandbox.instance,
        session.id,
        session.workspace.path,
        sandbox.config.cache_dir or default_cache_dir(),
    ]
    assert [h for h in hidden if h in text] == []


# --- the rest of the class: docs/isolation.md ---------------------------------------------------

MQUEUE = """
class Attr(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_long), ("maxmsg", ctypes.c_long),
                ("msgsize", ctypes.c_long), ("curmsgs", ctypes.c_long),
                ("pad", ctypes.c_long * 4)]
try:
    mq_open = libc.mq_open
except AttributeError:
    mq_open = ctypes.CDLL("librt.so.1", use_errno=True).mq_open
attr = Attr(0, 10, 8192, 0)
made, stopped = 0, None
for i in range(300):
    ctypes.set_errno(0)
    if mq_open(f"/q{i}".encode(), os.O_CREAT | os.O_RDWR, 0o600, ctypes.byref(attr)) < 0:
        stopped = errno.errorcode.get(ctypes.get_errno())
        break
    made += 1
print(json.dumps({"made": made, "stopped": stopped}))
"""


async def test_posix_message_queues_stop_at_the_session_limit(session: Session) -> None:
    """Queues of 10 x 8 KiB stop at RLIMIT_MSGQUEUE (EMFILE), long before the 256 queues of the
    session's own ipc namespace."""
    out = await probe(session, LIBC + MQUEUE)
    limit = session.policy.limits.message_queues
    assert out["stopped"] == "EMFILE", out
    assert out["made"] * 10 * 8192 <= limit


TIMERS = """
made, stopped = 0, None
timer = ctypes.c_void_p()
for _ in range(20000):
    ctypes.set_errno(0)
    if libc.timer_create(1, None, ctypes.byref(timer)) != 0:  # CLOCK_MONOTONIC
        stopped = errno.errorcode.get(ctypes.get_errno())
        break
    made += 1
print(json.dumps({"made": made, "stopped": stopped}))
"""


async def test_posix_timers_stop_at_the_pending_signals_limit(session: Session) -> None:
    """Each POSIX timer reserves a queued signal: timer_create fails with EAGAIN at the session's
    RLIMIT_SIGPENDING, not at the host default of tens of thousands."""
    out = await probe(session, LIBC + TIMERS)
    assert out["stopped"] == "EAGAIN", out
    assert 0 < out["made"] <= session.policy.limits.pending_signals


RLIMITS = """
import resource
names = ["RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE", "RLIMIT_SIGPENDING", "RLIMIT_RTPRIO",
         "RLIMIT_NICE"]
out = {n: list(resource.getrlimit(getattr(resource, n))) for n in names}
try:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    out["sched_fifo"] = "ok"
except OSError as e:
    out["sched_fifo"] = errno.errorcode.get(e.errno)
try:
    os.nice(-1)
    out["nice"] = "ok"
except OSError as e:
    out["nice"] = errno.errorcode.get(e.errno)
big = ctypes.create_string_buffer(@MLOCK@)
ctypes.set_errno(0)
out["mlock_over_limit"] = result(libc.mlock(big, @MLOCK@))
print(json.dumps(out))
"""


async def test_kernel_object_rlimits_are_set(session: Session) -> None:
    """Locked memory, message queues and pending signals have the policy's limits, real-time
    scheduling is refused (the CPU quota does not cover SCHED_FIFO) and mlock stops at the cap."""
    lim = session.policy.limits
    out = await probe(session, LIBC + RLIMITS.replace("@MLOCK@", str(lim.locked_memory + MiB)))
    assert out == {
        "RLIMIT_MEMLOCK": [lim.locked_memory] * 2,
        "RLIMIT_MSGQUEUE": [lim.message_queues] * 2,
        "RLIMIT_SIGPENDING": [lim.pending_signals] * 2,
        "RLIMIT_RTPRIO": [0, 0],
        "RLIMIT_NICE": [0, 0],
        "sched_fifo": "EPERM",
        "nice": "EPERM",
        "mlock_over_limit": "ENOMEM",
    }


PIPES = """
import json, os
pipes, queued = [], 0
for _ in range(@PIPES@):
    r, w = os.pipe()
    os.set_blocking(w, False)
    pipes.append((r, w))
    while True:
        try:
            queued += os.write(w, b"x" * 65536)
        except BlockingIOError:
            break
print(json.dumps(queued))
"""


async def test_pipe_buffers_are_charged_to_the_session(session: Session) -> None:
    """Pipes nobody reads hold their pages in the session's memory cgroup (so the memory limit
    bounds them); the per-user pipe page quota is per session since each has its own uid."""
    before = memory_usage(session)
    queued = await probe(session, PIPES.replace("@PIPES@", "256"))
    grown = memory_usage(session) - before
    assert queued >= 256 * 60000
    assert grown >= queued * 0.9, (grown, queued)


UNIX_FILL = """
import json, socket
pairs, queued = [], 0
for _ in range(@PAIRS@):
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    a.setblocking(False)
    pairs.append((a, b))
    while True:
        try:
            queued += a.send(b"x" * 65536)
        except BlockingIOError:
            break
print(json.dumps(queued))
"""


async def test_unix_socket_buffers_are_charged_to_the_session(session: Session) -> None:
    """Unread unix socket data is kernel memory charged to the session's memory cgroup."""
    before = memory_usage(session)
    queued = await probe(session, UNIX_FILL.replace("@PAIRS@", "16"))
    grown = memory_usage(session) - before
    assert queued >= 16 * 1 * MiB, queued
    assert grown >= queued * 0.9, (grown, queued)


EPOLL_WATCHES = """
import json, os, select
targets = [os.eventfd(0) for _ in range(400)]
instances = []
for _ in range(200):
    ep = select.epoll()
    for fd in targets:
        ep.register(fd, select.EPOLLIN)
    instances.append(ep)
print(json.dumps(len(instances) * len(targets)))
"""


async def test_epoll_watches_are_charged_to_the_session(session: Session) -> None:
    """80,000 epoll watches (fs.epoll.max_user_watches counts per uid, so per session) are
    kernel memory charged to the session's memory cgroup."""
    before = memory_usage(session)
    watches = await probe(session, EPOLL_WATCHES)
    grown = memory_usage(session) - before
    assert watches == 80_000
    assert grown >= watches * 100, (grown, watches)  # an epitem is about 200 bytes


NEGATIVE_DENTRIES = """
import json, os
print(json.dumps(sum(os.path.exists(f"/usr/lib/@TOKEN@-{i}") for i in range(100_000))))
"""


async def test_negative_dentries_are_charged_to_the_session(session: Session) -> None:
    """Looking up 100,000 names that do not exist in a read-only bind fills the host's dentry
    cache; those dentries are charged to the session (and reclaimable)."""
    token = f"no-such-file-{secrets.token_hex(8)}"  # names no lookup has cached yet
    before = memory_usage(session)
    assert await probe(session, NEGATIVE_DENTRIES.replace("@TOKEN@", token)) == 0
    grown = memory_usage(session) - before
    assert grown >= 100_000 * 100, grown  # a dentry is about 200 bytes


MEMFD = """
import os
fd = os.memfd_create("fill")
for _ in range(256):
    os.write(fd, b"x" * (1 << 20))
print("survived")
"""


async def test_memfd_pages_are_charged_to_the_session(sandbox: Sandbox) -> None:
    """256 MiB written to a memfd in a 128 MiB session does not take host memory: the session
    ends as 'oom' (or the write fails) and its peak stays within the limit."""
    policy = SandboxPolicy().with_limits(memory=128 * MiB)
    async with await sandbox.create_session(policy) as s:
        ex = await s.run(MEMFD, timeout=30)
        assert ex.status in ("oom", "error"), (ex.status, ex.message)
        assert "survived" not in ex.stdout
        assert s.stats().memory_peak_bytes <= 128 * MiB
        assert (await s.run("1 + 1")).text == "2"


FD_OBJECTS = """
import signal
libc.timerfd_create.restype = ctypes.c_int
libc.signalfd.restype = ctypes.c_int
mask = ctypes.create_string_buffer(128)
libc.sigemptyset(mask)
libc.sigaddset(mask, signal.SIGUSR1)
makers = {
    "eventfd": lambda: os.eventfd(0),
    "timerfd": lambda: libc.timerfd_create(1, 0),
    "signalfd": lambda: libc.signalfd(-1, mask, 0),
    "epoll": lambda: libc.epoll_create1(0),
}
out, held = {}, []
for name, make in makers.items():
    count, stopped = 0, None
    while count < 5000:
        try:
            ctypes.set_errno(0)
            fd = make()
            if fd < 0:
                raise OSError(ctypes.get_errno(), name)
        except OSError as e:
            stopped = errno.errorcode.get(e.errno)
            break
        held.append(fd)
        count += 1
    out[name] = [count, stopped]
    for fd in held:
        os.close(fd)
    held.clear()
print(json.dumps(out))
"""


async def test_fd_backed_kernel_objects_stop_at_open_files(session: Session) -> None:
    """eventfd, timerfd, signalfd and epoll instances are file descriptors: each kind stops at
    RLIMIT_NOFILE (EMFILE)."""
    out = await probe(session, LIBC + FD_OBJECTS)
    limit = session.policy.limits.open_files
    for name, (count, stopped) in out.items():
        assert stopped == "EMFILE", (name, out)
        assert limit - 16 <= count < limit, (name, out)


NO_PTY_NO_KEYS = """
import platform
out = {}
try:
    os.openpty()
    out["openpty"] = "ok"
except OSError as e:
    out["openpty"] = errno.errorcode.get(e.errno)
out["dev"] = sorted(os.listdir("/dev"))
NR = {"x86_64": dict(add_key=248, request_key=249, keyctl=250),
      "aarch64": dict(add_key=217, request_key=218, keyctl=219)}[platform.machine()]
out["add_key"] = sys_call(NR["add_key"], b"user", b"k", b"v", 1, ctypes.c_long(-3))
out["keyctl_join"] = sys_call(NR["keyctl"], 1, b"s")  # KEYCTL_JOIN_SESSION_KEYRING
out["request_key"] = sys_call(NR["request_key"], b"user", b"k", None, 0)
print(json.dumps(out))
"""


async def test_no_ptys_and_no_keyrings(session: Session) -> None:
    """The jail's /dev has no ptmx or pts, so the host's kernel.pty.max is out of reach; the
    keyring calls (kernel.keys.maxkeys, per uid) are refused."""
    out = await probe(session, LIBC + NO_PTY_NO_KEYS)
    assert out == {
        "openpty": "ENOENT",
        "dev": [
            "fd",
            "full",
            "null",
            "random",
            "shm",
            "stderr",
            "stdin",
            "stdout",
            "urandom",
            "zero",
        ],
        "add_key": "EPERM",
        "keyctl_join": "EPERM",
        "request_key": "EPERM",
    }


HUGETLB = """
import mmap
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
MAP_HUGETLB = 0x40000
ctypes.set_errno(0)
address = libc.mmap(None, 2 << 20, mmap.PROT_READ | mmap.PROT_WRITE,
                    mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_HUGETLB, -1, 0)
failed = address in (None, 2**64 - 1)
out = {"mmap": errno.errorcode.get(ctypes.get_errno()) if failed else "ok"}
try:
    os.close(os.memfd_create("huge", os.MFD_HUGETLB))
    out["memfd_create"] = "ok"
except OSError as e:
    out["memfd_create"] = errno.errorcode.get(e.errno)
ctypes.set_errno(0)
out["shmget"] = result(libc.shmget(0, 2 << 20, 0o1000 | 0o4000 | 0o600))  # IPC_CREAT|SHM_HUGETLB
plain = mmap.mmap(-1, 2 << 20)  # ordinary anonymous memory still works
plain[:1] = b"x"
print(json.dumps(out))
"""


async def test_huge_page_pool_is_out_of_reach(session: Session) -> None:
    """Huge pages reserved on the host (vm.nr_hugepages) are not charged to the memory cgroup:
    MAP_HUGETLB, MFD_HUGETLB and SHM_HUGETLB are refused, ordinary mappings still work."""
    out = await probe(session, LIBC + HUGETLB)
    assert out == {"mmap": "EPERM", "memfd_create": "EPERM", "shmget": "EPERM"}


SYSV_CREATE = """
shm = libc.shmget(0x5EC2E7, 4096, 0o1000 | 0o600)  # IPC_CREAT
sem = libc.semget(0x5EC2E7, 1, 0o1000 | 0o600)
msg = libc.msgget(0x5EC2E7, 0o1000 | 0o600)
print(json.dumps([shm >= 0, sem >= 0, msg >= 0]))
"""

SYSV_LOOKUP = """
out = []
for get in (lambda: libc.shmget(0x5EC2E7, 0, 0), lambda: libc.semget(0x5EC2E7, 0, 0),
            lambda: libc.msgget(0x5EC2E7, 0)):
    ctypes.set_errno(0)
    out.append(result(get()))
print(json.dumps(out))
"""


async def test_sysv_ipc_objects_are_private_to_the_session(sandbox: Sandbox) -> None:
    """SysV shared memory, semaphores and message queues live in the session's ipc namespace: a
    key made in one session does not exist in another, nor on the host."""
    async with await sandbox.create_session() as a, await sandbox.create_session() as b:
        assert await probe(a, LIBC + SYSV_CREATE) == [True, True, True]
        assert await probe(b, LIBC + SYSV_LOOKUP) == ["ENOENT"] * 3
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.shmget(0x5EC2E7, 0, 0) == -1 and ctypes.get_errno() == errno.ENOENT


async def test_sessions_do_not_share_per_user_counters(sandbox: Sandbox) -> None:
    """Per-user kernel quotas (pipe pages, epoll watches, inotify instances, message queue bytes,
    pending signals) are per session because each session runs as its own uid."""
    async with await sandbox.create_session() as a, await sandbox.create_session() as b:
        uids = await asyncio.gather(
            probe(a, "import os, json\nprint(json.dumps(os.getuid()))"),
            probe(b, "import os, json\nprint(json.dumps(os.getuid()))"),
        )
        assert uids == [a.uid, b.uid] and a.uid != b.uid and 0 not in uids


RECORD_LOCKS = """
import fcntl, errno, json, os, time
def lock_ranges(handle, count):
    for i in range(count):
        try:
            fcntl.lockf(handle, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, 2 * i)
        except OSError as exc:
            return i, errno.errorcode.get(exc.errno)
    return count, None
# A child process takes locks of its own and keeps them: the budget is the session's.
ready_r, ready_w = os.pipe()
child = os.fork()
if child == 0:
    library = open(os.__file__, "rb")  # read-only files of the environment can be read-locked
    os.write(ready_w, json.dumps(lock_ranges(library, 150)).encode())
    time.sleep(600)
    os._exit(0)
child_took = json.loads(os.read(ready_r, 100))
scratch = open("/tmp/locks", "w+")
scratch.write("x")
scratch.flush()
took = lock_ranges(scratch, 50_000)
print(json.dumps({"child": child_took, "parent": took, "child_pid": child}))
"""


def host_lock_count(pids: set[str]) -> int:
    """POSIX locks of `pids` as the host's /proc/locks lists them (a different source than the
    census, which reads each process's fdinfo)."""
    with open("/proc/locks") as locks:
        return sum(1 for line in locks if line.split()[1] == "POSIX" and line.split()[4] in pids)


async def test_record_locks_stop_at_the_session_budget(sandbox: Sandbox) -> None:
    """fcntl locks are kernel memory no cgroup pays for: two processes of a session, one locking
    a read-only library file, together hold no more than the session's budget, and the next
    call fails with ENOLCK. Before the budget the parent alone held all 50,000."""
    supported, why = seccomp.lock_supervision_supported()
    if not supported:
        pytest.skip(f"this kernel cannot count record locks: {why}")
    assert sandbox.zygote.hello["file_locks"], sandbox.zygote.hello["file_locks_error"]
    budget = 300
    policy = SandboxPolicy().with_limits(file_locks=budget)
    async with await sandbox.create_session(policy) as s:
        assert s.cgroup is not None
        out = await probe(s, RECORD_LOCKS)
        assert out["child"] == [150, None], out
        held, stop = out["parent"]
        assert stop == "ENOLCK", out
        assert budget - 150 - 2 <= held <= budget - 150, out
        pids_dir = s.cgroup.dirs["unified" if s.cgroup.version == 2 else "pids"]
        with open(os.path.join(pids_dir, "cgroup.procs")) as procs:
            pids = set(procs.read().split())
        assert budget - 2 <= host_lock_count(pids) <= budget
        # Released locks make room again, and SQLite (fcntl locks on its file) works.
        sqlite = await s.run(
            "scratch.close()\n"
            "import sqlite3\n"
            "db = sqlite3.connect('/mnt/data/t.db')\n"
            "db.execute('create table t (a)')\n"
            "for i in range(200):\n"
            "    db.execute('insert into t values (?)', (i,)); db.commit()\n"
            "print(db.execute('select count(*) from t').fetchone()[0])"
        )
        assert sqlite.stdout.strip() == "200", (sqlite.error, sqlite.stderr)


async def test_ofd_locks_are_refused_in_a_session(session: Session) -> None:
    """OFD locks could outlive every descriptor of their file (sent over a unix socket and
    never received), beyond any count: they fail with EINVAL, as before Linux 3.15."""
    out = await probe(
        session,
        "import fcntl, errno, json, struct\n"
        "h = open('/tmp/ofd', 'w')\n"
        "try:\n"
        "    fcntl.fcntl(h, 37, struct.pack('hhqqi4x', fcntl.F_WRLCK, 0, 0, 1, 0))\n"
        "    r = 'locked'\n"
        "except OSError as exc:\n"
        "    r = errno.errorcode[exc.errno]\n"
        "print(json.dumps(r))",
    )
    assert out == "EINVAL"
