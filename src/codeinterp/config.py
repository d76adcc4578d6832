"""Server settings: one pydantic-settings model, read from CODEINTERP_* variables and flags."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def default_data_dir() -> str:
    if os.geteuid() == 0:
        return "/var/lib/codeinterp"
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(base, "codeinterp")


# The project of every caller when no API keys are configured.
DEFAULT_PROJECT = "proj_default"

# Budgets for bytes leaving a session (apparent sizes): one file, all the files of one run or
# execution (the server's runs, `codeinterp exec --out`), one file inlined in an MCP message.
# 512 MiB is the workspace quota and the largest file the sandbox can write.
DEFAULT_MAX_FILE_BYTES = 512 * 1024 * 1024
DEFAULT_MAX_OUTPUT_BYTES = 512 * 1024 * 1024
DEFAULT_MCP_MAX_FILE_BYTES = 16 * 1024 * 1024


def derived_project(key: str) -> str:
    """The project of a key configured without one: 128 bits of a hash of the whole key, so two
    keys never land in one project, however alike they are."""
    digest = hashlib.sha256(b"codeinterp project\0" + key.encode()).hexdigest()
    return f"proj_{digest[:32]}"


def key_fingerprint(key: str) -> str:
    """How a key is named in the server's output: never the key, only a short hash of it."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class KeyEntry:
    key: str
    project: str
    named: bool  # the project was configured ("key:project"), not derived from the key


def default_task_concurrency() -> int:
    """Two per core: a task waits on its session's start and end about as long as it computes."""
    return 2 * (os.cpu_count() or 1)


