"""The environment every history shares: async engine, only its own schema compared and
migrated, its version table inside that schema. Each `alembic/<svc>/env.py` calls `run`."""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from common.db import create_engine, metadata
from common.partitions import PARTITION_NAME

MODELS = {
    "registry": "services.registry.models",
    "mobility": "services.mobility.models",
    "activities": "services.activities.models",
    "gateway": "gateway.models",
}


def database_url() -> str:
    cfg = context.config
    url = context.get_x_argument(as_dictionary=True).get("url") or cfg.attributes.get("url")
    if url:
        return str(url)
    from common.settings import BaseAppSettings

    return BaseAppSettings().database_url


def include_name_for(schema: str) -> Any:
    def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
        if type_ == "schema":
            return name == schema
        return True

    return include_name


def include_object_for(schema: str) -> Any:
    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        if type_ == "table":
            # Partitions are the database's business: the models declare their parent.
            if reflected and name and PARTITION_NAME.match(name):
                return False
            return bool(obj.schema == schema) and name != "alembic_version"
        table = getattr(obj, "table", None)
        return table is None or table.schema == schema

    return include_object


def _do_run(connection: Connection, schema: str) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        include_schemas=True,
        include_name=include_name_for(schema),
        include_object=include_object_for(schema),
        version_table_schema=schema,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(schema: str) -> None:
    engine = create_engine(database_url(), pool_size=1, application_name=f"alembic-{schema}")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            await conn.commit()
            await conn.run_sync(_do_run, schema)
            await conn.commit()
    finally:
        await engine.dispose()


def run() -> None:
    schema = context.config.get_main_option("schema")
    assert schema, "alembic.ini section must set `schema`"
    importlib.import_module(MODELS[schema])
    if context.is_offline_mode():
        context.configure(
            url=database_url(),
            target_metadata=metadata,
            version_table_schema=schema,
            literal_binds=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connectable = context.config.attributes.get("connection")
    if connectable is not None:
        _do_run(connectable, schema)
        return
    asyncio.run(_run_async(schema))
