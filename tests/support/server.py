"""Our server as a real subprocess, for end-to-end tests through the ``openai`` client.

::

    with ScriptedUpstream(script) as upstream, ServerProcess(
        {
            "CODEINTERP_UPSTREAM_BASE_URL": upstream.base_url,
            "CODEINTERP_UPSTREAM_API_KEY": "sk-upstream",
            "CODEINTERP_API_KEYS": "local",
        },
        data_dir=tmp_path / "data",
    ) as server:
        client = server.client()  # openai.OpenAI(base_url=server.base_url, api_key="local")
        ...
        server.kill()  # a crash (SIGKILL)
        server.restart()  # same port, same data dir

It runs ``python -m codeinterp.cli.main serve --host 127.0.0.1 --port PORT --data-dir DIR``,
waits for ``GET /health`` to answer 200 (60 s by default) and fails with the server's output if
it exits or times out first. stdout and stderr go to ``DIR/server.log``; ``logs()`` reads it.

The child's environment is ours minus every inherited ``CODEINTERP_*`` and ``OPENAI_*`` variable
(a developer's shell must not leak into tests, least of all a real OpenAI key), plus ``env``. If
``env`` names no upstream, ``CODEINTERP_UPSTREAM_BASE_URL`` points at a closed local port, so a
test that forgets its ``ScriptedUpstream`` fails fast instead of calling api.openai.com.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import openai

__all__ = ["ServerProcess", "ServerStartError", "child_environment", "free_port", "port_is_free"]

HOST = "127.0.0.1"
# Nothing listens on the discard port: connecting there is refused at once.
UNREACHABLE_UPSTREAM = "http://127.0.0.1:9/v1"
_SCRUBBED_PREFIXES = ("CODEINTERP_", "OPENAI_")
_LOG_TAIL = 20_000


class ServerStartError(RuntimeError):
    """The server exited or did not become healthy in time; the message has its output."""


def wait_until_ok(
    process: subprocess.Popen[bytes],
    url: str,
    timeout: float,
    what: str,
    output: Callable[[], str],
    error: type[Exception],
    *,
    interval: float,
) -> None:
    """Poll `url` until it answers 200. `error`, naming `what` and ending with its `output`, if
    the process exits first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    last_problem = "no answer yet"
    while True:
        status = process.poll()
        if status is not None:
            raise error(
                f"{what} exited with status {status} before {url} answered; its output:\n{output()}"
            )
        answer = health_status(url)
        if answer == 200:
            return
        last_problem = f"HTTP {answer}" if isinstance(answer, int) else answer
        if time.monotonic() > deadline:
            raise error(
                f"{what}: {url} did not answer 200 within {timeout:g}s (last: {last_problem}); "
                f"its output:\n{output()}"
            )
        time.sleep(interval)


