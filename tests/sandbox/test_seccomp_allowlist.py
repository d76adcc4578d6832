"""The allow-list seccomp profile: the program it builds, the setting that chooses it, what it
refuses, and the preinstalled libraries' ordinary work running under it in real sessions.

Run the whole sandbox suite under the allow profile with
`CODEINTERP_SECCOMP_PROFILE=allow pytest tests/sandbox`: every session whose policy names no
profile then gets it. The tests here name their profile, so they do the same in either run.
"""

from __future__ import annotations

import errno
import importlib.machinery
import importlib.util
import json
import platform
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest
import pytest_asyncio

from codeinterp.errors import InvalidRequest
from codeinterp.sandbox import Sandbox, SandboxConfig, SandboxPolicy, Session, seccomp
from codeinterp.sandbox.policy import SECCOMP_PROFILES
from codeinterp.sandbox.seccomp_allowlist import ALLOWED, MARGIN, TRACED
from tests.sandbox.test_seccomp import run_bpf

ALLOW = SandboxPolicy(seccomp_profile="allow")
DENY = SandboxPolicy(seccomp_profile="deny")
HOST_ARCH = {"x86_64": "x86_64", "aarch64": "aarch64"}.get(platform.machine())
needs_known_arch = pytest.mark.skipif(HOST_ARCH is None, reason="no syscall table for this arch")

# Harmless, on no list, used by none of the libraries: the allow profile must refuse it.
UNLISTED = "sched_rr_get_interval"
# The syscalls whose verdict depends on an argument (steps 7-11 of the filter).
ARGUMENT_CHECKED = (
    "clone",
    "personality",
    "ioctl",
    "socket",
    "socketpair",
    "mmap",
    "memfd_create",
    "shmget",
)


def err(e: int) -> int:
    return seccomp.SECCOMP_RET_ERRNO | e


# --- the list and the program --------------------------------------------------------------------


def test_the_list_is_sorted_known_and_apart_from_the_refusals() -> None:
    """ALLOWED is sorted and unique, every name is a syscall of x86_64 or arm64, and none of
    them is one the deny-list's rules answer (those rules come first, so listing one would be
    a mistake in the derivation)."""
    known = {name for arch in seccomp._ARCHES.values() for name in arch.syscalls}
    assert list(ALLOWED) == sorted(set(ALLOWED))
    assert set(ALLOWED) == set(TRACED) | set(MARGIN)
    assert set(ALLOWED) <= known
    fixed = {*seccomp.DEFAULT_DENIED, *seccomp.DEFAULT_UNAVAILABLE, "clone3"}
    assert not set(ALLOWED) & fixed
    assert UNLISTED not in ALLOWED and UNLISTED not in fixed
    # The basics every process needs, on both arches.
    for name in (
        "read",
        "write",
        "openat",
        "close",
        "mmap",
        "munmap",
        "brk",
        "futex",
        "clone",
        "execve",
        "exit_group",
        "rt_sigreturn",
        "wait4",
        "socket",
        "newfstatat",
    ):
        assert name in ALLOWED, name


