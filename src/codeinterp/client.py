"""A small typed client for a codeinterp server's containers, for agent builders.

    from codeinterp import Client

    with Client("http://127.0.0.1:8000").container(memory="1g") as box:
        ex = box.run("1+1")
        print(ex.text)                      # 2
        box.upload("sales.csv")             # -> /mnt/data/sales.csv
        box.run("df = __import__('pandas').read_csv('/mnt/data/sales.csv')",
                on_stdout=print)            # streamed as the code prints
        png = box.download("outputs/image-1.png")

One-shot tasks, each in a fresh session of its own (evaluation pipelines):

    with Client("http://127.0.0.1:8000") as client:
        client.run_task("print(input())", stdin="hi", expected_output="hi")["passed"]  # True
        for result in client.map(["1+1", {"code": "print(2)"}], concurrency=8):
            print(result["index"], result["status"])   # as each finishes

`AsyncClient` is the same with `async with` and `await`. A container made by `container()` is
deleted when the `with` block ends; `attach(id)` uses an existing one and leaves it alone.
Errors from the server raise `APIError` with its status, code and message.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import httpx2

__all__ = ["APIError", "AsyncClient", "AsyncContainer", "Client", "Container", "RunResult"]

DEFAULT_TIMEOUT = 600.0
CHUNK_BYTES = 1 << 20  # downloads are read in chunks of this size
OnText = Callable[[str], Any]
OnDict = Callable[[dict[str, Any]], Any]


class SupportsWrite(Protocol):
    def write(self, data: bytes, /) -> Any: ...


class APIError(Exception):
    """The server answered with an error envelope (or not at all, status 0)."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class RunResult:
    """One execution, as the server's execute endpoint reports it."""

    status: str  # ok, error, timeout, interrupted, oom, killed
    stdout: str = ""
    stderr: str = ""
    results: list[dict[str, Any]] = field(default_factory=list)  # MIME bundles
    error: dict[str, str] | None = None  # name, value, traceback
    files: list[dict[str, Any]] = field(default_factory=list)  # /mnt/data changes
    execution_count: int | None = None
    duration_ms: float = 0.0
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> RunResult:
        return cls(
            status=body["status"],
            stdout=body.get("stdout", ""),
            stderr=body.get("stderr", ""),
            results=list(body.get("results") or []),
            error=body.get("error"),
            files=list(body.get("files") or []),
            execution_count=body.get("execution_count"),
            duration_ms=float(body.get("duration_ms") or 0.0),
            raw=body,
        )

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def text(self) -> str | None:
        """The text/plain of the value of the code's last expression, if it had one."""
        for result in reversed(self.results):
            if result.get("type") == "execute_result":
                value = result.get("data", {}).get("text/plain")
                return None if value is None else str(value)
        return None


@dataclass
class _Callbacks:
    on_stdout: OnText | None = None
    on_stderr: OnText | None = None
    on_result: OnDict | None = None
    on_error: OnDict | None = None

    @property
    def any(self) -> bool:
        return any((self.on_stdout, self.on_stderr, self.on_result, self.on_error))

    def dispatch(self, event: str, data: dict[str, Any]) -> RunResult | None:
        """Call the callback for one event; the `end` event's result ends the stream."""
        if event == "stdout" and self.on_stdout:
            self.on_stdout(data["text"])
        elif event == "stderr" and self.on_stderr:
            self.on_stderr(data["text"])
        elif event == "result" and self.on_result:
            self.on_result(data)
        elif event == "error":
            if "error" in data:  # the server failed mid-stream (OpenAI's envelope)
                raise _error_from(0, data)
            if self.on_error:
                self.on_error(data)
        elif event == "end":
            return RunResult.from_json(data)
        return None


def _api_root(base_url: str) -> str:
    """Accept http://host:port, http://host:port/ and http://host:port/v1."""
    url = base_url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def _headers(api_key: str | None) -> dict[str, str]:
    key = api_key if api_key is not None else os.environ.get("CODEINTERP_API_KEY", "local")
    return {"Authorization": f"Bearer {key}"}


def _error_from(status: int, body: Any) -> APIError:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return APIError(status, str(error.get("message", "")), error.get("code"))
    return APIError(status, str(body)[:500])


