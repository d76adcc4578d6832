"""Code interpreter session usage in OpenAI's organization-usage shape (time buckets)."""

from __future__ import annotations

from typing import Any

from codeinterp.errors import InvalidRequest
from codeinterp.store import Store

from .common import now

BUCKETS = {"1m": (60, 60, 1440), "1h": (3600, 24, 168), "1d": (86400, 7, 31)}


class UsageService:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def code_interpreter_sessions(
        self,
        project: str,
        start_time: int,
        end_time: int | None,
        bucket_width: str,
        limit: int | None,
        group_by: list[str],
    ) -> dict[str, Any]:
        if bucket_width not in BUCKETS:
            raise InvalidRequest(
                f"Invalid value for 'bucket_width': {bucket_width!r}. Use 1m, 1h or 1d.",
                param="bucket_width",
            )
        width, default_limit, max_limit = BUCKETS[bucket_width]
        count = limit or default_limit
        if not 1 <= count <= max_limit:
            raise InvalidRequest(
                f"Invalid value for 'limit': {count}. With bucket_width={bucket_width} it must "
                f"be between 1 and {max_limit}.",
                param="limit",
            )
        if any(g != "project_id" for g in group_by):
            raise InvalidRequest("group_by only supports 'project_id'.", param="group_by")
        end = end_time or now() + 1  # exclusive: include what started this very second
        first = start_time - start_time % width
        sessions = await self.store.list_sessions(project, start_time=first, end_time=end)
        buckets: list[dict[str, Any]] = []
        bucket_start = first
        while bucket_start < end and len(buckets) < count:
            bucket_end = bucket_start + width
            n = sum(1 for s in sessions if bucket_start <= s.started_at < bucket_end)
            result: dict[str, Any] = {
                "object": "organization.usage.code_interpreter_sessions.result",
                "num_sessions": n,
                "project_id": project if group_by else None,
            }
            buckets.append(
                {
                    "object": "bucket",
                    "start_time": bucket_start,
                    "end_time": bucket_end,
                    "results": [result] if n or not group_by else [],
                }
            )
            bucket_start = bucket_end
        has_more = bucket_start < end
        return {
            "object": "page",
            "data": buckets,
            "has_more": has_more,
            "next_page": str(bucket_start) if has_more else None,
        }
