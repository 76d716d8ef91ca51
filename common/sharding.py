"""The distribution key every row carries so the schema is ready for a sharded engine (Citus;
docs/scaling.md): `shard_key`, the id of the org whose subtree the row belongs to at county
level.

The rule, for an org, decided from its parent when it is created or moved:

- under an org at city level (or at the root), an org is its own key: a county or district,
  a work unit hanging below the city committee, a street with no county above it, and the
  city-level orgs themselves;
- below any other org, an org takes its parent's key.

So a county's streets, communities, buildings and branches share the county's key, and a
work unit's branches share the work unit's. City-level orgs are the *upper* tree: on Citus
they are also a reference table (`registry.upper_orgs`), present on every node.

A member's key is the key of the org holding their organizational relation, else of their
residence org. Rows that belong to a member (a card, a link, points) take the member's key;
rows that belong to an org (an activity and its attendance, a help request, funds) take the
org's key. Rows that belong to no org at all (a city-wide program, a points rule) carry
`UNSHARDED`. The key of a row changes only when its member or org moves to another county,
or when an org's level changes to or from city level (its children's keys follow): the
registry re-keys its rows in the transaction of the change and announces each re-keyed org
with an event carrying the new key; the other services re-key their rows when they apply
it."""

from __future__ import annotations

import uuid

from sqlalchemy import Connection, text

# The key of rows that belong to no org (on Citus: the reference tables' side of the plan).
UNSHARDED = uuid.UUID(int=0)
# Orgs at this level are the upper tree: their children start a key of their own.
UPPER_AREA_LEVEL = "city"


def child_shard_key(
    org_id: uuid.UUID, parent_key: uuid.UUID | None, parent_area_level: str | None
) -> uuid.UUID:
    """The key of org `org_id` under a parent with `parent_key` at `parent_area_level`
    (both None at the root)."""
    if parent_key is None or parent_area_level in (None, UPPER_AREA_LEVEL):
        return org_id
    return parent_key


def member_shard_key(org_key: uuid.UUID | None, residence_key: uuid.UUID | None) -> uuid.UUID:
    """A member's key: their relation org's key, else their residence org's (`UNSHARDED`
    for a card with neither)."""
    return org_key or residence_key or UNSHARDED


def backfill_org_keys(conn: Connection, table: str, *, id_column: str = "id") -> None:
    """Fill `shard_key` in an org table (`schema.name` with `parent_id`, `path` and
    `area_level`) level by level from the root, by the rule above: for migrations that add
    the column to rows that already exist."""
    depth = conn.execute(text(f"SELECT coalesce(max(nlevel(path)), 0) FROM {table}")).scalar()  # noqa: S608 - identifiers from migrations
    conn.execute(
        text(f"UPDATE {table} SET shard_key = {id_column} WHERE parent_id IS NULL")  # noqa: S608
    )
    for level in range(2, int(depth or 0) + 1):
        conn.execute(
            text(
                f"UPDATE {table} c SET shard_key = CASE WHEN p.area_level = :upper "  # noqa: S608
                f"THEN c.{id_column} ELSE p.shard_key END "
                f"FROM {table} p WHERE p.{id_column} = c.parent_id AND nlevel(c.path) = :level"
            ),
            {"upper": UPPER_AREA_LEVEL, "level": level},
        )
    # An org whose parent is not there (a projection that has not seen it): its own key.
    conn.execute(
        text(f"UPDATE {table} SET shard_key = {id_column} WHERE shard_key IS NULL")  # noqa: S608
    )
