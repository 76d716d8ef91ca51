"""The registry's tables (schema `registry`) and the enums their columns hold."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import UUID as PGUUID
from sqlmodel import Field, SQLModel

from common.audit import audit_table
from common.db import LTree, check_in, metadata
from common.events.consumer import cursor_table
from common.events.outbox import outbox_table
from common.idempotency import idempotency_table
from common.schedule import scheduled_jobs_table

SCHEMA = "registry"


class OrgKind(StrEnum):
    committee = "committee"
    working_committee = "working_committee"
    general_branch = "general_branch"
    branch = "branch"
    group = "group"


class AreaLevel(StrEnum):
    city = "city"
    county = "county"
    street = "street"
    town = "town"
    community = "community"
    building = "building"
    work_unit = "work_unit"


class Gender(StrEnum):
    male = "male"
    female = "female"


class Education(StrEnum):
    junior_high_or_below = "junior_high_or_below"
    senior_high = "senior_high"
    college = "college"
    bachelor = "bachelor"
    postgraduate = "postgraduate"


class Membership(StrEnum):
    full = "full"
    probationary = "probationary"


class Category(StrEnum):
    community_staff = "community_staff"
    new_economic_org = "new_economic_org"
    retired = "retired"
    laid_off = "laid_off"
    migrant_worker = "migrant_worker"
    rural_to_urban = "rural_to_urban"
    in_service_resident = "in_service_resident"
    retired_unit_resident = "retired_unit_resident"
    other = "other"


class Relation(StrEnum):
    enrolled = "enrolled"
    resident = "resident"


class MemberStatus(StrEnum):
    active = "active"
    mobile = "mobile"
    lost_contact = "lost_contact"
    transferred_out = "transferred_out"
    deceased = "deceased"
    removed = "removed"


class TransferStatus(StrEnum):
    requested = "requested"
    issued = "issued"
    completed = "completed"
    rejected = "rejected"
    expired = "expired"


OPEN_TRANSFER_STATUSES = (TransferStatus.requested, TransferStatus.issued)

# Allowed status changes of a transfer; the database enforces the same (see migration).
TRANSFER_TRANSITIONS: dict[TransferStatus, frozenset[TransferStatus]] = {
    TransferStatus.requested: frozenset({TransferStatus.issued, TransferStatus.rejected}),
    TransferStatus.issued: frozenset(
        {TransferStatus.completed, TransferStatus.rejected, TransferStatus.expired}
    ),
    TransferStatus.completed: frozenset(),
    TransferStatus.rejected: frozenset(),
    TransferStatus.expired: frozenset(),
}


def _uuid_id() -> Any:
    """The id of a row whose primary key is `(shard_key, id)` (`_sharded`): unique on its
    own by an index, and the ORM's identity (`session.get(Model, id)`)."""
    return Field(default_factory=uuid.uuid4, sa_column=Column(PGUUID(as_uuid=True), nullable=False))


def _shard_key() -> Any:
    """The row's distribution key (common/sharding.py); set by the service on every insert."""
    return Field(default=None, sa_column=Column(PGUUID(as_uuid=True), nullable=False))


def _sharded(table: str) -> tuple[Any, ...]:
    """Table arguments of a table keyed `(shard_key, id)`, for a sharded engine (Citus: the
    distribution column must be part of every unique key). On one PostgreSQL the id stays
    unique by a constraint (and its index) of its own, which lookups, foreign keys and
    conflict targets by id use (see the 0005_registry_keys migration)."""
    return (
        PrimaryKeyConstraint("shard_key", "id"),
        UniqueConstraint("id", name=f"uq_{table}_id"),
    )


# The ORM identity of those tables: the id alone.
_ID_IDENTITY: dict[str, Any] = {"primary_key": ["id"]}


def _created() -> Any:
    return Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


def _updated() -> Any:
    return Field(
        default=None,
        sa_column=Column(
            DateTime(timezone=True),
            nullable=False,
            server_default=func.now(),
            onupdate=func.now(),
        ),
    )


