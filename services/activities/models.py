"""The activities service's tables (schema `activities`) and the enums their columns hold.

`orgs` and `members` are a read model of the registry, built only from its events
(`services/activities/projections.py`) and rebuilt from scratch on demand: never write them
elsewhere and never point a foreign key at them (a rebuild empties them); refer to a member
or an org by its plain UUID.

Ledgers (`points_ledger`, `fund_expenses`) are append-only (a trigger refuses UPDATE and
DELETE): a balance is the sum of its entries; a correction is a new entry. The one
change they allow is their distribution key following a member or an org to another county
(`activities.rekey_points_ledger`, `activities.rekey_fund_expenses`, migration 0005).

Every table of rows that belong to an org or a member carries `shard_key` (common/sharding.py)
in its primary key; reference-like tables (`programs`, `points_rules`) and the plumbing
(cursors, idempotency keys, the audit log, the outbox's own column) do not."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import UUID as PGUUID

from common.audit import audit_table
from common.db import check_in, metadata
from common.events.consumer import cursor_table
from common.events.outbox import outbox_table
from common.events.projection import projected_members_table, projected_orgs_table
from common.idempotency import idempotency_table
from common.schedule import scheduled_jobs_table

SCHEMA = "activities"


class ActivityType(StrEnum):
    # Organizational life: "three meetings and one lesson" and the like.
    branch_assembly = "branch_assembly"
    branch_committee = "branch_committee"
    group_meeting = "group_meeting"
    party_lecture = "party_lecture"
    theme_day = "theme_day"
    online_lesson = "online_lesson"
    salon = "salon"
    training = "training"
    # Service and care.
    volunteer_service = "volunteer_service"
    home_visit = "home_visit"
    birthday_visit = "birthday_visit"
    talk = "talk"
    patrol = "patrol"
    cleanup = "cleanup"
    other = "other"


ORGANIZATIONAL_LIFE = frozenset(
    {
        ActivityType.branch_assembly,
        ActivityType.branch_committee,
        ActivityType.group_meeting,
        ActivityType.party_lecture,
        ActivityType.theme_day,
        ActivityType.online_lesson,
        ActivityType.salon,
        ActivityType.training,
    }
)


class AttendanceStatus(StrEnum):
    present = "present"
    absent = "absent"
    excused = "excused"


class ProgramKind(StrEnum):
    pledge = "pledge"  # yearly items per member, done or not ("ten ones")
    roles = "roles"  # roles members hold ("eight roles", posts by layer)


class AssignmentKind(StrEnum):
    role = "role"  # one of a roles program's roles
    post = "post"  # a post by layer (分层次设岗定责)
    party_worker = "party_worker"  # community party worker (党务工作者): counts for training


class Layer(StrEnum):
    cadre = "cadre"  # advise and research
    skilled = "skilled"  # convenience services
    general = "general"  # patrol, green space, cleaning


class EvidenceType(StrEnum):
    activity = "activity"
    service_hours = "service_hours"
    help_request = "help_request"


class HelpStatus(StrEnum):
    open = "open"
    assigned = "assigned"
    done = "done"
    closed = "closed"


class PointsSource(StrEnum):
    activity = "activity"  # points per attendance of an activity type
    service_hour = "service_hour"  # points per verified service hour


def _uuid_pk() -> Column[uuid.UUID]:
    return Column("id", PGUUID(as_uuid=True), primary_key=True, default=uuid.uuid4)


def _id() -> Column[uuid.UUID]:
    """The id of a keyed row: unique on its own (lookups, references, conflict targets on
    one node), the primary key's second half after `shard_key`."""
    return Column("id", PGUUID(as_uuid=True), nullable=False, default=uuid.uuid4)


def _shard_key() -> Column[uuid.UUID]:
    """The distribution key (common/sharding.py): the key of the org or the member the row
    belongs to, read from this service's projection when the row is written, `UNSHARDED`
    while that org or member is unknown, and moved with them to another county
    (services/activities/service/keys.py)."""
    return Column("shard_key", PGUUID(as_uuid=True), nullable=False)


