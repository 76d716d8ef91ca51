"""The registry's domain events, written to `registry.outbox` in the transaction of the change
(see the README's event catalogue). Member events carry the member's whole projected state
and never a sensitive field: no ID number, phone or address."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from common.events.outbox import EventRow, emit, emit_many
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


async def emit_members_registered(
    session: AsyncSession,
    members: Sequence[Member | Mapping[str, Any] | SimpleNamespace],
    *,
    paths: Mapping[uuid.UUID, str],
) -> None:
    """`member.registered` for each of many new members in one statement (bulk writes),
    each with its `shard_key`.
    A member may be given as the column values just inserted (a mapping or a plain
    object: building ORM instances for 100,000 rows costs seconds); columns left out read
    as a fresh row has them. `paths` holds the path of every org they reference."""
    events = []
    for given in members:
        if type(given) is not dict and isinstance(given, Member):
            data, org_paths = member_data(given, paths)
            member_id, key, version = given.id, given.shard_key, given.version
        else:
            row = given if isinstance(given, Mapping) else vars(given)
            data, org_paths = _row_data(row, paths)
            member_id, key, version = row["id"], row["shard_key"], data["version"]
        events.append(
            EventRow(
                type="member.registered",
                aggregate_type="member",
                aggregate_id=member_id,
                aggregate_version=version,
                payload=data,
                org_paths=org_paths,
                shard_key=key,
            )
        )
    await emit_many(session, outbox, events)


# A just-inserted members row: NULL or the server default in every column not given.
_FRESH_MEMBER: dict[str, Any] = dict.fromkeys(Member.model_fields) | {
    "status": "active",
    "version": 1,
    "skills": [],
    "resume": [],
}


def _id(value: Any) -> Any:
    """An id as the payload's JSON has it: the driver's own UUIDs as their text (the
    serializer takes a slow path for them, 20,000 payloads at a time); the same JSON."""
    return value if value is None or type(value) is uuid.UUID else str(value)


def _row_data(
    row: Mapping[str, Any], paths: Mapping[uuid.UUID, str]
) -> tuple[dict[str, Any], list[str | None]]:
    """`member_data` of a members row given as its column values (bulk writes): the same
    payload, read from the mapping (a column left out as a fresh row has it)."""
    get = row.get
    org_id, residence_id = get("org_id"), get("residence_org_id")
    org_path = paths.get(org_id) if org_id else None
    residence_path = paths.get(residence_id) if residence_id else None
    data: dict[str, Any] = {
        "member_id": _id(row["id"]),
        "name": row["name"],
        "birth_date": get("birth_date"),
        "education": get("education"),
        "status": get("status", _FRESH_MEMBER["status"]),
        "category": get("category"),
        "relation": get("relation"),
        "membership": get("membership"),
        "org_id": _id(org_id),
        "org_path": org_path,
        "residence_org_id": _id(residence_id),
        "residence_path": residence_path,
        "group_id": _id(get("group_id")),
        "skills": list(get("skills") or ()),
        "merged_into": _id(get("merged_into")),
        "version": get("version", _FRESH_MEMBER["version"]),
    }
    return data, [org_path, residence_path]


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
