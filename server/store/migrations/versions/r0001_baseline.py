"""The schema as ``create_all`` made it before migrations existed (up to issue 13): every
table of that time. A database from then is stamped with this revision when first opened
(tests/server/store/schema_before_alembic.sql is that schema)."""

from __future__ import annotations

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to do: the tables exist (made by ``create_all``)."""


def downgrade() -> None:
    """The first revision: there is nothing before it."""
