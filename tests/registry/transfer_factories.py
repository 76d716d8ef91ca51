"""Builders for transfer tests: members inserted as rows (the members API is built
elsewhere), direct edits of dates the API never lets one set, and small request helpers."""

from __future__ import annotations

import itertools
import uuid
from datetime import date, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.registry.models import Member, Org, Transfer, audit_log
from services.registry.service.shard_keys import member_key, org_key, set_code, sync_upper_org

TRANSFERS = "/api/v1/registry/transfers"

Sessions = async_sessionmaker[AsyncSession]

_names = itertools.count(1)


async def make_member(
    sessions: Sessions,
    *,
    org_id: str | uuid.UUID | None,
    status: str = "active",
    group_id: str | uuid.UUID | None = None,
    residence_org_id: str | uuid.UUID | None = None,
    name: str | None = None,
) -> str:
    """A member row with the minimum fields; returns its id as a string."""
    async with sessions() as s:
        key = await member_key(
            s,
            org_id=uuid.UUID(str(org_id)) if org_id else None,
            residence_org_id=uuid.UUID(str(residence_org_id)) if residence_org_id else None,
        )
    member = Member(
        id=uuid.uuid4(),
        shard_key=key,
        name=name or f"党员{next(_names)}",
        gender="female",
        birth_date=date(1958, 3, 12),
        membership="full",
        category="retired",
        relation="enrolled",
        status=status,
        org_id=uuid.UUID(str(org_id)) if org_id else None,
        group_id=uuid.UUID(str(group_id)) if group_id else None,
        residence_org_id=uuid.UUID(str(residence_org_id)) if residence_org_id else None,
    )
    async with sessions() as s:
        s.add(member)
        await s.commit()
    return str(member.id)


async def make_org_row(
    sessions: Sessions,
    *,
    parent: dict[str, Any] | None = None,
    kind: str = "branch",
    area_level: str = "community",
) -> dict[str, Any]:
    """An org row inserted directly (for tests on committed data), with its key, code and
    upper-tree rows; returns id, path."""
    async with sessions() as s:
        seq = int(
            await s.scalar(select(text("nextval(pg_get_serial_sequence('registry.orgs', 'seq'))")))
        )
        path = f"{parent['path']}.{seq}" if parent else str(seq)
        parent_org = await s.get(Org, uuid.UUID(parent["id"])) if parent else None
        org_id = uuid.uuid4()
        org = Org(
            id=org_id,
            shard_key=org_key(org_id, parent_org),
            seq=seq,
            code=f"T-{uuid.uuid4().hex[:10]}",
            name=f"组织{seq}",
            kind=kind,
            area_level=area_level,
            parent_id=uuid.UUID(parent["id"]) if parent else None,
            path=path,
        )
        await set_code(s, old=None, new=org.code, org_id=org_id, key=org.shard_key)
        s.add(org)
        await s.flush()
        await sync_upper_org(s, org_id=org_id)
        await s.commit()
    return {"id": str(org.id), "path": path}


async def member_row(sessions: Sessions, member_id: str) -> Member:
    async with sessions() as s:
        member = await s.get(Member, uuid.UUID(member_id))
        assert member is not None
        return member


async def db_today(sessions: Sessions) -> date:
    async with sessions() as s:
        today = await s.scalar(select(func.current_date()))
    assert isinstance(today, date)
    return today


async def set_transfer(sessions: Sessions, transfer_id: str, **values: Any) -> None:
    """Edit columns the API never lets one set (dates in the past); not the status."""
    async with sessions() as s:
        await s.execute(
            update(Transfer).where(Transfer.id == uuid.UUID(transfer_id)).values(**values)
        )
        await s.commit()


async def age_transfer(sessions: Sessions, transfer_id: str, *, days: int) -> None:
    """Pretend the transfer was requested (and issued, if it was) `days` days ago."""
    async with sessions() as s:
        await s.execute(
            update(Transfer)
            .where(Transfer.id == uuid.UUID(transfer_id))
            .values(
                created_at=Transfer.created_at - timedelta(days=days),
                issued_at=Transfer.issued_at - timedelta(days=days),
            )
        )
        await s.commit()


async def request_transfer(
    c: httpx.AsyncClient, member_id: str, *, to_org_id: str | None = None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"member_id": member_id, "reason": "迁居", **extra}
    if to_org_id is not None:
        body["to_org_id"] = to_org_id
    r = await c.post(TRANSFERS, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def issue(
    c: httpx.AsyncClient, transfer_id: str, *, valid_until: date | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"letter_no": f"嘉组转{uuid.uuid4().hex[:6]}"}
    if valid_until is not None:
        body["valid_until"] = valid_until.isoformat()
    r = await c.post(f"{TRANSFERS}/{transfer_id}/issue", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def incoming_body(member_id: str, to_org_id: str, *, valid_until: date) -> dict[str, Any]:
    return {
        "member_id": member_id,
        "from_external": {"name": "杭州市某机关党委", "code": "HZ-001"},
        "to_org_id": to_org_id,
        "letter_no": "浙组转〔2026〕118号",
        "valid_until": valid_until.isoformat(),
        "reason": "退休回嘉兴居住",
    }


def as_datetime(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def audit_entries(sessions: Sessions, record_id: str) -> list[tuple[str, str, str]]:
    """(action, actor, role) of a record's audit trail, oldest first."""
    async with sessions() as s:
        rows = await s.execute(
            select(audit_log.c.action, audit_log.c.actor, audit_log.c.role)
            .where(audit_log.c.record_id == uuid.UUID(record_id))
            .order_by(audit_log.c.at, audit_log.c.action)
        )
        return [(r.action, r.actor, r.role) for r in rows]
