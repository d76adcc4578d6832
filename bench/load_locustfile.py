"""The users of bench/load.py: a Locust file, run by `locust -f` in a process of its own (gevent).

Each user is one client of the server with its own `openai.OpenAI` (no retries, 60 s timeout) and
picks a task by weight after each think time (uniform in [wait/2, 3*wait/2] seconds, with `wait`
from CODEINTERP_LOAD_WAIT, default 1):

execute (7)
    `POST /v1/containers/{id}/execute` through the SDK's `client.post` on the user's container
    (created with `client.containers.create` when the user starts, deleted when it stops), with
    one of SNIPPETS in turn. Wrong: an HTTP error, a status other than "ok", an unexpected
    answer.
run (2)
    A new conversation: `threads.create` with one user message, `runs.create_and_poll` (the SDK
    follows the server's `openai-poll-after-ms`), `messages.list`, `threads.delete` (which
    closes the thread's session). The scripted upstream calls python once, then answers.
    Wrong: an HTTP error, a run that does not complete, an answer without "42".
file (1)
    `files.create` (purpose "assistants") of FILE_BYTES random bytes, `files.content`,
    `files.delete`. Wrong: an HTTP error, downloaded bytes that differ from the upload.

Each task is one Locust request event named after its kind, timed from its first request to
the end of its last. When Locust quits, every task's time (ms) and every error, with the
request that failed (method, URL, status, body), go to the JSON file named by
CODEINTERP_LOAD_OUT.
"""

from __future__ import annotations

import json
import os
import random
import time
import warnings
from typing import Any

import openai
from locust import User, events, task
from locust.env import Environment

warnings.filterwarnings("ignore", category=DeprecationWarning)  # the SDK's Assistants notice

WAIT = float(os.environ.get("CODEINTERP_LOAD_WAIT", "1"))
ASSISTANT_ID = os.environ.get("CODEINTERP_LOAD_ASSISTANT", "")
OUT = os.environ.get("CODEINTERP_LOAD_OUT", "")
FILE_BYTES = 100 * 1024
BODY_LIMIT = 2000

# (code, text/plain of the last result or None, a string stdout must contain or None)
SNIPPETS: list[tuple[str, str | None, str | None]] = [
    ("1+1", "2", None),
    ("print(sum(range(100_000)))", None, "4999950000"),
    (
        "import pandas as pd\n"
        "df = pd.DataFrame({'a': range(200), 'b': [i % 7 for i in range(200)]})\n"
        "df.groupby('b').a.sum().to_dict()[3]",
        "2929",
        None,
    ),
    ("x = [i * i for i in range(10_000)]\nlen(x)", "10000", None),
]

timings: dict[str, list[float]] = {"execute": [], "run": [], "file": []}
errors: list[dict[str, Any]] = []


class Wrong(Exception):
    """A request answered, but not with what it should have."""


def describe(error: BaseException, step: str) -> dict[str, Any]:
    """What failed, precisely: the step, the request, the status and the body."""
    found: dict[str, Any] = {"step": step, "error": f"{type(error).__name__}: {error}"[:BODY_LIMIT]}
    request = getattr(error, "request", None)
    if request is not None:
        found["request"] = f"{request.method} {request.url}"
    response = getattr(error, "response", None)
    if response is not None:
        found["status"] = response.status_code
        try:
            found["body"] = response.text[:BODY_LIMIT]
        except Exception:  # a streamed body that was not read
            found["body"] = "(unread)"
    return found


