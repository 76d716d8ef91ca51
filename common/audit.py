"""The audit trail: who did what to which record, when, from where, with which request.
Each service appends to `audit_log` in its own schema, in the same transaction as the
action; the table refuses UPDATE and DELETE (see `append_only_sql`). Never pass a
sensitive value (ID number, phone, notes, whereabouts) as any of these fields."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import (
    Column,
    DateTime,
    Index,
    MetaData,
    String,
    Table,
    func,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import UUID as PGUUID
from sqlalchemy.ext.asyncio import AsyncSession

from common.auth import Principal, PrincipalDep, Role
from common.bulk import copy_rows, new_ids
from common.context import client_addr_var, request_id_var
from common.db import SessionDep, insert_into
from common.errors import Forbidden
from common.pagination import (
    DEFAULT_LIMIT,
    CursorQuery,
    LimitQuery,
    Page,
    decode_cursor,
    page_of,
)
from common.partitions import Layout, convert_sql, unconvert_sql


def audit_table(metadata: MetaData, schema: str) -> Table:
    return Table(
        "audit_log",
        metadata,
        Column("id", PGUUID(as_uuid=True), primary_key=True, default=uuid.uuid4),
        # The partition column (UTC months: AUDIT_LAYOUT), so in the key.
        Column(
            "at",
            DateTime(timezone=True),
            primary_key=True,
            nullable=False,
            server_default=func.now(),
        ),
        Column("actor", String(200), nullable=False),
        Column("role", String(32), nullable=False),
        Column("action", String(64), nullable=False),
        Column("resource", String(64), nullable=False),
        Column("record_id", PGUUID(as_uuid=True), nullable=True),
        Column("subject_member_id", PGUUID(as_uuid=True), nullable=True),
        Column("outcome", String(32), nullable=False, server_default="success"),
        Column("client_addr", String(64), nullable=True),
        Column("request_id", String(128), nullable=True),
        Index(None, "at"),
        Index(None, "subject_member_id", "at"),
        schema=schema,
        postgresql_partition_by="RANGE (at)",
    )


# Monthly partitions (common/partitions.py); the migrations create two years ahead and every
# migration run (tools/migrate.py) extends them, the services' upkeep too.
AUDIT_MONTHS_AHEAD = 24
AUDIT_LAYOUT = Layout(
    table="audit_log",
    column="at",
    unit="month",
    ahead=AUDIT_MONTHS_AHEAD,
    columns="id, at, actor, role, action, resource, record_id, subject_member_id, outcome, "
    "client_addr, request_id",
    table_sql="""CREATE TABLE {schema}.audit_log (
        id uuid NOT NULL,
        at timestamptz NOT NULL DEFAULT now(),
        actor varchar(200) NOT NULL,
        role varchar(32) NOT NULL,
        action varchar(64) NOT NULL,
        resource varchar(64) NOT NULL,
        record_id uuid,
        subject_member_id uuid,
        outcome varchar(32) NOT NULL DEFAULT 'success',
        client_addr varchar(64),
        request_id varchar(128),
        CONSTRAINT pk_audit_log PRIMARY KEY ({key})
    ){partitioning}""",
    indexes=[("audit_log_at", "at"), ("audit_log_subject_member_id", "subject_member_id, at")],
    constraints=["pk_audit_log"],
)


def _audit_layout(*, partitioned: bool) -> Layout:
    key = "id, at" if partitioned else "id"
    return replace(AUDIT_LAYOUT, table_sql=AUDIT_LAYOUT.table_sql.replace("{key}", key))


def partition_audit_sql(schema: str) -> list[str]:
    """The plain audit log made partitioned by month, every record kept, still append-only."""
    return [*convert_sql(schema, _audit_layout(partitioned=True)), *append_only_sql(schema)]


def unpartition_audit_sql(schema: str) -> list[str]:
    return [*unconvert_sql(schema, _audit_layout(partitioned=False)), *append_only_sql(schema)]


async def add_audit_partitions(session: AsyncSession, schema: str) -> int:
    """The coming months' partitions of `<schema>.audit_log`; how many were missing."""
    made = await session.scalar(
        text(
            f"SELECT {schema}.audit_log_add_partitions((now() AT TIME ZONE 'UTC')::date, :months)"
        ),
        {"months": AUDIT_MONTHS_AHEAD},
    )
    return int(made or 0)


def append_only_sql(schema: str, table: str = "audit_log") -> list[str]:
    """DDL making a table append-only for everyone, application roles included."""
    fn = f"{schema}.{table}_append_only"
    return [
        f"""CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION '{schema}.{table} is append-only' USING ERRCODE = '42501'; END $$""",
        f"""CREATE TRIGGER {table}_no_update_delete BEFORE UPDATE OR DELETE ON {schema}.{table}
        FOR EACH ROW EXECUTE FUNCTION {fn}()""",
        f"""CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {schema}.{table}
        FOR EACH STATEMENT EXECUTE FUNCTION {fn}()""",
    ]


