"""One audit trail out of many: the gateway's own log and every service's
`GET /api/v1/<svc>/audit-log`, merged in one keyset order (`at` desc, `id` desc).

A page reads up to `limit` entries from each source after the cursor's position and keeps
the `limit` newest of their union (a k-way merge). The cursor is the composite key
`(at, id)` of the last entry given out. One position serves every source exactly: an entry
newer than it, in any source, was on this page or an earlier one (a page holds everything
newer than its last entry), and ids are unique, so nothing is repeated or skipped. A
source that does not answer is named in `incomplete`; later pages carry on from the same
position, so the order the client sees never goes back in time."""

from __future__ import annotations

import asyncio
import heapq
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from common.audit import AuditEntry
from common.context import request_id_var
from common.errors import FieldError, Unprocessable
from common.pagination import decode_cursor, encode_cursor
from gateway.models import audit_log

log = logging.getLogger("lianxin.gateway.audit")

GATEWAY = "gateway"
# The filters every source understands (the same names as `common.audit.audit_router`).
FILTER_NAMES = (
    "actor",
    "action",
    "resource",
    "record_id",
    "subject_member_id",
    "since",
    "until",
)

Key = tuple[datetime, uuid.UUID]


@dataclass(frozen=True)
class MergedPage:
    items: list[AuditEntry]
    next_cursor: str | None
    incomplete: list[str]


@dataclass(frozen=True)
class _Fetched:
    items: list[AuditEntry]
    more: bool  # the source has entries beyond `items`


def _key(entry: AuditEntry) -> Key:
    return (entry.at, entry.id)


def _decode_position(cursor: str | None, filters: Mapping[str, Any]) -> Key | None:
    key = decode_cursor(cursor, filters)
    if key is None:
        return None
    try:
        at, entry_id = key
        if not isinstance(at, datetime) or not isinstance(entry_id, uuid.UUID):
            raise TypeError(key)
    except (ValueError, TypeError) as exc:
        raise Unprocessable(
            "The cursor is not valid.", errors=[FieldError(field="cursor", message="malformed")]
        ) from exc
    return (at, entry_id)


async def _local(
    session: AsyncSession, filters: Mapping[str, Any], after: Key | None, limit: int
) -> _Fetched:
    query = select(audit_log)
    for name in ("actor", "action", "resource", "record_id", "subject_member_id"):
        if filters.get(name) is not None:
            query = query.where(audit_log.c[name] == filters[name])
    if filters.get("since") is not None:
        query = query.where(audit_log.c.at >= filters["since"])
    if filters.get("until") is not None:
        query = query.where(audit_log.c.at < filters["until"])
    if after is not None:
        query = query.where(tuple_(audit_log.c.at, audit_log.c.id) < tuple_(*after))
    query = query.order_by(audit_log.c.at.desc(), audit_log.c.id.desc()).limit(limit + 1)
    rows = (await session.execute(query)).mappings().all()
    items = [AuditEntry(**r, service=GATEWAY) for r in rows]
    return _Fetched(items[:limit], len(items) > limit)


class RemoteTrails:
    """Reads services' trails with the caller's own credentials (the services decide what
    the caller may see)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        upstreams: Mapping[str, str],
        *,
        authorization: str,
        timeout: httpx.Timeout,
    ) -> None:
        self._http = http
        self._upstreams = upstreams
        self._authorization = authorization
        self._timeout = timeout

    @property
    def services(self) -> list[str]:
        return sorted(self._upstreams)

    async def fetch(
        self, service: str, filters: Mapping[str, Any], after: Key | None, limit: int
    ) -> _Fetched | None:
        """A page of the service's trail after `after`; None when it does not answer."""
        params: dict[str, str] = {"limit": str(limit)}
        for name in FILTER_NAMES:
            value = filters.get(name)
            if value is not None:
                params[name] = value.isoformat() if isinstance(value, datetime) else str(value)
        if after is not None:
            # The service's own keyset cursor, bound to the same filters it will see.
            params["cursor"] = encode_cursor(list(after), {n: filters.get(n) for n in FILTER_NAMES})
        headers = {"authorization": self._authorization, "accept": "application/json"}
        rid = request_id_var.get()
        if rid:
            headers["x-request-id"] = rid
        url = httpx.URL(self._upstreams[service]).join(f"/api/v1/{service}/audit-log")
        try:
            response = await self._http.get(
                url, params=params, headers=headers, timeout=self._timeout
            )
        except httpx.HTTPError as exc:
            log.warning("audit source %s unavailable: %s", service, type(exc).__name__)
            return None
        if response.status_code != 200:
            log.warning("audit source %s answered %d", service, response.status_code)
            return None
        try:
            page = response.json()
            items = [AuditEntry.model_validate({**e, "service": service}) for e in page["items"]]
        except (ValueError, KeyError, TypeError):
            log.warning("audit source %s answered something else than a page", service)
            return None
        return _Fetched(items, bool(page.get("next_cursor")))


async def merged_page(
    session: AsyncSession,
    *,
    remote: RemoteTrails,
    filters: Mapping[str, Any],
    cursor_filters: Mapping[str, Any],
    limit: int,
    cursor: str | None,
) -> MergedPage:
    """The next `limit` entries of the merged trail after `cursor`."""
    after = _decode_position(cursor, cursor_filters)
    # The gateway's own log first (the request's session), then the services together.
    local = await _local(session, filters, after, limit)
    answers = await asyncio.gather(
        *(remote.fetch(s, filters, after, limit) for s in remote.services)
    )
    fetched = [local]
    incomplete: list[str] = []
    for service, answer in zip(remote.services, answers, strict=True):
        if answer is None:
            incomplete.append(service)
        else:
            fetched.append(answer)
    ordered = heapq.nlargest(limit + 1, (e for f in fetched for e in f.items), key=_key)
    items = ordered[:limit]
    more = len(ordered) > limit or any(f.more for f in fetched)
    next_cursor = encode_cursor(list(_key(items[-1])), cursor_filters) if items and more else None
    return MergedPage(items, next_cursor, incomplete)
