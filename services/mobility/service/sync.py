"""Work-unit sync: a unit's API key (scope `sync`) puts its in-service members; each row is
checked on its own, persons are found or registered through the registry's bulk endpoint
(matched by ID number across the whole registry: never a second record), and the unit's
links are upserted in set-based statements. `full` ends the links of members the file no
longer lists; `delta` only upserts. `changes` gives the unit back report status and
feedback after a cursor."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import and_, bindparam, func, literal, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession

from common import audit
from common.auth import Principal, Role
from common.bulk import insert_rows
from common.errors import Forbidden
from common.pagination import decode_cursor, encode_cursor
from services.mobility.errors import OrgNotFound
from services.mobility.models import (
    LinkStatus,
    audit_log,
    change_seq,
    feedback,
    links,
    orgs,
)
from services.mobility.schemas import (
    Change,
    ChangesPage,
    SyncMember,
    SyncRequest,
    SyncResult,
    SyncRowError,
)
from services.mobility.service.events import emit_links
from services.mobility.service.keys import member_keys

lc = links.c

# (persons for the registry's resolve endpoint) → its per-person results
Resolver = Callable[[list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]

_row_adapter: TypeAdapter[SyncMember] = TypeAdapter(SyncMember)

RESOLVE_CONCURRENCY = 2  # registry calls in flight at once during one sync


def authorize_sync(principal: Principal, org_id: uuid.UUID, *, reading: bool = False) -> None:
    """Only the org's own API key: scope `sync` (or `read` to read the changes)."""
    if principal.role is not Role.integration:
        raise Forbidden("The work-unit sync takes the unit's API key.")
    wanted = {"sync", "read"} if reading else {"sync"}
    if not wanted & principal.scopes:
        raise Forbidden("The API key lacks the scope `sync`.")
    if principal.org_id != org_id:
        raise OrgNotFound("No such organization for your key.")


def _message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


async def sync_members(
    session: AsyncSession,
    *,
    org_id: uuid.UUID,
    data: SyncRequest,
    principal: Principal,
    resolve: Resolver,
    chunk: int,
) -> SyncResult:
    authorize_sync(principal, org_id)
    unit = (
        await session.execute(select(orgs.c.org_id, orgs.c.name).where(orgs.c.org_id == org_id))
    ).first()
    if unit is None:
        raise OrgNotFound("The unit's org is not known yet.")
    errors: list[SyncRowError] = []
    rows: dict[int, SyncMember] = {}
    listed: set[str] = set()
    for index, raw in enumerate(data.members):
        external = raw.get("external_id") if isinstance(raw, dict) else None
        external = str(external) if external is not None else None
        try:
            row = _row_adapter.validate_python(raw)
        except ValidationError as exc:
            errors.append(SyncRowError(index=index, external_id=external, message=_message(exc)))
            if external:
                listed.add(external)
            continue
        if row.external_id in listed:
            errors.append(
                SyncRowError(
                    index=index, external_id=external, message="external_id: repeated in this file"
                )
            )
            continue
        listed.add(row.external_id)
        rows[index] = row
    persons = [
        {
            "index": i,
            "external_id": r.external_id,
            "name": r.name,
            "id_number": r.id_number,
            "phone": r.phone,
            "residence_community_code": r.residence_community_code,
            "address": r.address,
            "employer": unit.name,
            # `category` is the registry's default; the workplace is this side's link.
        }
        for i, r in rows.items()
    ]
    resolved: dict[int, dict[str, Any]] = {}
    for results in await _resolve_all(resolve, persons, chunk):
        for result in results:
            resolved[int(result["index"])] = result
    wanted: dict[uuid.UUID, tuple[SyncMember, uuid.UUID]] = {}
    for index, row in rows.items():
        result = resolved.get(index) or {"error": "not resolved"}
        if result.get("error") or not result.get("member_id") or not result.get("residence_org_id"):
            message = result.get("error") or "residence_community_code: no such community"
            errors.append(SyncRowError(index=index, external_id=row.external_id, message=message))
            continue
        member_id = uuid.UUID(str(result["member_id"]))
        if member_id in wanted:
            errors.append(
                SyncRowError(
                    index=index,
                    external_id=row.external_id,
                    message="id_number: the same person is listed twice",
                )
            )
            continue
        wanted[member_id] = (row, uuid.UUID(str(result["residence_org_id"])))
    current = {
        r.member_id: r
        for r in await session.execute(
            select(lc.id, lc.member_id, lc.residence_org_id, lc.mode, lc.external_id).where(
                lc.workplace_org_id == org_id, lc.status != LinkStatus.ended.value
            )
        )
    }
    # The new links' keys: their members', one statement for all.
    new_members = {m: residence for m, (_, residence) in wanted.items() if m not in current}
    keys = dict(zip(new_members, await member_keys(session, new_members), strict=True))
    new_rows: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    unchanged = 0
    for member_id, (row, residence) in wanted.items():
        link = current.get(member_id)
        if link is None:
            new_rows.append(
                {
                    "id": uuid.uuid4(),
                    "shard_key": keys[member_id],
                    "member_id": member_id,
                    "workplace_org_id": org_id,
                    "residence_org_id": residence,
                    "mode": row.mode.value,
                    "external_id": row.external_id,
                }
            )
        elif (link.residence_org_id, link.mode, link.external_id) != (
            residence,
            row.mode.value,
            row.external_id,
        ):
            changed.append(
                {
                    "b_id": link.id,
                    "b_residence": residence,
                    "b_mode": row.mode.value,
                    "b_external": row.external_id,
                }
            )
        else:
            unchanged += 1
    created = await _insert(session, new_rows)
    if changed:
        await session.execute(
            update(links)
            .where(lc.id == bindparam("b_id"))
            .values(
                residence_org_id=bindparam("b_residence"),
                mode=bindparam("b_mode"),
                external_id=bindparam("b_external"),
                version=lc.version + 1,
                updated_at=func.now(),
                change_seq=change_seq.next_value(),
            )
            .execution_options(synchronize_session=False),
            changed,
        )
    ended: list[Any] = []
    if data.mode == "full":
        gone = [
            link.id
            for member_id, link in current.items()
            if member_id not in wanted
            and (link.external_id is None or link.external_id not in listed)
        ]
        if gone:
            ended = list(
                await session.execute(
                    update(links)
                    .where(lc.id == func.any(gone))
                    .values(
                        status=LinkStatus.ended.value,
                        ended_on=date.today(),
                        version=lc.version + 1,
                        updated_at=func.now(),
                        change_seq=change_seq.next_value(),
                    )
                    .returning(links)
                )
            )
    await emit_links(session, [r._mapping for r in created], type="link.created")
    await emit_links(session, [r._mapping for r in ended], type="link.ended")
    await audit.record(
        session, audit_log, principal, action="sync.members", resource="org", record_id=org_id
    )
    errors.sort(key=lambda e: e.index)
    return SyncResult(
        created=len(created),
        updated=len(changed),
        unchanged=unchanged,
        ended=len(ended),
        errors=errors,
    )


