"""The distribution key (common/sharding.py) of the mobility rows that belong to a member:
cards and their contacts, links and their feedback, transfers, organizational life.

A row takes its member's key in the projection (`members.shard_key`) when it is written,
`UNSHARDED` while the projection does not know the member yet (for the work-unit sync's
newly registered persons: their residence org's key, which is what the registry gives
them). When the projection's key of a member changes — their own event with another key
(the first one included), or an org above them moving to another county — the registry
consumer re-keys their rows in the same transaction (`rekey`), so a row's key is always
its member's. Events keep the key they were written with (the outbox is immutable)."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import ColumnElement, Table, TextClause, func, literal, select, text
from sqlalchemy.dialects.postgresql import UUID as PGUUID
from sqlalchemy.ext.asyncio import AsyncSession

from common.sharding import UNSHARDED
from services.mobility.models import (
    last_org_life,
    links,
    members,
    mobile_cards,
    transfers,
)

# The tables holding the member id themselves; contacts and feedback follow their card
# and link (foreign keys `ON UPDATE CASCADE`).
BY_MEMBER: tuple[Table, ...] = (mobile_cards, links, transfers, last_org_life)


def member_key(member_id: Any, *, share: bool = False) -> ColumnElement[Any]:
    """SQL: the key of `member_id` (a value or a column) in the projection. `share` locks
    the projected member (`FOR SHARE`) until the writer commits, so a re-keying of that
    member waits for the row written with its key and then sees it; only for a writer that
    holds no lock on another of the member's rows (the re-keying takes those after the
    member's: the other order deadlocks)."""
    known = select(members.c.shard_key).where(members.c.member_id == member_id)
    if share:
        known = known.with_for_update(read=True)
    return func.coalesce(known.scalar_subquery(), literal(UNSHARDED, PGUUID(as_uuid=True)))


# One row, one array in the order given: no per-row work on this side.
_MEMBER_KEYS = text(
    """SELECT array_agg(coalesce(m.shard_key, o.shard_key, CAST(:unsharded AS uuid))
        ORDER BY w.n)
    FROM unnest(CAST(:members AS uuid[]), CAST(:residences AS uuid[]))
        WITH ORDINALITY AS w(member_id, org_id, n)
    LEFT JOIN mobility.members AS m ON m.member_id = w.member_id
    LEFT JOIN mobility.orgs AS o ON o.org_id = w.org_id"""
)


async def member_keys(
    session: AsyncSession, residences: Mapping[uuid.UUID, uuid.UUID]
) -> list[uuid.UUID]:
    """The keys of many members (`{member: their residence org}`) in one statement: each
    one's key in the projection; for a member it does not know yet (a person the
    registry has just registered for the work-unit sync) the key the registry gives a
    person without a relation org: their residence org's, else `UNSHARDED`. The member's
    own event re-keys the rows if that guess was wrong. The keys come in the order of
    `residences`."""
    if not residences:
        return []
    keys = await session.scalar(
        _MEMBER_KEYS,
        {
            "members": list(residences),
            "residences": list(residences.values()),
            "unsharded": UNSHARDED,
        },
    )
    return list(keys)


def _rekeying(moved: str) -> TextClause:
    """One statement: the members `moved` selects, and each of the tables holding a member
    id updated where a row's key differs from its member's; the number of rows changed."""
    updates = ",\n".join(
        f"""rekeyed_{t.name} AS (
            UPDATE {t.fullname} AS t SET shard_key = m.shard_key FROM moved AS m
            WHERE t.member_id = m.member_id AND t.shard_key <> m.shard_key RETURNING 1)"""  # noqa: S608
        for t in BY_MEMBER
    )
    changed = " + ".join(f"(SELECT count(*) FROM rekeyed_{t.name})" for t in BY_MEMBER)  # noqa: S608
    return text(
        f"""WITH moved AS (
            SELECT member_id, shard_key FROM {members.fullname}
            WHERE ({moved}) AND shard_key IS NOT NULL),
        {updates}
        SELECT {changed}"""  # noqa: S608 - names from the tables
    )


# Built once (a text statement: no per-call construction, one prepared statement each).
_REKEY_MEMBERS = _rekeying("member_id = ANY(CAST(:ids AS uuid[]))")
_REKEY_UNDER = _rekeying(
    "org_path <@ CAST(CAST(:path AS text) AS ltree) "
    "OR residence_path <@ CAST(CAST(:path AS text) AS ltree)"
)


async def rekey(
    session: AsyncSession,
    *,
    member_ids: Collection[uuid.UUID] = (),
    under: str | None = None,
) -> int:
    """Every row of the members `member_ids`, and of the members whose relation or
    residence org lies under the path `under`, whose key differs from the member's key in
    the projection takes that key, in the four tables holding the member id; contacts and
    feedback follow their card and link (`ON UPDATE CASCADE`). Returns how many of those
    rows changed."""
    changed = 0
    if member_ids:
        ids = list(member_ids)
        changed += int(await session.scalar(_REKEY_MEMBERS, {"ids": ids}) or 0)
    if under is not None:
        changed += int(await session.scalar(_REKEY_UNDER, {"path": under}) or 0)
    return changed
