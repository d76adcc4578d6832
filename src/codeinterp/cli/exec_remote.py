"""`codeinterp exec --server URL`: the same command, run in a container on a server.

A container is made for the run (with --memory; from --snapshot-in, uploaded first), the uploads
go to its /mnt/data, the output is streamed as the code produces it, images and the files the
code wrote are saved into --out, --snapshot-out downloads its state, and the container (and any
snapshot file made on the server for the run) is deleted. Exit statuses are those of a local run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

import httpx2

from codeinterp.client import APIError, Client, Container, RunResult
from codeinterp.errors import InvalidRequest

from .exec_cmd import EXIT_CODES, OutputSaver


def run_remote(args: argparse.Namespace, code: str, uploads: list[tuple[str, bytes]]) -> int:
    try:
        with Client(args.server, api_key=args.api_key) as client:
            made: list[str] = []  # snapshot files made on the server for this run
            try:
                snapshot_id = None
                if args.snapshot_in:
                    snapshot_id = client.upload_snapshot(args.snapshot_in)["id"]
                    made.append(snapshot_id)
                with client.container(
                    memory=args.memory,
                    name="codeinterp exec",
                    snapshot_id=snapshot_id,
                    environment=args.env,
                ) as box:
                    status = _run(box, args, code, uploads)
                    if args.snapshot_out:
                        saved = box.snapshot()
                        made.append(saved["id"])
                        with open(args.snapshot_out, "wb") as out:
                            client.download_snapshot(saved["id"], out)
                        for name, why in saved.get("skipped", {}).items():
                            print(f"[snapshot] {name} not saved: {why}", file=sys.stderr)
                    return status
            finally:
                for file_id in made:
                    with contextlib.suppress(APIError, httpx2.TransportError):
                        client.delete_file(file_id)
    except APIError as exc:
        raise InvalidRequest(f"the server refused: {exc.message}") from None
    except httpx2.TransportError as exc:
        raise InvalidRequest(f"cannot reach {args.server}: {exc}") from None


def _run(box: Container, args: argparse.Namespace, code: str, uploads: list[Any]) -> int:
    for name, data in uploads:
        box.upload(data, name)
    saver = OutputSaver(args.out, args.max_file_bytes, args.max_out_bytes)
    quiet = bool(args.json)

    def on_result(result: dict[str, Any]) -> None:
        path = saver.save_image(result.get("data", {}))
        if path is not None:
            saver.paths.append(path)
        if not quiet:
            if path is not None:
                print(f"[image] {path}")
            elif "text/plain" in result.get("data", {}):
                print(result["data"]["text/plain"])

    result = box.run(
        code,
        args.timeout,
        on_stdout=None if quiet else _writer(sys.stdout),
        on_stderr=None if quiet else _writer(sys.stderr),
        on_result=on_result,
        on_error=None if quiet else lambda error: print(error["traceback"], file=sys.stderr),
    )
    saved = _save_files(box, result, saver)
    if quiet:
        document = dict(result.raw)
        document["outputs"] = saver.paths + saved
        print(json.dumps(document, indent=2))
    else:
        if result.status != "ok" and result.raw.get("message"):
            print(f"[{result.status}] {result.raw['message']}", file=sys.stderr)
        for path in saved:
            print(f"[file] {path}")
    return EXIT_CODES.get(result.status, 1)


def _save_files(box: Container, result: RunResult, saver: OutputSaver) -> list[str]:
    """The files the code created or changed (not the images the server saved for us),
    streamed within the saver's budgets (checked first by the sizes the server lists)."""
    saved_images = {r.get("path") for r in result.results}
    wanted = [
        change
        for change in result.files
        if change["change"] != "deleted" and change["path"] not in saved_images
    ]
    listed = {entry["id"]: entry for entry in box.files()} if wanted else {}
    sizes = [(c["name"], int(listed.get(c["id"], {}).get("bytes") or 0)) for c in wanted]
    saver.check(sizes)
    saved = []
    for change in wanted:
        with saver.output(change["name"]) as (path, out):
            box.download_to(change["id"], out)
        saved.append(path)
    return saved


def _writer(stream: Any) -> Any:
    def write(text: str) -> None:
        stream.write(text)
        stream.flush()

    return write
