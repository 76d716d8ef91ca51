"""Work-unit sync: a unit's API key (scope `sync`) puts its in-service members; each row is
checked on its own, persons are found or registered through the registry's bulk endpoint
(matched by ID number across the whole registry: never a second record), and the unit's
links are upserted in set-based statements. `full` ends the links of members the file no
longer lists; `delta` only upserts. `changes` gives the unit back report status and
feedback after a cursor."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from datetime import date
from typing import Any, cast

from asyncpg.pgproto.pgproto import UUID as PgUUID
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import and_, bindparam, func, literal, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession

from common import audit
from common.auth import Principal, Role
from common.bulk import copy_skipping_conflicts, new_ids
from common.errors import Forbidden
from common.pagination import decode_cursor, encode_cursor
from services.mobility.errors import OrgNotFound, RegistryUnavailable
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

# (persons for the registry's resolve endpoint, as columns: `PersonColumns`) → its results,
# as columns too (`ResolveResults`: `member_id`, `created`, `residence_org_id`, `error`), one
# entry per person in the order given
Resolver = Callable[[dict[str, list[Any]]], Awaitable[dict[str, list[Any]]]]

_row_adapter: TypeAdapter[SyncMember] = TypeAdapter(SyncMember)
_rows_adapter: TypeAdapter[list[SyncMember]] = TypeAdapter(list[SyncMember])

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
    # The whole file in one call (a fifth of the time of a call per row); a file with a
    # bad row is checked row by row, for each row's own reason.
    try:
        valid: list[SyncMember] | None = _rows_adapter.validate_python(data.members)
    except ValidationError:
        valid = None
    for index, raw in enumerate(data.members):
        external = raw.get("external_id") if isinstance(raw, dict) else None
        external = str(external) if external is not None else None
        if valid is not None:
            row = valid[index]
        else:
            try:
                row = _row_adapter.validate_python(raw)
            except ValidationError as exc:
                errors.append(
                    SyncRowError(index=index, external_id=external, message=_message(exc))
                )
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
    # The registry's resolve endpoint takes the persons as columns (`PersonColumns`).
    kept = list(rows.values())
    persons: dict[str, list[Any]] = {
        "index": list(rows),
        "external_id": [r.external_id for r in kept],
        "name": [r.name for r in kept],
        "id_number": [r.id_number for r in kept],
        "phone": [r.phone for r in kept],
        "residence_community_code": [r.residence_community_code for r in kept],
        "address": [r.address for r in kept],
        "employer": [unit.name] * len(kept),
        # `category` is the registry's default; the workplace is this side's link.
    }
    # The unit's open links, to tell new members from known ones.
    current = {
        r.member_id: r
        for r in await session.execute(
            select(lc.id, lc.member_id, lc.residence_org_id, lc.mode, lc.external_id).where(
                lc.workplace_org_id == org_id, lc.status != LinkStatus.ended.value
            )
        )
    }
    # Ids parsed by the driver's own UUID type (in C; each org's once): the same values,
    # and the driver sends them on without converting them again.
    parsed: dict[str, uuid.UUID] = {}
    wanted: dict[uuid.UUID, tuple[SyncMember, uuid.UUID]] = {}
    created: list[Any] = []
    changed: list[dict[str, Any]] = []
    unchanged = 0
    pending = list(rows.items())
    done = 0
    # Each chunk's links are written as soon as the registry has answered for it, in file
    # order, while the registry still works on the next chunks.
    async with aclosing(_resolved(resolve, persons, chunk)) as answers:
        async for answer in answers:
            results = zip(
                answer["member_id"], answer["residence_org_id"], answer["error"], strict=True
            )
            part = pending[done : done + len(answer["member_id"])]
            done += len(part)
            new: dict[uuid.UUID, tuple[SyncMember, uuid.UUID]] = {}
            for (index, row), (member, residence, error) in zip(part, results, strict=True):
                if error or not member or not residence:
                    message = error or "residence_community_code: no such community"
                    errors.append(
                        SyncRowError(index=index, external_id=row.external_id, message=message)
                    )
                    continue
                member_id = PgUUID(str(member))
                if member_id in wanted:
                    errors.append(
                        SyncRowError(
                            index=index,
                            external_id=row.external_id,
                            message="id_number: the same person is listed twice",
                        )
                    )
                    continue
                residence_id = parsed.get(residence)
                if residence_id is None:
                    residence_id = parsed[residence] = PgUUID(str(residence))
                wanted[member_id] = (row, residence_id)
                link = current.get(member_id)
                if link is None:
                    new[member_id] = (row, residence_id)
                    continue
                mode = row.mode.value
                if (link.residence_org_id, link.mode, link.external_id) != (
                    residence_id,
                    mode,
                    row.external_id,
                ):
                    changed.append(
                        {
                            "b_id": link.id,
                            "b_residence": residence_id,
                            "b_mode": mode,
                            "b_external": row.external_id,
                        }
                    )
                else:
                    unchanged += 1
            created += await _link_new(session, org_id, new)
    if done != len(pending):  # (never: each chunk is answered or the sync fails)
        raise RegistryUnavailable("The registry did not answer for every person.")
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
    ended: list[uuid.UUID] = []
    if data.mode == "full":
        gone = [
            link.id
            for member_id, link in current.items()
            if member_id not in wanted
            and (link.external_id is None or link.external_id not in listed)
        ]
        if gone:
            ended = list(
                await session.scalars(
                    update(links)
                    .where(lc.id == func.any(gone))
                    .values(
                        status=LinkStatus.ended.value,
                        ended_on=date.today(),
                        version=lc.version + 1,
                        updated_at=func.now(),
                        change_seq=change_seq.next_value(),
                    )
                    .returning(lc.id)
                )
            )
    await emit_links(session, ended, type="link.ended")
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


async def _resolved(
    resolve: Resolver, persons: dict[str, list[Any]], chunk: int
) -> AsyncGenerator[dict[str, list[Any]], None]:
    """The registry's answers for every chunk of `persons` (columns), in order, each as
    soon as it and the ones before it are in. Up to `RESOLVE_CONCURRENCY` chunks are in
    flight at once (the registry's statements run while this side and the other chunks
    do their Python), unless one ID number recurs in the file: then two chunks could
    register the same person in two transactions that wait on each other, so they go one
    after another. The first failure in file order is raised, as one-by-one calls raise
    it; after a failure (or when the caller stops) no more calls go out, and the ones in
    flight are waited for."""
    total = len(persons["index"])
    parts = [
        {name: values[start : start + chunk] for name, values in persons.items()}
        for start in range(0, total, chunk)
    ]
    numbers = {str(n).strip().upper() for n in persons["id_number"]}
    if len(parts) < 2 or len(numbers) < total:
        for part in parts:
            yield await resolve(part)
        return
    gate = asyncio.Semaphore(RESOLVE_CONCURRENCY)
    failed = False

    async def one(part: dict[str, list[Any]]) -> dict[str, list[Any]] | None:
        nonlocal failed
        async with gate:
            if failed:  # no more calls once one failed (the sync fails as a whole)
                return None
            try:
                return await resolve(part)
            except BaseException:
                failed = True
                raise

    calls = [asyncio.ensure_future(one(part)) for part in parts]
    try:
        for call in calls:
            answer = await call  # a failure: raised here, in file order
            if answer is None:  # only after a failure: found below
                break
            yield answer
        else:
            return
        await asyncio.gather(*calls, return_exceptions=True)
        for call in calls:
            if not call.cancelled() and call.exception() is not None:
                raise cast(BaseException, call.exception())
    finally:
        failed = True
        await asyncio.gather(*calls, return_exceptions=True)


async def _link_new(
    session: AsyncSession, org_id: uuid.UUID, new: dict[uuid.UUID, tuple[SyncMember, uuid.UUID]]
) -> list[Mapping[str, Any]]:
    """Links for members the unit had none for (`{member: (row, residence org)}`), with
    their `link.created` events; the rows written (their values as given: the rest are
    the columns' defaults)."""
    if not new:
        return []
    # The new links' keys: their members', one statement for all.
    residences = {m: residence for m, (_, residence) in new.items()}
    keys = await member_keys(session, residences)
    rows = [
        {
            "id": link_id,
            "shard_key": key,
            "member_id": member_id,
            "workplace_org_id": org_id,
            "residence_org_id": residence,
            "mode": row.mode.value,
            "external_id": row.external_id,
        }
        for (member_id, (row, residence)), key, link_id in zip(
            new.items(), keys, new_ids(len(new)), strict=True
        )
    ]
    # One COPY (`common.bulk`); a link another sync of the unit opened meanwhile is skipped.
    created = await copy_skipping_conflicts(
        session, links, rows, on_conflict="ON CONFLICT DO NOTHING"
    )
    await emit_links(session, [link["id"] for link in created], type="link.created")
    return created


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