def test_the_deny_profile_is_unchanged_and_allow_differs() -> None:
    for arch in ("x86_64", "aarch64"):
        deny = seccomp.build_program(seccomp.profile("deny"), arch=arch)
        allow = seccomp.build_program(seccomp.profile("allow"), arch=arch)
        assert deny == seccomp.build_program(seccomp.SeccompProfile(), arch=arch)
        assert allow != deny and 0 < len(allow) // 8 < seccomp.BPF_MAXINSNS
        assert allow == seccomp.build_program(seccomp.profile("allow"), arch=arch)
    with pytest.raises(ValueError, match="unknown seccomp profile"):
        seccomp.profile("audit")
    assert seccomp.PROFILES == SECCOMP_PROFILES  # the names a policy accepts, each buildable


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_bpf_allow_profile(arch: str) -> None:
    """Through a BPF interpreter: each listed syscall is allowed (with its argument checks
    where it has one), each unlisted one gets ENOSYS, and every rule of the deny-list holds."""
    table = seccomp._ARCHES[arch].syscalls
    audit = {"x86_64": seccomp.AUDIT_ARCH_X86_64, "aarch64": seccomp.AUDIT_ARCH_AARCH64}[arch]
    program = seccomp.build_program(seccomp.profile("allow"), arch=arch)

    def run(name: str, *args: int) -> int:
        return run_bpf(program, table[name], audit, args)

    listed = [name for name in ALLOWED if name in table]
    assert len(listed) > 50
    for name in listed:
        if name not in ARGUMENT_CHECKED:  # those are checked with their arguments below
            assert run(name) == seccomp.SECCOMP_RET_ALLOW, name
    unlisted = set(table) - set(ALLOWED) - set(seccomp.DEFAULT_DENIED)
    unlisted -= {*seccomp.DEFAULT_UNAVAILABLE, "clone3"}
    assert UNLISTED in unlisted
    for name in sorted(unlisted):
        assert run(name) == err(errno.ENOSYS), name
    for name in seccomp.DEFAULT_DENIED:
        if name in table:
            assert run(name) == err(errno.EPERM), name
    for name in (*seccomp.DEFAULT_UNAVAILABLE, "clone3"):
        if name in table:
            assert run(name) == err(errno.ENOSYS), name
    # Numbers past the table, the "no syscall" value, a foreign arch.
    assert run_bpf(program, 471, audit) == err(errno.ENOSYS)
    assert run_bpf(program, -1, audit) == err(errno.ENOSYS)
    other = seccomp.AUDIT_ARCH_AARCH64 if arch == "x86_64" else seccomp.AUDIT_ARCH_X86_64
    assert run_bpf(program, table["getpid"], other) == seccomp.SECCOMP_RET_KILL_PROCESS
    if arch == "x86_64":
        assert run_bpf(program, 0x40000000 | table["getpid"], audit) == (
            seccomp.SECCOMP_RET_KILL_PROCESS
        )
    # The argument checks, unchanged.
    assert run("clone", 0x11 | 0x01000000 | 0x00200000) == seccomp.SECCOMP_RET_ALLOW
    assert run("clone", seccomp.CLONE_NEWUSER | 0x11) == err(errno.EPERM)
    assert run("clone", seccomp.CLONE_NEWNET) == err(errno.EPERM)
    for call in ("socket", "socketpair"):
        assert run(call, socket.AF_UNIX) == seccomp.SECCOMP_RET_ALLOW
        assert run(call, socket.AF_INET6) == seccomp.SECCOMP_RET_ALLOW
        assert run(call, 16) == err(errno.EAFNOSUPPORT)  # AF_NETLINK
        assert run(call, 40) == err(errno.EAFNOSUPPORT)  # AF_VSOCK
    assert run("ioctl", 1, seccomp.TIOCSTI) == err(errno.EPERM)
    assert run("ioctl", 1, (1 << 32) | seccomp.TIOCSTI) == err(errno.EPERM)
    assert run("ioctl", 1, 0x5401) == seccomp.SECCOMP_RET_ALLOW  # TCGETS
    assert run("mmap", 0, 4096, 3, 0x22) == seccomp.SECCOMP_RET_ALLOW
    assert run("mmap", 0, 4096, 3, 0x22 | seccomp.MAP_HUGETLB) == err(errno.EPERM)
    assert run("memfd_create", 0, 1) == seccomp.SECCOMP_RET_ALLOW
    assert run("memfd_create", 0, seccomp.MFD_HUGETLB) == err(errno.EPERM)
    if "shmget" in ALLOWED:
        assert run("shmget", 0, 4096, 0o1600) == seccomp.SECCOMP_RET_ALLOW
        assert run("shmget", 0, 4096, seccomp.SHM_HUGETLB) == err(errno.EPERM)
    # personality: checked if listed, ENOSYS (like any unlisted call) if not.
    if "personality" in ALLOWED:
        assert run("personality", 0xFFFFFFFF) == seccomp.SECCOMP_RET_ALLOW
        assert run("personality", 0x0400000) == err(errno.EPERM)
    else:
        assert run("personality", 0xFFFFFFFF) == err(errno.ENOSYS)


