"""Arize Phoenix as a real OTLP/HTTP receiver, for tests that check the traces we emit.

::

    with PhoenixServer() as phoenix:
        env = phoenix.exporter_env(project="chat")  # OTEL_* for the process that sends spans
        ...  # run the server (or any OpenTelemetry SDK) with env
        spans = phoenix.wait_for_spans(2, project="chat")
        # [{"name": "chat gpt-4o", "span_id": "1a2b...", "parent_id": None, "trace_id": "a1b2...",
        #   "attributes": {"gen_ai.operation.name": "chat", ...}, "status": "OK",
        #   "status_message": "", "span_kind": "LLM", "start_time": "...", "end_time": "...",
        #   "events": [...]}, ...]

Phoenix runs from its own venv, ``.venv-phoenix`` (made by ``scripts/setup-phoenix`` from
``requirements/phoenix.txt``: its pins clash with ours), as ``python -m phoenix.server.main serve``
in a new process group. Its UI, REST API and OTLP/HTTP collector (``POST /v1/traces``) share one
free port on 127.0.0.1; its gRPC collector, which cannot be turned off, gets another free port
(Phoenix binds that one on every interface, ``[::]``: it has no setting for the address).
Everything it stores (a SQLite database) lives in ``data_dir`` (a temporary directory by default,
removed at stop), through ``PHOENIX_WORKING_DIR``. Phoenix's own telemetry,
external resources, assistant and MCP server are off, and it inherits no ``PHOENIX_*``, ``OTEL_*``,
``CODEINTERP_*`` or ``OPENAI_*`` variable. Start waits for ``GET /readyz`` (about 15 s, mostly
imports); stop sends SIGTERM to the whole group, then SIGKILL after ``stop_timeout``.

Spans are read back through Phoenix's REST API, ``GET /v1/projects/{project}/spans``. Phoenix
files each batch under the project named by the ``openinference.project.name`` resource attribute
(``exporter_env(project=...)`` sets it through ``OTEL_RESOURCE_ATTRIBUTES``), else ``default``.
Ingestion is asynchronous: ``wait_for_spans`` polls until the spans are there. Two things Phoenix
does to what it stores: from ``gen_ai.*`` attributes it adds OpenInference ones (``llm.*``,
``tool.*``, ...; never overriding a sent key) and derives ``span_kind`` (LLM, TOOL, ...,
else UNKNOWN), so check the keys you sent rather than equality of the whole dict; and it keeps
attribute values as sent (lists of primitives stay lists).
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from tests.support.server import HOST, free_port, wait_until_ok

__all__ = [
    "DEFAULT_PROJECT",
    "PHOENIX_VENV",
    "PhoenixNotInstalled",
    "PhoenixServer",
    "PhoenixStartError",
    "phoenix_python",
]

CHECKOUT = Path(__file__).resolve().parents[2]
PHOENIX_VENV = CHECKOUT / ".venv-phoenix"
# Written by scripts/setup-phoenix once an install has finished.
STAMP = ".codeinterp-setup-phoenix"
DEFAULT_PROJECT = "default"
_SCRUBBED_PREFIXES = ("PHOENIX_", "OTEL_", "CODEINTERP_", "OPENAI_")
_LOG_TAIL = 20_000
_PAGE = 1000  # the most spans Phoenix returns per request


class PhoenixNotInstalled(RuntimeError):
    """``.venv-phoenix`` is missing or unfinished; the message says to run scripts/setup-phoenix."""


class PhoenixStartError(RuntimeError):
    """Phoenix exited or did not become ready in time; the message has its output."""


def phoenix_python(venv: str | os.PathLike[str] = PHOENIX_VENV) -> Path:
    """The interpreter of a finished ``scripts/setup-phoenix`` venv, or PhoenixNotInstalled."""
    venv = Path(venv)
    python = venv / "bin" / "python"
    if not python.exists():
        problem = f"{venv} does not exist" if not venv.exists() else f"{python} is missing"
    elif not (venv / STAMP).exists():
        problem = f"{venv} is unfinished (no {STAMP} from a completed scripts/setup-phoenix)"
    else:
        return python
    raise PhoenixNotInstalled(
        f"Phoenix is not installed: {problem}; run scripts/setup-phoenix (it installs"
        f" requirements/phoenix.txt into {PHOENIX_VENV.name}, about 2 minutes)"
    )


class PhoenixServer:
    """Phoenix in a subprocess on 127.0.0.1 (see the module docstring).

    ``start()`` (or entering the ``with`` block) launches it and waits until it is ready.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        venv: str | os.PathLike[str] = PHOENIX_VENV,
        port: int | None = None,
        grpc_port: int | None = None,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 90.0,
        stop_timeout: float = 15.0,
    ) -> None:
        """``data_dir`` is kept if given; otherwise a temporary one is made at start and removed
        at stop. ``env`` is added to Phoenix's environment last (e.g. other ``PHOENIX_*``)."""
        self.venv = Path(venv)
        self.port = free_port() if port is None else port
        self.grpc_port = grpc_port if grpc_port is not None else free_port()
        while self.grpc_port == self.port:
            self.grpc_port = free_port()
        self.env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._given_data_dir = Path(data_dir) if data_dir is not None else None
        self.data_dir: Path | None = self._given_data_dir
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_text = ""  # what the last run wrote, kept after a temporary data_dir is removed

    # ------------------------------------------------------------------ addresses

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the UI and the REST API (``/v1/...``)."""
        return f"http://{HOST}:{self.port}"

    @property
    def otlp_endpoint(self) -> str:
        """The value for ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the SDK appends ``/v1/traces``)."""
        return self.url

    @property
    def otlp_traces_endpoint(self) -> str:
        """The value for ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (used as is: the full URL)."""
        return f"{self.url}/v1/traces"

    @property
    def otlp_grpc_endpoint(self) -> str:
        """Phoenix's OTLP/gRPC collector (for ``OTEL_EXPORTER_OTLP_PROTOCOL=grpc``)."""
        return f"http://{HOST}:{self.grpc_port}"

    def exporter_env(self, project: str | None = None) -> dict[str, str]:
        """``OTEL_*`` variables that make an OpenTelemetry SDK export here over OTLP/HTTP at once.

        With ``project``, the spans are filed under that Phoenix project (a resource attribute),
        so tests sharing one Phoenix do not see each other's spans."""
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms; the default is 5 s
        }
        if project is not None:
            if any(char in project for char in "/?#,="):
                raise ValueError(
                    f"a project name for this helper cannot contain /?#,= ({project!r})"
                )
            env["OTEL_RESOURCE_ATTRIBUTES"] = f"openinference.project.name={project}"
        return env

    # ------------------------------------------------------------------ process

    @property
    def python(self) -> Path:
        """``.venv-phoenix/bin/python`` (PhoenixNotInstalled if setup has not finished)."""
        return phoenix_python(self.venv)

    def command(self) -> list[str]:
        return [str(self.python), "-m", "phoenix.server.main", "serve"]

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: ours) without PHOENIX_*/OTEL_*/CODEINTERP_*/OPENAI_*, then the
        settings described in the module docstring, then ``env``."""
        inherited = os.environ if base is None else base
        child = {k: v for k, v in inherited.items() if not k.startswith(_SCRUBBED_PREFIXES)}
        if self.data_dir is not None:  # a temporary one exists from start() on
            child["PHOENIX_WORKING_DIR"] = str(self.data_dir / "working")
        child.update(
            {
                "PYTHONUNBUFFERED": "1",
                "PHOENIX_HOST": HOST,
                "PHOENIX_PORT": str(self.port),
                "PHOENIX_GRPC_PORT": str(self.grpc_port),
                "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
                "PHOENIX_TELEMETRY_ENABLED": "false",
                "PHOENIX_DISABLE_AGENT_ASSISTANT": "true",
                "PHOENIX_ENABLE_MCP_SERVER": "false",
                "PHOENIX_LOG_MIGRATIONS": "false",
            }
        )
        child.update(self.env)
        return child

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def logs(self) -> str:
        """What Phoenix wrote to stdout and stderr (this run, or the last one once stopped)."""
        if self._log is None:
            return self._log_text
        self._log.flush()
        try:
            return Path(self._log.name).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def logs_tail(self, limit: int = _LOG_TAIL) -> str:
        text = self.logs()
        return text if len(text) <= limit else "...\n" + text[-limit:]

    def start(self) -> Self:
        """Launch Phoenix and wait until ``GET /readyz`` answers 200."""
        if self.running:
            raise RuntimeError(f"Phoenix is already running (pid {self.pid})")
        command = self.command()  # PhoenixNotInstalled before anything is made
        if self._given_data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="codeinterp-phoenix-"))
        assert self.data_dir is not None
        (self.data_dir / "working").mkdir(parents=True, exist_ok=True)
        self._log = (self.data_dir / "phoenix.log").open("wb")
        self._process = subprocess.Popen(
            command,
            env=self.environment(),
            cwd=self.data_dir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() signals all of it
        )
        atexit.register(self._stop_at_exit)
        try:
            self._wait_ready()
        except BaseException:
            self._terminate(kill_after=2.0)
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._process is not None
        wait_until_ok(
            self._process,
            f"{self.url}/readyz",
            self.startup_timeout,
            f"Phoenix ({' '.join(self.command())})",
            self.logs_tail,
            PhoenixStartError,
            interval=0.2,
        )

    def stop(self) -> int | None:
        """SIGTERM to the process group, SIGKILL after ``stop_timeout``; returns the exit status
        (``-15`` after a graceful stop: uvicorn shuts down, then exits by the signal it caught)."""
        return self._terminate(kill_after=self.stop_timeout)

    def _terminate(self, kill_after: float) -> int | None:
        process = self._process
        if process is not None:
            if process.poll() is None:
                self._signal_group(signal.SIGTERM)
                try:
                    process.wait(timeout=kill_after)
                except subprocess.TimeoutExpired:
                    self._signal_group(signal.SIGKILL)
                    process.wait()
            # Anything it left in its group (it starts none today) goes too.
            self._signal_group(signal.SIGKILL)
        atexit.unregister(self._stop_at_exit)
        if self._log is not None:
            self._log_text = self.logs()
            self._log.close()
            self._log = None
        if self._given_data_dir is None and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None
        return self.returncode

    def _signal_group(self, number: int) -> None:
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, number)

    def _stop_at_exit(self) -> None:
        self._terminate(kill_after=2.0)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else f"exited {self.returncode}"
        return f"<PhoenixServer {self.url} grpc={self.grpc_port} data_dir={self.data_dir} {state}>"

    # ------------------------------------------------------------------ reading spans back

    def projects(self) -> list[str]:
        """The names of Phoenix's projects (``default`` always exists)."""
        names: list[str] = []
        cursor: str | None = None
        while True:
            page = self._get_json("/v1/projects", {"limit": "100", "cursor": cursor})
            names += [project["name"] for project in page["data"]]
            cursor = page.get("next_cursor")
            if not cursor:
                return names

    def spans(
        self,
        project: str = DEFAULT_PROJECT,
        *,
        trace_id: str | None = None,
        name: str | None = None,
    ) -> list[dict[str, Any]]:
        """Every span Phoenix has stored in ``project`` (optionally one trace, or one span name),
        oldest start first, as plain dicts (see the module docstring); [] for no such project."""
        path = f"/v1/projects/{urllib.parse.quote(project, safe='')}/spans"
        query = {
            "limit": str(_PAGE),
            "sort": "start_time",
            "order": "asc",
            "trace_id": trace_id,
            "name": name,
        }
        found: list[dict[str, Any]] = []
        retried = False
        while True:
            try:
                page = self._get_json(path, query)
            except urllib.error.HTTPError as error:
                error.close()
                if error.code != 404 or retried:
                    raise
                if project not in self.projects():
                    return []  # nothing was ever sent to it
                retried = True  # made between the two requests: ask again
                continue
            found += [_plain_span(span) for span in page["data"]]
            query["cursor"] = page.get("next_cursor")
            if not query["cursor"]:
                return found

    def wait_for_spans(
        self,
        count: int,
        project: str = DEFAULT_PROJECT,
        *,
        trace_id: str | None = None,
        name: str | None = None,
        timeout: float = 30.0,
    ) -> list[dict[str, Any]]:
        """``spans(...)`` once at least ``count`` are stored (ingestion is asynchronous); an
        AssertionError naming what did arrive after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.spans(project, trace_id=trace_id, name=name)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                names = [span["name"] for span in found]
                raise AssertionError(
                    f"Phoenix stored {len(found)} of {count} spans in project {project!r}"
                    f" after {timeout:g}s: {names}; projects: {self.projects()}"
                )
            time.sleep(0.2)

    def _get_json(self, path: str, query: Mapping[str, str | None]) -> Any:
        if not self.running:
            raise RuntimeError(f"Phoenix is not running ({self!r})")
        params = urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        url = f"{self.url}{path}?{params}" if params else f"{self.url}{path}"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(url, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError:
            raise
        except (OSError, http.client.HTTPException) as error:
            raise RuntimeError(
                f"GET {url} failed: {error}; Phoenix's output:\n{self.logs_tail()}"
            ) from error


def _plain_span(span: Mapping[str, Any]) -> dict[str, Any]:
    """One span of Phoenix's REST answer, flattened to the fields tests check."""
    return {
        "name": span["name"],
        "span_id": span["context"]["span_id"],
        "parent_id": span.get("parent_id"),
        "trace_id": span["context"]["trace_id"],
        "attributes": dict(span.get("attributes") or {}),
        "status": span.get("status_code", "UNSET"),  # OK, ERROR or UNSET
        "status_message": span.get("status_message") or "",
        "span_kind": span.get("span_kind", "UNKNOWN"),  # Phoenix's (OpenInference), not OTel's
        "start_time": span.get("start_time"),
        "end_time": span.get("end_time"),
        "events": list(span.get("events") or []),
    }
