"""The mobility service's tables (schema `mobility`).

`orgs` and `members` are a read model of the registry, built only from its events
(`services/mobility/projections.py`) and rebuilt from scratch on demand: never write them
elsewhere and never point a foreign key at them (a rebuild empties them); refer to a member
or an org by its plain UUID."""

from __future__ import annotations

from common.audit import audit_table
from common.db import metadata
from common.events.consumer import cursor_table
from common.events.outbox import outbox_table
from common.events.projection import projected_members_table, projected_orgs_table
from common.idempotency import idempotency_table

SCHEMA = "mobility"

# Read model of the registry.
orgs = projected_orgs_table(metadata, SCHEMA)
members = projected_members_table(metadata, SCHEMA)
# How far this service's consumers got in each stream.
consumer_cursors = cursor_table(metadata, SCHEMA)
# This service's own published events.
outbox = outbox_table(metadata, SCHEMA)
idempotency_keys = idempotency_table(metadata, SCHEMA)
audit_log = audit_table(metadata, SCHEMA)
