"""Helpers every service uses: time, list pages as wire envelopes."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from codeinterp.errors import InvalidRequest


def now() -> int:
    return int(time.time())


class HasId(Protocol):
    @property
    def id(self) -> str: ...


R = TypeVar("R", bound=HasId)


def list_envelope(
    items: Sequence[R], has_more: bool, to_wire: Callable[[R], dict[str, Any]]
) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [to_wire(item) for item in items],
        "first_id": items[0].id if items else None,
        "last_id": items[-1].id if items else None,
        "has_more": has_more,
    }


def dict_envelope(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """The list envelope around objects that are wire dicts already."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def check_order(order: str) -> str:
    if order not in ("asc", "desc"):
        raise InvalidRequest(
            f"Invalid value for 'order': {order!r}. Use 'asc' or 'desc'.", param="order"
        )
    return order


def check_limit(limit: int, maximum: int = 100) -> int:
    if not 1 <= limit <= maximum:
        raise InvalidRequest(
            f"Invalid value for 'limit': {limit}. It must be between 1 and {maximum}.",
            param="limit",
        )
    return limit