class Settings(BaseSettings):
    """Everything the server is configured with. Environment: CODEINTERP_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="CODEINTERP_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    data_dir: str = Field(default_factory=default_data_dir)
    database_url: str | None = None  # default: SQLite (WAL) in data_dir

    # The model: any OpenAI-compatible Chat Completions endpoint.
    upstream_base_url: str = "https://api.openai.com/v1"
    upstream_api_key: str = ""
    # client model name -> upstream's; env: "gpt-4o=llama3,gpt-5.4=qwen" or a JSON object
    model_map: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    upstream_timeout: float = 600.0

    # Client keys: "key" or "key:project" entries, comma separated. Empty: any key, loopback only.
    api_keys: str = ""

    # Sessions
    session_idle_minutes: float = 60.0
    session_price_usd: float = 0.03
    execution_timeout: float = 120.0
    pool_size: int = 4
    # Environments with a zygote of their own (their modules imported; ~200 MB each), and the
    # ready sessions each keeps; past the count, an environment's sessions fork from the main one
    environment_zygotes: int = Field(default=4, ge=0)
    env_pool_size: int = Field(default=2, ge=0)
    # One-shot executions (/v1/executions) running at once, each in a session of its own; more
    # wait their turn, for at most queue_wait_seconds (then a 503 with Retry-After)
    task_concurrency: int = Field(default_factory=default_task_concurrency, ge=1)
    # Sessions of threads and containers: at most this many live (None: no cap), server-wide
    # and per project; past a cap a caller waits queue_wait_seconds for room, then gets a 429
    max_sessions: int | None = Field(default=None, ge=1)
    max_sessions_per_project: int | None = Field(default=None, ge=1)
    # Sessions being made at once; more wait their turn (first come, first served)
    create_concurrency: int = Field(default_factory=default_task_concurrency, ge=1)
    queue_wait_seconds: float = Field(default=20.0, gt=0)
    # No new session while the machine has less memory available than this (a 503)
    min_free_memory_mib: int = Field(default=256, ge=0)
    # On SIGTERM, requests still in flight after this long are cut off; the server then stops
    shutdown_grace_seconds: int = Field(default=5, ge=0)
    unsafe_no_sandbox: bool = False
    # Seccomp profile of every session: "deny" (the deny-list) or "allow" (only the syscalls on
    # the derived allow-list; see docs/isolation.md)
    seccomp_profile: Literal["deny", "allow"] = "deny"

    # Persistence (sessions/persistence.py): an idle session of a thread or a container is saved
    # to disk and woken on its next use, also after a restart or a crash. Off: it ends (state lost,
    # container expired), as with OpenAI.
    session_persistence: bool = True
    # Against a crash, a session that changed is saved this long after the change (0: only when
    # it goes to sleep and at a stop)
    checkpoint_seconds: float = Field(default=10.0, ge=0)
    # A saved state is kept this long after it was last saved, then discarded (container expired)
    snapshot_retention_hours: float = Field(default=168.0, gt=0)
    # All the saved states of one project; past it, its oldest sleeping ones are discarded
    snapshot_quota_mib_per_project: int | None = Field(default=10240, ge=1)
    # A stop saves the live sessions that changed for at most this long
    stop_snapshot_seconds: float = Field(default=20.0, ge=0)

    # Network policies (egress/): a container's `allowlist` reaches its domains through an
    # egress proxy the server starts on first use (mitmproxy, from .venv-egress by default).
    egress_mitmdump: str | None = None
    # name -> address the proxy connects to instead of resolving the name: "api.example.com=
    # 10.0.0.5,other=..." or a JSON object (an internal mirror, or a test's own servers)
    egress_resolve: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    # Let allowed names resolve to private addresses (10/8, 172.16/12, 192.168/16, ...); never
    # loopback. Off: only public addresses are reachable, whatever a name resolves to.
    egress_allow_private: bool = False
    # A CA bundle the proxy trusts for upstream servers, besides the system's
    egress_upstream_ca: str | None = None
    # The proxy's memory, every session's connections together (a cgroup): past it the proxy is
    # killed and started again, not the host's memory spent
    egress_memory_mib: int = Field(default=2048, ge=256)

    # Containers: an operator's cap on any container's idle time, whatever it asks (None: no cap)
    container_idle_cap_minutes: float | None = Field(default=None, gt=0)
    # SSE comment lines on quiet streams, so proxies and clients know the stream is alive
    sse_heartbeat_seconds: float = Field(default=15.0, gt=0)

    # Runs
    run_expiry_seconds: int = 600
    max_tool_calls_per_run: int = 32
    # openai-poll-after-ms for a run in its first second; older runs are polled less often
    poll_after_ms: int = Field(default=10, ge=1)
    # a poll from the SDK's poll helper is held until the run settles, for at most this long
    # (0: answer at once), so create_and_poll returns when the run does, not a poll tick later
    poll_hold_ms: int = Field(default=1000, ge=0, le=60_000)
    max_upload_bytes: int = 512 * 1024 * 1024

    # Bytes leaving a session are streamed and counted by apparent size (a sparse file or a hard
    # link takes no room in the workspace but reads whole). The largest file that leaves one
    # (a container file's content, a file a run cites, an MCP download); past it, a 413.
    max_download_bytes: int = Field(default=DEFAULT_MAX_FILE_BYTES, gt=0)
    # All the files one run copies out of its session (the files its messages cite).
    max_output_bytes: int = Field(default=DEFAULT_MAX_OUTPUT_BYTES, gt=0)
    # The MCP download_file tool returns a file inline in one message, so less.
    mcp_max_file_bytes: int = Field(default=DEFAULT_MCP_MAX_FILE_BYTES, gt=0)

    # Traces (telemetry/tracing.py): exported over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT (or
    # ..._TRACES_ENDPOINT) is set. Prompts, code and output are recorded in spans unless
    # trace_content is off, each cut to trace_content_max_chars.
    trace_content: bool = True
    # Log lines as text, or as one JSON object per line ("json")
    log_format: Literal["text", "json"] = "text"
    trace_content_max_chars: int = Field(default=8192, ge=0)
    # The server's own trace store, which the trace viewer at /ui reads: every trace is kept in
    # the database for trace_retention_hours (off: no spans are made unless OTLP is configured)
    trace_store: bool = True
    trace_retention_hours: float = Field(default=168.0, gt=0)

    @field_validator("model_map", "egress_resolve", mode="before")
    @classmethod
    def _parse_model_map(cls, value: object) -> object:
        """Accept "client=upstream,client2=upstream2" as well as a JSON object."""
        if isinstance(value, str):
            if value.strip().startswith("{"):
                import json

                return json.loads(value)
            pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
            return {k.strip(): v.strip() for k, v in pairs}
        return value

    def key_entries(self) -> list[KeyEntry]:
        """Each configured client key with its project: the one named, or one of its own."""
        entries: dict[str, KeyEntry] = {}
        for item in self.api_keys.split(","):
            item = item.strip()
            if item:
                key, _, project = item.partition(":")
                key, project = key.strip(), project.strip()
                if key:
                    entries[key] = KeyEntry(key, project or derived_project(key), bool(project))
        return list(entries.values())

    def key_projects(self) -> dict[str, str]:
        """Configured client key -> the project it belongs to."""
        return {entry.key: entry.project for entry in self.key_entries()}

    @property
    def database(self) -> str:
        return (
            self.database_url
            or f"sqlite+aiosqlite:///{os.path.join(self.data_dir, 'codeinterp.db')}"
        )
