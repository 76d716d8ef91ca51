"""The gateway's tables (schema `gateway`): people who log in, their refresh tokens, the API
keys of work-unit orgs and integrators, the gateway's own audit trail and idempotency keys.
No secret is stored: passwords as argon2id hashes, refresh tokens and API keys as keyed
hashes (HMAC-SHA256 with the lookup key)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PGUUID
from sqlmodel import Field, SQLModel

from common.audit import audit_table
from common.db import metadata
from common.idempotency import idempotency_table

SCHEMA = "gateway"


class UserRole(StrEnum):
    """The roles a person can hold (`integration` and `service` are never people)."""

    admin = "admin"
    org_admin = "org_admin"
    org_viewer = "org_viewer"
    member = "member"
    auditor = "auditor"


class ApiKeyScope(StrEnum):
    sync = "sync"
    read = "read"


def _check_in(column: str, enum: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in enum)})"


def _uuid_pk() -> Any:
    return Field(
        default_factory=uuid.uuid4, sa_column=Column(PGUUID(as_uuid=True), primary_key=True)
    )


def _created() -> Any:
    return Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


def _when(*, nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=nullable))


class User(SQLModel, table=True):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(_check_in("role", UserRole), name="role"),
        CheckConstraint(
            "role NOT IN ('org_admin', 'org_viewer') OR org_id IS NOT NULL", name="org_roles_org"
        ),
        CheckConstraint("role <> 'member' OR member_id IS NOT NULL", name="member_has_record"),
        CheckConstraint("failed_attempts >= 0", name="failed_attempts"),
        # Usernames are unique whatever their case.
        Index("uq_users_username_lower", text("lower(username)"), unique=True),
        # One login per member record.
        Index(
            "uq_users_member_id",
            "member_id",
            unique=True,
            postgresql_where=text("member_id IS NOT NULL"),
        ),
        Index("ix_users_role", "role"),
        {"schema": SCHEMA},
    )

    id: uuid.UUID = _uuid_pk()
    username: str = Field(sa_column=Column(String(64), nullable=False))
    password_hash: str = Field(sa_column=Column(String(256), nullable=False))
    role: str = Field(sa_column=Column(String(32), nullable=False))
    org_id: uuid.UUID | None = Field(
        default=None, sa_column=Column(PGUUID(as_uuid=True), nullable=True)
    )
    member_id: uuid.UUID | None = Field(
        default=None, sa_column=Column(PGUUID(as_uuid=True), nullable=True)
    )
    failed_attempts: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default="0")
    )
    locked_until: datetime | None = _when()
    disabled: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default="false")
    )
    created_by: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    last_login_at: datetime | None = _when()
    created_at: datetime | None = _created()
    updated_at: datetime | None = Field(
        default=None,
        sa_column=Column(
            DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
        ),
    )


class RefreshToken(SQLModel, table=True):
    """One refresh token of a login; rotation links them into a family. A token works once
    (`used_at`); presenting a used one revokes the family (`revoked_at` on every member)."""

    __tablename__ = "refresh_tokens"
    __table_args__ = (
        Index("ix_refresh_tokens_family_id", "family_id"),
        Index("ix_refresh_tokens_user_id", "user_id"),
        Index("ix_refresh_tokens_expires_at", "expires_at"),
        {"schema": SCHEMA},
    )

    id: uuid.UUID = _uuid_pk()
    user_id: uuid.UUID = Field(
        sa_column=Column(
            PGUUID(as_uuid=True),
            ForeignKey(f"{SCHEMA}.users.id", ondelete="CASCADE"),
            nullable=False,
        )
    )
    family_id: uuid.UUID = Field(sa_column=Column(PGUUID(as_uuid=True), nullable=False))
    token_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False, unique=True))
    created_at: datetime | None = _created()
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    used_at: datetime | None = _when()
    revoked_at: datetime | None = _when()


class ApiKey(SQLModel, table=True):
    """A key of a work-unit org or an integrator: `lx_<prefix>_<secret>`, shown once."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint(
            "cardinality(scopes) > 0 AND scopes <@ ARRAY['sync', 'read']::varchar[]",
            name="scopes",
        ),
        Index("ix_api_keys_org_id_id", "org_id", "id"),
        {"schema": SCHEMA},
    )

    id: uuid.UUID = _uuid_pk()
    name: str = Field(sa_column=Column(String(200), nullable=False))
    prefix: str = Field(sa_column=Column(String(16), nullable=False, unique=True))
    key_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False, unique=True))
    org_id: uuid.UUID = Field(sa_column=Column(PGUUID(as_uuid=True), nullable=False))
    scopes: list[str] = Field(sa_column=Column(ARRAY(String(16)), nullable=False))
    created_by: str = Field(sa_column=Column(String(200), nullable=False))
    created_at: datetime | None = _created()
    revoked_at: datetime | None = _when()
    revoked_by: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    last_used_at: datetime | None = _when()


idempotency_keys = idempotency_table(metadata, SCHEMA)
audit_log = audit_table(metadata, SCHEMA)
