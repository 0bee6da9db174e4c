"""Alembic's environment: migrations run on the connection ``open_database`` passes in
(``config.attributes["connection"]``), inside its transaction. There is no offline (SQL
script) mode and no alembic.ini: the server is the only thing that migrates its database."""

from __future__ import annotations

from alembic import context

from server.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "Linli migrates its database itself when it opens it (linli server, linli registry "
        "import); run one of those rather than the alembic command"
    )
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