def _keyed(table: str) -> tuple[PrimaryKeyConstraint, Index]:
    """Primary key `(shard_key, id)` and the unique index on `id` alone (until Citus: one
    node, so an id is still unique by itself and other tables may refer to it)."""
    return PrimaryKeyConstraint("shard_key", "id"), Index(f"uq_{table}_id", "id", unique=True)


def _keyed_link(
    table: str, parent_column: str, parent: str
) -> tuple[PrimaryKeyConstraint, Index, ForeignKeyConstraint]:
    """A member's row under a parent of the same key (an activity's attendance): primary key
    `(shard_key, <parent_column>, member_id)`, unique without the key, and a foreign key to
    the parent with the key (re-keying the parent carries its rows along)."""
    return (
        PrimaryKeyConstraint("shard_key", parent_column, "member_id"),
        Index(f"uq_{table}_{parent_column}_member_id", parent_column, "member_id", unique=True),
        ForeignKeyConstraint(
            ["shard_key", parent_column],
            [f"{SCHEMA}.{parent}.shard_key", f"{SCHEMA}.{parent}.id"],
            ondelete="CASCADE",
            onupdate="CASCADE",
        ),
    )


def _created_at() -> Column[Any]:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now())


MONEY = Numeric(12, 2)
HOURS = Numeric(5, 2)

# Read model of the registry.
orgs = projected_orgs_table(metadata, SCHEMA)
members = projected_members_table(metadata, SCHEMA, with_birth_date=True, with_education=True)
# How far this service's consumers got in each stream.
consumer_cursors = cursor_table(metadata, SCHEMA)
# This service's own published events.
outbox = outbox_table(metadata, SCHEMA)
idempotency_keys = idempotency_table(metadata, SCHEMA)
audit_log = audit_table(metadata, SCHEMA)
# The last tick each periodic job claimed (common/schedule.py: once across replicas).
scheduled_jobs = scheduled_jobs_table(metadata, SCHEMA)

# Rows keyed by the ORG holding them (its key in `orgs`): an activity, its attendance and
# signups (the activity's key, so a meeting's attendance is on the meeting's node even for a
# member of another county), help requests, fund allocations and their expenses (the
# allocation's key), training sessions and their attendance, program adoptions (the
# adopting org). Rows keyed by the MEMBER they belong to (their key in `members`): talks,
# service hours, the points ledger, pledge items and role assignments (a role is the
# member's, and "one open role per member" stays a per-member invariant).

