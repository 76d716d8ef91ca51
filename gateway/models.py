"""The gateway's tables (schema `gateway`): people who log in, their refresh tokens, the API
keys of work-unit orgs and integrators, the gateway's own audit trail and idempotency keys.
No secret is stored: passwords as argon2id hashes, refresh tokens and API keys as keyed
hashes (HMAC-SHA256 with the lookup key). Webhooks keep their signing secret encrypted
(`common.crypto.KeyRing`), since it must be read back to sign; their deliveries and every
attempt's outcome; and a projection of the registry's org tree (id → path, from `org.*`
events) that scopes which events a webhook receives."""

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
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PGUUID
from sqlmodel import Field, SQLModel

from common.audit import audit_table
from common.db import check_in, metadata
from common.events.consumer import cursor_table
from common.events.projection import projected_orgs_table
from common.idempotency import idempotency_table

SCHEMA = "gateway"


class UserRole(StrEnum):
    """The roles a person can hold (`integration` and `service` are never people)."""

    admin = "admin"
    org_admin = "org_admin"
    org_viewer = "org_viewer"
    member = "member"
    auditor = "auditor"
    security_admin = "security_admin"


class ApiKeyScope(StrEnum):
    sync = "sync"
    read = "read"


def _uuid_pk() -> Any:
    return Field(
        default_factory=uuid.uuid4, sa_column=Column(PGUUID(as_uuid=True), primary_key=True)
    )


def _keyed_id() -> Any:
    """The id of a row whose primary key is `(shard_key, id)`."""
    return Field(default_factory=uuid.uuid4, sa_column=Column(PGUUID(as_uuid=True), nullable=False))


def _shard_key() -> Any:
    """The distribution key (common/sharding.py) of the event a delivery carries."""
    return Field(sa_column=Column(PGUUID(as_uuid=True), nullable=False))


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
        CheckConstraint(check_in("role", UserRole), name="role"),
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


class DeliveryStatus(StrEnum):
    pending = "pending"  # not tried yet (or replayed)
    failed = "failed"  # the last attempt failed; another one is scheduled
    delivered = "delivered"  # a 2xx answer
    dead = "dead"  # every attempt failed; only a replay tries again


class Webhook(SQLModel, table=True):
    """An endpoint that receives the events of an org's subtree (every event when `org_id`
    is null: admins only), signed per Standard Webhooks with its own secret."""

    __tablename__ = "webhooks"
    __table_args__ = (
        CheckConstraint("cardinality(events) > 0", name="events"),
        Index("ix_webhooks_org_id_id", "org_id", "id"),
        {"schema": SCHEMA},
    )

    id: uuid.UUID = _uuid_pk()
    org_id: uuid.UUID | None = Field(
        default=None, sa_column=Column(PGUUID(as_uuid=True), nullable=True)
    )
    url: str = Field(sa_column=Column(String(2048), nullable=False))
    # Event types, `*` for all, `member.*` for a family.
    events: list[str] = Field(sa_column=Column(ARRAY(String(64)), nullable=False))
    # `whsec_<base64>`, AES-GCM sealed with the data key ring (purpose "webhook_secret").
    secret_encrypted: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_by: str = Field(sa_column=Column(String(200), nullable=False))
    active: bool = Field(
        default=True, sa_column=Column(Boolean, nullable=False, server_default="true")
    )
    # Loopback/private/link-local targets allowed (set by an admin only).
    allow_private: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default="false")
    )
    created_at: datetime | None = _created()


class WebhookDelivery(SQLModel, table=True):
    """One event for one webhook: delivered at most once successfully (unique pair). It
    carries the event's distribution key (`Event.shard_key`, `UNSHARDED` without one), its
    attempts too: the primary key is `(shard_key, id)` as a sharded engine requires, and the
    unique index on the id alone keeps lookups by id working while there is one node."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        PrimaryKeyConstraint("shard_key", "id"),
        Index("uq_webhook_deliveries_id", "id", unique=True),
        UniqueConstraint("webhook_id", "event_id"),
        CheckConstraint(check_in("status", DeliveryStatus), name="status"),
        CheckConstraint("attempts >= 0", name="attempts"),
        # The deliverer's queue: due deliveries still to try.
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status IN ('pending', 'failed')"),
        ),
        Index("ix_webhook_deliveries_webhook_id_created_at", "webhook_id", "created_at", "id"),
        {"schema": SCHEMA},
    )

    id: uuid.UUID = _keyed_id()
    shard_key: uuid.UUID = _shard_key()
    webhook_id: uuid.UUID = Field(
        sa_column=Column(
            PGUUID(as_uuid=True),
            ForeignKey(f"{SCHEMA}.webhooks.id", ondelete="CASCADE"),
            nullable=False,
        )
    )
    event_id: uuid.UUID = Field(sa_column=Column(PGUUID(as_uuid=True), nullable=False))
    source: str = Field(sa_column=Column(String(64), nullable=False))  # producer schema
    event_type: str = Field(sa_column=Column(String(64), nullable=False))
    status: str = Field(
        default=DeliveryStatus.pending.value,
        sa_column=Column(String(16), nullable=False, server_default="pending"),
    )
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    next_attempt_at: datetime | None = Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    last_status_code: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    # What went wrong, in our words (never the receiver's body).
    last_error: str | None = Field(default=None, sa_column=Column(String(300), nullable=True))
    delivered_at: datetime | None = _when()
    created_at: datetime | None = _created()


class WebhookAttempt(SQLModel, table=True):
    """Each try of a delivery and its outcome."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (
        PrimaryKeyConstraint("shard_key", "id"),
        Index("uq_webhook_attempts_id", "id", unique=True),
        Index("ix_webhook_attempts_delivery_id_attempt", "delivery_id", "attempt"),
        ForeignKeyConstraint(
            ["shard_key", "delivery_id"],
            [f"{SCHEMA}.webhook_deliveries.shard_key", f"{SCHEMA}.webhook_deliveries.id"],
            ondelete="CASCADE",
        ),
        {"schema": SCHEMA},
    )

    id: uuid.UUID = _keyed_id()
    shard_key: uuid.UUID = _shard_key()  # its delivery's
    delivery_id: uuid.UUID = Field(sa_column=Column(PGUUID(as_uuid=True), nullable=False))
    attempt: int = Field(sa_column=Column(Integer, nullable=False))
    attempted_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    status_code: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    error: str | None = Field(default=None, sa_column=Column(String(300), nullable=True))
    duration_ms: int = Field(sa_column=Column(Integer, nullable=False))


idempotency_keys = idempotency_table(metadata, SCHEMA)
# The registry's org tree as the gateway knows it (from `org.*` events): webhook scopes.
orgs = projected_orgs_table(metadata, SCHEMA)
consumer_cursors = cursor_table(metadata, SCHEMA)
audit_log = audit_table(metadata, SCHEMA)
