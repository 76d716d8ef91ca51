"""Range partitions by time for the append-only tables (docs/scaling.md, "Migrations that
make the schema ready", step 5): the outboxes by UTC day (common/events/outbox_partitions.py)
and the audit logs by UTC month (common/audit.py). Rows are only ever appended and mostly
only recent ones read; an old range can be moved or dropped as a whole (no `DELETE`, no
vacuum), and on a sharded engine each partition is distributed like its parent.

Every partitioned table `<t>` has:
- `<t>_history`: everything before the day (month) it was partitioned;
- `<t>_pYYYYMMDD` (`<t>_pYYYYMM`): one UTC day (month) each, created ahead;
- `<t>_default`: whatever falls outside them, so no write is ever refused for want of a
  partition (a range that already has rows there is not created later: they stay there).

`<schema>.<t>_add_partitions(first date, count int)` creates the missing ranges. It is
`SECURITY DEFINER` (the owner's rights) because a service's own database role may not create
tables; it may only execute its schema's functions (tools/db_roles.py).

`convert_sql` / `unconvert_sql` make a migration's plain table partitioned and back, keeping
every row (and an identity's position)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

# The partitions' names: migrations' autogenerate compares the parents only.
PARTITION_NAME = re.compile(r"^(outbox|audit_log)_(p\d{6}|p\d{8}|history|default)$")


@dataclass(frozen=True)
class Layout:
    """How one table is partitioned."""

    table: str
    column: str  # the timestamptz column ranged on (part of every key)
    unit: Literal["day", "month"]
    ahead: int  # ranges created in advance, the current one included
    columns: str  # every column, in the table's order (for copying rows)
    table_sql: str  # CREATE TABLE {schema}.{table} (...) with `{schema}` and `{partitioning}`
    indexes: Sequence[tuple[str, str]]  # (name without the schema prefix, column list)
    constraints: Sequence[str]  # named constraints of the table (renamed when set aside)
    identity: bool = False  # an `id` identity column whose position carries over

    def name_format(self) -> str:
        return "YYYYMMDD" if self.unit == "day" else "YYYYMM"

    def step(self) -> str:
        return "1 day" if self.unit == "day" else "1 month"


def add_function_sql(schema: str, layout: Layout) -> str:
    s, t, c = schema, layout.table, layout.column
    return f"""CREATE FUNCTION {s}.{t}_add_partitions(first date, count integer)
    RETURNS integer LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp AS $$
    DECLARE
        start date := date_trunc('{layout.unit}', first)::date;
        made integer := 0;
        name text;
        low timestamptz;
        high timestamptz;
    BEGIN
        FOR i IN 0 .. count - 1 LOOP
            name := '{t}_p' || to_char(start + i * interval '{layout.step()}',
                                       '{layout.name_format()}');
            low := (start + i * interval '{layout.step()}')::timestamp AT TIME ZONE 'UTC';
            high := (start + (i + 1) * interval '{layout.step()}')::timestamp AT TIME ZONE 'UTC';
            CONTINUE WHEN to_regclass('{s}.' || name) IS NOT NULL;
            CONTINUE WHEN EXISTS (SELECT 1 FROM {s}.{t}_default WHERE {c} >= low AND {c} < high);
            BEGIN
                EXECUTE format(
                    'CREATE TABLE {s}.%I PARTITION OF {s}.{t} FOR VALUES FROM (%L) TO (%L)',
                    name, low, high);
                made := made + 1;
            EXCEPTION WHEN invalid_object_definition THEN
                NULL;  -- the range lies inside the history partition
            END;
        END LOOP;
        RETURN made;
    END $$"""  # noqa: S608 - identifiers are constants


def _set_aside(schema: str, layout: Layout, aside: str) -> list[str]:
    """`<schema>.<table>` renamed to `aside` with its constraints, indexes and identity
    sequence (their names go to the new table)."""
    s, t = schema, layout.table
    statements = [f"ALTER TABLE {s}.{t} RENAME TO {aside}"]
    for constraint in layout.constraints:
        renamed = constraint.replace(t, aside, 1)
        statements.append(f"ALTER TABLE {s}.{aside} RENAME CONSTRAINT {constraint} TO {renamed}")
    for name, _ in layout.indexes:
        statements.append(f"ALTER INDEX {s}.ix_{s}_{name} RENAME TO ix_{s}_{aside}_{name}")
    if layout.identity:
        statements.append(
            f"""DO $$ BEGIN EXECUTE format('ALTER SEQUENCE %s RENAME TO {aside}_id_seq',
            pg_get_serial_sequence('{s}.{aside}', 'id')); END $$"""
        )
    return statements


def _create(schema: str, layout: Layout, *, partitioned: bool) -> list[str]:
    s = schema
    partitioning = f" PARTITION BY RANGE ({layout.column})" if partitioned else ""
    return [
        layout.table_sql.format(schema=s, partitioning=partitioning),
        *(
            f"CREATE INDEX ix_{s}_{name} ON {s}.{layout.table} ({columns})"
            for name, columns in layout.indexes
        ),
    ]


def _copy_from(schema: str, layout: Layout, aside: str) -> list[str]:
    s, t, cols = schema, layout.table, layout.columns
    statements = [f"INSERT INTO {s}.{t} ({cols}) SELECT {cols} FROM {s}.{aside}"]  # noqa: S608
    if layout.identity:
        statements.append(
            f"""SELECT setval(pg_get_serial_sequence('{s}.{t}', 'id'), last_value, is_called)
            FROM {s}.{aside}_id_seq"""  # noqa: S608 - identifiers are constants
        )
    statements.append(f"DROP TABLE {s}.{aside} CASCADE")
    return statements


def convert_sql(schema: str, layout: Layout) -> list[str]:
    """The plain table made partitioned, every row kept. Triggers are the caller's: the
    old table's go with it; create them on the new one after."""
    s, t = schema, layout.table
    aside = f"{t}_unpartitioned"
    return [
        *_set_aside(s, layout, aside),
        *_create(s, layout, partitioned=True),
        f"""DO $$ BEGIN EXECUTE format(
            'CREATE TABLE {s}.{t}_history PARTITION OF {s}.{t} FOR VALUES FROM (MINVALUE) TO (%L)',
            date_trunc('{layout.unit}', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'); END $$""",
        f"CREATE TABLE {s}.{t}_default PARTITION OF {s}.{t} DEFAULT",
        add_function_sql(s, layout),
        f"SELECT {s}.{t}_add_partitions((now() AT TIME ZONE 'UTC')::date, {layout.ahead})",
        *_copy_from(s, layout, aside),
    ]


def unconvert_sql(schema: str, layout: Layout) -> list[str]:
    """`convert_sql` undone: one plain table again, every row kept (triggers: the caller's)."""
    s, t = schema, layout.table
    aside = f"{t}_partitioned"
    return [
        f"DROP FUNCTION IF EXISTS {s}.{t}_add_partitions(date, integer)",
        *_set_aside(s, layout, aside),
        *_create(s, layout, partitioned=False),
        *_copy_from(s, layout, aside),
    ]