def _version() -> Any:
    return Field(default=1, sa_column=Column(BigInteger, nullable=False, server_default="1"))


def _org_ref(name: str, *, nullable: bool = True, foreign_key: bool = True) -> Any:
    """A reference to an org; `foreign_key=False` for one that may lie in another county
    (on a sharded engine, no foreign key crosses shards): the service checks it."""
    refs = [ForeignKey(f"{SCHEMA}.orgs.id")] if foreign_key else []
    return Field(
        default=None,
        sa_column=Column(name, PGUUID(as_uuid=True), *refs, nullable=nullable),
    )


class Org(SQLModel, table=True):
    __tablename__ = "orgs"
    __table_args__ = (
        CheckConstraint(check_in("kind", OrgKind), name="kind"),
        CheckConstraint(check_in("area_level", AreaLevel), name="area_level"),
        CheckConstraint("parent_id IS NULL OR parent_id <> id", name="not_own_parent"),
        Index("ix_orgs_path_gist", "path", postgresql_using="gist"),
        Index("ix_orgs_parent_id_name", "parent_id", "name", "id"),
        # Unique through `org_codes` (one row per code, whatever the shard).
        Index("ix_orgs_code", "code"),
        *_sharded("orgs"),
        {"schema": SCHEMA},
    )
    __mapper_args__ = _ID_IDENTITY

    id: uuid.UUID = _uuid_id()
    shard_key: uuid.UUID = _shard_key()
    # A short number per org: its label in every materialized path below it.
    seq: int | None = Field(
        default=None,
        sa_column=Column(BigInteger, Identity(always=False), nullable=False, unique=True),
    )
    code: str = Field(sa_column=Column(String(64), nullable=False))
    name: str = Field(sa_column=Column(String(200), nullable=False))
    kind: str = Field(sa_column=Column(String(32), nullable=False))
    area_level: str = Field(sa_column=Column(String(32), nullable=False))
    parent_id: uuid.UUID | None = _org_ref("parent_id")
    # ltree of seq labels from the root, e.g. "1.57.2003"; subtree = path <@ root.path.
    path: str = Field(sa_column=Column(LTree(), nullable=False, unique=True))
    created_at: datetime | None = _created()
    updated_at: datetime | None = _updated()
    version: int = _version()


class Member(SQLModel, table=True):
    __tablename__ = "members"
    __table_args__ = (
        CheckConstraint(check_in("gender", Gender), name="gender"),
        CheckConstraint(
            f"education IS NULL OR {check_in('education', Education)}", name="education"
        ),
        CheckConstraint(check_in("membership", Membership), name="membership"),
        CheckConstraint(check_in("category", Category), name="category"),
        CheckConstraint(check_in("relation", Relation), name="relation"),
        CheckConstraint(check_in("status", MemberStatus), name="status"),
        CheckConstraint("merged_into IS NULL OR merged_into <> id", name="not_merged_into_self"),
        CheckConstraint(
            "(id_number_cipher IS NULL) = (id_number_hash IS NULL)", name="id_number_pair"
        ),
        # One live record per person is kept by `member_identities` (one row per hash,
        # whatever the shard); this index finds the live holder of a hash.
        Index(
            "ix_members_id_number_hash",
            "id_number_hash",
            postgresql_where=text("merged_into IS NULL"),
        ),
        Index("ix_members_org_id_id", "org_id", "id"),
        Index("ix_members_residence_org_id_id", "residence_org_id", "id"),
        Index("ix_members_birth_date", "birth_date"),
        Index("ix_members_name", "name"),
        *_sharded("members"),
        {"schema": SCHEMA},
    )
    __mapper_args__ = _ID_IDENTITY

    id: uuid.UUID = _uuid_id()
    # The key of the org holding the relation, else of the residence org (common/sharding.py).
    shard_key: uuid.UUID = _shard_key()
    name: str = Field(sa_column=Column(String(100), nullable=False))
    gender: str = Field(sa_column=Column(String(16), nullable=False))
    birth_date: date = Field(sa_column=Column(Date, nullable=False))
    id_number_cipher: bytes | None = Field(
        default=None, sa_column=Column(LargeBinary, nullable=True)
    )
    id_number_hash: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    id_number_masked: str | None = Field(default=None, sa_column=Column(String(18), nullable=True))
    phone_cipher: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    phone_masked: str | None = Field(default=None, sa_column=Column(String(32), nullable=True))
    ethnicity: str | None = Field(default=None, sa_column=Column(String(32), nullable=True))
    education: str | None = Field(default=None, sa_column=Column(String(32), nullable=True))
    joined_on: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    membership: str = Field(sa_column=Column(String(16), nullable=False))
    category: str = Field(sa_column=Column(String(32), nullable=False))
    relation: str = Field(sa_column=Column(String(16), nullable=False))
    status: str = Field(sa_column=Column(String(32), nullable=False, server_default="active"))
    org_id: uuid.UUID | None = _org_ref("org_id")
    # May lie in another county than the relation org: no foreign key (the service checks).
    residence_org_id: uuid.UUID | None = _org_ref("residence_org_id", foreign_key=False)
    group_id: uuid.UUID | None = _org_ref("group_id", foreign_key=False)
    address: str | None = Field(default=None, sa_column=Column(String(300), nullable=True))
    employer: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    skills: list[str] = Field(
        default_factory=list,
        sa_column=Column(ARRAY(String(64)), nullable=False, server_default="{}"),
    )
    resume: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSONB, nullable=False, server_default="[]")
    )
    merged_into: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(
            PGUUID(as_uuid=True), ForeignKey(f"{SCHEMA}.members.id"), nullable=True, index=True
        ),
    )
    created_at: datetime | None = _created()
    updated_at: datetime | None = _updated()
    version: int = _version()


