"""`codeinterp exec`: run code in a fresh session and show what it produced.

Streams stdout and stderr as they arrive, prints text results, saves images and the files the
code wrote under /mnt/data into --out, and exits non-zero unless the status is `ok`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
from typing import Any

from codeinterp.errors import InvalidRequest
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
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--memory", choices=list(MEMORY_TIERS), default="1g", help="memory limit")
    parser.add_argument(
        "--json", action="store_true", help="print the execution as one JSON object"
    )
    parser.add_argument("--out", default="outputs", help="where images and files go (./outputs)")
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
    config = SandboxConfig(policy=policy, pool_size=0, unsafe_no_sandbox=args.unsafe_no_sandbox)
    async with await Sandbox.start(config) as sandbox:
        session = await sandbox.create_session()
        for name, data in uploads:
            await session.upload(name, data)
        execution = Execution()
        saver = OutputSaver(args.out)
        async for event in session.execute(code, args.timeout):
            execution.add(event)
            if not args.json:
                _show(event, saver)
        saved = await saver.save_files(session, execution)
        if args.json:
            document = execution.to_dict()
            document["outputs"] = saver.paths + saved
            print(json.dumps(document, indent=2))
        else:
            for path in saved:
                print(f"[file] {path}")
    return EXIT_CODES.get(execution.status, 1)


class OutputSaver:
    """Writes images and workspace files into the output directory, never outside it."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.paths: list[str] = []
        self._images = 0

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
        saved = []
        for change in execution.files:
            if change.change == "deleted":
                continue
            data = await session.download(change.name)
            saved.append(self.write(change.name, data))
        return saved

    def write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.out, *clean_relative_path(name))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return path


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
