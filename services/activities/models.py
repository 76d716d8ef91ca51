"""The activities service's tables (schema `activities`) and the enums their columns hold.

`orgs` and `members` are a read model of the registry, built only from its events
(`services/activities/projections.py`) and rebuilt from scratch on demand: never write them
elsewhere and never point a foreign key at them (a rebuild empties them); refer to a member
or an org by its plain UUID.

Ledgers (`points_ledger`, `fund_expenses`) are append-only (a trigger refuses UPDATE and
DELETE): a balance is the sum of its entries; a correction is a new entry."""

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

activities = Table(
    "activities",
    metadata,
    _uuid_pk(),
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
    schema=SCHEMA,
)

attendance = Table(
    "attendance",
    metadata,
    Column(
        "activity_id",
        PGUUID(as_uuid=True),
        ForeignKey(f"{SCHEMA}.activities.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("member_id", PGUUID(as_uuid=True), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("hours", HOURS, nullable=False, server_default="0"),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("activity_id", "member_id"),
    CheckConstraint(check_in("status", AttendanceStatus), name="status"),
    CheckConstraint("hours >= 0 AND hours <= 24", name="hours_range"),
    schema=SCHEMA,
)

signups = Table(
    "signups",
    metadata,
    Column(
        "activity_id",
        PGUUID(as_uuid=True),
        ForeignKey(f"{SCHEMA}.activities.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("member_id", PGUUID(as_uuid=True), nullable=False, index=True),
    Column("signed_up_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("activity_id", "member_id"),
    schema=SCHEMA,
)

talks = Table(
    "talks",
    metadata,
    _uuid_pk(),
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
    schema=SCHEMA,
)

help_requests = Table(
    "help_requests",
    metadata,
    _uuid_pk(),
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
    schema=SCHEMA,
)

service_hours = Table(
    "service_hours",
    metadata,
    _uuid_pk(),
    Column("member_id", PGUUID(as_uuid=True), nullable=False, index=True),
    Column("org_id", PGUUID(as_uuid=True), nullable=True, index=True),
    Column("on", Date, nullable=False),
    Column("hours", HOURS, nullable=False),
    Column("role", String(100), nullable=True),
    Column(
        "activity_id",
        PGUUID(as_uuid=True),
        ForeignKey(f"{SCHEMA}.activities.id", ondelete="RESTRICT"),
        nullable=True,
    ),
    Column(
        "help_request_id",
        PGUUID(as_uuid=True),
        ForeignKey(f"{SCHEMA}.help_requests.id", ondelete="RESTRICT"),
        nullable=True,
    ),
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
    Column(
        "program_id",
        PGUUID(as_uuid=True),
        ForeignKey(f"{SCHEMA}.programs.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("org_id", PGUUID(as_uuid=True), nullable=False, index=True),
    Column("adopted_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("program_id", "org_id"),
    schema=SCHEMA,
)

pledge_items = Table(
    "pledge_items",
    metadata,
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
    PrimaryKeyConstraint("member_id", "year", "program_id", "n"),
    CheckConstraint(check_in("evidence_type", EvidenceType), name="evidence_type"),
    CheckConstraint("year BETWEEN 2000 AND 2100", name="year_range"),
    schema=SCHEMA,
)

role_assignments = Table(
    "role_assignments",
    metadata,
    _uuid_pk(),
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
    Column("id", BigInteger, Identity(always=False), primary_key=True),
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
    schema=SCHEMA,
)

fund_allocations = Table(
    "fund_allocations",
    metadata,
    _uuid_pk(),
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
    schema=SCHEMA,
)

fund_expenses = Table(
    "fund_expenses",
    metadata,
    _uuid_pk(),
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
    schema=SCHEMA,
)

training_sessions = Table(
    "training_sessions",
    metadata,
    _uuid_pk(),
    Column("org_id", PGUUID(as_uuid=True), nullable=False, index=True),
    Column("title", String(200), nullable=False),
    Column("held_on", Date, nullable=False),
    Column("hours", HOURS, nullable=False, server_default="0"),
    Column("created_by", String(200), nullable=False),
    _created_at(),
    CheckConstraint("hours >= 0 AND hours <= 24", name="hours_range"),
    Index(None, "held_on", "id"),
    schema=SCHEMA,
)

training_attendance = Table(
    "training_attendance",
    metadata,
    Column(
        "session_id",
        PGUUID(as_uuid=True),
        ForeignKey(f"{SCHEMA}.training_sessions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("member_id", PGUUID(as_uuid=True), nullable=False, index=True),
    PrimaryKeyConstraint("session_id", "member_id"),
    schema=SCHEMA,
)

# Append-only ledgers (see the migration's triggers).
LEDGERS = ("points_ledger", "fund_expenses")
