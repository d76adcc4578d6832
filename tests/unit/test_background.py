"""Background work (codeinterp/background.py): held until it ends, then let go."""

from __future__ import annotations

import asyncio
import gc

from codeinterp.background import BackgroundTasks


async def test_work_is_held_until_it_ends_and_then_let_go() -> None:
    tasks = BackgroundTasks()
    done = asyncio.Event()

    async def work() -> None:
        await asyncio.sleep(0.05)
        done.set()

    tasks.start(work())  # nobody else keeps the task
    gc.collect()
    assert len(tasks) == 1
    await asyncio.wait_for(done.wait(), 5)
    await asyncio.sleep(0)  # its done callbacks run
    assert len(tasks) == 0


async def test_waiting_on_each_while_they_end_is_safe() -> None:
    tasks = BackgroundTasks()
    for _ in range(3):
        tasks.start(asyncio.sleep(0))
    for task in tasks:  # each one leaves the set as it ends
        await task
    await asyncio.sleep(0)  # the last one's done callbacks run
    assert len(tasks) == 0
