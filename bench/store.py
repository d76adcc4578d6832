"""Latency of the Store's calls on SQLite, with raw sqlite3 and aiosqlite baselines. Not a test.

    .venv/bin/python bench/store.py [--samples N] [--json PATH]

Each figure is the p50 (and p99) in ms of one awaited call on a store in a temporary directory
(SQLite in WAL mode, synchronous=NORMAL, as the server runs it), with a 2 KB object body:

create_object, get_object, update_object, delete_object
    One run object each, as the run loop writes them.
list_objects_20
    `list_objects("run", ..., limit=20)` over a thread holding more runs than that.
get_file
    A file's metadata (no bytes read).
raw_sqlite3_update, aiosqlite_update (baselines)
    `BEGIN IMMEDIATE; UPDATE ... WHERE id=?; COMMIT` of the same body on the same database,
    through the stdlib driver inline and through aiosqlite (one thread hop per statement).

Targets: update_object <= 0.3, get_object <= 0.2, create_object <= 0.3, list_objects_20 <= 1.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite

from codeinterp.store import Store
from codeinterp.store.database import DATABASE_FILE
from stats import percentile

TARGETS = {"update_object": 0.3, "get_object": 0.2, "create_object": 0.3, "list_objects_20": 1.0}


def run_body(run_id: str, thread_id: str, status: str, step: int = 0) -> dict[str, Any]:
    """A run object padded to about 2 KB, as the services store it."""
    return {
        "id": run_id,
        "object": "thread.run",
        "created_at": 1_700_000_000,
        "thread_id": thread_id,
        "assistant_id": "asst_1",
        "status": status,
        "instructions": "You are a careful analyst. " * 70,
        "tools": [{"type": "code_interpreter"}],
        "metadata": {"step": str(step)},
        "last_error": None,
        "expires_at": 1_700_000_600,
    }


async def timed(samples: int, call: Callable[[int], Awaitable[object]]) -> list[float]:
    """Milliseconds of `await call(i)` for i in range(samples), after a few warm-up calls."""
    for i in range(-5, 0):
        await call(i)
    times = []
    gc.disable()
    try:
        for i in range(samples):
            start = time.perf_counter()
            await call(i)
            times.append((time.perf_counter() - start) * 1000)
    finally:
        gc.enable()
    return times


async def store_figures(data_dir: str, samples: int) -> dict[str, list[float]]:
    store = await Store.open(data_dir)
    try:
        for i in range(30):
            await store.create_object("run", "p1", f"seed{i}", run_body(f"seed{i}", "t1", "queued"))
        file = await store.create_file("p1", "data.csv", "assistants", b"a,b\n1,2\n", 1 << 20)
        await store.create_object("run", "p1", "run_hot", run_body("run_hot", "t1", "queued"))

        async def create(i: int) -> object:
            return await store.create_object(
                "run", "p1", f"run_c{i}", run_body(f"run_c{i}", "t2", "queued")
            )

        async def update(i: int) -> object:
            body = run_body("run_hot", "t1", "in_progress", step=i)
            return await store.update_object("run", "p1", "run_hot", body)

        async def delete(i: int) -> None:
            await store.delete_object("run", "p1", f"run_c{i}")

        figures = {
            "create_object": await timed(samples, create),
            "get_object": await timed(samples, lambda i: store.get_object("run", "p1", "run_hot")),
            "update_object": await timed(samples, update),
            "list_objects_20": await timed(
                samples, lambda i: store.list_objects("run", "p1", thread_id="t1", limit=20)
            ),
            "get_file": await timed(samples, lambda i: store.get_file("p1", file.id)),
            "delete_object": await timed(samples, delete),
        }
    finally:
        await store.close()
    return figures


def raw_update(path: str, samples: int) -> list[float]:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=NORMAL")
    times = []
    try:
        for i in range(samples):
            body = json.dumps(run_body("run_hot", "t1", "in_progress", step=i))
            start = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("UPDATE runs SET body = ? WHERE id = ?", (body, "run_hot"))
            db.execute("COMMIT")
            times.append((time.perf_counter() - start) * 1000)
    finally:
        db.close()
    return times


async def aiosqlite_update(path: str, samples: int) -> list[float]:
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await db.execute("PRAGMA synchronous=NORMAL")

        async def update(i: int) -> None:
            body = json.dumps(run_body("run_hot", "t1", "in_progress", step=i))
            await db.execute("BEGIN IMMEDIATE")
            await db.execute("UPDATE runs SET body = ? WHERE id = ?", (body, "run_hot"))
            await db.execute("COMMIT")

        return await timed(samples, update)


async def measure(samples: int) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = os.path.join(tmp, "data")
        figures = await store_figures(data_dir, samples)
        path = os.path.join(data_dir, DATABASE_FILE)
        figures["raw_sqlite3_update"] = raw_update(path, samples)
        figures["aiosqlite_update"] = await aiosqlite_update(path, samples)
    return {
        name: {
            "p50": statistics.median(times),
            "p99": percentile(times, 99),
            **({"target": TARGETS[name]} if name in TARGETS else {}),
        }
        for name, times in figures.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    results = asyncio.run(measure(args.samples))
    print(f"{'call':<20} {'p50 ms':>8} {'p99 ms':>8} {'target':>8}")
    for name, figure in results.items():
        target = f"{figure['target']:.2f}" if "target" in figure else ""
        print(f"{name:<20} {figure['p50']:8.3f} {figure['p99']:8.3f} {target:>8}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
