"""The pieces of the throughput door that need no sandbox: output comparison, the bounded
concurrent map, and admission (a fair queue with a time limit)."""

from __future__ import annotations

import asyncio
import time

import pytest

from codeinterp.errors import InvalidRequest, Overloaded
from codeinterp.sandbox.oneshot import Task, as_completed, output_matches
from codeinterp.sessions.admission import Admission


@pytest.mark.parametrize(
    ("actual", "expected", "how", "matches"),
    [
        ("1 2\n", "1 2", "lines", True),
        ("1 2  \r\n3\n\n\n", "1 2\n3", "lines", True),
        (" 1 2\n", "1 2", "lines", False),  # leading spaces count
        ("1\n\n2\n", "1\n2", "lines", False),  # blank lines inside count
        ("", "", "lines", True),
        ("1 2\n", "1 2\n", "exact", True),
        ("1 2\n", "1 2", "exact", False),
    ],
)
def test_output_matches(actual: str, expected: str, how: str, matches: bool) -> None:
    assert output_matches(actual, expected, how) is matches  # type: ignore[arg-type]


def test_a_task_checks_its_input() -> None:
    Task("1", files={"data/a.csv": b""}).check()
    for bad in (
        Task("1", files={"../a": b""}),
        Task("1", stdin="x" * (8 * 1024 * 1024 + 1)),
        Task("1", output_match="fuzzy"),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidRequest):
            bad.check()


async def test_as_completed_yields_as_work_finishes_within_its_concurrency() -> None:
    running = 0
    most = 0

    async def work(delay: float) -> float:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(delay)
            if delay == 0.02:
                raise ValueError("this one fails")
            return delay
        finally:
            running -= 1

    delays = [0.3, 0.01, 0.02, 0.01, 0.01]
    seen = [(i, r) async for i, r in as_completed(delays, 2, work)]
    assert most == 2
    assert [i for i, _ in seen][-1] == 0  # the slow one came last, the others did not wait
    assert sorted(i for i, _ in seen) == list(range(5))
    failures = [r for _, r in seen if isinstance(r, Exception)]
    assert len(failures) == 1 and str(failures[0]) == "this one fails"


async def test_leaving_as_completed_early_cancels_the_rest() -> None:
    cancelled = 0

    async def work(delay: float) -> float:
        nonlocal cancelled
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            cancelled += 1
            raise
        return delay

    results = as_completed([0.01, 5, 5], 3, work)
    async for _ in results:
        break
    await results.aclose()  # type: ignore[attr-defined]
    assert cancelled == 2


async def test_admission_is_first_come_first_served_and_bounded_in_time() -> None:
    admission = Admission(limit=1, wait=0.2, what="tasks")
    order: list[int] = []
    await admission.acquire()

    async def waiter(n: int) -> None:
        async with admission.slot(wait=5):
            order.append(n)
            await asyncio.sleep(0.01)

    waiters = [asyncio.create_task(waiter(n)) for n in range(3)]
    await asyncio.sleep(0.05)
    assert admission.waiting == 3 and admission.held == 1
    started = time.monotonic()
    with pytest.raises(Overloaded) as refused:
        await admission.acquire()  # its own default wait: 0.2 s
    assert 0.15 < time.monotonic() - started < 1
    assert refused.value.retry_after >= 1 and "1 tasks at once" in str(refused.value)
    admission.release()
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2]
    assert admission.held == 0 and admission.waiting == 0


async def test_closing_admission_sends_waiters_and_later_callers_away() -> None:
    admission = Admission(limit=1, wait=30, what="tasks")
    await admission.acquire()
    waiter = asyncio.create_task(admission.acquire())
    await asyncio.sleep(0.01)
    started = time.monotonic()
    admission.close("The server is shutting down.")
    with pytest.raises(Overloaded, match="shutting down"):
        await waiter
    assert time.monotonic() - started < 0.5
    with pytest.raises(Overloaded, match="shutting down"):
        await admission.acquire()
    admission.release()
    assert admission.held == 0 and admission.waiting == 0


async def test_a_cancelled_waiter_leaves_its_place_to_the_next() -> None:
    admission = Admission(limit=1, wait=30, what="tasks")
    await admission.acquire()
    first = asyncio.create_task(admission.acquire())
    second = asyncio.create_task(admission.acquire())
    await asyncio.sleep(0.01)
    first.cancel()
    admission.release()
    await asyncio.wait_for(second, 1)
    assert admission.held == 1 and admission.waiting == 0
