"""`codeinterp exec`: run code in a fresh session and show what it produced.

Streams stdout and stderr as they arrive, prints text results, saves images and the files the
code wrote under /mnt/data into --out, and exits non-zero unless the status is `ok`. Files are
copied out in chunks within two budgets counted by apparent size (a sparse file or a hard link
takes no room in the sandbox but would take its full size here): --max-file-bytes for one file,
--max-out-bytes for all of them. Past either, nothing more is written and exec fails (exit 2).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import IO, Any

from codeinterp.config import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_OUTPUT_BYTES, Settings
from codeinterp.errors import InvalidRequest, QuotaExceeded
from codeinterp.sandbox import (
    End,
    Error,
    Execution,
    Result,
    Sandbox,
    SandboxConfig,
    SandboxPolicy,
    Session,
    Stderr,
    Stdout,
    environments,
)
from codeinterp.sandbox.policy import MEMORY_TIERS
from codeinterp.sandbox.workspace import clean_relative_path

EXIT_CODES = {"ok": 0, "error": 1, "timeout": 124, "interrupted": 130, "oom": 137, "killed": 137}
IMAGE_TYPES = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/svg+xml": "svg",
    "application/pdf": "pdf",
}


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "exec",
        help="run Python code in a fresh sandboxed session",
        description="Run Python code in a fresh sandboxed session. Exit status: 0 ok, 1 error, "
        "124 timeout, 130 interrupted, 137 out of memory or killed, 2 bad usage.",
    )
    parser.add_argument("code", nargs="?", help="code to run ('-' or nothing: read stdin)")
    parser.add_argument("-f", "--file", help="read the code from this file")
    parser.add_argument(
        "--upload",
        action="append",
        default=[],
        metavar="PATH",
        help="copy a local file into /mnt/data first (repeatable)",
    )
    parser.add_argument(
        "--batch",
        metavar="FILE",
        help="run every task of a JSON-lines file ('-': stdin), each in a fresh session; "
        "prints one JSON result per line as tasks finish",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="with --batch: tasks at once (default: two per core here; the server's own limit "
        "with --server)",
    )
    parser.add_argument(
        "--snapshot-in",
        metavar="FILE",
        help="start from this session snapshot (its variables and files; made by --snapshot-out)",
    )
    parser.add_argument(
        "--snapshot-out",
        metavar="FILE",
        help="after the run, save the session's state (variables, files, history) to FILE",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--memory", choices=list(MEMORY_TIERS), default="1g", help="memory limit")
    parser.add_argument(
        "--env",
        metavar="NAME[@VERSION]",
        help="an environment's packages on top of the default set (codeinterp env build); "
        "locally looked up in CODEINTERP_DATA_DIR, with --server on the server",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the execution as one JSON object"
    )
    parser.add_argument("--out", default="outputs", help="where images and files go (./outputs)")
    parser.add_argument(
        "--max-file-bytes",
        type=int,
        default=DEFAULT_MAX_FILE_BYTES,
        metavar="N",
        help="the largest file --out takes, by apparent size (default 512 MiB)",
    )
    parser.add_argument(
        "--max-out-bytes",
        type=int,
        default=DEFAULT_MAX_OUTPUT_BYTES,
        metavar="N",
        help="all the files --out takes from one run, by apparent size (default 512 MiB)",
    )
    parser.add_argument(
        "--server",
        metavar="URL",
        help="run in a container on this codeinterp server instead of a local sandbox "
        "(key: --api-key or CODEINTERP_API_KEY)",
    )
    parser.add_argument("--api-key", help="the server's API key (with --server)")
    parser.add_argument(
        "--unsafe-no-sandbox",
        action="store_true",
        help="run with NO isolation (only where the sandbox cannot work and the code is trusted)",
    )
    parser.set_defaults(run=run)


def _read_code(args: argparse.Namespace) -> str:
    if args.file and args.code:
        raise InvalidRequest("give the code either as an argument or with --file, not both")
    if args.file:
        try:
            with open(args.file, encoding="utf-8") as f:
                return f.read()
        except OSError as exc:
            raise InvalidRequest(f"cannot read {args.file}: {exc.strerror}") from None
    if args.code and args.code != "-":
        return str(args.code)
    if sys.stdin.isatty() and args.code != "-":
        raise InvalidRequest("no code given: pass CODE, --file FILE, or pipe code on stdin")
    return sys.stdin.read()


def _read_uploads(paths: list[str]) -> list[tuple[str, bytes]]:
    uploads = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                uploads.append((os.path.basename(path), f.read()))
        except OSError as exc:
            raise InvalidRequest(f"cannot upload {path}: {exc.strerror}") from None
    return uploads


def run(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise InvalidRequest("--timeout must be positive")
    if args.max_file_bytes <= 0 or args.max_out_bytes <= 0:
        raise InvalidRequest("--max-file-bytes and --max-out-bytes must be positive")
    if args.snapshot_in and not os.path.isfile(args.snapshot_in):
        raise InvalidRequest(f"no snapshot at {args.snapshot_in}")
    if args.snapshot_out and not os.path.isdir(os.path.dirname(os.path.abspath(args.snapshot_out))):
        raise InvalidRequest(f"cannot write {args.snapshot_out}: no such directory")
    if args.batch is not None:
        if args.code or args.file or args.upload:
            raise InvalidRequest("--batch reads its tasks from the file: no CODE, --file, --upload")
        if args.snapshot_in or args.snapshot_out:
            raise InvalidRequest("--snapshot-in and --snapshot-out are for one run, not --batch")
        from .exec_batch import run_batch

        return run_batch(args)
    if args.concurrency is not None:
        raise InvalidRequest("--concurrency goes with --batch")
    code = _read_code(args)
    uploads = _read_uploads(args.upload)
    if args.server:
        if args.unsafe_no_sandbox:
            raise InvalidRequest("--unsafe-no-sandbox is for local runs, not with --server")
        from .exec_remote import run_remote

        return run_remote(args, code, uploads)
    return asyncio.run(_run(args, code, uploads))


async def _run(args: argparse.Namespace, code: str, uploads: list[tuple[str, bytes]]) -> int:
    policy = SandboxPolicy.for_memory_tier(args.memory)
    if args.env is not None:
        environment = environments.for_session(Settings().data_dir, args.env, param="--env")
        policy = policy.with_packages(environment.site_packages)
    config = SandboxConfig(policy=policy, pool_size=0, unsafe_no_sandbox=args.unsafe_no_sandbox)
    async with await Sandbox.start(config) as sandbox:
        session = await sandbox.create_session(restore_from=args.snapshot_in)
        for name, data in uploads:
            await session.upload(name, data)
        execution = Execution()
        saver = OutputSaver(args.out, args.max_file_bytes, args.max_out_bytes)
        async for event in session.execute(code, args.timeout):
            execution.add(event)
            if not args.json:
                _show(event, saver)
        saved = await saver.save_files(session, execution)
        if args.snapshot_out:
            info = await session.snapshot(os.path.abspath(args.snapshot_out))
            for name, why in info.skipped.items():
                print(f"[snapshot] {name} not saved: {why}", file=sys.stderr)
        if args.json:
            document = execution.to_dict()
            document["outputs"] = saver.paths + saved
            print(json.dumps(document, indent=2))
        else:
            for path in saved:
                print(f"[file] {path}")
    return EXIT_CODES.get(execution.status, 1)


class OutputSaver:
    """Writes images and workspace files into the output directory, never outside it, and
    workspace files within the budgets."""

    def __init__(
        self,
        out: str,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        max_out_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    ) -> None:
        self.out = out
        self.max_file_bytes = max_file_bytes
        self.max_out_bytes = max_out_bytes
        self.paths: list[str] = []
        self._images = 0
        self._copied = 0  # bytes of workspace files written so far

    def save_image(self, bundle: dict[str, Any]) -> str | None:
        """Save the image of a MIME bundle, if it has one; returns its path."""
        for mime, extension in IMAGE_TYPES.items():
            if mime in bundle:
                value = bundle[mime]
                data = value.encode() if mime == "image/svg+xml" else base64.b64decode(value)
                self._images += 1
                return self.write(f"image-{self._images}.{extension}", data)
        return None

    async def save_files(self, session: Session, execution: Execution) -> list[str]:
        names = [change.name for change in execution.files if change.change != "deleted"]
        sizes = []
        for name in names:  # sizes as the host sees them, not as the sandbox reported them
            with await session.open_file(name) as reader:
                sizes.append((reader.name, reader.size))
        self.check(sizes)
        saved = []
        for name in names:
            with await session.open_file(name) as reader, self.output(name) as (path, out):
                async for chunk in reader.chunks():
                    out.write(chunk)
            saved.append(path)
        return saved

    def check(self, files: list[tuple[str, int]]) -> None:
        """Refuse files over the budgets (name, apparent size) before any is written."""
        for name, size in files:
            if size > self.max_file_bytes:
                raise self._over_file(name, size)
        total = sum(size for _, size in files)
        if self._copied + total > self.max_out_bytes:
            raise self._over_total(total)

    @contextlib.contextmanager
    def output(self, name: str) -> Iterator[tuple[str, _Budgeted]]:
        """The path of a workspace file in --out and a file to write it to, which counts what
        is written against the budgets; a file left unfinished is removed."""
        path = os.path.join(self.out, *clean_relative_path(name))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            with open(path, "wb") as f:
                yield path, _Budgeted(self, name, f)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise

    def write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.out, *clean_relative_path(name))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def _over_file(self, name: str, size: int) -> QuotaExceeded:
        return QuotaExceeded(
            f"/mnt/data/{name} is {size} bytes (its apparent size), over the --max-file-bytes "
            f"budget of {self.max_file_bytes} bytes; files not saved"
        )

    def _over_total(self, total: int) -> QuotaExceeded:
        return QuotaExceeded(
            f"the files the code wrote are {total} bytes in all (apparent sizes), over the "
            f"--max-out-bytes budget of {self.max_out_bytes} bytes; files not saved"
        )


class _Budgeted:
    """A file in --out that refuses bytes past either budget (a file that grew after the
    check)."""

    def __init__(self, saver: OutputSaver, name: str, file: IO[bytes]) -> None:
        self.saver = saver
        self.name = name
        self.file = file
        self.written = 0

    def write(self, data: bytes) -> None:
        saver = self.saver
        if self.written + len(data) > saver.max_file_bytes:
            raise saver._over_file(self.name, self.written + len(data))
        if saver._copied + len(data) > saver.max_out_bytes:
            raise saver._over_total(saver._copied + len(data))
        self.file.write(data)
        self.written += len(data)
        saver._copied += len(data)


def _show(event: Any, saver: OutputSaver) -> None:
    if isinstance(event, Stdout):
        sys.stdout.write(event.text)
        sys.stdout.flush()
    elif isinstance(event, Stderr):
        sys.stderr.write(event.text)
        sys.stderr.flush()
    elif isinstance(event, Result):
        path = saver.save_image(event.data)
        if path is not None:
            saver.paths.append(path)
            print(f"[image] {path}")
        elif "text/plain" in event.data:
            print(event.data["text/plain"])
    elif isinstance(event, Error):
        print(event.traceback, file=sys.stderr)
    elif isinstance(event, End) and event.status != "ok" and event.message:
        print(f"[{event.status}] {event.message}", file=sys.stderr)