class CodeInterpreterUser(User):
    def wait_time(self) -> float:
        return random.uniform(WAIT / 2, 3 * WAIT / 2)

    def on_start(self) -> None:
        self.client = openai.OpenAI(
            base_url=f"{self.host}/v1", api_key="bench", max_retries=0, timeout=60.0
        )
        self.container_id: str | None = None
        self.snippet = random.randrange(len(SNIPPETS))
        self.step = "containers.create"
        try:
            self.container_id = self.client.containers.create(name="load").id
        except Exception as error:
            self.failed("execute", 0.0, error)

    def on_stop(self) -> None:
        if self.container_id is not None:
            self.step = "containers.delete"
            try:
                self.client.containers.delete(self.container_id)
            except Exception as error:
                self.failed("execute", 0.0, error)
            self.container_id = None
        self.client.close()

    # -- bookkeeping --------------------------------------------------------------------------

    def record(self, kind: str, start: float) -> None:
        elapsed = (time.perf_counter() - start) * 1000
        timings[kind].append(elapsed)
        self.environment.events.request.fire(
            request_type="task", name=kind, response_time=elapsed, response_length=0,
            exception=None, context={},
        )  # fmt: skip

    def failed(self, kind: str, start: float, error: BaseException) -> None:
        elapsed = (time.perf_counter() - start) * 1000 if start else 0.0
        found = describe(error, self.step)
        found["kind"] = kind
        found["at"] = time.time()
        errors.append(found)
        self.environment.events.request.fire(
            request_type="task", name=kind, response_time=elapsed, response_length=0,
            exception=error, context={},
        )  # fmt: skip

    # -- tasks --------------------------------------------------------------------------------

    @task(7)
    def execute(self) -> None:
        if self.container_id is None:
            return
        code, value, stdout = SNIPPETS[self.snippet]
        self.snippet = (self.snippet + 1) % len(SNIPPETS)
        self.step = "POST /containers/{id}/execute"
        start = time.perf_counter()
        try:
            answer: Any = self.client.post(
                f"/containers/{self.container_id}/execute", body={"code": code}, cast_to=object
            )
            if answer.get("status") != "ok":
                raise Wrong(f"status {answer.get('status')!r}: {json.dumps(answer)[:BODY_LIMIT]}")
            if value is not None:
                got = [r["data"].get("text/plain") for r in answer.get("results", [])]
                if got[-1:] != [value]:
                    raise Wrong(f"results {got!r}, wanted {value!r}")
            if stdout is not None and stdout not in answer.get("stdout", ""):
                raise Wrong(f"stdout {answer.get('stdout')!r}, wanted {stdout!r}")
        except Exception as error:
            self.failed("execute", start, error)
        else:
            self.record("execute", start)

    @task(2)
    def assistants_run(self) -> None:
        start = time.perf_counter()
        thread_id = None
        try:
            self.step = "threads.create"
            thread = self.client.beta.threads.create(
                messages=[{"role": "user", "content": "What is 6 * 7? Use python."}]
            )
            thread_id = thread.id
            self.step = "threads.runs.create_and_poll"
            run = self.client.beta.threads.runs.create_and_poll(
                thread_id=thread.id, assistant_id=ASSISTANT_ID
            )
            if run.status != "completed":
                raise Wrong(f"run {run.id} ended {run.status}: {run.last_error}")
            self.step = "threads.messages.list"
            messages = self.client.beta.threads.messages.list(thread_id=thread.id, limit=1)
            text = "".join(
                part.text.value for part in messages.data[0].content if part.type == "text"
            )
            if "42" not in text:
                raise Wrong(f"answer {text!r} lacks 42")
            self.step = "threads.delete"
            self.client.beta.threads.delete(thread.id)
            thread_id = None
        except Exception as error:
            self.failed("run", start, error)
            if thread_id is not None:  # leave nothing behind, but the error stands
                try:
                    self.client.beta.threads.delete(thread_id)
                except Exception as cleanup:
                    errors.append(describe(cleanup, "threads.delete (after an error)"))
        else:
            self.record("run", start)

    @task(1)
    def file(self) -> None:
        data = random.randbytes(FILE_BYTES)
        start = time.perf_counter()
        file_id = None
        try:
            self.step = "files.create"
            file_id = self.client.files.create(file=("load.bin", data), purpose="assistants").id
            self.step = "files.content"
            got = self.client.files.content(file_id).read()
            if got != data:
                raise Wrong(f"downloaded {len(got)} bytes that differ from the {len(data)} sent")
            self.step = "files.delete"
            self.client.files.delete(file_id)
            file_id = None
        except Exception as error:
            self.failed("file", start, error)
            if file_id is not None:
                try:
                    self.client.files.delete(file_id)
                except Exception as cleanup:
                    errors.append(describe(cleanup, "files.delete (after an error)"))
        else:
            self.record("file", start)


@events.quitting.add_listener
def write_results(environment: Environment, **_: Any) -> None:
    if OUT:
        with open(OUT, "w") as out:
            json.dump({"timings_ms": timings, "errors": errors}, out)