def test_an_allow_list_profile_field() -> None:
    """A hand-made allow-list: only its names pass; a denied name stays denied, an argument
    check stays in force for a listed syscall and is skipped (ENOSYS) for an unlisted one."""
    a = seccomp.AUDIT_ARCH_X86_64
    nr = seccomp._ARCHES["x86_64"].syscalls
    profile = seccomp.SeccompProfile(allowed_syscalls=("getpid", "socket", "ptrace"))
    program = seccomp.build_program(profile, arch="x86_64")
    assert run_bpf(program, nr["getpid"], a) == seccomp.SECCOMP_RET_ALLOW
    assert run_bpf(program, nr["getppid"], a) == err(errno.ENOSYS)
    assert run_bpf(program, nr["ptrace"], a) == err(errno.EPERM)
    assert run_bpf(program, nr["socket"], a, (socket.AF_INET,)) == seccomp.SECCOMP_RET_ALLOW
    assert run_bpf(program, nr["socket"], a, (16,)) == err(errno.EAFNOSUPPORT)
    assert run_bpf(program, nr["socketpair"], a, (socket.AF_UNIX,)) == err(errno.ENOSYS)
    assert run_bpf(program, nr["clone"], a, (0x11,)) == err(errno.ENOSYS)
    empty = seccomp.build_program(seccomp.SeccompProfile(allowed_syscalls=()), arch="x86_64")
    assert run_bpf(empty, nr["getpid"], a) == err(errno.ENOSYS)
    with pytest.raises(ValueError, match="no_such_call"):
        seccomp.build_program(seccomp.SeccompProfile(allowed_syscalls=("no_such_call",)))


# --- the derivation ------------------------------------------------------------------------------

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "derive-seccomp-allowlist"

# strace -f output for a zygote (pid 100): one session (200) that loads its filter and starts a
# program (300), and a second fork that reuses pid 300 and dies in its jail.
SYNTHETIC_TRACE = """\
100   pselect6(17, 0x7ffe, NULL, NULL, NULL, NULL) = 1 (in [16])
100   clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|SIGCHLD <unfinished ...>
200   set_robust_list(0x7f32, 24)       = 0
200   mount("tmpfs", "/r", "tmpfs", MS_NOSUID, "size=4k") = 0
100   <... clone resumed>, child_tidptr=0x7f32) = 200
200   umask(022)                        = 022
200   seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, 0x7f31 <unfinished ...>
100   recvfrom(16, "{"..., 1048576, 0, NULL, NULL) = 10
200   <... seccomp resumed>)            = 0
200   openat(AT_FDCWD, "/mnt/data", O_RDONLY) = 3
200   vfork( <unfinished ...>
300   execve("/usr/bin/ls", ["ls"], 0x7ffd /* 9 vars */) = 0
300   syscall_0x1b4(0x3, 0xffffffff, 0) = 0
200   <... vfork resumed>)              = 5
300   +++ exited with 0 +++
200   +++ killed by SIGKILL +++
100   clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|SIGCHLD) = 300
300   sethostname("sandbox", 7)         = 0
300   +++ exited with 1 +++
100   wait4(-1, 0x7ffe, WNOHANG, NULL)  = 300
"""