def free_port(host: str = HOST) -> int:
    """A TCP port that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a server could listen on ``host:port`` now (as uvicorn does, SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def child_environment(
    env: Mapping[str, str], base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``base`` (default: ours) without CODEINTERP_*/OPENAI_* variables, then ``env`` on top."""
    inherited = os.environ if base is None else base
    child = {k: v for k, v in inherited.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    child.setdefault("PYTHONUNBUFFERED", "1")
    child["CODEINTERP_UPSTREAM_BASE_URL"] = UNREACHABLE_UPSTREAM
    child.update(env)
    return child


class ServerProcess:
    """``codeinterp serve`` in a subprocess on 127.0.0.1 (see the module docstring).

    ``start()`` (or entering the ``with`` block) launches it and waits until it is healthy.
    """

    def __init__(
        self,
        env: Mapping[str, str] | None,
        data_dir: str | os.PathLike[str],
        port: int | None = None,
        *,
        startup_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        extra_args: Sequence[str] = (),
        command: Sequence[str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        """``command`` replaces ``python -m codeinterp.cli.main serve ...`` (for a server started
        another way, such as the README's shell line); it runs in ``cwd`` (default: data_dir).
        Stopping signals the whole process group, so a shell's children stop too."""
        self.env = dict(env or {})
        self.data_dir = Path(data_dir)
        self.port = free_port() if port is None else port
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = list(extra_args)
        self._command = None if command is None else list(command)
        self.cwd = Path(cwd) if cwd is not None else None
        self.log_path = self.data_dir / "server.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._starts = 0

    # ------------------------------------------------------------------ addresses and clients

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: the ``base_url`` for an ``openai`` client."""
        return f"{self.url}/v1"

    def command(self) -> list[str]:
        if self._command is not None:
            return self._command
        return [
            sys.executable,
            "-m",
            "codeinterp.cli.main",
            "serve",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            *self.extra_args,
        ]

    def client(self, api_key: str = "local", **kwargs: Any) -> openai.OpenAI:
        """An ``openai.OpenAI`` for this server (no retries; close it or use ``with``)."""
        options: dict[str, Any] = {"max_retries": 0, "timeout": 60.0, **kwargs}
        return openai.OpenAI(base_url=self.base_url, api_key=api_key, **options)

    def async_client(self, api_key: str = "local", **kwargs: Any) -> openai.AsyncOpenAI:
        """An ``openai.AsyncOpenAI`` for this server (no retries)."""
        options: dict[str, Any] = {"max_retries": 0, "timeout": 60.0, **kwargs}
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=api_key, **options)

    # ------------------------------------------------------------------ process state

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status of the last run (negative: killed by that signal); None if running."""
        return None if self._process is None else self._process.poll()

    def logs(self) -> str:
        """Everything the server wrote to stdout and stderr so far (all runs)."""
        if self._log is not None:
            self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def logs_tail(self, limit: int = _LOG_TAIL) -> str:
        text = self.logs()
        return text if len(text) <= limit else "...\n" + text[-limit:]

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Launch the server and wait until ``GET /health`` answers 200."""
        if self.running:
            raise RuntimeError(f"the server is already running (pid {self.pid})")
        self._close_log("exited")
        if not port_is_free(self.port):
            raise ServerStartError(
                f"port {self.port} is in use; a server left over from an earlier run?"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._starts += 1
        log = self.log_path.open("ab")
        self._log = log
        log.write(f"===== start #{self._starts}: {' '.join(self.command())}\n".encode())
        log.flush()
        self._process = subprocess.Popen(
            self.command(),
            env=child_environment(self.env),
            cwd=self.data_dir if self.cwd is None else self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the terminal goes to pytest, not to the server
        )
        try:
            self._wait_healthy()
        except BaseException:
            self._terminate(kill_after=2.0)
            raise
        return self

    def _wait_healthy(self) -> None:
        assert self._process is not None
        wait_until_ok(
            self._process,
            f"{self.url}/health",
            self.startup_timeout,
            f"the server ({' '.join(self.command())})",
            self.logs_tail,
            ServerStartError,
            interval=0.1,
        )

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after ``stop_timeout`` seconds; returns the exit status."""
        return self._terminate(kill_after=self.stop_timeout)

    def kill(self) -> int | None:
        """SIGKILL at once, like a crash; returns the exit status (``-9``)."""
        process = self._process
        if process is not None and process.poll() is None:
            self._signal(signal.SIGKILL)
            process.wait()
        self._close_log("killed")
        return self.returncode

    def restart(self) -> Self:
        """Stop (gracefully) if running, then start again with the same port and data dir."""
        self.stop()
        return self.start()

    def _terminate(self, kill_after: float) -> int | None:
        process = self._process
        if process is not None and process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                process.wait(timeout=kill_after)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                process.wait()
        self._close_log("stopped")
        return self.returncode

    def _signal(self, number: int) -> None:
        """The server; with a custom command, its whole process group (a shell and its children)."""
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError):
            if self._command is None:
                self._process.send_signal(number)
            else:
                os.killpg(self._process.pid, number)

    def _close_log(self, how: str = "") -> None:
        if self._log is None:
            return
        if how and self._process is not None:
            note = f"===== {how}: exit status {self._process.returncode}\n"
            self._log.write(note.encode())
        self._log.close()
        self._log = None

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
        return f"<ServerProcess {self.url} data_dir={self.data_dir} {state}>"


def health_status(url: str, timeout: float = 2.0) -> int | str:
    """The HTTP status of ``GET url``, or why there was none (no proxies involved)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        error.close()
        return error.code
    except (OSError, http.client.HTTPException, ValueError) as error:  # refused, reset, ...
        return f"{type(error).__name__}: {error}"
