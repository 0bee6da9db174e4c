"""Schema migrations: a database from before Alembic, and a new one, end at the same schema
as the models declare; a second open changes nothing."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from server.store.db import open_database
from server.store.models import Base

BEFORE = Path(__file__).parent / "schema_before_alembic.sql"


def _open(path: Path) -> None:
    async def run() -> None:
        async with open_database(f"sqlite+aiosqlite:///{path}"):
            pass

    asyncio.run(run())


def _differences(path: Path) -> list[object]:
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    return list(diff)


def _revision(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("SELECT version_num FROM alembic_version").fetchone()[0])


def test_a_database_from_before_migrations_is_upgraded_in_place(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.executescript(BEFORE.read_text())
        conn.execute(
            "INSERT INTO organisations (id, kind, name, name_en, district) "
            "VALUES ('acme', 'property_company', 'Acme', '', '')"
        )
        conn.execute(
            "INSERT INTO api_tokens (sha256, org_id, label, created_t) "
            "VALUES ('ab' || hex(randomblob(31)), 'acme', 'old', 1)"
        )
    _open(old)
    assert _differences(old) == []
    with sqlite3.connect(old) as conn:
        rows = conn.execute("SELECT label, expires_t, revoked_t FROM api_tokens").fetchall()
    assert rows == [("old", None, None)]  # kept, never expiring, not revoked
    revision = _revision(old)
    _open(old)  # opening again is a no-op
    assert _revision(old) == revision


def test_a_new_database_has_the_models_schema_at_the_newest_revision(tmp_path: Path) -> None:
    new = tmp_path / "new.db"
    _open(new)
    assert _differences(new) == []
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.executescript(BEFORE.read_text())
    _open(old)
    assert _revision(new) == _revision(old)