def _checked(response: httpx2.Response) -> Any:
    if response.is_success:
        return response.json() if response.content else None
    try:
        body = response.json()
    except ValueError:
        body = response.text
    raise _error_from(response.status_code, body)


class _SSEParser:
    """Server-sent events, one line at a time: `feed` returns an event when one is complete."""

    def __init__(self) -> None:
        self.event, self.data = "message", []  # type: tuple[str, list[str]]

    def feed(self, line: str) -> tuple[str, dict[str, Any]] | None:
        if line.startswith(":"):
            return None  # a heartbeat
        if line.startswith("event:"):
            self.event = line[6:].strip()
        elif line.startswith("data:"):
            self.data.append(line[5:].lstrip())
        elif not line and self.data:
            complete = self.event, json.loads("\n".join(self.data))
            self.event, self.data = "message", []
            return complete
        return None


def _container_body(
    name: str | None,
    memory: str,
    expires_minutes: int | None,
    file_ids: list[str] | None,
    snapshot_id: str | None = None,
    environment: str | None = None,
    network_policy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name or "codeinterp-client", "memory_limit": memory}
    if environment is not None:
        body["environment"] = environment
    if network_policy is not None:
        body["network_policy"] = network_policy
    if expires_minutes is not None:
        body["expires_after"] = {"anchor": "last_active_at", "minutes": expires_minutes}
    if file_ids:
        body["file_ids"] = file_ids
    if snapshot_id is not None:
        body["snapshot_id"] = snapshot_id
    return body


def _snapshot_upload(source: str | os.PathLike[str] | bytes) -> dict[str, Any]:
    """The multipart parts of an upload of a snapshot archive (a path or its bytes)."""
    filename, data = _upload_part(source, "state.snapshot")
    return {"file": (filename, data), "purpose": (None, "snapshot")}


def _upload_part(source: str | os.PathLike[str] | bytes, name: str | None) -> tuple[str, bytes]:
    if isinstance(source, bytes):
        if not name:
            raise ValueError("uploading bytes needs a name")
        return name, source
    path = Path(source)
    return name or path.name, path.read_bytes()


def _check_size(entry: dict[str, Any], max_bytes: int | None, received: int = 0) -> None:
    """APIError (413) if the file is over `max_bytes`: by its listed size, or by the bytes
    received so far."""
    size = max(int(entry.get("bytes") or 0), received)
    if max_bytes is not None and size > max_bytes:
        raise APIError(
            413, f"{entry.get('path')} is over the limit of {max_bytes} bytes", "file_too_large"
        )


def _find_file(files: list[dict[str, Any]], name: str) -> dict[str, Any]:
    wanted = name if name.startswith("/mnt/data/") else f"/mnt/data/{name.lstrip('/')}"
    for entry in files:
        if entry.get("path") == wanted or entry.get("id") == name:
            return entry
    raise APIError(404, f"no file {wanted} in the container", "not_found")


TaskLike = str | dict[str, Any]


def _task_body(task: TaskLike, **fields: Any) -> dict[str, Any]:
    """A one-shot task's JSON body from code or a dict of the body's fields; `files` may map
    names to bytes (encoded here) as well as to base64 text."""
    body: dict[str, Any] = {"code": task} if isinstance(task, str) else dict(task)
    body.update({k: v for k, v in fields.items() if v is not None})
    files = body.get("files")
    if files:
        body["files"] = {
            name: base64.b64encode(data).decode() if isinstance(data, bytes) else data
            for name, data in files.items()
        }
    return body


def _batch_line(line: str) -> dict[str, Any] | None:
    """One result of a batch stream (None for a heartbeat line)."""
    return json.loads(line) if line.strip() else None


# -- synchronous ---------------------------------------------------------------------------------


