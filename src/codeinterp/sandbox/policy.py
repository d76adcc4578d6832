"""What a session may see and use, as frozen data: built and checked before any process exists.

A `SandboxPolicy` is printed by `codeinterp doctor`, compared in tests and sent to the zygote as
JSON with each spawn request; the jail (`jail.py`) only applies it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from codeinterp.errors import InvalidRequest

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# OpenAI's container memory tiers, mapped to the memory cgroup limit.
MEMORY_TIERS: dict[str, int] = {"1g": 1 * GiB, "4g": 4 * GiB, "16g": 16 * GiB, "64g": 64 * GiB}

# Read-only binds of the host system. The Python environment of the zygote is added to these by the
# zygote itself (it knows its own prefix); nothing else of the host is visible.
SYSTEM_BINDS: tuple[str, ...] = (
    "/usr",
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
)

# The environment sandboxed code starts with; the zygote's own environment never reaches it.
SESSION_ENV: tuple[tuple[str, str], ...] = (
    ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ("HOME", "/home/sandbox"),
    ("USER", "sandbox"),
    ("LANG", "C.UTF-8"),
    ("TMPDIR", "/tmp"),
    ("MPLBACKEND", "module://matplotlib_inline.backend_inline"),
    # pip has no network to reach: fail at once instead of retrying for a minute.
    ("PIP_NO_INDEX", "1"),
    ("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
    ("PYTHONUNBUFFERED", "1"),
)

SANDBOX_HOSTNAME = "sandbox"

# Where a session with a network policy finds the egress proxy: a listener the host puts on the
# session's own loopback (sandbox/netns.py) and hands to the proxy the server owns.
EGRESS_PROXY_PORT = 3128
# Where `%pip install` (and `pip install`) put packages in a session that may reach an index:
# its own home (a tmpfs of the policy's /tmp size), after the default set on the import path.
SESSION_PACKAGES = "/home/sandbox/.local/site-packages"
NETWORK_MODES: tuple[str, ...] = ("loopback", "proxy")
# The variables that name a CA bundle, for the libraries that read one or the other.
CA_BUNDLE_VARIABLES: tuple[str, ...] = (
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "PIP_CERT",
    "NODE_EXTRA_CA_CERTS",
)
PROXY_VARIABLES: tuple[str, ...] = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
NO_PROXY_VARIABLES: tuple[str, ...] = ("NO_PROXY", "no_proxy")
ALLOWED_DOMAINS_VARIABLE = "CODEINTERP_ALLOWED_DOMAINS"

# The seccomp profiles a policy can name (seccomp.PROFILES): "deny" lets through everything not
# refused; "allow" keeps those refusals and lets through only the syscalls on the allow-list
# (seccomp_allowlist.ALLOWED), answering ENOSYS to the rest.
SECCOMP_PROFILES: tuple[str, ...] = ("deny", "allow")


@dataclass(frozen=True)
class Limits:
    """Resource limits of one session. Sizes are bytes."""

    memory: int = 1 * GiB  # memory cgroup limit (tmpfs pages count too)
    processes: int = 256  # pids cgroup limit
    cpus: float = 1.0  # CPU quota, in CPUs
    workspace: int = 512 * MiB  # size quota of /mnt/data
    tmp: int = 256 * MiB  # size of the /tmp tmpfs
    open_files: int = 1024  # RLIMIT_NOFILE
    # TCP and UDP socket buffer memory. Counted against the host-wide net.ipv4.tcp_mem/udp_mem,
    # not only this session: on cgroup v1 it is capped by memory.kmem.tcp.limit_in_bytes, on v2
    # it is part of the memory limit.
    socket_buffers: int = 32 * MiB
    locked_memory: int = 8 * MiB  # RLIMIT_MEMLOCK
    message_queues: int = 800 * KiB  # RLIMIT_MSGQUEUE: bytes of POSIX message queues
    pending_signals: int = 1024  # RLIMIT_SIGPENDING: queued signals, POSIX timers too
    # POSIX record locks held at once (fcntl F_SETLK): kernel memory no cgroup pays for, counted
    # by the zygote (sandbox/file_locks.py); past it F_SETLK fails with ENOLCK.
    file_locks: int = 1024
    # RLIMIT_AS headroom above the memory limit: a single huge allocation fails with MemoryError
    # (the session survives) instead of waking the OOM killer.
    address_space_headroom: int = 1 * GiB
    output: int = 1 * MiB  # per stream per execution; the rest is dropped with a marker
    results: int = 32 * MiB  # rich results (images, HTML, ...) per execution, likewise

    def __post_init__(self) -> None:
        for name in (
            "memory",
            "processes",
            "workspace",
            "tmp",
            "open_files",
            "socket_buffers",
            "pending_signals",
            "file_locks",
            "output",
            "results",
        ):
            if getattr(self, name) <= 0:
                raise InvalidRequest(f"limit {name!r} must be positive")
        for name in ("locked_memory", "message_queues"):
            if getattr(self, name) < 0:
                raise InvalidRequest(f"limit {name!r} must not be negative")
        if self.memory < 64 * MiB:
            raise InvalidRequest("limit 'memory' must be at least 64 MiB")
        if not 0 < self.cpus <= 1024:
            raise InvalidRequest("limit 'cpus' must be between 0 and 1024")

    @property
    def address_space(self) -> int:
        return self.memory + self.address_space_headroom


@dataclass(frozen=True)
class SandboxPolicy:
    """Everything the jail applies to one session, in one frozen, printable value."""

    limits: Limits = field(default_factory=Limits)
    readonly_binds: tuple[str, ...] = SYSTEM_BINDS
    env: tuple[tuple[str, str], ...] = SESSION_ENV
    # "loopback": a private namespace with `lo` up and no route out; "proxy": the same, plus the
    # egress proxy's listener on that `lo` (added by the host, see with_egress), and nothing else.
    network: str = "loopback"
    hostname: str = SANDBOX_HOSTNAME
    seccomp: bool = True
    # "deny", "allow", or None: the Sandbox's setting (SandboxConfig.seccomp_profile, "deny"
    # unless CODEINTERP_SECCOMP_PROFILE says otherwise), filled in before the session starts.
    seccomp_profile: str | None = None
    # An environment's site-packages (sandbox/environments.py), bound read-only at its own path
    # and added to the session's import path after the default set; None: the default set only.
    packages: str | None = None

    def __post_init__(self) -> None:
        if self.seccomp_profile is not None and self.seccomp_profile not in SECCOMP_PROFILES:
            raise InvalidRequest(
                f"seccomp_profile must be one of {', '.join(SECCOMP_PROFILES)} "
                f"(got {self.seccomp_profile!r})"
            )
        if self.network not in NETWORK_MODES:
            raise InvalidRequest(f"network must be one of {', '.join(NETWORK_MODES)}")
        for path in (*self.readonly_binds, *([self.packages] if self.packages else [])):
            if not os.path.isabs(path) or os.path.normpath(path) != path:
                raise InvalidRequest(f"bind path must be absolute and normalised: {path!r}")

    @classmethod
    def for_memory_tier(cls, tier: str) -> SandboxPolicy:
        """The default policy with the memory limit of an OpenAI container tier ("1g" ... "64g")."""
        try:
            memory = MEMORY_TIERS[tier]
        except KeyError:
            raise InvalidRequest(
                f"unknown memory tier {tier!r}: choose one of {', '.join(MEMORY_TIERS)}"
            ) from None
        return cls(limits=Limits(memory=memory))

    def with_packages(self, site_packages: str | None) -> SandboxPolicy:
        """This policy with an environment's packages (None: the default set only)."""
        return dataclasses.replace(self, packages=site_packages)

    def with_egress(
        self, ca_bundle: str, allowed: tuple[str, ...], variables: dict[str, str]
    ) -> SandboxPolicy:
        """This policy reaching out through the egress proxy: its address in the usual proxy
        variables, `ca_bundle` (the system's CAs plus the proxy's) bound read-only and named by
        the usual CA variables, the `allowed` entries (sandbox/domains.py) in ALLOWED_DOMAINS
        (for `%pip`, which says at once when an index is not among them), and `variables` (a
        secret's placeholder, by its name) set."""
        proxy = f"http://127.0.0.1:{EGRESS_PROXY_PORT}"
        env = dict(self.env)
        env.pop("PIP_NO_INDEX", None)  # pip may reach an allowed index now
        env["PIP_TARGET"] = SESSION_PACKAGES
        env["PIP_RETRIES"] = "0"  # a refused index is said at once, not after a minute
        env["PIP_TIMEOUT"] = "30"
        env.update({name: proxy for name in PROXY_VARIABLES})
        env.update({name: "localhost,127.0.0.1,::1" for name in NO_PROXY_VARIABLES})
        env.update({name: ca_bundle for name in CA_BUNDLE_VARIABLES})
        env[ALLOWED_DOMAINS_VARIABLE] = ",".join(allowed)
        env.update(variables)
        return dataclasses.replace(
            self,
            network="proxy",
            env=tuple(env.items()),
            readonly_binds=(*self.readonly_binds, ca_bundle),
        )

    def with_limits(self, **changes: Any) -> SandboxPolicy:
        return dataclasses.replace(self, limits=dataclasses.replace(self.limits, **changes))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SandboxPolicy:
        return cls(
            limits=Limits(**data["limits"]),
            readonly_binds=tuple(data["readonly_binds"]),
            env=tuple((k, v) for k, v in data["env"]),
            network=data["network"],
            hostname=data["hostname"],
            seccomp=data["seccomp"],
            seccomp_profile=data["seccomp_profile"],
            packages=data.get("packages"),
        )

    def describe(self) -> list[str]:
        """Human-readable lines, for `codeinterp doctor` and logs."""
        lim = self.limits
        return [
            f"memory limit     {lim.memory // MiB} MiB "
            f"(address space {lim.address_space // MiB} MiB)",
            f"processes        {lim.processes}",
            f"cpus             {lim.cpus:g}",
            f"/mnt/data quota  {lim.workspace // MiB} MiB",
            f"/tmp size        {lim.tmp // MiB} MiB",
            f"socket buffers   {lim.socket_buffers // MiB} MiB (TCP and UDP)",
            f"kernel objects   {lim.open_files} open files, {lim.pending_signals} pending signals"
            f" and timers, {lim.message_queues // KiB} KiB message queues,"
            f" {lim.locked_memory // KiB} KiB locked memory, {lim.file_locks} record locks",
            f"output cap       {lim.output // KiB} KiB per stream per execution",
            f"results cap      {lim.results // MiB} MiB of rich results per execution",
            f"network          {self._describe_network()}",
            f"seccomp          {self._describe_seccomp()}",
            "read-only binds  " + ", ".join(self.readonly_binds) + " + the Python environment",
            *([f"packages         {self.packages} (an environment)"] if self.packages else []),
        ]

    def _describe_network(self) -> str:
        if self.network == "proxy":
            return (
                f"loopback, plus HTTP(S) through the egress proxy at 127.0.0.1:{EGRESS_PROXY_PORT}"
                " (allowed domains only)"
            )
        return "loopback only"

    def _describe_seccomp(self) -> str:
        if not self.seccomp:
            return "off"
        if self.seccomp_profile == "allow":
            from .seccomp_allowlist import ALLOWED

            return (
                f"allow-list ({len(ALLOWED)} syscalls, others ENOSYS; "
                "plus the deny-list's refusals and argument checks)"
            )
        if self.seccomp_profile == "deny":
            return "deny-list (everything not refused is allowed)"
        return "the sandbox's profile (deny-list unless CODEINTERP_SECCOMP_PROFILE=allow)"
