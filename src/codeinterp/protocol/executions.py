"""The throughput door's request bodies (an extension: OpenAI has no such endpoint).

`POST /v1/executions` takes one `TaskRequest`; `POST /v1/executions/batch` takes many and streams
the results back as they finish. A task is the container execute body (`code`, `timeout`) plus
what evaluation harnesses need: files in, standard input, an expected output, files out.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .common import RequestModel

MAX_CODE_CHARS = 4 * 1024 * 1024
MAX_STDIN_CHARS = 8 * 1024 * 1024
MAX_BATCH_TASKS = 10_000
MemoryLimit = Literal["1g", "4g", "16g", "64g"]  # the containers' tiers


class TaskRequest(RequestModel):
    code: str = Field(max_length=MAX_CODE_CHARS)
    timeout: float | None = Field(default=None, gt=0, le=24 * 3600)
    # name under /mnt/data -> the file's bytes in base64
    files: dict[str, str] = Field(default_factory=dict, max_length=100)
    # uploaded files (/v1/files), copied into /mnt/data under their names
    file_ids: list[str] = Field(default_factory=list, max_length=50)
    stdin: str | None = Field(default=None, max_length=MAX_STDIN_CHARS)
    expected_output: str | None = Field(default=None, max_length=MAX_STDIN_CHARS)
    output_match: Literal["exact", "lines"] = "lines"
    return_files: bool = False  # the bytes (base64) of every file the code created or changed
    memory_limit: MemoryLimit | None = None
    # an environment (`codeinterp env build`), NAME or NAME@VERSION, on top of the default set
    environment: str | None = Field(default=None, max_length=80)


class TaskBatchRequest(RequestModel):
    tasks: list[TaskRequest] = Field(min_length=1, max_length=MAX_BATCH_TASKS)
    # tasks of this batch running at once (at most the server's task_concurrency)
    concurrency: int | None = Field(default=None, ge=1, le=1024)
