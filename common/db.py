"""Database plumbing every app shares: engine from a standard URL, the per-request
session, constraint naming, and the `ltree` column type used for org paths."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import Insert, MetaData, Table, cast, event, insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.types import UserDefinedType
from sqlalchemy.util import await_
from sqlmodel import SQLModel

if TYPE_CHECKING:
    from common.settings import BaseAppSettings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# All services' tables live in one MetaData, each in its own schema; alembic filters by schema.
metadata: MetaData = SQLModel.metadata
metadata.naming_convention = NAMING_CONVENTION


class _NoRowsLogged(logging.Filter):
    """SQLAlchemy's engine logs every row it reads at DEBUG: names, addresses, whatever a
    table holds. Personal data never goes to a log, whatever level an operator sets."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


logging.getLogger("sqlalchemy.engine.Engine").addFilter(_NoRowsLogged())


def async_url(url: str) -> str:
    """`postgresql://…` (any driver suffix) → the asyncpg dialect SQLAlchemy needs."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def plain_url(url: str) -> str:
    """The libpq form of a URL (for asyncpg.connect, psql, pg_dump)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int | None = None,
    statement_timeout_ms: int = 15_000,
    **kwargs: Any,
) -> AsyncEngine:
    """`pool_size` connections kept once opened, and `max_overflow` more (None: as many)
    that a burst opens and that are closed as they come back. A server's engine takes no
    overflow (`app_engine`)."""
    engine = create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_pre_ping=False,  # `_ping` below: one round trip where this takes three
        pool_recycle=1800,
        # Never the statement's values in a log line or an error message: they may be
        # personal (an address, a name) even where the sensitive ones are encrypted.
        hide_parameters=True,
        connect_args={
            "server_settings": {
                "statement_timeout": str(statement_timeout_ms),
                "idle_in_transaction_session_timeout": "60000",
                # A statement whose client is gone (the app crashed, the network broke) is
                # cancelled within a second instead of running on holding its locks and
                # its Idempotency-Key until it ends by itself.
                "client_connection_check_interval": "1000",
                "application_name": kwargs.pop("application_name", "lianxin"),
            }
        },
        **kwargs,
    )
    event.listen(engine.sync_engine, "checkout", _ping)
    return engine


def app_engine(settings: BaseAppSettings, *, application_name: str) -> AsyncEngine:
    """An app's engine: at most `db_pool_size` connections, each kept once opened. With an
    overflow, a connection a burst opened beyond the pool was closed as it came back and
    opened again at the next burst: under the mixed load (bench/load.py) two new PostgreSQL
    sessions a second, each a server process started and asyncpg's type introspection run
    again, until requests timed out at a load the same connections kept open carry."""
    return create_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=0,
        statement_timeout_ms=settings.db_statement_timeout_ms,
        application_name=application_name,
    )


def _ping(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Checks a pooled connection as it is handed out: `SELECT 1` in the simple protocol,
    one round trip (SQLAlchemy's pre-ping on asyncpg takes three: BEGIN, `;`, ROLLBACK;
    its transaction is for PgBouncer's transaction mode, which the simple protocol does not
    need). A dead connection (the server restarted) is replaced: the pool retries the
    checkout with a new one."""
    try:
        await_(dbapi_connection.driver_connection.execute("SELECT 1"))
    except Exception as exc:
        raise DisconnectionError(f"pooled connection failed its check: {exc}") from exc


def make_sessionmaker(bind: Any, **kwargs: Any) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(bind, expire_on_commit=False, autoflush=False, **kwargs)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request; commits after the route returns and before the response
    is sent, rolls back on any error."""
    maker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with maker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


class LTree(UserDefinedType[str]):
    """PostgreSQL `ltree` (materialized path); values are dotted label strings."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "public.ltree"

    def bind_processor(self, dialect: Any) -> None:
        return None

    def bind_expression(self, bindvalue: Any) -> Any:
        return cast(bindvalue, self)

    def result_processor(self, dialect: Any, coltype: Any) -> None:
        return None


def _register_ltree_reflection() -> None:
    from sqlalchemy.dialects.postgresql.base import ischema_names

    ischema_names["ltree"] = LTree


_register_ltree_reflection()


@functools.cache
def insert_into(table: Table) -> Insert:
    """`INSERT INTO table`, built once: a one-row write passes its values as the execution's
    parameters (`session.execute(insert_into(t), {...})`) instead of building a new
    statement with `.values(...)` each time (its bind parameters, per call, on every
    audited or evented write); the compiled form is cached either way."""
    return insert(table)


def check_in(column: str, values: Iterable[str]) -> str:
    """SQL for a CHECK constraint keeping `column` to `values` (an enum class or strings)."""
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"
