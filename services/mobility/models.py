"""The mobility service's tables (schema `mobility`).

`orgs` and `members` are a read model of the registry, built only from its events
(`services/mobility/projections.py`) and rebuilt from scratch on demand: never write them
elsewhere and never point a foreign key at them (a rebuild empties them); refer to a member
or an org by its plain UUID. `transfers` and `last_org_life` are read models too (of the
registry's transfer events and the activities' attendance events).

Whereabouts (a mobile member's place, contact phone, notes of contacts) are stored
encrypted (`common.crypto`), never in clear."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    Sequence,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID as PGUUID

from common.audit import audit_table
from common.db import check_in, metadata
from common.events.consumer import cursor_table
from common.events.outbox import outbox_table
from common.events.projection import projected_members_table, projected_orgs_table
from common.idempotency import idempotency_table
from common.schedule import scheduled_jobs_table

SCHEMA = "mobility"


class Direction(StrEnum):
    outflow = "outflow"
    inflow = "inflow"


class CardStatus(StrEnum):
    active = "active"
    returned = "returned"
    lost_contact = "lost_contact"  # computed when read, never stored


class Channel(StrEnum):
    phone = "phone"
    visit = "visit"
    online = "online"
    letter = "letter"


class LinkMode(StrEnum):
    direct = "direct"
    assisted = "assisted"
    proxy = "proxy"


class LinkStatus(StrEnum):
    pending = "pending"
    reported = "reported"
    ended = "ended"


class Rating(StrEnum):
    excellent = "excellent"
    good = "good"
    fair = "fair"
    poor = "poor"


def _uuid(name: str, *args: Any, **kw: Any) -> Column[Any]:
    return Column(name, PGUUID(as_uuid=True), *args, **kw)


def _keyed(id_column: str) -> list[Any]:
    """The distribution key (common/sharding.py) of a row that belongs to a member: their key
    in the projection (`members.shard_key`) when written, kept equal to it by the registry
    consumer (`services/mobility/projections.py`). The primary key is `(shard_key, <id>)` as a
    sharded engine requires; the unique index on the id alone keeps lookups, foreign keys
    and conflict targets by id working while there is one node."""
    return [
        _uuid(id_column, nullable=False),
        _uuid("shard_key", nullable=False),
        PrimaryKeyConstraint("shard_key", id_column),
    ]


def _unique_id(table: str, id_column: str = "id") -> Index:
    return Index(f"uq_{table}_{id_column}", id_column, unique=True)


def _timestamps() -> list[Column[Any]]:
    return [
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    ]


# Read model of the registry.
orgs = projected_orgs_table(metadata, SCHEMA)
members = projected_members_table(metadata, SCHEMA, with_birth_date=True)
# How far this service's consumers got in each stream.
consumer_cursors = cursor_table(metadata, SCHEMA)
# This service's own published events.
outbox = outbox_table(metadata, SCHEMA)
idempotency_keys = idempotency_table(metadata, SCHEMA)
audit_log = audit_table(metadata, SCHEMA)
# The last tick each periodic job claimed (common/schedule.py: once across replicas).
scheduled_jobs = scheduled_jobs_table(metadata, SCHEMA)

# Orders the changes a work unit reads back (`GET /sync/{org_id}/changes`).
change_seq = Sequence("change_seq", schema=SCHEMA, metadata=metadata)

mobile_cards = Table(
    "mobile_cards",
    metadata,
    *_keyed("id"),
    _uuid("member_id", nullable=False),
    # The org responsible for the card (scope): the member's own org for an outflow, the
    # hosting org for an inflow.
    _uuid("org_id", nullable=False),
    Column("direction", String(16), nullable=False),
    Column("place_cipher", LargeBinary, nullable=False),
    _uuid("host_org_id", nullable=True),
    Column("left_on", Date, nullable=False),
    Column("expected_return_on", Date, nullable=True),
    Column("contact_phone_cipher", LargeBinary, nullable=True),
    Column("contact_phone_masked", String(32), nullable=True),
    Column("tracker", String(100), nullable=False),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("last_contact_on", Date, nullable=True),
    Column("returned_on", Date, nullable=True),
    # Set once `mobile.lost_contact` was published for the current silence.
    Column("lost_reported", Boolean, nullable=False, server_default="false"),
    Column("version", BigInteger, nullable=False, server_default="1"),
    *_timestamps(),
    CheckConstraint(check_in("direction", [d.value for d in Direction]), name="direction"),
    CheckConstraint(check_in("status", ["active", "returned"]), name="status"),
    CheckConstraint("(status = 'returned') = (returned_on IS NOT NULL)", name="returned_on"),
    Index(
        "uq_mobile_cards_active_member",
        "member_id",
        unique=True,
        postgresql_where=text("status = 'active'"),
    ),
    Index(None, "org_id", "id"),
    Index(None, "member_id"),
    _unique_id("mobile_cards"),
    schema=SCHEMA,
)

contacts = Table(
    "contacts",
    metadata,
    *_keyed("id"),
    _uuid("card_id", nullable=False),
    Column("on", Date, nullable=False),
    Column("channel", String(16), nullable=False),
    Column("attended_org_life", Boolean, nullable=False),
    Column("notes_cipher", LargeBinary, nullable=True),
    Column("recorded_by", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(check_in("channel", [c.value for c in Channel]), name="channel"),
    Index(None, "card_id", "on"),
    _unique_id("contacts"),
    # A card's contacts are on its shard and follow it when it is re-keyed.
    ForeignKeyConstraint(
        ["shard_key", "card_id"],
        [f"{SCHEMA}.mobile_cards.shard_key", f"{SCHEMA}.mobile_cards.id"],
        onupdate="CASCADE",
    ),
    schema=SCHEMA,
)

links = Table(
    "links",
    metadata,
    *_keyed("id"),
    _uuid("member_id", nullable=False),
    _uuid("workplace_org_id", nullable=True),
    Column("workplace_external_name", String(200), nullable=True),
    Column("workplace_external_code", String(64), nullable=True),
    _uuid("residence_org_id", nullable=False),
    Column("mode", String(16), nullable=False),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("reported_on", Date, nullable=True),
    Column("ended_on", Date, nullable=True),
    # The unit's own id of the member, from its sync.
    Column("external_id", String(100), nullable=True),
    Column("version", BigInteger, nullable=False, server_default="1"),
    Column(
        "change_seq", BigInteger, change_seq, nullable=False, server_default=change_seq.next_value()
    ),
    *_timestamps(),
    CheckConstraint(check_in("mode", [m.value for m in LinkMode]), name="mode"),
    CheckConstraint(check_in("status", [s.value for s in LinkStatus]), name="status"),
    CheckConstraint(
        "(workplace_org_id IS NULL) <> (workplace_external_name IS NULL)", name="one_workplace"
    ),
    CheckConstraint("(status = 'reported') <= (reported_on IS NOT NULL)", name="reported_on"),
    CheckConstraint("(status = 'ended') = (ended_on IS NOT NULL)", name="ended_on"),
    # One open link per member and workplace org.
    Index(
        "uq_links_open_member_workplace",
        "workplace_org_id",
        "member_id",
        unique=True,
        postgresql_where=text("status <> 'ended' AND workplace_org_id IS NOT NULL"),
    ),
    Index(None, "residence_org_id", "id"),
    Index(None, "member_id"),
    Index(None, "change_seq"),
    _unique_id("links"),
    schema=SCHEMA,
)

feedback = Table(
    "feedback",
    metadata,
    *_keyed("id"),
    _uuid("link_id", nullable=False),
    Column("year", Integer, nullable=False),
    Column("rating", String(16), nullable=False),
    Column("comment", Text, nullable=False, server_default=""),
    Column("given_by", String(200), nullable=False),
    Column(
        "change_seq", BigInteger, change_seq, nullable=False, server_default=change_seq.next_value()
    ),
    *_timestamps(),
    CheckConstraint(check_in("rating", [r.value for r in Rating]), name="rating"),
    UniqueConstraint("link_id", "year"),
    Index(None, "change_seq"),
    _unique_id("feedback"),
    # A link's feedback is on its shard and follows it when it is re-keyed.
    ForeignKeyConstraint(
        ["shard_key", "link_id"],
        [f"{SCHEMA}.links.shard_key", f"{SCHEMA}.links.id"],
        onupdate="CASCADE",
    ),
    schema=SCHEMA,
)

# Read model of the registry's transfers: an issued letter past its last valid day and
# never received leaves a pocket member.
transfers = Table(
    "transfers",
    metadata,
    *_keyed("transfer_id"),
    _uuid("member_id", nullable=False),
    _uuid("from_org_id", nullable=True),
    Column("status", String(16), nullable=False),
    Column("valid_until", Date, nullable=True),
    Column("version", BigInteger, nullable=False),
    Index(None, "member_id"),
    _unique_id("transfers", "transfer_id"),
    schema=SCHEMA,
)

# Read model of the activities' attendance: the last organizational life each member
# attended.
last_org_life = Table(
    "last_org_life",
    metadata,
    *_keyed("member_id"),
    Column("last_attended_at", DateTime(timezone=True), nullable=False),
    _unique_id("last_org_life", "member_id"),
    schema=SCHEMA,
)
