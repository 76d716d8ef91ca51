"""The read model of the registry that mobility and activities each keep in their own schema:
orgs (where in the tree) and members (who exists, name, status, org and residence paths),
built only from the registry's events and rebuildable from the start of the stream.

Applying is idempotent and tolerant of order between aggregates:
- each row keeps its aggregate version; an event not newer than the row is ignored
  (every org and member event carries the aggregate's whole projected state);
- paths come from the projection itself: an org's path is its parent's projected path plus
  its own label, a member's paths are its orgs' projected paths (the payload's paths only
  when the org is not known yet); when an org's path changes, its whole subtree — orgs and
  members — is re-pathed. So an `org.moved` applied before or after a concurrent
  `member.registered` or `org.created` under it ends in the same tree."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    and_,
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.dialects.postgresql import UUID as PGUUID
from sqlalchemy.ext.asyncio import AsyncSession

from common.db import LTree
from common.events.outbox import Event
from common.sharding import UNSHARDED, child_shard_key

ORG_EVENTS = frozenset({"org.created", "org.updated", "org.moved"})
MEMBER_EVENTS = frozenset(
    {"member.registered", "member.updated", "member.status_changed", "member.merged"}
)


def projected_orgs_table(metadata: MetaData, schema: str) -> Table:
    return Table(
        "orgs",
        metadata,
        # Unique on its own (lookups and upserts, one node); the key's second half.
        Column("org_id", PGUUID(as_uuid=True), nullable=False, unique=True),
        Column("parent_id", PGUUID(as_uuid=True), nullable=True),
        Column("path", LTree(), nullable=False),
        Column("code", String(64), nullable=False),
        Column("name", String(200), nullable=False),
        Column("kind", String(32), nullable=False),
        Column("area_level", String(32), nullable=False),
        # The distribution key (common/sharding.py), as the registry decided it.
        Column("shard_key", PGUUID(as_uuid=True), nullable=False),
        Column("version", BigInteger, nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint("shard_key", "org_id"),
        Index(f"ix_{schema}_orgs_path_gist", "path", postgresql_using="gist"),
        Index(None, "parent_id"),
        Index(None, "code"),
        schema=schema,
    )


def projected_members_table(
    metadata: MetaData,
    schema: str,
    *,
    with_birth_date: bool = False,
    with_education: bool = False,
) -> Table:
    """`with_birth_date` adds the (not sensitive) birth date, for readers that need it
    (mobility tells one person held as two records by name and birth date);
    `with_education` the education level (activities' party workers by education band)."""
    extra: list[Column[Any]] = []
    if with_birth_date:
        extra.append(Column("birth_date", Date, nullable=True))
    if with_education:
        extra.append(Column("education", String(32), nullable=True))
    return Table(
        "members",
        metadata,
        Column("member_id", PGUUID(as_uuid=True), nullable=False, unique=True),
        Column("name", String(100), nullable=False),
        *extra,
        Column("status", String(32), nullable=False),
        Column("category", String(32), nullable=False),
        Column("relation", String(16), nullable=False),
        Column("org_id", PGUUID(as_uuid=True), nullable=True),
        Column("org_path", LTree(), nullable=True),
        Column("residence_org_id", PGUUID(as_uuid=True), nullable=True),
        Column("residence_path", LTree(), nullable=True),
        # Set when the record was found to duplicate another: it resolves to that one.
        Column("merged_into", PGUUID(as_uuid=True), nullable=True),
        # The distribution key (common/sharding.py): the member's rows here carry it too.
        Column("shard_key", PGUUID(as_uuid=True), nullable=False),
        # The building party group (楼道党小组) and the card's skills (特长): help-request
        # matching in activities.
        Column("group_id", PGUUID(as_uuid=True), nullable=True),
        Column("skills", ARRAY(Text), nullable=False, server_default="{}"),
        Column("version", BigInteger, nullable=False),
        # When this row was last projected (clock time of the apply).
        Column("updated_at", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint("shard_key", "member_id"),
        Index(f"ix_{schema}_members_org_path_gist", "org_path", postgresql_using="gist"),
        Index(
            f"ix_{schema}_members_residence_path_gist",
            "residence_path",
            postgresql_using="gist",
        ),
        Index(None, "org_id"),
        Index(None, "residence_org_id"),
        schema=schema,
    )


class RegistryProjection:
    """`apply` is a consumer's apply function for the registry's events."""

    def __init__(self, *, orgs: Table, members: Table | None) -> None:
        """`members=None`: a model of the org tree alone (the gateway's, for webhooks),
        which is given org events only."""
        self.orgs = orgs
        self._members = members

    @property
    def members(self) -> Table:
        assert self._members is not None, "this model keeps no members"
        return self._members

    @property
    def tables(self) -> tuple[Table, ...]:
        return (self.orgs,) if self._members is None else (self._members, self.orgs)

    async def apply(self, session: AsyncSession, event: Event) -> None:
        if event.type in ORG_EVENTS:
            await self._apply_org(session, event)
        elif event.type in MEMBER_EVENTS:
            await self._apply_member(session, event)
        # Anything else (transfers, other services' events) carries nothing this model needs.

    async def apply_batch(self, session: AsyncSession, events: list[Event]) -> None:
        """`apply` over a batch, in order; each run of member events (no org event between,
        no member twice) goes as one executemany, so a bulk import's thousands of
        `member.registered` cost a few round trips instead of one each."""
        run: list[Event] = []
        seen: set[Any] = set()
        for event in events:
            if event.type in MEMBER_EVENTS and event.aggregate_id not in seen:
                run.append(event)
                seen.add(event.aggregate_id)
                continue
            await self._apply_members(session, run)
            run, seen = [], set()
            if event.type in MEMBER_EVENTS:
                run.append(event)
                seen.add(event.aggregate_id)
            else:
                await self.apply(session, event)
        await self._apply_members(session, run)

    async def reset(self, session: AsyncSession) -> None:
        names = ", ".join(f"{t.schema}.{t.name}" for t in self.tables)
        await session.execute(text(f"TRUNCATE {names}"))

    async def _org(self, session: AsyncSession, org_id: Any) -> Any:
        """The projected org's path, key and level (None while unknown)."""
        if org_id is None:
            return None
        orgs = self.orgs
        query = select(orgs.c.path, orgs.c.shard_key, orgs.c.area_level)
        return (await session.execute(query.where(orgs.c.org_id == org_id))).first()

    async def _apply_org(self, session: AsyncSession, event: Event) -> None:
        orgs, data = self.orgs, event.payload
        org_id = uuid.UUID(str(data["org_id"]))
        current = (
            await session.execute(
                select(orgs.c.version, orgs.c.path, orgs.c.shard_key)
                .where(orgs.c.org_id == org_id)
                .with_for_update()
            )
        ).first()
        if current is not None and current.version >= event.aggregate_version:
            return
        given = str(data["path"])
        parent = await self._org(session, data.get("parent_id"))
        parent_path = None if parent is None else str(parent.path)
        path = f"{parent_path}.{given.rsplit('.', 1)[-1]}" if parent_path else given
        # The registry's key; from an older producer, the same rule applied here.
        shard_key = event.shard_key or child_shard_key(
            org_id,
            None if parent is None else parent.shard_key,
            None if parent is None else parent.area_level,
        )
        values = {
            "parent_id": data.get("parent_id"),
            "path": path,
            "code": data["code"],
            "name": data["name"],
            "kind": data["kind"],
            "area_level": data["area_level"],
            "shard_key": shard_key,
            "version": event.aggregate_version,
            "updated_at": func.clock_timestamp(),
        }
        stmt = insert(orgs).values(org_id=org_id, **values)
        await session.execute(
            stmt.on_conflict_do_update(index_elements=[orgs.c.org_id], set_=values)
        )
        if current is not None and str(current.path) != path:
            await self._repath(session, old=str(current.path), new=path)
        if current is not None and current.shard_key not in (None, shard_key):
            await self._rekey(session, path=path, old=current.shard_key, new=shard_key)

    async def _rekey(
        self, session: AsyncSession, *, path: str, old: uuid.UUID, new: uuid.UUID
    ) -> None:
        """The subtree at `path` moved to another county: its orgs that carried the old key,
        and the members whose relation org (or, without one, residence org) is in it, take
        the new one. A service re-keys its own rows from these (see common/sharding.py)."""
        orgs = self.orgs
        under = literal(path, LTree())
        await session.execute(
            update(orgs)
            .where(orgs.c.path.op("<@")(under), orgs.c.shard_key == old)
            .values(shard_key=new)
        )
        if self._members is None:
            return
        members = self._members
        await session.execute(
            update(members)
            .where(
                members.c.shard_key == old,
                or_(
                    members.c.org_path.op("<@")(under),
                    and_(members.c.org_id.is_(None), members.c.residence_path.op("<@")(under)),
                ),
            )
            .values(shard_key=new)
        )

    async def _repath(self, session: AsyncSession, *, old: str, new: str) -> None:
        """Every path at or under `old` now hangs under `new` (orgs below and members)."""
        depth = old.count(".") + 1
        orgs = self.orgs
        await session.execute(
            update(orgs)
            .where(
                orgs.c.path.op("<@")(literal(old, LTree())), orgs.c.path != literal(old, LTree())
            )
            .values(path=literal(new, LTree()).op("||")(func.subpath(orgs.c.path, depth)))
        )
        if self._members is None:
            return
        members = self._members
        for column in (members.c.org_path, members.c.residence_path):
            await session.execute(
                update(members)
                .where(column.op("<@")(literal(old, LTree())))
                .values(
                    {
                        column.name: case(
                            (column == literal(old, LTree()), literal(new, LTree())),
                            else_=literal(new, LTree()).op("||")(func.subpath(column, depth)),
                        )
                    }
                )
            )

    def _projected_path(self, org_id: Any, fallback: Any) -> Any:
        """The org's projected path, or the payload's while the org is unknown."""
        if org_id is None:
            return None
        projected = select(self.orgs.c.path).where(self.orgs.c.org_id == org_id)
        return func.coalesce(projected.scalar_subquery(), literal(fallback, LTree()))

    def _member_key(self, given: Any, org_id: Any, residence_org_id: Any) -> Any:
        """The registry's key for the member; from an older producer, their relation org's
        projected key, else their residence org's (common/sharding.py)."""
        orgs = self.orgs

        def key_of(org: Any) -> Any:
            return select(orgs.c.shard_key).where(orgs.c.org_id == org).scalar_subquery()

        unsharded = literal(UNSHARDED, PGUUID(as_uuid=True))
        return func.coalesce(given, key_of(org_id), key_of(residence_org_id), unsharded)

    async def _apply_member(self, session: AsyncSession, event: Event) -> None:
        """One statement: upsert unless the row holds this version or a newer one."""
        members, data = self.members, event.payload
        org_id, residence_org_id = data.get("org_id"), data.get("residence_org_id")
        values = {
            "name": data["name"],
            "status": data["status"],
            "category": data["category"],
            "relation": data["relation"],
            "org_id": org_id,
            "org_path": self._projected_path(org_id, data.get("org_path")),
            "residence_org_id": residence_org_id,
            "residence_path": self._projected_path(residence_org_id, data.get("residence_path")),
            "merged_into": data.get("merged_into"),
            "shard_key": self._member_key(
                literal(event.shard_key, PGUUID(as_uuid=True)), org_id, residence_org_id
            ),
            "group_id": data.get("group_id"),
            "skills": list(data.get("skills") or []),
            "version": event.aggregate_version,
            "updated_at": func.clock_timestamp(),
        }
        if "birth_date" in members.c:
            born = data.get("birth_date")
            values["birth_date"] = date.fromisoformat(str(born)) if born else None
        if "education" in members.c:
            values["education"] = data.get("education")
        stmt = insert(members).values(member_id=event.aggregate_id, **values)
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[members.c.member_id],
                set_={name: stmt.excluded[name] for name in values},
                where=members.c.version < stmt.excluded.version,
            )
        )

    def _bulk_member_statement(self) -> Any:
        members, orgs = self.members, self.orgs

        def path(id_param: str, fallback_param: str) -> Any:
            org_id = bindparam(id_param, type_=members.c.org_id.type)
            projected = select(orgs.c.path).where(orgs.c.org_id == org_id).scalar_subquery()
            return func.coalesce(projected, bindparam(fallback_param, type_=LTree()))

        values: dict[str, Any] = {
            "member_id": bindparam("p_member_id", type_=members.c.member_id.type),
            "org_id": bindparam("p_org_id", type_=members.c.org_id.type),
            "org_path": path("p_org_id", "p_org_path"),
            "residence_org_id": bindparam("p_residence_org_id", type_=members.c.org_id.type),
            "residence_path": path("p_residence_org_id", "p_residence_path"),
            "merged_into": bindparam("p_merged_into", type_=members.c.merged_into.type),
            "shard_key": self._member_key(
                bindparam("p_shard_key", type_=members.c.shard_key.type),
                bindparam("p_org_id", type_=members.c.org_id.type),
                bindparam("p_residence_org_id", type_=members.c.org_id.type),
            ),
            "group_id": bindparam("p_group_id", type_=members.c.group_id.type),
            "skills": bindparam("p_skills", type_=members.c.skills.type),
            "version": bindparam("p_version", type_=BigInteger()),
            "updated_at": func.clock_timestamp(),
        }
        for name in ("name", "status", "category", "relation"):
            values[name] = bindparam(f"p_{name}", type_=members.c[name].type)
        if "birth_date" in members.c:
            values["birth_date"] = bindparam("p_birth_date", type_=Date())
        if "education" in members.c:
            values["education"] = bindparam("p_education", type_=members.c.education.type)
        stmt = insert(members).values(**values)
        return stmt.on_conflict_do_update(
            index_elements=[members.c.member_id],
            set_={name: stmt.excluded[name] for name in values if name != "member_id"},
            where=members.c.version < stmt.excluded.version,
        )

    async def _apply_members(self, session: AsyncSession, events: list[Event]) -> None:
        if len(events) < 2:
            for event in events:
                await self._apply_member(session, event)
            return
        rows = []
        for event in events:
            data = event.payload
            born = data.get("birth_date")
            rows.append(
                {
                    "p_member_id": event.aggregate_id,
                    "p_name": data["name"],
                    "p_status": data["status"],
                    "p_category": data["category"],
                    "p_relation": data["relation"],
                    "p_org_id": data.get("org_id"),
                    "p_org_path": data.get("org_path"),
                    "p_residence_org_id": data.get("residence_org_id"),
                    "p_residence_path": data.get("residence_path"),
                    "p_merged_into": data.get("merged_into"),
                    "p_shard_key": event.shard_key,
                    "p_group_id": data.get("group_id"),
                    "p_skills": list(data.get("skills") or []),
                    "p_version": event.aggregate_version,
                    "p_birth_date": date.fromisoformat(str(born)) if born else None,
                    "p_education": data.get("education"),
                }
            )
        for optional in ("birth_date", "education"):
            if optional not in self.members.c:
                for row in rows:
                    del row[f"p_{optional}"]
        await session.execute(self._bulk_member_statement(), rows)
