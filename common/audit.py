"""The audit trail: who did what to which record, when, from where, with which request.
Each service appends to `audit_log` in its own schema, in the same transaction as the
action; the table refuses UPDATE and DELETE (see `append_only_sql`). Never pass a
sensitive value (ID number, phone, notes, whereabouts) as any of these fields."""

from __future__ import annotations

import uuid
from uuid import UUID

from sqlalchemy import Column, DateTime, Index, MetaData, String, Table, func, insert
from sqlalchemy.dialects.postgresql import UUID as PGUUID
from sqlalchemy.ext.asyncio import AsyncSession

from common.auth import Principal
from common.context import client_addr_var, request_id_var


def audit_table(metadata: MetaData, schema: str) -> Table:
    return Table(
        "audit_log",
        metadata,
        Column("id", PGUUID(as_uuid=True), primary_key=True, default=uuid.uuid4),
        Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
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
    )


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
    await session.execute(
        insert(table).values(
            id=uuid.uuid4(),
            actor=principal.username or principal.subject,
            role=principal.role.value,
            action=action,
            resource=resource,
            record_id=record_id,
            subject_member_id=subject_member_id,
            outcome=outcome,
            client_addr=client_addr_var.get(),
            request_id=request_id_var.get(),
        )
    )
