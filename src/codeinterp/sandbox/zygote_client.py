"""The host's handle on the zygote process: start it, ask it to fork sessions, hear of deaths."""

from __future__ import annotations

import array
import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from codeinterp.background import BackgroundTasks
from codeinterp.errors import SandboxError

from . import frames

MAX_PACKET = 1 << 20
_FDS_PER_SESSION = 3


@dataclass
class SpawnedProcess:
    """What the zygote hands back for a new session: its pids and three descriptors."""

    pid: int  # host pid of the REPL
    init_pid: int  # host pid of the namespace's init (0 without a sandbox)
    channel: socket.socket
    stdout_fd: int
    stderr_fd: int
    timings: dict[str, float] = field(default_factory=dict)  # zygote step -> ms


def zygote_environment(cache_dir: str, threads: int = 1) -> dict[str, str]:
    """The whole environment the zygote starts with: no secrets, one thread for every BLAS."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": cache_dir,
        "OPENBLAS_NUM_THREADS": str(threads),
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "NUMEXPR_NUM_THREADS": str(threads),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "MPLCONFIGDIR": os.path.join(cache_dir, "matplotlib"),
        "IPYTHONDIR": os.path.join(cache_dir, "ipython"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


class ZygoteClient:
    def __init__(
        self,
        python: str,
        cache_dir: str,
        *,
        private_mounts: bool = False,
        hidden_mounts: tuple[str, ...] = (),
        init_root: str | None = None,
        light: bool = False,
        packages: str | None = None,
        preload: tuple[str, ...] = (),
    ) -> None:
        """`private_mounts`: the zygote lives in a mount namespace of its own, and each spawn
        must bring its workspace as a detached mount; `hidden_mounts`: directories whose
        mounts are detached in that namespace when the zygote starts; `init_root`: an empty
        directory where the sessions' inits get their empty root (see init.py); `light`: no
        library set preloaded (the zygote of one-shot tasks); `packages`, `preload`: an
        environment's site-packages and the modules of it to import too (its sessions' zygote)."""
        self.python = python
        self.cache_dir = cache_dir
        self.private_mounts = private_mounts
        self.hidden_mounts = hidden_mounts
        self.init_root = init_root
        self.light = light
        self.packages = packages
        self.preload = preload
        self.hello: dict[str, Any] = {}
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}  # spawns and jails asked for
        self._ids = itertools.count(1)
        self._hello: asyncio.Future[dict[str, Any]] | None = None
        self._exit_listeners: dict[int, Callable[[int], None]] = {}
        self._early_exits: dict[int, int] = {}
        self._background = BackgroundTasks()
        self.alive = False
        # One sender at a time: the event loop keeps one writer per socket, so a second
        # sock_sendall waiting on a full socket replaced the first's, which then never finished
        # (200 sessions asked for at once: dozens of requests hung for good).
        self._sending = asyncio.Lock()

    async def start(self, timeout: float = 120.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        os.makedirs(self.cache_dir, mode=0o755, exist_ok=True)
        host_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # Its settings go over the socket, not in its command line: each session forked from
        # it can read that (as its /proc/1/cmdline), and must not learn the host's pid, paths
        # or instance from it.
        settings = {
            "parent_pid": os.getpid(),
            "private_mounts": self.private_mounts,
            "hide_mounts": list(self.hidden_mounts),
            "init_root": self.init_root,
            "light": self.light,
            "packages": self.packages,
            "preload": list(self.preload),
        }
        self._proc = subprocess.Popen(
            [
                self.python,
                "-m",
                "codeinterp.sandbox.zygote",
                "--control-fd",
                str(zygote_end.fileno()),
            ],
            pass_fds=[zygote_end.fileno()],
            env=zygote_environment(self.cache_dir),
            stdin=subprocess.DEVNULL,
            cwd="/",
        )
        zygote_end.close()
        host_end.send(json.dumps(settings).encode())
        host_end.setblocking(False)
        self._sock = host_end
        self._hello = loop.create_future()
        loop.add_reader(host_end.fileno(), self._on_readable)
        self.alive = True
        try:
            async with asyncio.timeout(timeout):
                self.hello = await self._hello
        except BaseException:
            await self.close()
            raise
        return self.hello

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc else 0

    def on_exit(self, pid: int, listener: Callable[[int], None]) -> None:
        """Call `listener(wait_status)` when the REPL `pid` dies (at once if it has)."""
        if pid in self._early_exits:
            listener(self._early_exits.pop(pid))
        else:
            self._exit_listeners[pid] = listener

    async def spawn(self, request: dict[str, Any], fds: tuple[int, ...] = ()) -> SpawnedProcess:
        """Ask for a session; `fds` go along with the request (the workspace's mount). The
        caller keeps its own copies of them and may close them once this returns."""
        spawned: SpawnedProcess = await self._request(request, fds)
        return spawned

    async def make_jail(
        self, policy: dict[str, Any], cgroup_procs: list[str], new_root: str
    ) -> int:
        """Make a task jail (see jail.JAIL_BUILD_STEPS); its number, for "spawn" and
        `drop_jail`."""
        request = {"op": "jail", "policy": policy, "cgroup_procs": cgroup_procs}
        jail_id: int = await self._request({**request, "new_root": new_root}, ())
        return jail_id

    async def drop_jail(self, jail_id: int) -> None:
        if self.alive and self._sock is not None:
            async with self._sending:
                await self._send(json.dumps({"op": "drop_jail", "jail": str(jail_id)}).encode(), ())

    async def _request(self, request: dict[str, Any], fds: tuple[int, ...]) -> Any:
        if not self.alive or self._sock is None:
            raise SandboxError("the zygote is not running")
        loop = asyncio.get_running_loop()
        request_id = next(self._ids)
        future: asyncio.Future[Any] = loop.create_future()
        self._pending[request_id] = future
        try:
            async with self._sending:
                await self._send(json.dumps({**request, "id": request_id}).encode(), fds)
            return await future
        finally:
            self._pending.pop(request_id, None)

    async def _send(self, data: bytes, fds: tuple[int, ...]) -> None:
        """One packet, with `fds` attached, waiting while the socket is full."""
        assert self._sock is not None
        sock = self._sock
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock.sendmsg([data], ancillary)
                return
            except BlockingIOError:
                pass
            writable: asyncio.Future[None] = loop.create_future()

            def wake(future: asyncio.Future[None] = writable) -> None:
                if not future.done():
                    future.set_result(None)

            loop.add_writer(sock.fileno(), wake)
            try:
                await writable
            finally:
                loop.remove_writer(sock.fileno())

    def _on_readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data, ancdata, _flags, _addr = self._sock.recvmsg(
                    MAX_PACKET, socket.CMSG_SPACE(_FDS_PER_SESSION * 4)
                )
            except BlockingIOError:
                return
            except OSError:
                data, ancdata = b"", []
            fds: list[int] = []
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    usable = len(payload) - len(payload) % 4
                    fds.extend(
                        int.from_bytes(payload[i : i + 4], "little") for i in range(0, usable, 4)
                    )
            if not data:
                self._on_gone()
                return
            self._dispatch(json.loads(data), fds)

    def _dispatch(self, message: dict[str, Any], fds: list[int]) -> None:
        event = message.get("ev")
        if event == "hello" and self._hello is not None and not self._hello.done():
            self._hello.set_result(message)
        elif event in ("spawned", "spawn_failed"):
            future = self._pending.get(message.get("id", -1))
            if future is None or future.done():  # the caller gave up: nobody owns this session
                for fd in fds:
                    os.close(fd)
                if event == "spawned":
                    with contextlib.suppress(ProcessLookupError, KeyError, ValueError):
                        os.kill(int(message.get("init_pid") or message["pid"]), signal.SIGKILL)
                return
            if event == "spawned" and len(fds) == _FDS_PER_SESSION:
                channel = socket.socket(fileno=fds[0])
                future.set_result(
                    SpawnedProcess(
                        int(message["pid"]),
                        int(message["init_pid"]),
                        channel,
                        fds[1],
                        fds[2],
                        frames.parse_timings(message),
                    )
                )
            else:
                for fd in fds:
                    os.close(fd)
                future.set_exception(SandboxError(f"zygote could not fork: {message.get('error')}"))
        elif event in ("jail_made", "jail_failed"):
            future = self._pending.get(message.get("id", -1))
            if future is not None and not future.done():
                if event == "jail_made":
                    future.set_result(int(message["id"]))
                else:
                    error = message.get("error")
                    future.set_exception(SandboxError(f"cannot make a task jail: {error}"))
            elif event == "jail_made":  # the caller gave up: nobody owns this jail
                self._background.start(self.drop_jail(message["id"]))
        elif event == "exited":
            pid, status = int(message["pid"]), int(message["status"])
            listener = self._exit_listeners.pop(pid, None)
            if listener is not None:
                listener(status)
            else:
                self._early_exits[pid] = status
                if len(self._early_exits) > 1024:  # deaths nobody will ask about
                    self._early_exits.pop(next(iter(self._early_exits)))

    def _on_gone(self) -> None:
        self.alive = False
        if self._sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
        error = SandboxError("the zygote process exited")
        if self._hello is not None and not self._hello.done():
            self._hello.set_exception(error)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        # Sessions die with the zygote (their parent-death signal): tell every listener.
        for pid, listener in list(self._exit_listeners.items()):
            self._exit_listeners.pop(pid, None)
            listener(9)

    async def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        self.alive = False
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await asyncio.to_thread(self._proc.wait)
            self._proc = None
