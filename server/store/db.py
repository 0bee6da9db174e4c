"""The SQL database as one owned resource: engine, schema and session factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from server.store.models import Base

__all__ = ["Database", "open_database"]

log = logging.getLogger(__name__)
logging.getLogger("alembic").setLevel(logging.WARNING)  # it narrates every start at INFO


class Database:
    """An engine and its session factory."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)

    @asynccontextmanager
    async def session(self, *, write: bool = False) -> AsyncIterator[AsyncSession]:
        """A session in a transaction, committed on success and rolled back on error.

        ``write``: the transaction reads and then writes. On SQLite it then takes the
        write lock when it begins (``BEGIN IMMEDIATE``), see :func:`_sqlite_begin`; read-only
        transactions stay deferred and never wait for writers (WAL)."""
        async with self.sessions() as session, session.begin():
            if write:
                await session.connection(execution_options={_WRITE: True})
            yield session


_WRITE = "linli_write"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the status page read while ingest writes; busy_timeout rides out the
    # short write locks of a second process (``linli registry import`` while serving).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    # The driver's own implicit BEGIN is off: SQLAlchemy's "begin" event issues the one
    # below instead (the recipe in SQLAlchemy's SQLite dialect docs; it also makes
    # SAVEPOINTs behave).
    dbapi_connection.isolation_level = None


def _sqlite_begin(conn: Any) -> None:
    # A writing transaction takes the write lock when it starts (IMMEDIATE). One that read
    # first and wrote later could not be upgraded in WAL mode once another process had
    # committed in between (SQLITE_BUSY at once, busy_timeout does not help); with two
    # server workers on one file that lost alert writes. Taken at the start, the lock is
    # waited for (busy_timeout) instead. Readers stay deferred: they never wait.
    immediate = conn.get_execution_options().get(_WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


MIGRATIONS: Final = Path(__file__).parent / "migrations"
#: The revision a database made by ``create_all`` before migrations existed is at.
BASELINE: Final = "0001"


def _alembic(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def migrate(connection: Connection) -> None:
    """Bring the schema to the newest revision, in the caller's transaction.

    A new database gets today's tables (``create_all``) stamped with the newest revision; one
    made before migrations existed (tables, no ``alembic_version``) is stamped with the
    baseline and upgraded; any other is upgraded from where it is."""
    tables = set(inspect(connection).get_table_names())
    config = _alembic(connection)
    head = ScriptDirectory.from_config(config).get_current_head()
    if not tables:
        Base.metadata.create_all(connection)
        command.stamp(config, "head")
        return
    if "alembic_version" not in tables:
        log.info("database from before migrations: stamped %s, then upgraded", BASELINE)
        command.stamp(config, BASELINE)
    current = MigrationContext.configure(connection).get_current_revision()
    if current != head:
        log.info("database schema: upgrading from revision %s to %s", current, head)
        command.upgrade(config, "head")


@asynccontextmanager
async def open_database(url: str) -> AsyncIterator[Database]:
    """Open the database at ``url``, migrate it to the newest schema, and dispose of it on
    exit. Every change to the schema is an Alembic revision (server/store/migrations);
    processes that open one database at once migrate it one after the other."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
    try:
        async with engine.connect() as plain:
            # One migrator at a time: on SQLite the write lock is taken at BEGIN.
            conn = await plain.execution_options(**{_WRITE: True})
            async with conn.begin():
                await conn.run_sync(migrate)
        yield Database(engine)
    finally:
        await engine.dispose()