activities = Table(
    "activities",
    metadata,
    _id(),
    _shard_key(),
    Column("org_id", PGUUID(as_uuid=True), nullable=False, index=True),
    Column("type", String(32), nullable=False),
    Column("title", String(200), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("location", String(200), nullable=True),
    Column("capacity", Integer, nullable=True),
    Column("cost", MONEY, nullable=True),
    Column("created_by", String(200), nullable=False),
    Column("version", BigInteger, nullable=False, server_default="1"),
    _created_at(),
    CheckConstraint(check_in("type", ActivityType), name="type"),
    CheckConstraint("ends_at >= starts_at", name="ends_after_start"),
    CheckConstraint("capacity IS NULL OR capacity > 0", name="capacity_positive"),
    CheckConstraint("cost IS NULL OR cost >= 0", name="cost_not_negative"),
    Index(None, "starts_at", "id"),
    *_keyed("activities"),
    schema=SCHEMA,
)

attendance = Table(
    "attendance",
    metadata,
    # The activity's key.
    _shard_key(),
    Column("activity_id", PGUUID(as_uuid=True), nullable=False),
    Column("member_id", PGUUID(as_uuid=True), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("hours", HOURS, nullable=False, server_default="0"),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    *_keyed_link("attendance", "activity_id", "activities"),
    CheckConstraint(check_in("status", AttendanceStatus), name="status"),
    CheckConstraint("hours >= 0 AND hours <= 24", name="hours_range"),
    schema=SCHEMA,
)

signups = Table(
    "signups",
    metadata,
    # The activity's key.
    _shard_key(),
    Column("activity_id", PGUUID(as_uuid=True), nullable=False),
    Column("member_id", PGUUID(as_uuid=True), nullable=False, index=True),
    Column("signed_up_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    *_keyed_link("signups", "activity_id", "activities"),
    schema=SCHEMA,
)

talks = Table(
    "talks",
    metadata,
    _id(),
    # The member's key (the member talked with).
    _shard_key(),
    Column("member_id", PGUUID(as_uuid=True), nullable=False, index=True),
    # The member's org when the talk was recorded (counts per org).
    Column("org_id", PGUUID(as_uuid=True), nullable=True, index=True),
    Column("held_on", Date, nullable=False),
    Column("talker", String(100), nullable=False),
    Column("topic", String(200), nullable=False),
    # AES-GCM sealed with purpose "talk.notes"; never leaves `GET /talks/{id}`.
    Column("notes_enc", LargeBinary, nullable=True),
    Column("created_by", String(200), nullable=False),
    _created_at(),
    Index(None, "held_on", "id"),
    *_keyed("talks"),
    schema=SCHEMA,
)

help_requests = Table(
    "help_requests",
    metadata,
    _id(),
    # The org's key.
    _shard_key(),
    Column("org_id", PGUUID(as_uuid=True), nullable=False, index=True),
    # The building party group of the resident, if known (matching prefers its members).
    Column("building_id", PGUUID(as_uuid=True), nullable=True),
    Column("title", String(200), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("needed_skills", ARRAY(Text), nullable=False, server_default="{}"),
    Column("resident_name", String(100), nullable=True),
    Column("status", String(16), nullable=False, server_default="open"),
    Column("member_id", PGUUID(as_uuid=True), nullable=True, index=True),
    Column("hours", HOURS, nullable=True),
    Column("created_by", String(200), nullable=False),
    _created_at(),
    Column("assigned_at", DateTime(timezone=True), nullable=True),
    Column("completed_at", DateTime(timezone=True), nullable=True),
    Column("closed_at", DateTime(timezone=True), nullable=True),
    CheckConstraint(check_in("status", HelpStatus), name="status"),
    CheckConstraint("status = 'open' OR member_id IS NOT NULL", name="taken_has_member"),
    CheckConstraint("hours IS NULL OR (hours > 0 AND hours <= 24)", name="hours_range"),
    *_keyed("help_requests"),
    schema=SCHEMA,
)

service_hours = Table(
    "service_hours",
    metadata,
    _id(),
    # The member's key (their hours, whichever org they served).
    _shard_key(),
    Column("member_id", PGUUID(as_uuid=True), nullable=False, index=True),
    Column("org_id", PGUUID(as_uuid=True), nullable=True, index=True),
    Column("on", Date, nullable=False),
    Column("hours", HOURS, nullable=False),
    Column("role", String(100), nullable=True),
    # An activity or a help request of an org, maybe in another county: no foreign keys,
    # the service checks them when the hours are logged (and neither is ever deleted).
    Column("activity_id", PGUUID(as_uuid=True), nullable=True),
    Column("help_request_id", PGUUID(as_uuid=True), nullable=True),
    Column("description", Text, nullable=False, server_default=""),
    Column("verified", Boolean, nullable=False, server_default="false"),
    Column("verified_by", String(200), nullable=True),
    Column("verified_at", DateTime(timezone=True), nullable=True),
    Column("created_by", String(200), nullable=False),
    _created_at(),
    CheckConstraint("hours > 0 AND hours <= 24", name="hours_range"),
    Index(
        "uq_service_hours_member_activity",
        "member_id",
        "activity_id",
        unique=True,
        postgresql_where=text("activity_id IS NOT NULL"),
    ),
    Index(
        "uq_service_hours_help_request",
        "help_request_id",
        unique=True,
        postgresql_where=text("help_request_id IS NOT NULL"),
    ),
    Index(None, "on", "id"),
    *_keyed("service_hours"),
    schema=SCHEMA,
)

programs = Table(
    "programs",
    metadata,
    _uuid_pk(),
    # NULL: a system template every org may adopt ("ten ones", "eight roles").
    Column("org_id", PGUUID(as_uuid=True), nullable=True, index=True),
    Column("code", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("kind", String(16), nullable=False),
    # [{"n": 1, "title": "...", "title_zh": "..."}]
    Column("items", JSONB, nullable=False),
    _created_at(),
    CheckConstraint(check_in("kind", ProgramKind), name="kind"),
    UniqueConstraint("org_id", "code", postgresql_nulls_not_distinct=True),
    schema=SCHEMA,
)

program_adoptions = Table(
    "program_adoptions",
    metadata,
    # The adopting org's key.
    _shard_key(),
    Column(
        "program_id",
        PGUUID(as_uuid=True),
        ForeignKey(f"{SCHEMA}.programs.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("org_id", PGUUID(as_uuid=True), nullable=False, index=True),
    Column("adopted_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("shard_key", "program_id", "org_id"),
    Index("uq_program_adoptions_program_id_org_id", "program_id", "org_id", unique=True),
    schema=SCHEMA,
)

pledge_items = Table(
    "pledge_items",
    metadata,
    # The member's key.
    _shard_key(),
    Column(
        "program_id",
        PGUUID(as_uuid=True),
        ForeignKey(f"{SCHEMA}.programs.id", ondelete="RESTRICT"),
        nullable=False,
    ),
    Column("member_id", PGUUID(as_uuid=True), nullable=False),
    Column("year", SmallInteger, nullable=False),
    Column("n", SmallInteger, nullable=False),
    Column("evidence_type", String(16), nullable=False),
    Column("evidence_id", PGUUID(as_uuid=True), nullable=False),
    Column("done_on", Date, nullable=False),
    Column("recorded_by", String(200), nullable=False),
    _created_at(),
    PrimaryKeyConstraint("shard_key", "member_id", "year", "program_id", "n"),
    Index(
        "uq_pledge_items_member_id_year_program_id_n",
        "member_id",
        "year",
        "program_id",
        "n",
        unique=True,
    ),
    CheckConstraint(check_in("evidence_type", EvidenceType), name="evidence_type"),
    CheckConstraint("year BETWEEN 2000 AND 2100", name="year_range"),
    schema=SCHEMA,
)

role_assignments = Table(
    "role_assignments",
    metadata,
    _id(),
    # The member's key (the org holding the role may be in another county).
    _shard_key(),
    Column("member_id", PGUUID(as_uuid=True), nullable=False, index=True),
    Column("org_id", PGUUID(as_uuid=True), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column(
        "program_id",
        PGUUID(as_uuid=True),
        ForeignKey(f"{SCHEMA}.programs.id", ondelete="RESTRICT"),
        nullable=True,
    ),
    Column("role", String(100), nullable=False),
    Column("layer", String(16), nullable=True),
    Column("started_on", Date, nullable=False),
    Column("ended_on", Date, nullable=True),
    Column("created_by", String(200), nullable=False),
    _created_at(),
    CheckConstraint(check_in("kind", AssignmentKind), name="kind"),
    CheckConstraint(f"layer IS NULL OR {check_in('layer', Layer)}", name="layer"),
    CheckConstraint("ended_on IS NULL OR ended_on >= started_on", name="ends_after_start"),
    # One open assignment per member and role; ended ones are the history.
    Index(
        "uq_role_assignments_open",
        "member_id",
        "kind",
        "role",
        unique=True,
        postgresql_where=text("ended_on IS NULL"),
    ),
    *_keyed("role_assignments"),
    schema=SCHEMA,
)

points_rules = Table(
    "points_rules",
    metadata,
    _uuid_pk(),
    # NULL: the system default, overridden by an org's own rule for the same thing.
    Column("org_id", PGUUID(as_uuid=True), nullable=True),
    Column("source", String(16), nullable=False),
    # For `activity` rules; NULL for `service_hour`.
    Column("activity_type", String(32), nullable=True),
    Column("points", Integer, nullable=False),
    _created_at(),
    CheckConstraint(check_in("source", PointsSource), name="source"),
    CheckConstraint("points >= 0 AND points <= 1000", name="points_range"),
    CheckConstraint(
        "(source = 'activity') = (activity_type IS NOT NULL)", name="activity_type_for_activity"
    ),
    UniqueConstraint("org_id", "source", "activity_type", postgresql_nulls_not_distinct=True),
    schema=SCHEMA,
)

points_ledger = Table(
    "points_ledger",
    metadata,
    Column("id", BigInteger, Identity(always=False), nullable=False),
    # The member's key.
    _shard_key(),
    Column("member_id", PGUUID(as_uuid=True), nullable=False),
    Column("org_id", PGUUID(as_uuid=True), nullable=True, index=True),
    Column("year", SmallInteger, nullable=False),
    Column("points", Integer, nullable=False),
    # attendance | service_hours | redemption | adjustment
    Column("reason", String(32), nullable=False),
    Column("source_id", PGUUID(as_uuid=True), nullable=True),
    Column("note", String(200), nullable=True),
    Column("created_by", String(200), nullable=False),
    _created_at(),
    CheckConstraint("points <> 0", name="points_nonzero"),
    Index(None, "member_id", "id"),
    Index(None, "source_id", "member_id"),
    PrimaryKeyConstraint("shard_key", "id"),
    Index("uq_points_ledger_id", "id", unique=True),
    schema=SCHEMA,
)

fund_allocations = Table(
    "fund_allocations",
    metadata,
    _id(),
    # The org's key.
    _shard_key(),
    Column("org_id", PGUUID(as_uuid=True), nullable=False),
    Column("year", SmallInteger, nullable=False),
    Column("rate_per_member", MONEY, nullable=False),
    Column("member_count", Integer, nullable=False),
    Column("amount", MONEY, nullable=False),
    # Cached sum of the expenses, kept under the row's lock in the booking's transaction.
    Column("spent", MONEY, nullable=False, server_default="0"),
    Column("created_by", String(200), nullable=False),
    _created_at(),
    UniqueConstraint("org_id", "year"),
    CheckConstraint("rate_per_member >= 0", name="rate_not_negative"),
    CheckConstraint("member_count >= 0", name="member_count_not_negative"),
    CheckConstraint("year BETWEEN 2000 AND 2100", name="year_range"),
    *_keyed("fund_allocations"),
    schema=SCHEMA,
)

fund_expenses = Table(
    "fund_expenses",
    metadata,
    _id(),
    # The allocation's key.
    _shard_key(),
    # No foreign keys: a ledger row outlives nothing and is never cascaded (append-only).
    Column("allocation_id", PGUUID(as_uuid=True), nullable=False, index=True),
    Column("amount", MONEY, nullable=False),
    Column("purpose", String(200), nullable=False),
    Column("activity_id", PGUUID(as_uuid=True), nullable=True),
    # Set when this expense took the balance below zero with an admin's explicit approval.
    Column("approved_overspend_by", String(200), nullable=True),
    Column("created_by", String(200), nullable=False),
    _created_at(),
    CheckConstraint("amount > 0", name="amount_positive"),
    *_keyed("fund_expenses"),
    schema=SCHEMA,
)

training_sessions = Table(
    "training_sessions",
    metadata,
    _id(),
    # The org's key.
    _shard_key(),
    Column("org_id", PGUUID(as_uuid=True), nullable=False, index=True),
    Column("title", String(200), nullable=False),
    Column("held_on", Date, nullable=False),
    Column("hours", HOURS, nullable=False, server_default="0"),
    Column("created_by", String(200), nullable=False),
    _created_at(),
    CheckConstraint("hours >= 0 AND hours <= 24", name="hours_range"),
    Index(None, "held_on", "id"),
    *_keyed("training_sessions"),
    schema=SCHEMA,
)

training_attendance = Table(
    "training_attendance",
    metadata,
    # The session's key.
    _shard_key(),
    Column("session_id", PGUUID(as_uuid=True), nullable=False),
    Column("member_id", PGUUID(as_uuid=True), nullable=False, index=True),
    *_keyed_link("training_attendance", "session_id", "training_sessions"),
    schema=SCHEMA,
)

# Append-only ledgers (see the migration's triggers).
LEDGERS = ("points_ledger", "fund_expenses")