def drop_append_only_sql(schema: str, table: str = "audit_log") -> list[str]:
    return [
        f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {schema}.{table}",
        f"DROP TRIGGER IF EXISTS {table}_no_update_delete ON {schema}.{table}",
        f"DROP FUNCTION IF EXISTS {schema}.{table}_append_only()",
    ]


def _entry(
    principal: Principal,
    *,
    action: str,
    resource: str,
    record_id: UUID | None,
    subject_member_id: UUID | None,
    outcome: str,
) -> dict[str, Any]:
    """One audit row: who, from where and in which request, did what to which record."""
    return {
        "actor": principal.username or principal.subject,
        "role": principal.role.value,
        "action": action,
        "resource": resource,
        "record_id": record_id,
        "subject_member_id": subject_member_id,
        "outcome": outcome,
        "client_addr": client_addr_var.get(),
        "request_id": request_id_var.get(),
    }


async def record(
    session: AsyncSession,
    table: Table,
    principal: Principal,
    *,
    action: str,
    resource: str,
    record_id: UUID | None = None,
    subject_member_id: UUID | None = None,
    outcome: str = "success",
) -> None:
    entry = _entry(
        principal,
        action=action,
        resource=resource,
        record_id=record_id,
        subject_member_id=subject_member_id,
        outcome=outcome,
    )
    await session.execute(insert_into(table), {"id": uuid.uuid4(), **entry})


async def record_members(
    session: AsyncSession,
    table: Table,
    principal: Principal,
    member_ids: Sequence[UUID],
    *,
    action: str,
    outcome: str = "success",
) -> None:
    """`record` of one `action` on each of many members (bulk writes): one entry per member,
    its record and its subject, written with one COPY."""
    base = _entry(
        principal,
        action=action,
        resource="member",
        record_id=None,
        subject_member_id=None,
        outcome=outcome,
    )
    entries = [
        base | {"id": entry_id, "record_id": member, "subject_member_id": member}
        for member, entry_id in zip(member_ids, new_ids(len(member_ids)), strict=True)
    ]
    await copy_rows(session, table, entries)


class AuditEntry(BaseModel):
    id: UUID
    at: datetime
    actor: str
    role: str
    action: str
    resource: str
    record_id: UUID | None
    subject_member_id: UUID | None
    outcome: str
    client_addr: str | None
    request_id: str | None
    service: str


def audit_router(table: Table, *, service: str) -> APIRouter:
    """`GET /audit-log`: this service's trail, newest first, for auditors only (the
    gateway merges every service's trail behind `GET /api/v1/audit`). A member may read the
    entries about themself with `subject_member_id` set to their own id."""
    router = APIRouter(tags=["audit"])

    @router.get(
        "/audit-log",
        operation_id=f"list{service.capitalize()}AuditLog",
        summary=f"The {service} service's audit trail",
        response_model=Page[AuditEntry],
        include_in_schema=False,
    )
    async def list_audit_log(
        session: SessionDep,
        principal: PrincipalDep,
        actor: str | None = None,
        action: str | None = None,
        resource: str | None = None,
        record_id: UUID | None = None,
        subject_member_id: UUID | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: LimitQuery = DEFAULT_LIMIT,
        cursor: CursorQuery = None,
    ) -> Page[AuditEntry]:
        own = (
            principal.role is Role.member
            and principal.member_id is not None
            and subject_member_id == principal.member_id
        )
        # Separate duties: not even an admin reads the trail of what admins did.
        if principal.role is not Role.auditor and not own:
            raise Forbidden("Only auditors read the audit log.")
        filters = {
            "actor": actor,
            "action": action,
            "resource": resource,
            "record_id": record_id,
            "subject_member_id": subject_member_id,
            "since": since,
            "until": until,
        }
        query = select(table)
        for name in ("actor", "action", "resource", "record_id", "subject_member_id"):
            if filters[name] is not None:
                query = query.where(table.c[name] == filters[name])
        if since is not None:
            query = query.where(table.c.at >= since)
        if until is not None:
            query = query.where(table.c.at < until)
        after = decode_cursor(cursor, filters)
        if after is not None:
            query = query.where(tuple_(table.c.at, table.c.id) < tuple_(after[0], after[1]))
        query = query.order_by(table.c.at.desc(), table.c.id.desc()).limit(limit + 1)
        rows = (await session.execute(query)).mappings().all()
        items, next_cursor = page_of(
            [AuditEntry(**r, service=service) for r in rows],
            limit=limit,
            key=lambda e: [e.at, e.id],
            filters=filters,
        )
        return Page[AuditEntry](items=items, next_cursor=next_cursor)

    return router