class Client:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._http = httpx2.Client(
            base_url=_api_root(base_url), headers=_headers(api_key), timeout=timeout
        )

    def container(
        self,
        memory: str = "1g",
        name: str | None = None,
        expires_minutes: int | None = None,
        file_ids: list[str] | None = None,
        snapshot_id: str | None = None,
        environment: str | None = None,
        network_policy: dict[str, Any] | None = None,
    ) -> Container:
        """A new container, deleted when its `with` block ends (or by `delete()`); with
        `snapshot_id`, started from that snapshot (`Container.snapshot`, `upload_snapshot`);
        with `environment` (NAME or NAME@VERSION), with that environment's packages; with
        `network_policy` (OpenAI's shape: `{"type": "allowlist", "allowed_domains": [...],
        "domain_secrets": [...]}`), reaching those domains through the server's proxy."""
        body = _container_body(
            name, memory, expires_minutes, file_ids, snapshot_id, environment, network_policy
        )
        info = _checked(self._http.post("/containers", json=body))
        return Container(self._http, info, owned=True)

    def upload_snapshot(self, source: str | os.PathLike[str] | bytes) -> dict[str, Any]:
        """Upload a snapshot archive (one downloaded from a server, say): a File of purpose
        "snapshot", whose id starts containers."""
        return dict(_checked(self._http.post("/files", files=_snapshot_upload(source))))

    def download_snapshot(self, snapshot_id: str, file: SupportsWrite) -> int:
        """Stream a snapshot's archive into `file`; how many bytes were written."""
        written = 0
        with self._http.stream("GET", f"/files/{snapshot_id}/content") as response:
            if not response.is_success:
                response.read()
                _checked(response)
            for chunk in response.iter_bytes(CHUNK_BYTES):
                written += len(chunk)
                file.write(chunk)
        return written

    def delete_file(self, file_id: str) -> None:
        _checked(self._http.delete(f"/files/{file_id}"))

    def attach(self, container_id: str) -> Container:
        """An existing container; leaving its `with` block does not delete it."""
        info = _checked(self._http.get(f"/containers/{container_id}"))
        return Container(self._http, info, owned=False)

    def run_task(self, task: TaskLike, **fields: Any) -> dict[str, Any]:
        """Run one task in a fresh session of its own (POST /executions): code, or a dict with
        code, files ({name: bytes}), file_ids, stdin, timeout, expected_output, output_match,
        return_files, memory_limit. Returns the execution object."""
        return dict(_checked(self._http.post("/executions", json=_task_body(task, **fields))))

    def map(
        self, tasks: Iterable[TaskLike], concurrency: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Run every task in a fresh session of its own, in one streamed batch; yields each
        result as it finishes, with its `index` (or `{"index", "error"}` for one that could not
        run)."""
        body: dict[str, Any] = {"tasks": [_task_body(t) for t in tasks]}
        if concurrency is not None:
            body["concurrency"] = concurrency
        with self._http.stream("POST", "/executions/batch", json=body) as response:
            if not response.is_success:
                response.read()
                _checked(response)
            for line in response.iter_lines():
                result = _batch_line(line)
                if result is not None:
                    yield result

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Container:
    def __init__(self, http: httpx2.Client, info: dict[str, Any], owned: bool) -> None:
        self._http = http
        self.info = info
        self.id: str = info["id"]
        self._owned = owned

    def run(
        self,
        code: str,
        timeout: float | None = None,
        *,
        on_stdout: OnText | None = None,
        on_stderr: OnText | None = None,
        on_result: OnDict | None = None,
        on_error: OnDict | None = None,
    ) -> RunResult:
        """Run code; with callbacks, output is streamed to them as the code produces it."""
        callbacks = _Callbacks(on_stdout, on_stderr, on_result, on_error)
        body: dict[str, Any] = {"code": code, "timeout": timeout, "stream": callbacks.any}
        path = f"/containers/{self.id}/execute"
        if not callbacks.any:
            return RunResult.from_json(_checked(self._http.post(path, json=body)))
        with self._http.stream("POST", path, json=body) as response:
            if not response.is_success:
                response.read()
                _checked(response)
            parser = _SSEParser()
            for line in response.iter_lines():
                if (complete := parser.feed(line)) and (result := callbacks.dispatch(*complete)):
                    return result
        raise APIError(0, "the execution stream ended without its result")

    def interrupt(self) -> bool:
        return bool(_checked(self._http.post(f"/containers/{self.id}/interrupt"))["interrupted"])

    def snapshot(self) -> dict[str, Any]:
        """Save the container's state: a File of purpose "snapshot" (its `id` starts new
        containers), with `skipped`: the names that could not be saved, and why."""
        return dict(_checked(self._http.post(f"/containers/{self.id}/snapshots")))

    def upload(
        self, source: str | os.PathLike[str] | bytes, name: str | None = None
    ) -> dict[str, Any]:
        """Put a local file (or bytes with a name) at /mnt/data/<name>."""
        filename, data = _upload_part(source, name)
        files = {"file": (filename, data)}
        return dict(_checked(self._http.post(f"/containers/{self.id}/files", files=files)))

    def files(self) -> list[dict[str, Any]]:
        """Every file in /mnt/data, with its id, path, size and source."""
        found: list[dict[str, Any]] = []
        after = None
        while True:
            params: dict[str, Any] = {"limit": 100, "order": "asc"}
            if after:
                params["after"] = after
            page = _checked(self._http.get(f"/containers/{self.id}/files", params=params))
            found.extend(page["data"])
            if not page["has_more"]:
                return found
            after = page["last_id"]

    def download(self, name: str, max_bytes: int | None = None) -> bytes:
        """The bytes of a file by its path (relative to /mnt/data, or absolute) or its id.
        With `max_bytes`, a larger file is an APIError (413) instead."""
        buffer = io.BytesIO()
        self.download_to(name, buffer, max_bytes)
        return buffer.getvalue()

    def download_to(self, name: str, file: SupportsWrite, max_bytes: int | None = None) -> int:
        """Stream a file's bytes into `file` in chunks, never holding it whole; returns how many
        were written. With `max_bytes`, a larger file is an APIError (413), before any byte is
        written if its listed size says so."""
        entry = _find_file(self.files(), name)
        _check_size(entry, max_bytes)
        path = f"/containers/{self.id}/files/{entry['id']}/content"
        written = 0
        with self._http.stream("GET", path) as response:
            if not response.is_success:
                response.read()
                _checked(response)
            for chunk in response.iter_bytes(CHUNK_BYTES):
                written += len(chunk)
                _check_size(entry, max_bytes, written)
                file.write(chunk)
        return written

    def delete(self) -> None:
        _checked(self._http.delete(f"/containers/{self.id}"))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._owned:
            self.delete()


# -- asynchronous --------------------------------------------------------------------------------


class AsyncClient:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._http = httpx2.AsyncClient(
            base_url=_api_root(base_url), headers=_headers(api_key), timeout=timeout
        )

    def container(
        self,
        memory: str = "1g",
        name: str | None = None,
        expires_minutes: int | None = None,
        file_ids: list[str] | None = None,
        snapshot_id: str | None = None,
        environment: str | None = None,
        network_policy: dict[str, Any] | None = None,
    ) -> _NewAsyncContainer:
        """A new container: `async with client.container() as box` (deleted at the end), or
        `box = await client.container()`; as `Client.container`."""
        body = _container_body(
            name, memory, expires_minutes, file_ids, snapshot_id, environment, network_policy
        )
        return _NewAsyncContainer(self._http, body)

    async def upload_snapshot(self, source: str | os.PathLike[str] | bytes) -> dict[str, Any]:
        """As `Client.upload_snapshot`."""
        return dict(_checked(await self._http.post("/files", files=_snapshot_upload(source))))

    async def download_snapshot(self, snapshot_id: str, file: SupportsWrite) -> int:
        """As `Client.download_snapshot`."""
        written = 0
        async with self._http.stream("GET", f"/files/{snapshot_id}/content") as response:
            if not response.is_success:
                await response.aread()
                _checked(response)
            async for chunk in response.aiter_bytes(CHUNK_BYTES):
                written += len(chunk)
                file.write(chunk)
        return written

    async def delete_file(self, file_id: str) -> None:
        _checked(await self._http.delete(f"/files/{file_id}"))

    async def attach(self, container_id: str) -> AsyncContainer:
        info = _checked(await self._http.get(f"/containers/{container_id}"))
        return AsyncContainer(self._http, info, owned=False)

    async def run_task(self, task: TaskLike, **fields: Any) -> dict[str, Any]:
        """As `Client.run_task`."""
        body = _task_body(task, **fields)
        return dict(_checked(await self._http.post("/executions", json=body)))

    async def map(
        self, tasks: Iterable[TaskLike], concurrency: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """As `Client.map`."""
        body: dict[str, Any] = {"tasks": [_task_body(t) for t in tasks]}
        if concurrency is not None:
            body["concurrency"] = concurrency
        async with self._http.stream("POST", "/executions/batch", json=body) as response:
            if not response.is_success:
                await response.aread()
                _checked(response)
            async for line in response.aiter_lines():
                result = _batch_line(line)
                if result is not None:
                    yield result

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _NewAsyncContainer:
    """Awaitable (the container) and an async context manager (deleting it at the end)."""

    def __init__(self, http: httpx2.AsyncClient, body: dict[str, Any]) -> None:
        self._http = http
        self._body = body
        self._made: AsyncContainer | None = None

    async def _create(self) -> AsyncContainer:
        info = _checked(await self._http.post("/containers", json=self._body))
        self._made = AsyncContainer(self._http, info, owned=True)
        return self._made

    def __await__(self) -> Generator[Any, None, AsyncContainer]:
        return self._create().__await__()

    async def __aenter__(self) -> AsyncContainer:
        return await self._create()

    async def __aexit__(self, *exc: object) -> None:
        if self._made is not None:
            await self._made.delete()


class AsyncContainer:
    def __init__(self, http: httpx2.AsyncClient, info: dict[str, Any], owned: bool) -> None:
        self._http = http
        self.info = info
        self.id: str = info["id"]
        self._owned = owned

    async def run(
        self,
        code: str,
        timeout: float | None = None,
        *,
        on_stdout: OnText | None = None,
        on_stderr: OnText | None = None,
        on_result: OnDict | None = None,
        on_error: OnDict | None = None,
    ) -> RunResult:
        callbacks = _Callbacks(on_stdout, on_stderr, on_result, on_error)
        body: dict[str, Any] = {"code": code, "timeout": timeout, "stream": callbacks.any}
        path = f"/containers/{self.id}/execute"
        if not callbacks.any:
            return RunResult.from_json(_checked(await self._http.post(path, json=body)))
        async with self._http.stream("POST", path, json=body) as response:
            if not response.is_success:
                await response.aread()
                _checked(response)
            parser = _SSEParser()
            async for line in response.aiter_lines():
                if (complete := parser.feed(line)) and (result := callbacks.dispatch(*complete)):
                    return result
        raise APIError(0, "the execution stream ended without its result")

    async def interrupt(self) -> bool:
        response = await self._http.post(f"/containers/{self.id}/interrupt")
        return bool(_checked(response)["interrupted"])

    async def snapshot(self) -> dict[str, Any]:
        """As `Container.snapshot`."""
        return dict(_checked(await self._http.post(f"/containers/{self.id}/snapshots")))

    async def upload(
        self, source: str | os.PathLike[str] | bytes, name: str | None = None
    ) -> dict[str, Any]:
        filename, data = _upload_part(source, name)
        response = await self._http.post(
            f"/containers/{self.id}/files", files={"file": (filename, data)}
        )
        return dict(_checked(response))

    async def files(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        after = None
        while True:
            params: dict[str, Any] = {"limit": 100, "order": "asc"}
            if after:
                params["after"] = after
            response = await self._http.get(f"/containers/{self.id}/files", params=params)
            page = _checked(response)
            found.extend(page["data"])
            if not page["has_more"]:
                return found
            after = page["last_id"]

    async def download(self, name: str, max_bytes: int | None = None) -> bytes:
        entry = _find_file(await self.files(), name)
        _check_size(entry, max_bytes)
        path = f"/containers/{self.id}/files/{entry['id']}/content"
        chunks = []
        received = 0
        async with self._http.stream("GET", path) as response:
            if not response.is_success:
                await response.aread()
                _checked(response)
            async for chunk in response.aiter_bytes(CHUNK_BYTES):
                received += len(chunk)
                _check_size(entry, max_bytes, received)
                chunks.append(chunk)
        return b"".join(chunks)

    async def delete(self) -> None:
        _checked(await self._http.delete(f"/containers/{self.id}"))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._owned:
            await self.delete()