class MemberMerge(SQLModel, table=True):
    """Two records found to be one person: `from_id` now resolves to `into_id`."""

    __tablename__ = "member_merges"
    __table_args__ = (*_sharded("member_merges"), {"schema": SCHEMA})
    __mapper_args__ = _ID_IDENTITY

    id: uuid.UUID = _uuid_id()
    # The survivor's key (the merge is part of its history).
    shard_key: uuid.UUID = _shard_key()
    from_id: uuid.UUID = Field(
        sa_column=Column(
            PGUUID(as_uuid=True), ForeignKey(f"{SCHEMA}.members.id"), nullable=False, unique=True
        )
    )
    into_id: uuid.UUID = Field(
        sa_column=Column(
            PGUUID(as_uuid=True), ForeignKey(f"{SCHEMA}.members.id"), nullable=False, index=True
        )
    )
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    merged_by: str = Field(sa_column=Column(String(200), nullable=False))
    merged_at: datetime | None = _created()


class Transfer(SQLModel, table=True):
    __tablename__ = "transfers"
    __table_args__ = (
        CheckConstraint(check_in("status", TransferStatus), name="status"),
        CheckConstraint(
            "(to_org_id IS NULL) <> (to_external_name IS NULL)", name="one_destination"
        ),
        CheckConstraint("(from_org_id IS NULL) <> (from_external_name IS NULL)", name="one_origin"),
        CheckConstraint(
            "from_org_id IS NOT NULL OR to_org_id IS NOT NULL", name="touches_the_system"
        ),
        CheckConstraint(
            "status = 'requested' OR status = 'rejected' "
            "OR (letter_no IS NOT NULL AND valid_until IS NOT NULL)",
            name="letter_when_issued",
        ),
        # One open transfer per member.
        Index(
            "uq_transfers_open_member",
            "member_id",
            unique=True,
            postgresql_where=text("status IN ('requested', 'issued')"),
        ),
        Index("ix_transfers_to_org_id_status", "to_org_id", "status", "valid_until"),
        Index("ix_transfers_from_org_id_status", "from_org_id", "status", "valid_until"),
        Index(
            "ix_transfers_issued_valid_until",
            "valid_until",
            postgresql_where=text("status = 'issued'"),
        ),
        *_sharded("transfers"),
        {"schema": SCHEMA},
    )
    __mapper_args__ = _ID_IDENTITY

    id: uuid.UUID = _uuid_id()
    # The member's key (re-keyed with the member when they move to another county).
    shard_key: uuid.UUID = _shard_key()
    member_id: uuid.UUID = Field(
        sa_column=Column(
            PGUUID(as_uuid=True), ForeignKey(f"{SCHEMA}.members.id"), nullable=False, index=True
        )
    )
    # The two ends may lie in other counties than the member's: no foreign keys (checked by
    # the service).
    from_org_id: uuid.UUID | None = _org_ref("from_org_id", foreign_key=False)
    from_external_name: str | None = Field(default=None, sa_column=Column(String(200)))
    from_external_code: str | None = Field(default=None, sa_column=Column(String(64)))
    to_org_id: uuid.UUID | None = _org_ref("to_org_id", foreign_key=False)
    to_external_name: str | None = Field(default=None, sa_column=Column(String(200)))
    to_external_code: str | None = Field(default=None, sa_column=Column(String(64)))
    reason: str | None = Field(default=None, sa_column=Column(Text))
    status: str = Field(sa_column=Column(String(16), nullable=False, server_default="requested"))
    letter_no: str | None = Field(default=None, sa_column=Column(String(64)))
    valid_until: date | None = Field(default=None, sa_column=Column(Date))
    reject_reason: str | None = Field(default=None, sa_column=Column(Text))
    requested_by: str = Field(sa_column=Column(String(200), nullable=False))
    issued_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    completed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    closed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    created_at: datetime | None = _created()
    updated_at: datetime | None = _updated()
    version: int = _version()