def derivation_script() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("derive_seccomp_allowlist", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_derivation_counts_only_what_sessions_call(tmp_path: Path) -> None:
    """The trace reader keeps a session's calls from its filter load on, every call of the
    processes it starts (an unnamed number by the table), and nothing of the zygote, of a
    jail before its filter or of a child that never loaded one, even on a reused pid."""
    script = derivation_script()
    trace = tmp_path / "zygote-100.trace"
    trace.write_text(SYNTHETIC_TRACE)
    numbers = {nr: name for name, nr in seccomp._ARCHES["x86_64"].syscalls.items()}
    names, processes = script.session_syscalls(trace, 100, numbers)
    assert names == {"openat", "vfork", "execve", "close_range"}  # 0x1b4: close_range
    assert processes == 2
    added = script.expand_same_operation({"openat", "rename", "getdents64"})
    assert added == {
        "open": "openat",
        "creat": "openat",
        "renameat": "rename",
        "renameat2": "rename",
        "getdents": "getdents64",
    }


# --- the setting ---------------------------------------------------------------------------------


def test_the_setting_reaches_policies_that_name_no_profile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SandboxConfig.seccomp_profile (default: CODEINTERP_SECCOMP_PROFILE, else "deny") fills
    in every policy without a profile; a policy that names one keeps it; describe() says it."""
    monkeypatch.delenv("CODEINTERP_SECCOMP_PROFILE", raising=False)
    assert SandboxConfig().seccomp_profile == "deny"
    assert SandboxConfig().effective(SandboxPolicy()).seccomp_profile == "deny"
    monkeypatch.setenv("CODEINTERP_SECCOMP_PROFILE", "allow")
    config = SandboxConfig()
    assert config.seccomp_profile == "allow"
    assert config.effective(SandboxPolicy()).seccomp_profile == "allow"
    assert config.effective(DENY) is DENY
    tier = config.effective(SandboxPolicy.for_memory_tier("4g"))
    assert tier.seccomp_profile == "allow" and tier.limits.memory == 4 << 30
    assert SandboxConfig(seccomp_profile="deny").effective(ALLOW) is ALLOW
    monkeypatch.setenv("CODEINTERP_SECCOMP_PROFILE", "audit")
    with pytest.raises(InvalidRequest, match="seccomp_profile"):
        SandboxConfig()
    with pytest.raises(InvalidRequest, match="seccomp_profile"):
        SandboxPolicy(seccomp_profile="none")
    assert SandboxPolicy.from_dict(ALLOW.to_dict()) == ALLOW
    described = {
        name: "\n".join(SandboxPolicy(seccomp_profile=name).describe()) for name in SECCOMP_PROFILES
    }
    assert f"allow-list ({len(ALLOWED)} syscalls" in described["allow"]
    assert "deny-list" in described["deny"] and "allow-list" not in described["deny"]


# --- real sessions -------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def allowed(sandbox: Sandbox) -> AsyncIterator[Session]:
    """A session under the allow profile, whatever the sandbox's own setting."""
    session = await sandbox.create_session(ALLOW)
    yield session
    await session.close()


async def run_json(session: Session, code: str, timeout: float = 60) -> object:
    ex = await session.run(code, timeout=timeout)
    assert ex.status == "ok", (ex.status, ex.error, ex.stderr[-2000:], ex.message)
    return json.loads(ex.stdout.strip().splitlines()[-1])


UNLISTED_PROBE = f"""
import json, os
try:
    out = ["ok", os.{UNLISTED}(0) >= 0]
except OSError as e:
    out = ["error", e.errno]
print(json.dumps(out))
"""


@needs_known_arch
async def test_unlisted_syscall_is_refused_only_under_allow(sandbox: Sandbox) -> None:
    """sched_rr_get_interval, on no list: ENOSYS under the allow profile, answered as before
    under the deny profile. (scripts/derive-seccomp-allowlist leaves this test out.)"""
    results = {}
    for policy in (ALLOW, DENY):
        session = await sandbox.create_session(policy)
        try:
            assert session.policy.seccomp_profile == policy.seccomp_profile
            results[policy.seccomp_profile] = await run_json(session, UNLISTED_PROBE)
        finally:
            await session.close()
    assert results == {"allow": ["error", errno.ENOSYS], "deny": ["ok", True]}


def _refusals_probe() -> str:
    assert HOST_ARCH is not None
    nr = seccomp._ARCHES[HOST_ARCH].syscalls
    return f"""
import ctypes, errno, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(nr, *args):
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(nr), *[ctypes.c_ulong(a) for a in args])
    return errno.errorcode.get(ctypes.get_errno(), "?") if rc == -1 else "ok"
def sock(family, kind, proto=0):
    try:
        socket.socket(family, kind, proto).close()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, "?")
out = {{
    "ptrace": call({nr["ptrace"]}, 0, 0, 0, 0),
    "unshare_newuser": call({nr["unshare"]}, 0x10000000),
    "clone_newnet": call({nr["clone"]}, 0x40000000 | 17, 0, 0, 0, 0),
    "clone3": call({nr["clone3"]}, 0, 0),
    "io_setup": call({nr["io_setup"]}, 1, 0),
    "inotify_init1": call({nr["inotify_init1"]}, 0),
    "mmap_hugetlb": call({nr["mmap"]}, 0, 2 << 20, 3, 0x22 | 0x40000, 2**64 - 1, 0),
    "memfd_hugetlb": call({nr["memfd_create"]}, 0, 4),
    "af_netlink": sock(16, socket.SOCK_RAW),
    "af_vsock": sock(40, socket.SOCK_STREAM),
    "raw_icmp": sock(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
    "tcp": sock(socket.AF_INET, socket.SOCK_STREAM),
}}
print(json.dumps(out))
"""


@needs_known_arch
async def test_refusals_are_the_same_under_both_profiles(sandbox: Sandbox) -> None:
    """The deny-list's refusals and argument checks answer alike in a real session under
    either profile: EPERM, ENOSYS and EAFNOSUPPORT where the deny profile gives them."""
    code = _refusals_probe()
    results = {}
    for policy in (ALLOW, DENY):
        session = await sandbox.create_session(policy)
        try:
            results[policy.seccomp_profile] = await run_json(session, code)
        finally:
            await session.close()
    expected = {
        "ptrace": "EPERM",
        "unshare_newuser": "EPERM",
        "clone_newnet": "EPERM",
        "clone3": "ENOSYS",
        "io_setup": "ENOSYS",
        "inotify_init1": "ENOSYS",
        "mmap_hugetlb": "EPERM",
        "memfd_hugetlb": "EPERM",
        "af_netlink": "EAFNOSUPPORT",
        "af_vsock": "EAFNOSUPPORT",
        "raw_icmp": "EPERM",  # no CAP_NET_RAW: the kernel's answer, the filter let it through
        "tcp": "ok",
    }
    assert results == {"allow": expected, "deny": expected}


# The preinstalled libraries' ordinary work. Each prints one JSON value last; the expected one
# is next to it. They run under the allow profile (and run alike under the deny profile).
WORKLOADS: dict[str, tuple[str, object]] = {
    "imports": (
        """
import importlib, json
names = ["numpy", "pandas", "matplotlib", "matplotlib.pyplot", "scipy", "scipy.stats",
         "scipy.optimize", "scipy.linalg", "scipy.interpolate", "scipy.signal", "scipy.sparse",
         "scipy.integrate", "scipy.fft", "scipy.spatial", "scipy.io", "sklearn",
         "sklearn.linear_model", "sklearn.ensemble", "sklearn.cluster", "sklearn.tree",
         "sklearn.decomposition", "sklearn.model_selection", "sklearn.preprocessing",
         "sklearn.metrics", "sklearn.pipeline", "PIL.Image", "PIL.ImageDraw", "PIL.ImageFont",
         "openpyxl", "pypdf", "PyPDF2", "seaborn", "sympy", "IPython", "tabulate",
         "matplotlib_inline", "joblib", "threadpoolctl", "sqlite3", "ssl", "hashlib", "zlib",
         "lzma", "bz2", "decimal", "ctypes", "csv", "json", "xml.etree.ElementTree", "email",
         "http.server", "urllib.request", "asyncio", "multiprocessing", "concurrent.futures"]
print(json.dumps([n for n in names if importlib.import_module(n) is None]))
""",
        [],
    ),
    "matplotlib": (
        """
import json, os
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
fig, axes = plt.subplots(1, 2, figsize=(6, 3))
x = np.linspace(0, 10, 200)
axes[0].plot(x, np.sin(x), label="sin")
axes[0].legend()
axes[0].set_title("Ünïcode title")
sns.histplot(np.random.default_rng(0).normal(size=500), ax=axes[1])
for ext in ("png", "svg", "pdf", "jpg"):
    fig.savefig(f"/mnt/data/figure.{ext}")
plt.show()
print(json.dumps(sorted(f for f in os.listdir("/mnt/data") if f.startswith("figure."))))
""",
        ["figure.jpg", "figure.pdf", "figure.png", "figure.svg"],
    ),
    "pandas": (
        """
import json
import numpy as np, pandas as pd
rng = np.random.default_rng(1)
df = pd.DataFrame({"g": rng.integers(0, 4, 1000), "x": rng.normal(size=1000),
                   "t": pd.date_range("2024-01-01", periods=1000, freq="h")})
summary = df.groupby("g")["x"].agg(["mean", "count"])
df.to_csv("/mnt/data/data.csv", index=False)
df.to_excel("/mnt/data/data.xlsx", index=False)
df.to_json("/mnt/data/data.json")
df.to_pickle("/mnt/data/data.pkl")
back = pd.read_csv("/mnt/data/data.csv", parse_dates=["t"])
xl = pd.read_excel("/mnt/data/data.xlsx")
pk = pd.read_pickle("/mnt/data/data.pkl")
display(summary)
html = summary.to_html()
resampled = df.set_index("t")["x"].resample("D").mean()
print(json.dumps([len(back), len(xl), len(pk), int(summary["count"].sum()), len(resampled),
                  "<table" in html]))
""",
        [1000, 1000, 1000, 1000, 42, True],
    ),
    "scipy_sklearn": (
        """
import json
import numpy as np
from scipy import integrate, linalg, optimize, signal, sparse, stats
from sklearn.cluster import KMeans
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
X, y = make_classification(n_samples=400, n_features=8, random_state=0)
lr = LogisticRegression(max_iter=500).fit(X, y)
rf = RandomForestClassifier(n_estimators=20, random_state=0, n_jobs=2).fit(X, y)
cv = cross_val_score(LogisticRegression(max_iter=500), X, y, cv=3, n_jobs=2)
km = KMeans(n_clusters=3, n_init=3, random_state=0).fit(X)
res = optimize.minimize(lambda v: (v[0] - 3) ** 2 + (v[1] + 1) ** 2, [0, 0])
u, s, vt = linalg.svd(np.random.default_rng(0).normal(size=(200, 100)))
quad = integrate.quad(np.sin, 0, np.pi)[0]
t = stats.ttest_ind(X[y == 0, 0], X[y == 1, 0])
b, a = signal.butter(3, 0.1)
m = sparse.random(100, 100, density=0.05, random_state=0) @ np.ones(100)
print(json.dumps([lr.score(X, y) > 0.8, rf.score(X, y) > 0.9, len(cv), len(set(km.labels_)),
                  [round(v, 3) for v in res.x], len(s), round(quad, 6), bool(t.pvalue < 1),
                  len(b), len(m)]))
""",
        [True, True, 3, 3, [3.0, -1.0], 100, 2.0, True, 4, 100],
    ),
    "sympy_pillow_pdf": (
        """
import io, json
import sympy as sp
from PIL import Image, ImageDraw
from pypdf import PdfReader, PdfWriter
import PyPDF2
x = sp.symbols("x")
roots = sorted(int(r) for r in sp.solve(x**2 - 5*x + 6, x))
f = sp.lambdify(x, sp.diff(sp.sin(x) * x, x))
img = Image.new("RGB", (64, 48), "white")
ImageDraw.Draw(img).rectangle([4, 4, 40, 30], fill="red")
img.save("/mnt/data/pic.png")
img.convert("L").save("/mnt/data/pic.jpg", quality=80)
size = Image.open("/mnt/data/pic.png").size
w = PdfWriter()
w.add_blank_page(width=200, height=200)
w.add_metadata({"/Title": "t"})
with open("/mnt/data/doc.pdf", "wb") as fh:
    w.write(fh)
pages = len(PdfReader("/mnt/data/doc.pdf").pages)
pages2 = len(PyPDF2.PdfReader("/mnt/data/doc.pdf").pages)
print(json.dumps([roots, round(float(f(0.0)), 6), list(size), pages, pages2,
                  sp.latex(sp.Integral(x**2, x))]))
""",
        [[2, 3], 0.0, [64, 48], 1, 1, "\\int x^{2}\\, dx"],
    ),
    "shell": (
        """
import json, subprocess, sys
open("/mnt/data/a.txt", "w").write("hello\\n")
listing = get_ipython().getoutput("ls /mnt/data")
piped = get_ipython().getoutput("cat /mnt/data/a.txt | tr a-z A-Z | wc -c")
shell = subprocess.run("echo $((6*7)) && sleep 0.1 && uname -s", shell=True,
                       capture_output=True, text=True).stdout.split()
child = subprocess.run([sys.executable, "-c", "import numpy, sys; print(numpy.ones(3).sum())"],
                       capture_output=True, text=True, timeout=60)
pip = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True)
print(json.dumps([listing, piped, shell, child.stdout.strip(), child.returncode,
                  pip.returncode, pip.stdout.startswith("pip ")]))
""",
        [["a.txt"], ["6"], ["42", "Linux"], "3.0", 0, 0, True],
    ),
    "threads_and_processes": (
        """
import concurrent.futures as cf, json, multiprocessing as mp, os, threading, time
def square(v):
    return v * v
with cf.ThreadPoolExecutor(4) as pool:
    threaded = sum(pool.map(square, range(100)))
with mp.Pool(2) as pool:
    forked = sum(pool.map(square, range(100)))
spawned = mp.get_context("spawn").Pool(2)
try:
    spawn_sum = sum(spawned.map(abs, range(-10, 10)))
finally:
    spawned.close(); spawned.join()
with cf.ProcessPoolExecutor(2) as pool:
    pooled = sum(pool.map(square, range(10)))
q = mp.Queue(); lock = mp.Lock(); event = threading.Event()
p = mp.Process(target=q.put, args=(41,)); p.start(); got = q.get(timeout=30); p.join()
with lock:
    pass
timer = threading.Timer(0.05, event.set); timer.start()
waited = event.wait(5)
cpu = os.sched_getaffinity(0)
print(json.dumps([threaded, forked, spawn_sum, pooled, got + 1, p.exitcode, waited,
                  len(cpu) >= 1]))
""",
        [328350, 328350, 100, 285, 42, 0, True, True],
    ),
    "files": (
        """
import gzip, json, os, shutil, sqlite3, tarfile, tempfile, zipfile, mmap
import numpy as np
os.makedirs("/mnt/data/dir/sub", exist_ok=True)
with open("/mnt/data/dir/a.txt", "w") as fh:
    fh.write("x" * 10000)
    fh.flush(); os.fsync(fh.fileno())
with open("/mnt/data/dir/a.txt", "a") as fh:
    fh.write("tail")
shutil.copy("/mnt/data/dir/a.txt", "/mnt/data/dir/b.txt")
shutil.copytree("/mnt/data/dir", "/mnt/data/copy")
os.rename("/mnt/data/copy/b.txt", "/mnt/data/copy/c.txt")
os.chmod("/mnt/data/copy/c.txt", 0o600)
os.symlink("c.txt", "/mnt/data/copy/link")
os.utime("/mnt/data/copy/c.txt", (0, 0))
os.truncate("/mnt/data/copy/c.txt", 100)
walked = sorted(f for _, _, files in os.walk("/mnt/data/copy") for f in files)
with zipfile.ZipFile("/mnt/data/z.zip", "w", zipfile.ZIP_DEFLATED) as z:
    z.write("/mnt/data/dir/a.txt", "a.txt")
with tarfile.open("/mnt/data/t.tar.gz", "w:gz") as t:
    t.add("/mnt/data/dir", arcname="dir")
with gzip.open("/mnt/data/g.gz", "wt") as g:
    g.write("gz")
db = sqlite3.connect("/mnt/data/db.sqlite")
db.execute("create table t (v)")
db.executemany("insert into t values (?)", [(i,) for i in range(100)])
db.commit()
total = db.execute("select sum(v) from t").fetchone()[0]
db.close()
arr = np.arange(1000, dtype="float64")
np.save("/mnt/data/arr.npy", arr)
mm = np.load("/mnt/data/arr.npy", mmap_mode="r")
with open("/mnt/data/dir/a.txt", "r+b") as fh, mmap.mmap(fh.fileno(), 0) as m:
    first = m[:1].decode()
with tempfile.TemporaryDirectory() as tmp:
    open(os.path.join(tmp, "f"), "w").write("t")
    tmp_files = os.listdir(tmp)
stat = os.stat("/mnt/data/copy/c.txt")
shutil.rmtree("/mnt/data/copy")
print(json.dumps([walked, zipfile.ZipFile("/mnt/data/z.zip").namelist(), total, float(mm.sum()),
                  first, tmp_files, stat.st_size, oct(stat.st_mode & 0o777),
                  os.path.exists("/mnt/data/copy"), os.statvfs("/mnt/data").f_bsize > 0]))
""",
        [
            ["a.txt", "c.txt", "link"],
            ["a.txt"],
            4950,
            499500.0,
            "x",
            ["f"],
            100,
            "0o600",
            False,
            True,
        ],
    ),
    "sockets": (
        """
import asyncio, json, socket, socketserver, threading, urllib.request
from http.server import HTTPServer, SimpleHTTPRequestHandler
import functools
# TCP and UDP on loopback, IPv4 and IPv6, and a Unix socket pair.
srv = socket.create_server(("127.0.0.1", 0)); port = srv.getsockname()[1]
def serve():
    conn, _ = srv.accept()
    with conn:
        conn.sendall(conn.recv(100).upper())
threading.Thread(target=serve).start()
with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
    c.sendall(b"tcp"); tcp = c.recv(100).decode()
srv.close()
u1 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u1.bind(("::1", 0))
u2 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u2.sendto(b"udp", u1.getsockname()); udp = u1.recv(10).decode(); u1.close(); u2.close()
a, b = socket.socketpair(); a.sendall(b"unix"); unix = b.recv(10).decode(); a.close(); b.close()
# HTTP over loopback: http.server in a thread, urllib as the client.
open("/mnt/data/page.txt", "w").write("served")
handler = functools.partial(SimpleHTTPRequestHandler, directory="/mnt/data")
handler.log_message = lambda *a: None
http = HTTPServer(("127.0.0.1", 0), handler)
threading.Thread(target=http.serve_forever, daemon=True).start()
body = urllib.request.urlopen(f"http://127.0.0.1:{http.server_port}/page.txt", timeout=10).read()
http.shutdown(); http.server_close()
# asyncio streams (epoll).
async def main():
    async def echo(reader, writer):
        writer.write((await reader.readline()).upper()); await writer.drain(); writer.close()
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    r, w = await asyncio.open_connection(*server.sockets[0].getsockname())
    w.write(b"async\\n"); await w.drain(); line = await r.readline(); w.close()
    server.close(); await server.wait_closed()
    await asyncio.sleep(0.01)
    return line.decode().strip()
loop = asyncio.new_event_loop()
try:
    aio = loop.run_until_complete(main())
finally:
    loop.close()
print(json.dumps([tcp, udp, unix, body.decode(), aio, socket.gethostname()]))
""",
        ["TCP", "udp", "unix", "served", "ASYNC", "sandbox"],
    ),
    "time_and_signals": (
        """
import json, os, resource, signal, time
fired = []
signal.signal(signal.SIGALRM, lambda *a: fired.append("alarm"))
signal.setitimer(signal.ITIMER_REAL, 0.05)
time.sleep(0.2)
signal.alarm(0)
start = time.monotonic(); time.sleep(0.05); slept = time.monotonic() - start >= 0.05
usage = resource.getrusage(resource.RUSAGE_SELF)
times = os.times()
cpu = time.process_time() >= 0 and time.thread_time() >= 0
print(json.dumps([fired, slept, usage.ru_maxrss > 0, times.user >= 0, cpu,
                  time.time() > 1.6e9, os.getloadavg()[0] >= 0, os.cpu_count() >= 1,
                  len(os.urandom(16)), os.uname().sysname]))
""",
        [["alarm"], True, True, True, True, True, True, True, 16, "Linux"],
    ),
}


@needs_known_arch
@pytest.mark.parametrize("name", list(WORKLOADS))
async def test_workload_runs_under_the_allow_profile(allowed: Session, name: str) -> None:
    code, expected = WORKLOADS[name]
    assert await run_json(allowed, code, timeout=120) == expected
