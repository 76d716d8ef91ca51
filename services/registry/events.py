"""The registry's domain events, written to `registry.outbox` in the transaction of the change
(see the README's event catalogue). Member events carry the member's whole projected state
and never a sensitive field: no ID number, phone or address."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from common.events.outbox import RowEvents, emit, emit_rows
from services.registry.models import Member, Org, Transfer, outbox


async def _paths(session: AsyncSession, *org_ids: uuid.UUID | None) -> dict[uuid.UUID, str]:
    wanted = {i for i in org_ids if i is not None}
    if not wanted:
        return {}
    rows = await session.execute(select(col(Org.id), col(Org.path)).where(col(Org.id).in_(wanted)))
    return {row.id: str(row.path) for row in rows}


def org_data(org: Org) -> dict[str, Any]:
    return {
        "org_id": org.id,
        "parent_id": org.parent_id,
        "code": org.code,
        "name": org.name,
        "kind": org.kind,
        "area_level": org.area_level,
        "path": org.path,
        "version": org.version,
    }


async def emit_org(
    session: AsyncSession,
    org: Org,
    *,
    type: str,
    old_path: str | None = None,
    old_parent_id: uuid.UUID | None = None,
) -> None:
    """`org.created`, `org.updated`, or `org.moved` (with the old path and parent: the
    whole subtree moved with the org)."""
    data = org_data(org)
    if type == "org.moved":
        data |= {"old_path": old_path, "old_parent_id": old_parent_id}
    await emit(
        session,
        outbox,
        type=type,
        aggregate_type="org",
        aggregate_id=org.id,
        aggregate_version=org.version,
        payload=data,
        org_paths=[org.path, old_path],
        shard_key=org.shard_key,
    )


async def emit_member(
    session: AsyncSession,
    member: Member,
    *,
    type: str,
    previous_status: str | None = None,
) -> None:
    """`member.registered`, `member.updated`, `member.status_changed` (with the previous
    status) or `member.merged` (with `merged_into`), each with the member's state after
    the change."""
    paths = await _paths(session, member.org_id, member.residence_org_id, member.group_id)
    data, org_paths = member_data(member, paths)
    if type == "member.status_changed":
        data["previous_status"] = previous_status
    await emit(
        session,
        outbox,
        type=type,
        aggregate_type="member",
        aggregate_id=member.id,
        aggregate_version=member.version,
        payload=data,
        org_paths=org_paths,
        shard_key=member.shard_key,
    )


# `member.registered` for members just inserted in bulk: the payload `member_data` gives
# (tests hold the two to the same JSON), made by the database from the stored row.
MEMBERS_REGISTERED = RowEvents(
    table=outbox,
    aggregate_type="member",
    rows="JOIN registry.members AS m ON m.id = w.id "
    "LEFT JOIN registry.orgs AS o ON o.id = m.org_id "
    "LEFT JOIN registry.orgs AS r ON r.id = m.residence_org_id",
    aggregate_id="m.id",
    aggregate_version="m.version",
    shard_key="m.shard_key",
    org_paths=("o.path", "r.path"),
    payload={
        "member_id": "m.id",
        "name": "m.name",
        "birth_date": "m.birth_date",
        "education": "m.education",
        "status": "m.status",
        "category": "m.category",
        "relation": "m.relation",
        "membership": "m.membership",
        "org_id": "m.org_id",
        "org_path": "CAST(o.path AS text)",
        "residence_org_id": "m.residence_org_id",
        "residence_path": "CAST(r.path AS text)",
        "group_id": "m.group_id",
        "skills": "coalesce(to_jsonb(m.skills), CAST('[]' AS jsonb))",
        "merged_into": "m.merged_into",
        "version": "m.version",
    },
)


async def emit_members_registered(session: AsyncSession, member_ids: Iterable[uuid.UUID]) -> None:
    """`member.registered` for each of many members just inserted (bulk writes), in the
    order given, in one statement: 100,000 payloads are not built and sent from here."""
    await emit_rows(session, MEMBERS_REGISTERED, member_ids, type="member.registered")


def member_data(
    member: Member, paths: Mapping[uuid.UUID, str]
) -> tuple[dict[str, Any], list[str | None]]:
    """A member event's payload and the org paths it concerns."""
    org_path = paths.get(member.org_id) if member.org_id else None
    residence_path = paths.get(member.residence_org_id) if member.residence_org_id else None
    data: dict[str, Any] = {
        "member_id": member.id,
        "name": member.name,
        "birth_date": member.birth_date,
        "education": member.education,
        "status": member.status,
        "category": member.category,
        "relation": member.relation,
        "membership": member.membership,
        "org_id": member.org_id,
        "org_path": org_path,
        "residence_org_id": member.residence_org_id,
        "residence_path": residence_path,
        "group_id": member.group_id,
        "skills": list(member.skills or []),
        "merged_into": member.merged_into,
        "version": member.version,
    }
    return data, [org_path, residence_path]


async def emit_member_change(
    session: AsyncSession, member: Member, *, previous_status: str
) -> None:
    """`member.status_changed` when the status moved, else `member.updated`."""
    if member.status != previous_status:
        await emit_member(
            session, member, type="member.status_changed", previous_status=previous_status
        )
    else:
        await emit_member(session, member, type="member.updated")


async def emit_transfer(session: AsyncSession, transfer: Transfer, *, type: str) -> None:
    """`transfer.issued` (letter out) or `transfer.completed` (received), with the member's
    key (the transfer carries it); the member's own change of org comes as a member event in
    the same transaction."""
    paths = await _paths(session, transfer.from_org_id, transfer.to_org_id)
    from_path = paths.get(transfer.from_org_id) if transfer.from_org_id else None
    to_path = paths.get(transfer.to_org_id) if transfer.to_org_id else None
    data = {
        "transfer_id": transfer.id,
        "member_id": transfer.member_id,
        "status": transfer.status,
        "from_org_id": transfer.from_org_id,
        "from_org_path": from_path,
        "from_external": _external(transfer.from_external_name, transfer.from_external_code),
        "to_org_id": transfer.to_org_id,
        "to_org_path": to_path,
        "to_external": _external(transfer.to_external_name, transfer.to_external_code),
        "letter_no": transfer.letter_no,
        "valid_until": transfer.valid_until,
        "version": transfer.version,
    }
    await emit(
        session,
        outbox,
        type=type,
        aggregate_type="transfer",
        aggregate_id=transfer.id,
        aggregate_version=transfer.version,
        payload=data,
        org_paths=[from_path, to_path],
        shard_key=transfer.shard_key,
    )


def _external(name: str | None, code: str | None) -> dict[str, Any] | None:
    return None if name is None else {"name": name, "code": code}