class MemberIdentity(SQLModel, table=True):
    """The live record holding each ID number (by its keyed hash): the global uniqueness a
    sharded engine cannot keep with an index on `members` (distributed by the hash)."""

    __tablename__ = "member_identities"
    __table_args__ = ({"schema": SCHEMA},)

    id_number_hash: bytes = Field(sa_column=Column(LargeBinary, primary_key=True))
    member_id: uuid.UUID = Field(sa_column=Column(PGUUID(as_uuid=True), nullable=False))
    shard_key: uuid.UUID = Field(sa_column=Column(PGUUID(as_uuid=True), nullable=False))


class OrgCode(SQLModel, table=True):
    """The org holding each code: global uniqueness of codes (distributed by the code)."""

    __tablename__ = "org_codes"
    __table_args__ = ({"schema": SCHEMA},)

    code: str = Field(sa_column=Column(String(64), primary_key=True))
    org_id: uuid.UUID = Field(sa_column=Column(PGUUID(as_uuid=True), nullable=False))
    shard_key: uuid.UUID = Field(sa_column=Column(PGUUID(as_uuid=True), nullable=False))


class UpperOrg(SQLModel, table=True):
    """The city-level orgs (the upper tree), kept with the tree: on a sharded engine, the
    reference table every node joins to."""

    __tablename__ = "upper_orgs"
    __table_args__ = ({"schema": SCHEMA},)

    id: uuid.UUID = Field(sa_column=Column(PGUUID(as_uuid=True), primary_key=True))
    parent_id: uuid.UUID | None = Field(
        default=None, sa_column=Column(PGUUID(as_uuid=True), nullable=True)
    )
    path: str = Field(sa_column=Column(LTree(), nullable=False))
    code: str = Field(sa_column=Column(String(64), nullable=False))
    name: str = Field(sa_column=Column(String(200), nullable=False))
    kind: str = Field(sa_column=Column(String(32), nullable=False))
    area_level: str = Field(sa_column=Column(String(32), nullable=False))


idempotency_keys = idempotency_table(metadata, SCHEMA)
audit_log = audit_table(metadata, SCHEMA)
# The registry's published events (see services/registry/events.py), and the cursors of
# whatever reads them from here (the NATS relay).
outbox = outbox_table(metadata, SCHEMA)
consumer_cursors = cursor_table(metadata, SCHEMA)
# The last tick each periodic job claimed (common/schedule.py: once across replicas).
scheduled_jobs = scheduled_jobs_table(metadata, SCHEMA)