async def _resolve_all(
    resolve: Resolver, persons: list[dict[str, Any]], chunk: int
) -> list[list[dict[str, Any]]]:
    """The registry's answers for every chunk of `persons`, in order. Up to
    `RESOLVE_CONCURRENCY` chunks are in flight at once (the registry's statements run
    while this side and the other chunks do their Python), unless one ID number recurs
    in the file: then two chunks could register the same person in two transactions
    that wait on each other, so they go one after another as before."""
    parts = [persons[start : start + chunk] for start in range(0, len(persons), chunk)]
    numbers = {str(p["id_number"]).strip().upper() for p in persons}
    if len(parts) < 2 or len(numbers) < len(persons):
        return [await resolve(part) for part in parts]
    gate = asyncio.Semaphore(RESOLVE_CONCURRENCY)
    failed = False

    async def one(part: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        nonlocal failed
        async with gate:
            if failed:  # no more calls once one failed (the sync fails as a whole)
                return None
            try:
                return await resolve(part)
            except BaseException:
                failed = True
                raise

    answers = await asyncio.gather(*(one(part) for part in parts), return_exceptions=True)
    results: list[list[dict[str, Any]]] = []
    for answer in answers:  # the first failure in file order, as one-by-one calls raise it
        if isinstance(answer, BaseException):
            raise answer
        if answer is not None:  # None only after a failure, raised above
            results.append(answer)
    return results


async def _insert(session: AsyncSession, rows: list[dict[str, Any]]) -> list[Any]:
    if not rows:
        return []
    # One set-based statement (`common.bulk`): every column an array, not a row of params.
    return await insert_rows(
        session, links, rows, on_conflict="ON CONFLICT DO NOTHING", returning="*"
    )


async def changes(
    session: AsyncSession,
    *,
    org_id: uuid.UUID,
    principal: Principal,
    cursor: str | None,
    limit: int,
) -> ChangesPage:
    """Report status and feedback of the unit's links changed after `cursor`."""
    authorize_sync(principal, org_id, reading=True)
    filters = {"org_id": org_id}
    after = decode_cursor(cursor, filters)
    since = int(after[0]) if after else 0
    fc = feedback.c
    link_changes = select(
        literal("link").label("kind"),
        lc.change_seq.label("seq"),
        lc.id.label("link_id"),
        lc.external_id,
        lc.member_id,
        lc.status,
        lc.reported_on,
        lc.ended_on,
        literal(None).label("year"),
        literal(None).label("rating"),
        literal(None).label("comment"),
    ).where(lc.workplace_org_id == org_id, lc.change_seq > since)
    feedback_changes = (
        select(
            literal("feedback").label("kind"),
            fc.change_seq.label("seq"),
            lc.id.label("link_id"),
            lc.external_id,
            lc.member_id,
            lc.status,
            lc.reported_on,
            lc.ended_on,
            fc.year,
            fc.rating,
            fc.comment,
        )
        .join(links, and_(lc.id == fc.link_id))
        .where(lc.workplace_org_id == org_id, fc.change_seq > since)
    )
    both = union_all(link_changes, feedback_changes).subquery()
    rows = (await session.execute(select(both).order_by(both.c.seq).limit(limit + 1))).all()
    items = rows[:limit]
    last = int(items[-1].seq) if items else since
    return ChangesPage(
        items=[
            Change(
                kind=r.kind,
                link_id=r.link_id,
                external_id=r.external_id,
                member_id=r.member_id,
                status=r.status,
                reported_on=r.reported_on,
                ended_on=r.ended_on,
                year=r.year,
                rating=r.rating,
                comment=r.comment,
            )
            for r in items
        ],
        next_cursor=encode_cursor([last], filters),
        has_more=len(rows) > limit,
    )
