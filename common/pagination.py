"""Keyset pagination: opaque cursors bound to the filters of the query they came from."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Annotated, Any, Generic, TypeVar
from uuid import UUID

from fastapi import Query
from pydantic import BaseModel

from common.errors import FieldError, Unprocessable

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500

LimitQuery = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description=f"Page size (default {DEFAULT_LIMIT}).")
]
CursorQuery = Annotated[
    str | None,
    Query(max_length=512, description="Opaque cursor from the previous page's `next_cursor`."),
]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def _jsonable(v: Any) -> Any:
    if isinstance(v, UUID):
        return {"u": str(v)}
    if isinstance(v, datetime):
        return {"t": v.isoformat()}
    if isinstance(v, date):
        return {"d": v.isoformat()}
    return v


def _restore(v: Any) -> Any:
    if isinstance(v, dict):
        if "u" in v:
            return UUID(v["u"])
        if "t" in v:
            return datetime.fromisoformat(v["t"])
        if "d" in v:
            return date.fromisoformat(v["d"])
    return v


def filters_fingerprint(filters: Mapping[str, Any]) -> str:
    canon = json.dumps(
        {k: v for k, v in sorted(filters.items()) if v is not None}, default=str, sort_keys=True
    )
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def encode_cursor(key: Sequence[Any], filters: Mapping[str, Any]) -> str:
    doc = {"k": [_jsonable(v) for v in key], "f": filters_fingerprint(filters)}
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, filters: Mapping[str, Any]) -> list[Any] | None:
    """The sort key the cursor resumes after, or None for the first page. A cursor that is
    malformed or was issued for other filters is a 422."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        doc = json.loads(raw)
        key = [_restore(v) for v in doc["k"]]
        fingerprint = doc["f"]
    except (ValueError, KeyError, TypeError) as exc:
        raise Unprocessable(
            "The cursor is not valid.", errors=[FieldError(field="cursor", message="malformed")]
        ) from exc
    if fingerprint != filters_fingerprint(filters):
        raise Unprocessable(
            "The cursor belongs to a query with other filters.",
            errors=[FieldError(field="cursor", message="does not match the filters")],
        )
    return key


def page_of(
    rows: Sequence[T],
    *,
    limit: int,
    key: Callable[[T], Sequence[Any]],
    filters: Mapping[str, Any],
) -> tuple[list[T], str | None]:
    """Cut a `limit + 1` fetch to a page and the cursor for the next one."""
    items = list(rows[:limit])
    more = len(rows) > limit
    return items, (encode_cursor(key(items[-1]), filters) if more and items else None)
