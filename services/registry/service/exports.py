"""Exporting registration cards as xlsx or csv: the list's filters and scope, the import's
columns (an export re-imports as `unchanged`), ID numbers masked, phones as the caller may
see them, and text that could run as a formula kept as text."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from common import audit
from common.auth import Principal
from services.registry.dependencies import FieldCrypto
from services.registry.models import Member, Org, audit_log
from services.registry.service.card_sheet import (
    COLUMNS,
    Lang,
    SheetFormat,
    SheetWriter,
    header_of,
    label_of,
)
from services.registry.service.member_card import (
    ORG_REFS,
    PHONE,
    forbid_auditors,
    sees_full_phone,
)
from services.registry.service.members import member_list_query, subtree_forms

BATCH = 1000
SLICE = 1_048_576  # bytes per streamed piece of an xlsx


async def start_export(
    session: AsyncSession, *, principal: Principal, filters: dict[str, Any]
) -> Select[tuple[Member]]:
    """Checks the caller and the filters (errors surface before any byte is sent) and
    records the export; returns the query whose rows `stream_export` writes."""
    forbid_auditors(principal)
    small = await subtree_forms(session, filters)
    query = member_list_query(principal=principal, filters=filters, small=small)
    await audit.record(session, audit_log, principal, action="member.export", resource="member")
    return query


async def stream_export(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    query: Select[tuple[Member]],
    principal: Principal,
    crypto: FieldCrypto,
    fmt: SheetFormat,
    lang: Lang,
) -> AsyncIterator[bytes]:
    """The file, piece by piece: read through a server-side cursor in its own session
    (the request's has ended by the time the body is sent), csv flushed every batch."""
    writer = SheetWriter(fmt, [header_of(c, lang) for c in COLUMNS])
    codes: dict[uuid.UUID, str] = {}
    async with sessionmaker() as session:
        result = await session.stream_scalars(
            query.order_by(col(Member.id)).execution_options(yield_per=BATCH)
        )
        async for batch in result.partitions():
            await _learn_codes(session, batch, codes)
            for member in batch:
                writer.append(
                    _cells(member, codes=codes, principal=principal, crypto=crypto, lang=lang)
                )
            if fmt is SheetFormat.csv:
                yield writer.take()
    data = writer.finish()
    for start in range(0, len(data), SLICE):
        yield data[start : start + SLICE]


async def _learn_codes(
    session: AsyncSession, members: Sequence[Member], codes: dict[uuid.UUID, str]
) -> None:
    wanted = {getattr(m, f) for m in members for f in ORG_REFS} - codes.keys() - {None}
    if wanted:
        rows = await session.execute(
            select(col(Org.id), col(Org.code)).where(col(Org.id).in_(wanted))
        )
        codes.update({r.id: r.code for r in rows})


def _cells(
    member: Member,
    *,
    codes: dict[uuid.UUID, str],
    principal: Principal,
    crypto: FieldCrypto,
    lang: Lang,
) -> list[Any]:
    phone = member.phone_masked
    if member.phone_cipher is not None and sees_full_phone(principal, member):
        phone = crypto.keys.decrypt(member.phone_cipher, purpose=PHONE)
    separator = "、" if lang is Lang.zh else "; "
    values: dict[str, Any] = {
        "id_number": member.id_number_masked,
        "phone": phone,
        "org_code": codes.get(member.org_id) if member.org_id else None,
        "residence_org_code": codes.get(member.residence_org_id)
        if member.residence_org_id
        else None,
        "group_code": codes.get(member.group_id) if member.group_id else None,
        "skills": separator.join(member.skills) or None,
        "resume": "\n".join(f"{e['from']}~{e.get('to') or ''} {e['text']}" for e in member.resume)
        or None,
    }
    out: list[Any] = []
    for column in COLUMNS:
        if column.key in values:
            out.append(values[column.key])
        elif column.labels:
            out.append(label_of(column, getattr(member, column.key), lang))
        else:
            out.append(getattr(member, column.key))
    return out
