"""Alembic migrations of the SQL schema (run by :func:`server.store.db.open_database`)."""
